"""The options of one ``kronedge bench`` run: one definition of their defaults and help (the CLI reads
both from here), checked before any model is loaded."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Optional

from ..errors import KronedgeError

TARGETS = ("host", "arm64")
ARM_CPUS = ("cortex-a53", "cortex-a72", "cortex-a76")


class BenchError(KronedgeError, ValueError):
    """A bench option or input the user can fix; the CLI prints it as one line."""


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclasses.dataclass
class BenchConfig:
    """What to measure and how. Every row of a report is one (model, threads, batch, seq)."""

    seqs: tuple[int, ...] = _opt((128,), "Sequence lengths, comma-separated, e.g. 32,128.")
    batches: tuple[int, ...] = _opt((1,), "Batch sizes, comma-separated, e.g. 1,8.")
    threads: tuple[int, ...] = _opt((1,), "ORT intra-op threads, comma-separated, e.g. 1,2 (1 is the most stable "
                                          "on a shared box).")
    warmup: int = _opt(3, "Warm-up runs per model before measuring.")
    iters: int = _opt(20, "Measured runs per model (interleaved across models).")
    target: str = _opt("host", "host (this machine) or arm64 (emulated under QEMU user mode; wall times are "
                               "EMULATED).")
    cpu: Optional[str] = _opt(None, "With --target arm64: cortex-a53 (Pi 3), cortex-a72 (Pi 4, default) or "
                                    "cortex-a76 (Pi 5).")
    instructions: bool = _opt(False, "With --target arm64: count guest instructions of one inference per model "
                                     "(TCG plugin; needs qemu-user and gcc).")
    rss: bool = _opt(True, "Measure peak RSS in a fresh process per model and shape (host only).")
    disabled_optimizers: tuple[str, ...] = _opt((), "ORT optimizer to skip, e.g. SkipLayerNormFusion (repeatable). "
                                                    "None given: the runtime's default (runtime.predictor."
                                                    "DEFAULT_DISABLED_OPTIMIZERS, what a Predictor runs); 'none': "
                                                    "run every fusion. ONNX Runtime ignores a name it does "
                                                    "not know, silently: spell it as in its sources.")
    floor: bool = _opt(True, "Report each model's compute floor (GEMM FLOPs / this CPU's GEMM rate, measured with "
                             "a large-GEMM probe, fp32 and int8, interleaved) and the fraction of it achieved "
                             "(host only).")
    probe_size: int = _opt(1024, "N of the N x N x N GEMM probe behind the compute floor.")
    profile: bool = _opt(False, "Also profile each model with ORT's profiler: per op type, share of kernel time "
                                "and node count (host only).")
    profile_runs: int = _opt(10, "Profiled runs per model and shape, after the warm-up.")

    def __post_init__(self):
        for name, flag in (("seqs", "seq"), ("batches", "batch"), ("threads", "threads")):
            values = tuple(getattr(self, name))
            if not values or any(int(v) < 1 for v in values):
                raise BenchError(f"--{flag} needs positive integers, got {list(values)}")
            setattr(self, name, tuple(int(v) for v in values))
        # Measure what the runtime ships: an empty list means the Predictor's default, "none" means skip nothing.
        from runtime.predictor import DEFAULT_DISABLED_OPTIMIZERS

        joined = [name for name in self.disabled_optimizers if not name or any(c in name for c in ",; \t")]
        if joined:
            raise BenchError(f"--disable-optimizer takes one optimizer name per flag, got {joined[0]!r}: ONNX Runtime "
                             "would take it as one unknown name and disable nothing; repeat the flag instead")
        disabled = tuple(self.disabled_optimizers) or DEFAULT_DISABLED_OPTIMIZERS
        self.disabled_optimizers = () if disabled == ("none",) else disabled
        if self.target not in TARGETS:
            raise BenchError(f"target must be 'host' or 'arm64', got {self.target!r}")
        if self.target == "host" and (self.cpu or self.instructions):
            raise BenchError("--cpu and --instructions need --target arm64")
        if self.target == "arm64":
            self.cpu = self.cpu or "cortex-a72"
            if self.cpu not in ARM_CPUS:
                raise BenchError(f"--cpu must be one of {', '.join(ARM_CPUS)}, got {self.cpu!r}")
            if self.profile:
                raise BenchError("--profile runs on the host only: ORT's profile of an emulated run is not the "
                                 "device's")
            # Emulated wall times say nothing about a Pi's GEMM rate: no floor there.
            self.floor = False
            self.rss = False
        if self.iters < 1 or self.warmup < 0:
            raise BenchError("iters must be >= 1 and warmup >= 0")
        if self.probe_size < 16:
            raise BenchError(f"--probe-size must be >= 16, got {self.probe_size}")
        if self.profile_runs < 1:
            raise BenchError(f"--profile-runs must be >= 1, got {self.profile_runs}")

    @property
    def emulated(self) -> bool:
        return self.target == "arm64"

    def grid(self) -> list[dict]:
        return [{"threads": t, "batch": b, "seq": s} for t in self.threads for b in self.batches for s in self.seqs]

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


def help_of(name: str) -> str:
    """The help text of one BenchConfig field (the CLI's option help)."""
    return next(f.metadata["help"] for f in dataclasses.fields(BenchConfig) if f.name == name)


def default_of(name: str):
    return next(f.default for f in dataclasses.fields(BenchConfig) if f.name == name)
