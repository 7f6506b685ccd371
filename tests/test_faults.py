"""Faults the writers must survive, and the modes of what they write.

- Output directories (artifacts, exports) get the user's umask like any other file: a model exported for
  the container must be readable by its non-root user, and a private one (umask 077) must stay private.
- A SIGKILL while `kronedge export` or `save_artifact` is writing leaves the target path absent or holding
  the previous complete output, never a partial directory. The kill is real (SIGKILL of a child process, no
  cleanup runs; tests/preloaded.py); a hook stops the child at a known point mid-write so the test is deterministic.
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from preloaded import KRONEDGE_CLI, Child

MAX_LENGTH = 32
CHILD_TIMEOUT_S = 300  # imports torch and exports: seconds, unless the machine is very busy


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory) -> Path:
    """A tiny BERT classifier saved as a kronedge artifact (the input of `kronedge export`)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from kronedge.artifact import save_artifact
    from kronedge.teachers import minilm_dir

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    return save_artifact(model, tmp_path_factory.mktemp("faults") / "tiny", minilm_dir(),
                         {"teacher": "tiny", "kron_config": None})


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_export_and_artifact_follow_umask(tiny_artifact, tmp_path, umask, mask):
    from exporters.export import export_model
    from kronedge.artifact import load_artifact, save_artifact
    from kronedge.teachers import minilm_dir

    umask(mask)
    out = export_model(tiny_artifact, tmp_path / "export", quantize="int8", max_length=MAX_LENGTH)
    art = save_artifact(load_artifact(tiny_artifact), tmp_path / "artifact", minilm_dir(), {"teacher": "tiny"})

    teacher_files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in minilm_dir().iterdir()}
    for root in (out, art):
        modes = _modes(root)
        assert len(modes) > 3, modes
        for name, mode in modes.items():
            is_dir = (tmp_path / name).is_dir()
            expected = (0o777 if is_dir else 0o666) & ~mask
            # The exporter copies some tokenizer files with their source's mode (copy2): allowed, since
            # the directory's own mode decides who can reach them.
            if root == out and Path(name).name in teacher_files and mode == teacher_files[Path(name).name]:
                continue
            assert mode == expected, f"{name}: mode {oct(mode)}, umask {oct(mask)} gives {oct(expected)}"
        top = modes[root.name]
        if mask == 0o022:
            assert all(mode & stat.S_IROTH for mode in modes.values()), "world-readable under umask 022"
        else:
            assert not top & (stat.S_IRWXG | stat.S_IRWXO), f"{root.name} is {oct(top)} under umask 077"


def resave(source: str, target: str) -> None:
    """The child's job in the artifact-save test: load an artifact and save it again at ``target``."""
    from kronedge.artifact import load_artifact, save_artifact
    from kronedge.teachers import minilm_dir

    save_artifact(load_artifact(source), target, minilm_dir(), {"teacher": "tiny"})


def _kill_mid_write(hook: str, call: str, *args: str, logs: Path) -> None:
    """Run ``call(*args)`` in a real child process, SIGKILL it when it is about to call ``hook``.

    The target's temporary sibling is then half written; the hook is a module attribute looked up at call time.
    """
    child = Child(call, *args, logs=logs, stop_before=hook)
    try:
        if not child.wait_stopped(CHILD_TIMEOUT_S):
            pytest.fail(f"the child never reached {hook}: {child.stderr()[-2000:]}")
    finally:
        assert child.kill() == -signal.SIGKILL, f"the child ended before the kill: {child.stderr()[-2000:]}"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# Kill points: after model.onnx and the tokenizer are in the temporary directory but before the golden
# logits and the manifest; and after the weights are written but before the tokenizer and recipe.
EXPORT_HOOK = "exporters.export._write_golden"
SAVE_HOOK = "kronedge.artifact.copy_tokenizer"


@pytest.mark.slow
@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over-old"])
def test_sigkill_during_kronedge_export_leaves_no_partial_directory(tiny_artifact, tmp_path, previous):
    from exporters.export import export_model

    target = tmp_path / "export"
    before = None
    if previous:
        export_model(tiny_artifact, target, quantize="none", max_length=MAX_LENGTH)
        before = _snapshot(target)
    _kill_mid_write(EXPORT_HOOK, KRONEDGE_CLI, "export", str(tiny_artifact), "--out", str(target), "--quantize", "int8",
                    "--max-length", str(MAX_LENGTH), logs=tmp_path / "logs")

    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".export.tmp-")]
    assert leftovers, "the kill came before the export started writing: the test proves nothing"
    assert any((tmp_path / name / "model.onnx").is_file() for name in leftovers), "killed mid-write"
    if previous:
        assert _snapshot(target) == before, "the previous complete export was changed"
    else:
        assert not target.exists(), f"partial export at the target: {sorted(os.listdir(target))}"
    assert any(p.name.startswith(".export.work-") for p in tmp_path.iterdir()), "the killed export's work directory"
    # The leftovers do not block the next export, which sweeps them (their writer's PID is gone).
    export_model(tiny_artifact, target, quantize="int8", max_length=MAX_LENGTH)
    assert (target / "manifest.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".export.")], "stale siblings left behind"


@pytest.mark.slow
@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over-old"])
def test_sigkill_during_artifact_save_leaves_no_partial_directory(tiny_artifact, tmp_path, previous):
    from kronedge.artifact import RECIPE_FILE, WEIGHTS_FILE, load_artifact, save_artifact
    from kronedge.teachers import minilm_dir

    target = tmp_path / "artifact"
    before = None
    if previous:
        save_artifact(load_artifact(tiny_artifact), target, minilm_dir(), {"teacher": "old"})
        before = _snapshot(target)
    _kill_mid_write(SAVE_HOOK, "test_faults:resave", str(tiny_artifact), str(target), logs=tmp_path / "logs")

    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".artifact.tmp-")]
    assert leftovers and (leftovers[0] / WEIGHTS_FILE).is_file(), "killed after the weights were written"
    assert not (leftovers[0] / RECIPE_FILE).exists()
    if previous:
        assert _snapshot(target) == before, "the previous complete artifact was changed"
    else:
        assert not target.exists(), f"partial artifact at the target: {sorted(os.listdir(target))}"
