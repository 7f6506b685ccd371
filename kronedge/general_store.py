"""Where general students live and which one fits: cache location, teacher fingerprint, key, lookup and checks.

:mod:`kronedge.general` makes a general student; this module finds, identifies and vets one, so that
``compress --general-student DIR|auto`` never starts from a student of another teacher or structure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import KronedgeError
from .training.config import result_settings, settings_key

if TYPE_CHECKING:
    from .general import GeneralConfig

logger = logging.getLogger(__name__)

# Bump when a change to this stage changes what a cached general student holds (2: calibration fits the word
# embeddings unweighted).
GENERAL_VERSION = 2
RECIPE_KEY = "general_student"  # the key of a general student's own record in its kronedge.json
AUTO = "auto"
# What must agree between a general student and a compress run that starts from it (the student's shape).
STRUCTURE_FIELDS = ("compression", "preset", "rank", "embedding_k", "structure", "allocation", "embedding_share",
                    "layers")
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size")


class GeneralStudentError(KronedgeError, ValueError):
    """A general student that does not fit the compress run (teacher, shape or structure), or no general student."""


def cache_root() -> Path:
    """``$KRONEDGE_CACHE/general``, else ``$XDG_CACHE_HOME/kronedge/general`` (``~/.cache/kronedge/general``)."""
    if os.environ.get("KRONEDGE_CACHE"):
        return Path(os.environ["KRONEDGE_CACHE"]) / "general"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kronedge" / "general"


def base_teacher(spec: str) -> str:
    """The pre-trained model a teacher was fine-tuned from (its ``finetune.json``), or the spec itself."""
    seen = set()
    while spec not in seen:
        seen.add(spec)
        info = Path(spec) / "finetune.json"
        if not info.is_file():
            return spec
        try:
            spec = str(json.loads(info.read_text())["teacher"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise GeneralStudentError(f"{info} is corrupt ({exc}); cannot tell which model this teacher was "
                                      "fine-tuned from") from None
    return spec


_FINGERPRINTS: dict[tuple, str] = {}


def _file_hash(path: Path) -> str:
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _FINGERPRINTS[memo] = digest.hexdigest()[:16]
    return _FINGERPRINTS[memo]


def teacher_fingerprint(spec: str) -> str:
    """What identifies a pre-trained teacher's weights: the hash of its weights file; for ``random:`` the
    spec and its config (the weights are seeded); for a hub id the id."""
    if spec.startswith("random:"):
        from .teachers import BUILTIN_CONFIGS

        name = spec.removeprefix("random:")
        config = BUILTIN_CONFIGS.get(name)
        if config is None and Path(name).is_file():
            config = json.loads(Path(name).read_text())
        return "random-" + settings_key({"spec": name if config is None else None, "config": config, "seed": 0})
    if spec == "builtin:minilm":
        from .teachers import minilm_dir

        directory = minilm_dir()
    else:
        directory = Path(spec)
    if directory.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (directory / name).is_file():
                return "weights-" + _file_hash(directory / name)
    return "spec-" + settings_key({"spec": spec})


def teacher_shape(spec: str) -> dict:
    """The BERT shape fields of a teacher, read on the meta device (no weights loaded)."""
    from .teachers import load_teacher

    config = load_teacher(spec, head="base", meta=True).model.config
    return {name: getattr(config, name) for name in SHAPE_FIELDS}


def general_key(config: GeneralConfig, fingerprint: str, corpus: str) -> str:
    """The hash of everything that changes a general student (observation-only settings aside)."""
    settings = {"version": GENERAL_VERSION, "teacher": fingerprint, "corpus": corpus,
                **{k: v for k, v in result_settings(config).items() if k not in ("teacher", "corpus", "examples")},
                "train": config.train_config().result_settings()}
    return settings_key(settings)


def general_record(path: Path, requested: str | None) -> dict:
    """What a compress artifact records of the general student in ``path`` that it started from
    (``requested``: what the user asked for, a directory or ``auto``)."""
    info = read_general(path)
    kept = ("key", "teacher", "teacher_fingerprint", "corpus", "texts", "steps", "seconds")
    return {"path": str(Path(path).resolve()), **{k: info[k] for k in kept}, "requested": requested}


def read_general(path: str | os.PathLike) -> dict | None:
    """The record of a finished general student in ``path`` (None when there is none)."""
    from .artifact import read_recipe

    path = Path(path)
    if not (path / "kronedge.json").is_file():
        return None
    return read_recipe(path).get(RECIPE_KEY)


def find_general(config, teacher_fp: str | None = None, root: str | os.PathLike | None = None) -> Path | None:
    """The newest finished general student in ``root`` (default: the cache) for a compress config's base
    teacher and structure; None when there is none."""
    root = Path(root or cache_root())
    if not root.is_dir():
        return None
    from .general import GeneralConfig

    wanted = GeneralConfig.for_compress(config).structure_dict()
    teacher_fp = teacher_fp or teacher_fingerprint(base_teacher(config.teacher))
    found = []
    for recipe in root.glob("*/kronedge.json"):
        try:
            info = read_general(recipe.parent)
        except KronedgeError:
            continue  # a corrupt entry is not a match
        if info and info.get("teacher_fingerprint") == teacher_fp and info.get("structure") == wanted \
                and info.get("version") == GENERAL_VERSION:
            found.append((info.get("finished", ""), recipe.parent))
    return max(found)[1] if found else None


def resolve_general(config, root: str | os.PathLike | None = None) -> Path | None:
    """The general student a compress run starts from, checked against its teacher and structure.

    ``config.general_student`` is a directory, or ``auto`` (the cached one for this teacher and
    structure; None when there is none). Raises :class:`GeneralStudentError`, before any training, when
    the student was distilled from another teacher, another shape or another structure.
    """
    wanted = config.general_student
    if not wanted:
        return None
    teacher = base_teacher(config.teacher)
    if wanted == AUTO:
        path = find_general(config, teacher_fingerprint(teacher), root)
        if path is None:
            logger.info(f"[compress] no cached general student for {teacher} and this structure in "
                        f"{Path(root or cache_root())}: running stage 1 (make one with `kronedge distill-general`)")
        return path
    path = Path(wanted)
    if not path.is_dir():
        raise GeneralStudentError(f"general student {path} not found; make one with `kronedge distill-general`")
    info = read_general(path)
    if info is None:
        raise GeneralStudentError(f"{path} is not a general student (made by `kronedge distill-general`)")
    check_general(info, config, teacher, path)
    return path


def check_general(info: dict, config, teacher: str, path: Path) -> None:
    """One error naming every way a general student does not fit a compress run."""
    problems = []
    if info.get("version") != GENERAL_VERSION:
        problems.append(f"it was made by general-student format {info.get('version')}, this kronedge reads "
                        f"{GENERAL_VERSION}")
    if info.get("teacher_fingerprint") != teacher_fingerprint(teacher):
        problems.append(f"it was distilled from {info.get('teacher')}, this run's teacher is {teacher}"
                        + ("" if teacher == config.teacher else f" (the base of {config.teacher})"))
    shape = teacher_shape(config.teacher)
    recorded = info.get("teacher_shape") or {}
    differ = [f"{k} {recorded.get(k)} vs {v}" for k, v in shape.items() if recorded.get(k) != v]
    if differ:
        problems.append("the teachers' shapes differ (" + ", ".join(differ) + ")")
    from .general import GeneralConfig

    wanted = GeneralConfig.for_compress(config, teacher).structure_dict()
    got = info.get("structure") or {}
    differ = [f"{k} {got.get(k)} vs {v}" for k, v in wanted.items() if got.get(k) != v]
    if differ:
        problems.append("the structures differ (general student vs this run: " + ", ".join(differ) + ")")
    if problems:
        raise GeneralStudentError(f"--general-student {path} does not fit: " + "; ".join(problems)
                                  + ". Make a matching one with `kronedge distill-general` and the same "
                                  "--teacher/--compression/--structure options")
