"""The on-disk format of a compressed model, written atomically.

An artifact is a directory:
  config.json         transformers BertConfig plus ``kronecker_layout`` (every replaced layer's factors)
  model.safetensors   all weights (Kronecker factors, biases, LayerNorms, heads)
  tokenizer files     tokenizer.json, vocab.txt, ... (copied from the teacher)
  kronedge.json       the recipe: kronedge version, teacher spec, KronConfig, plan totals, metrics
  README.md           model card (written by `kronedge compress`)

It is assembled in a sibling temporary directory and renamed into place, so a crash leaves
either the previous artifact or the new one, never a half-written mix.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import KronedgeError
from .teachers import TOKENIZER_FILES

RECIPE_FILE = "kronedge.json"
WEIGHTS_FILE = "model.safetensors"


class ArtifactError(KronedgeError, ValueError):
    """A missing, incomplete or corrupt artifact; the message names the file."""


def _unique_sibling(parent: Path, prefix: str, create) -> Path:
    """Create a new, uniquely named entry ``parent/prefix<random>`` with ``create(path)``.

    Unlike ``tempfile.mkdtemp``/``mkstemp`` (modes 0700/0600), ``create`` uses the default modes, so
    what is renamed into place gets the user's umask like any other output: a model exported for a
    container must stay readable by the container's non-root user.
    """
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            create(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name {prefix}* in {parent}")


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_umask_allows(path: Path) -> None:
    """Give a file written by a library that picks its own mode the mode ``open()`` would have given it."""
    os.chmod(path, 0o666 & ~_umask())


def file_in_the_way(path: Path) -> Path | None:
    """The file among ``path``'s parents that stops it from being created (``out.txt`` of ``out.txt/model``)."""
    existing = next((parent for parent in path.parents if parent.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def check_replaceable(target: Path, marker: str) -> None:
    """Refuse to replace what is not an earlier output of the same kind: a file, the working directory or one
    above it, or a non-empty directory without ``marker`` (a user's folder, or another kind of output)."""
    if not target.exists() and not target.is_symlink():
        blocking = file_in_the_way(target)
        if blocking is not None:
            raise ArtifactError(f"cannot write {target}: {blocking} is a file, not a directory")
        return
    if not target.is_dir():
        raise ArtifactError(f"{target} is a file, not an output directory: choose another --out")
    here = Path.cwd().resolve()
    if target.resolve() in (here, *here.parents):
        raise ArtifactError(f"{target} is the working directory or holds it: choose a new directory for --out")
    if any(target.iterdir()) and not (target / marker).is_file():
        raise ArtifactError(f"{target} exists and holds no {marker}, so it is not an earlier output of this command: "
                            "choose a new or empty directory for --out (nothing was replaced)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


def sibling_prefix(target: Path, kind: str) -> str:
    """The name prefix of a writer's ``kind`` ("tmp", "old", "work") entry beside ``target``; it carries the
    writer's PID, so a later writer can tell a killed one's leftovers from a live one's."""
    return f".{target.name}.{kind}-{os.getpid()}-"


def sweep_stale_siblings(target: Path) -> None:
    """Remove what killed writers of ``target`` left beside it (a SIGKILL runs no cleanup)."""
    parent = target.parent if str(target.parent) else Path(".")
    for kind in ("tmp", "old", "work"):
        for path in parent.glob(f".{glob.escape(target.name)}.{kind}-*"):
            pid = path.name.rsplit(f".{kind}-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_directory(target: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block succeeds. ``target`` may be new,
    empty, or an earlier output holding ``marker`` (the file every such output has); anything else is refused
    before the block runs.

    Example:
        >>> with atomic_directory("out/model", "manifest.json") as tmp:
        ...     (tmp / "manifest.json").write_text("{}")
    """
    target = Path(target)
    check_replaceable(target, marker)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_siblings(target)
        tmp = _unique_sibling(parent, sibling_prefix(target, "tmp"), os.mkdir)
    except OSError as exc:
        raise ArtifactError(f"cannot write to {parent}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        if target.exists():
            # A free name for the old copy: made, then removed, so the rename below can take it.
            backup = _unique_sibling(parent, sibling_prefix(target, "old"), os.mkdir)
            backup.rmdir()
            target.rename(backup)
            tmp.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique_sibling(path.parent, f".{path.name}.", _create_file)
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_tokenizer(tokenizer_dir: str | os.PathLike, out_dir: Path) -> None:
    src = Path(tokenizer_dir)
    if not (src / "tokenizer.json").exists() and (src / "vocab.txt").exists():
        fast_tokenizer(src, out_dir)  # the runtime reads tokenizer.json only
        return
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copyfile(src / name, out_dir / name)  # the umask's mode, not the source's


def fast_tokenizer(tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Save the tokenizer of a folder that holds only the slow one's files (vocab.txt, tokenizer_config.json) with
    tokenizer.json, converted as training loads it (``AutoTokenizer``, ``use_fast=True``); returns ``out_dir``."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=True).save_pretrained(str(out_dir))
    return Path(out_dir)


def save_artifact(model, out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike, recipe: dict,
                  model_card: str | None = None) -> Path:
    """Save a (kronized) transformers model as a kronedge artifact, atomically.

    Args:
        model: the model; its config carries the Kronecker layout set by ``kronize_``.
        out_dir: destination directory (replaced as a whole if it exists).
        tokenizer_dir: folder with the teacher's tokenizer files.
        recipe: how the model was made (teacher spec, KronConfig, plan totals, metrics).
        model_card: optional README.md text.
    """
    from safetensors.torch import save_file

    from . import __version__
    from .teachers import head_of

    recipe = {"kronedge_version": __version__, "head": head_of(model), **recipe}
    _name_labels(model.config, recipe.get("labels"))
    with atomic_directory(out_dir, RECIPE_FILE) as tmp:
        model.config.save_pretrained(tmp)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "pt", "producer": f"kronedge {__version__}"})
        _as_umask_allows(tmp / WEIGHTS_FILE)  # safetensors writes 0600
        copy_tokenizer(tokenizer_dir, tmp)
        write_json_atomic(tmp / RECIPE_FILE, recipe)
        if model_card:
            (tmp / "README.md").write_text(model_card)
    return Path(out_dir)


def generic_labels(n: int) -> list[str]:
    """The names transformers gives a head nobody named: ``["LABEL_0", "LABEL_1", ...]``."""
    return [f"LABEL_{i}" for i in range(n)]


def head_labels(config: dict) -> list[str]:
    """A saved config.json's ``id2label`` names in logit order ([] when it names none); ValueError when a key is no
    integer."""
    id2label = config.get("id2label") or {}
    try:
        return [str(v) for _, v in sorted((int(k), v) for k, v in id2label.items())]
    except (TypeError, ValueError):
        raise ValueError(f"id2label keys must be integers, got {list(id2label)}") from None


def _name_labels(config, labels) -> None:
    """Give a head transformers named LABEL_0, LABEL_1, ... the recipe's label names, so config.json (and
    whatever reads it: the exporter, a transformers pipeline) answers with the user's labels. Real names
    already in the config are left alone; the exporter reports a conflict between the two."""
    n = getattr(config, "num_labels", 0)
    generic = generic_labels(n)
    current = [str((getattr(config, "id2label", None) or {}).get(i, generic[i])) for i in range(n)]
    if not labels or len(labels) != n or len(set(labels)) != n or current != generic:
        return
    config.id2label = {i: str(name) for i, name in enumerate(labels)}
    config.label2id = {str(name): i for i, name in enumerate(labels)}


def read_recipe(path: str | os.PathLike) -> dict:
    path = Path(path)
    recipe_path = path / RECIPE_FILE
    if not recipe_path.is_file():
        raise ArtifactError(f"{path} is not a kronedge artifact: {RECIPE_FILE} is missing")
    try:
        return json.loads(recipe_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{recipe_path} is corrupt: {exc}") from exc


def load_artifact(path: str | os.PathLike, device: str = "cpu"):
    """Load an artifact written by :func:`save_artifact`; weights come back bit-exact.

    Raises:
        ArtifactError: a file is missing or corrupt (the message names it).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from .surgery import kronize_, layout_config
    from .teachers import _model_class

    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"artifact directory {path} not found")
    recipe = read_recipe(path)
    for name in ("config.json", WEIGHTS_FILE):
        if not (path / name).is_file():
            raise ArtifactError(f"{path} is incomplete: {name} is missing")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path / 'config.json'} is corrupt: {exc}") from exc

    cls = _model_class(recipe.get("head", "sequence-classification"))
    with torch.device("meta"):
        model = cls(config)
    layout = layout_config(config)
    if layout is not None:
        kronize_(model, layout, filter_fn=lambda module, fqn: fqn in layout.layer_shapes, init="random")
    try:
        state = load_file(path / WEIGHTS_FILE, device=device)
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path / WEIGHTS_FILE} is corrupt: {exc}") from exc
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise ArtifactError(f"{path / WEIGHTS_FILE} lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=True, assign=True)
    # Non-persistent buffers (position_ids, token_type_ids) are not in the file; rebuild them.
    for module_name, module in model.named_modules():
        for buffer_name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta:
                module.register_buffer(buffer_name, _rebuild_buffer(buffer_name, buffer, device), persistent=False)
    model.eval()
    return model


def _rebuild_buffer(name: str, meta_buffer, device: str):
    import torch

    if name == "position_ids":
        return torch.arange(meta_buffer.shape[-1], device=device).expand(meta_buffer.shape)
    return torch.zeros(meta_buffer.shape, dtype=meta_buffer.dtype, device=device)
