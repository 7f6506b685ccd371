"""The settings of one training stage, and the errors a user can fix in them."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields

from ..errors import KronedgeError, seed_problem


class TrainingError(KronedgeError, ValueError):
    """A training setting, option combination or training outcome the user can fix; the message says how."""


def free_field(**kw):
    """A config field that changes how a run is observed (logging, checkpoint cadence), never what it
    computes: it stays out of cache keys and recipe comparisons, so changing it reuses a result."""
    return field(metadata={"affects_result": False}, **kw)


def result_settings(config) -> dict:
    """A config dataclass's fields that change what it computes, without unset ones (None).

    Leaving out None values means a field added later with a None default keeps every earlier
    cache key valid, without a special case per field.
    """
    return {f.name: getattr(config, f.name) for f in fields(config)
            if f.metadata.get("affects_result", True) and getattr(config, f.name) is not None}


@dataclass
class TrainConfig:
    """Optimisation settings of one training stage (persisted with a ``version``).

    Args:
        epochs: passes over the training examples (the least; ``min_steps`` may add more).
        batch_size: examples per optimizer step (per device, before accumulation).
        lr: peak learning rate (AdamW), reached after warm-up, then linear decay to 0.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorms).
        warmup_ratio: fraction of the steps spent warming up.
        grad_accum: micro-batches accumulated per optimizer step.
        max_length: tokens per sequence (longer inputs are truncated).
        seed: seeds Python, numpy and torch, and the batch order.
        precision: "auto" (bf16 autocast where the hardware has it, else fp32), "bf16" or "fp32".
        max_grad_norm: gradient clipping (0 disables).
        checkpoint_seconds: write a resumable checkpoint at least this often (and every epoch end).
        log_every: optimizer steps between log lines.
        max_steps: stop after this many optimizer steps (for smoke tests); None runs all epochs.
        time_budget_s: wall-clock seconds this stage may take. After a short calibration the loop
            keeps only as many whole epochs as fit (at least one) and rescales the learning-rate
            schedule to them; past the budget (+10%) it stops, evaluates and keeps the best. The
            epochs actually planned are logged and recorded, so a rerun with ``epochs`` set to
            that number reproduces the schedule. None: no limit.
        min_steps: small data gets more epochs until it reaches this many optimizer steps (at most
            ``max_epochs``); data that already fills ``epochs`` with this many steps is not inflated.
        max_epochs: the most epochs ``min_steps`` may plan (``epochs`` itself is never cut).
        patience: stop after this many evaluations in a row without a better primary metric
            (needs an evaluation function and a primary metric); None never stops early.
        cooldown_epochs: when ``patience`` is spent, train this many more epochs with the learning rate
            decaying to zero (from where the shortened schedule puts it) instead of stopping at once: a
            stop in the middle of a long schedule otherwise keeps weights trained at a high rate. The best
            epoch is still the one kept. None: stop at once.

    Example:
        >>> TrainConfig(epochs=1, lr=5e-5, batch_size=32, min_steps=600, patience=2)
    """

    VERSION = 3  # 2: min_steps, max_epochs, patience; 3: cooldown_epochs

    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_accum: int = 1
    max_length: int = 128
    seed: int = 0
    precision: str = "auto"
    max_grad_norm: float = 1.0
    checkpoint_seconds: float = free_field(default=300.0)
    log_every: int = free_field(default=20)
    max_steps: int | None = None
    time_budget_s: float | None = None
    min_steps: int | None = None
    max_epochs: int = 10
    patience: int | None = None
    cooldown_epochs: int | None = None

    def __post_init__(self):
        if seed_problem(self.seed):
            raise TrainingError(seed_problem(self.seed))
        if self.epochs < 1:
            raise TrainingError(f"epochs must be >= 1, got {self.epochs}; skip the stage instead of training 0 epochs")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise TrainingError("batch_size and grad_accum must be positive integers")
        if not (0 < self.lr < 1):
            raise TrainingError(f"lr {self.lr} is outside (0, 1); typical values are 5e-5 to 1e-3")
        if not (0 <= self.warmup_ratio < 1):
            raise TrainingError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise TrainingError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.max_length < 8:
            raise TrainingError(f"max_length {self.max_length} is too short; use 64 or 128")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise TrainingError(f"weight_decay and max_grad_norm must be >= 0 (max_grad_norm 0: no clipping), got "
                                f"{self.weight_decay} and {self.max_grad_norm}")
        if self.log_every < 1 or self.checkpoint_seconds < 0:
            raise TrainingError(f"log_every must be >= 1 step and checkpoint_seconds >= 0 (0: at every step), got "
                                f"{self.log_every} and {self.checkpoint_seconds}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainingError(f"max_steps must be >= 1 optimizer step or None (all epochs), got {self.max_steps}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise TrainingError(f"time_budget_s must be > 0 seconds, got {self.time_budget_s}")
        if self.min_steps is not None and self.min_steps < 1:
            raise TrainingError(f"min_steps must be a positive step count or None, got {self.min_steps}")
        if self.max_epochs < 1:
            raise TrainingError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.patience is not None and self.patience < 1:
            raise TrainingError(f"patience must be >= 1 evaluation or None (never stop early), got {self.patience}")
        if self.cooldown_epochs is not None and self.cooldown_epochs < 1:
            raise TrainingError(f"cooldown_epochs must be >= 1 epoch or None (stop at once), got {self.cooldown_epochs}")

    def planned_epochs(self, steps_per_epoch: int) -> int:
        """Epochs to run: ``epochs``, raised towards ``min_steps`` optimizer steps (at most ``max_epochs``)."""
        if not self.min_steps:
            return self.epochs
        return max(self.epochs, min(self.max_epochs, math.ceil(self.min_steps / max(1, steps_per_epoch))))

    def to_dict(self) -> dict:
        return {"version": self.VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        values = dict(values)
        version = values.pop("version", 1)
        if version > cls.VERSION:
            raise TrainingError(f"this training config was written by a newer kronedge (version {version} > "
                                f"{cls.VERSION}); upgrade kronedge to read it")
        return cls(**values)

    def result_settings(self) -> dict:
        """The settings that change what training computes (for cache keys; see :func:`result_settings`)."""
        return result_settings(self)


def settings_key(settings: dict) -> str:
    """A short stable hash of JSON-able settings (order-independent)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
