"""The files of a training run directory.

  config.json        the configuration used
  log.jsonl          one JSON object per logged step, per evaluation and per time-budget plan
  metrics.json       final metrics (:class:`TrainResult`, written when the run completes)
  checkpoint/        ``state.pt`` (modules, optimizer, scheduler, RNG) + ``progress.json`` (:class:`Progress`)
  best.pt            weights of the best evaluation so far

The checkpoint is written by one process into a temporary directory that is renamed into place,
so a kill at any moment leaves the previous checkpoint or the new one. Accelerate's ``save_state``
writes its files into the final directory one by one (a kill between two leaves a mixed
checkpoint), hence this small module instead.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..artifact import atomic_directory, write_json_atomic

CHECKPOINT_DIR = "checkpoint"
PROGRESS_FILE = "progress.json"
LOG_FILE = "log.jsonl"


@dataclass
class Progress:
    """Where a run stands: enough to continue it exactly (with the state in ``state.pt``)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # next batch of ``epoch`` this process takes
    total_steps: int | None = None
    best: dict | None = None
    last: dict | None = None
    history: list = field(default_factory=list)
    done: bool = False
    seconds: float = 0.0  # training time over all sessions so far
    examples: int = 0
    stale_evals: int = 0  # evaluations in a row without a better primary metric
    stopped_early: bool = False
    cooling: bool = False  # patience is spent and the schedule now ends after the cool-down epochs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Progress":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    examples_per_s: float
    precision: str
    precision_reason: str
    best_metrics: dict | None
    last_metrics: dict | None
    history: list = field(default_factory=list)
    resumed_from: int | None = None
    planned_steps: int | None = None
    stopped_at_budget: bool = False
    stopped_early: bool = False
    epochs_planned: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class RunLog:
    """``log.jsonl``: one JSON object per line, tagged with the stage; written by rank 0 only."""

    def __init__(self, run_dir: Path, stage: str, enabled: bool = True):
        self.stage = stage
        self.file = open(run_dir / LOG_FILE, "a") if enabled else open(os.devnull, "w")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps({"stage": self.stage, **row}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    @staticmethod
    def forget_after(run_dir: Path, step: int) -> None:
        """Drop rows past ``step``: a process killed after its last checkpoint logged steps that the
        resumed run repeats."""
        path = run_dir / LOG_FILE
        if path.is_file():
            rows = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= step]
            path.write_text("".join(line + "\n" for line in rows))


class RunningLoss:
    """Loss sums between two log lines, kept on the device: a float() per step would make the host
    wait for the GPU every step."""

    def __init__(self):
        self.loss, self.parts, self.n = 0.0, {}, 0

    def add(self, loss: torch.Tensor, parts: dict) -> None:
        self.loss = self.loss + loss.detach()
        self.n += 1
        for k, v in parts.items():
            self.parts[k] = self.parts.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v)

    def means(self) -> dict:
        n = max(1, self.n)
        return {"loss": float(self.loss) / n, **{k: float(v) / n for k, v in self.parts.items()}}


def rng_state() -> dict:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    # map_location may have put the saved generator states on the GPU; the setters want CPU bytes.
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def load_location(device: torch.device):
    # Multi-process CPU runs name their device "cpu:0", which torch.load cannot map to.
    return "cpu" if device.type == "cpu" else device


def save_checkpoint(run_dir: Path, modules: dict, optimizer, scheduler, progress: Progress) -> None:
    with atomic_directory(run_dir / CHECKPOINT_DIR, PROGRESS_FILE) as tmp:
        torch.save({"modules": {k: m.state_dict() for k, m in modules.items()},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_state()}, tmp / "state.pt")
        write_json_atomic(tmp / PROGRESS_FILE, progress.to_dict())


def load_checkpoint(run_dir: Path, modules: dict, optimizer, scheduler, device) -> None:
    """Load the saved state into ``modules`` (unwrapped), ``optimizer`` and ``scheduler``; restore the RNG."""
    state = torch.load(run_dir / CHECKPOINT_DIR / "state.pt", map_location=load_location(device), weights_only=False)
    for k, m in modules.items():
        m.load_state_dict(state["modules"][k])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])


def mark_done(run_dir: Path, progress: Progress) -> None:
    """Record a finished run in its checkpoint, so ``--resume`` reloads it instead of training again."""
    if (run_dir / CHECKPOINT_DIR).exists():
        write_json_atomic(run_dir / CHECKPOINT_DIR / PROGRESS_FILE, progress.to_dict())


def save_best(run_dir: Path, model: torch.nn.Module, metrics: dict) -> None:
    tmp = run_dir / ".best.pt.tmp"
    torch.save({"model": model.state_dict(), "metrics": metrics}, tmp)
    os.replace(tmp, run_dir / "best.pt")


def load_best(run_dir: Path, model: torch.nn.Module, device) -> None:
    state = torch.load(run_dir / "best.pt", map_location=load_location(device), weights_only=False)
    model.load_state_dict(state["model"])


def read_progress(run_dir: str | os.PathLike) -> dict | None:
    """The progress record of a run's checkpoint, or None if there is none."""
    path = Path(run_dir) / CHECKPOINT_DIR / PROGRESS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
