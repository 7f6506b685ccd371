"""`kill -9` of `kronedge compress` mid-stage, then `--resume`: the same weights as a run never interrupted.

The compress runs in a real child process (forked from a preloaded interpreter: tests/preloaded.py) on a
tiny saved teacher (dropout on, so the RNG state matters), one thread, fp32, with a checkpoint after every
optimizer step. The test waits until a stage's checkpoint
has passed a few optimizer steps (so optimizer moments, the schedule position and the RNG are all
mid-flight), SIGKILLs the process and reruns the same command with --resume, once in each stage, then
compares every weight of the artifact and the dev metrics with the uninterrupted run.
"""

import json
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from helpers import tiny_bert, tokenizer_dir
from preloaded import KRONEDGE_CLI, Child, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    from kronedge.artifact import copy_tokenizer

    path = tmp_path_factory.mktemp("teacher")
    # Dropout on: a resumed run that did not restore the RNG would drop other units and drift.
    tiny_bert(seed=0, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).save_pretrained(path)
    copy_tokenizer(tokenizer_dir(), path)
    return path


def _command(teacher_dir, workdir, resume=False):
    # stage 1: 128 chunks / 8 = 16 steps; stage 2: 256 examples / 8 = 32 steps an epoch, raised to 3 epochs by
    # --stage2-min-steps, with early stopping on dev (patience 1): the best-epoch bookkeeping crosses the kill too.
    args = ["compress", "--teacher", str(teacher_dir), "--task", "sst2",
            "--compression", "4", "--stage1-examples", "128", "--stage2-examples", "256",
            "--max-length", "32", "--batch-size", "8", "--stage2-min-steps", "96", "--patience", "1", "--precision", "fp32",
            "--threads", "1", "--no-teacher-check", "--checkpoint-every", "0", "--out", str(workdir / "art"),
            "--run-dir", str(workdir / "run"), "--json"]
    return args + (["--resume"] if resume else [])


def _run(args, logs):
    return json.loads(run_cli(*args, logs=logs))


def _saved_step(run_dir, stage):
    try:
        progress = json.loads((run_dir / stage / "checkpoint" / "progress.json").read_text())
    except (OSError, ValueError):  # not written yet, or being replaced right now
        return -1
    return -1 if progress.get("done") else progress["step"]


def _kill_when(args, run_dir, stage, step, logs):
    """Start ``args``; SIGKILL it once ``stage`` has a checkpoint at ``step`` or later; return that step."""
    child = Child(KRONEDGE_CLI, *args, logs=logs)
    deadline = time.monotonic() + 600
    try:
        while (seen := _saved_step(run_dir, stage)) < step:
            assert child.process.is_alive(), f"compress ended before {stage} reached step {step}: make the run longer"
            assert time.monotonic() < deadline, f"{stage} did not reach step {step}"
            time.sleep(0.01)
    finally:
        assert child.kill() == -signal.SIGKILL, child.stderr()[-3000:]
    return seen


@pytest.fixture(scope="module")
def reference(teacher_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    return _run(_command(teacher_dir, workdir), workdir / "logs"), load_file(workdir / "art" / "model.safetensors"), workdir


# One run is killed twice, mid stage 1 and then, after resuming, mid stage 2: each stage resumes from its own
# checkpoint, and a run that was resumed once resumes again.
KILLS = {"stage1": 3, "stage2": 40}


def test_kill_9_in_each_stage_then_resume_ends_at_the_same_weights(teacher_dir, reference, tmp_path):
    report, weights, reference_dir = reference
    for resume, (stage, step) in enumerate(KILLS.items()):
        killed_at = _kill_when(_command(teacher_dir, tmp_path, resume=bool(resume)), tmp_path / "run", stage, step,
                               tmp_path / f"logs-{stage}")
        assert killed_at >= step
        assert not (tmp_path / "art").exists()  # killed mid-stage: no artifact yet

    resumed = _run(_command(teacher_dir, tmp_path, resume=True), tmp_path / "logs")
    assert resumed["student_metrics"] == report["student_metrics"]
    again = load_file(tmp_path / "art" / "model.safetensors")
    assert again.keys() == weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(again[name], tensor), name
    # The artifact holds the best epoch, which may predate the kill: the last state of every stage must match too.
    for name in ("stage1", "stage2"):
        last, expected = (torch.load(d / "run" / name / "checkpoint" / "state.pt", weights_only=False)["modules"]["model"]
                          for d in (tmp_path, reference_dir))
        for key, tensor in expected.items():
            assert torch.equal(last[key], tensor), f"{name} {key}"
    # Each killed stage restarted from its checkpoint, not from scratch, and logged each step once.
    for stage, step in KILLS.items():
        log = [json.loads(line) for line in (tmp_path / "run" / stage / "log.jsonl").read_text().splitlines()]
        steps = [row["step"] for row in log if "loss" in row]
        metrics = json.loads((tmp_path / "run" / stage / "metrics.json").read_text())
        assert steps == sorted(set(steps)) and steps[-1] <= metrics["steps"], stage
        assert metrics["resumed_from"] is not None and metrics["resumed_from"] >= step, stage
