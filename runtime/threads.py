"""ORT's intra-op thread count for one model on this machine, chosen by timing it.

Whether a second thread helps depends on the model and on the CPU: kb21 int8 at seq 128 is about 1.4x faster at 2
threads on an AVX2 EPYC and about 20% slower on an AVX-512 Xeon, where ORT hands each of its per-token axis swaps to
the pool (benchmarks/results/speed_avx2.md, speed_xeon.md). No rule written in advance gets both right, so
``threads="auto"`` measures: one session per candidate count, timed interleaved on the same input, and the fewest
threads within ``MARGIN`` of the fastest win (a gain inside the noise does not take a core).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Mapping

AUTO = "auto"
MARGIN = 0.05
WARMUP = 2
# Timed runs per candidate: as many as fit in BUDGET_S for the slowest one, within [MIN_RUNS, MAX_RUNS]. A fast
# model gets many (its medians are noisy on a shared machine), a dense BERT_BASE few (start-up stays short).
BUDGET_S, MIN_RUNS, MAX_RUNS = 1.0, 10, 40


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def candidate_threads(workers: int = 1, cores: int | None = None) -> list[int]:
    """1, 2 and 4, up to the cores each of ``workers`` parallel model runs can have."""
    share = max(1, (usable_cores() if cores is None else cores) // max(1, workers))
    return [t for t in (1, 2, 4) if t <= share]  # past 4 a BERT at batch 1 has little left to split


@dataclass(frozen=True)
class ThreadTrial:
    """What ``threads="auto"`` measured: the p50 wall time of one run per candidate count, and the choice."""

    threads: int
    p50_ms: dict[int, float]
    runs: int

    def to_dict(self) -> dict:
        return {"threads": self.threads, "p50_ms": {str(t): round(ms, 3) for t, ms in self.p50_ms.items()},
                "runs": self.runs}


def fastest(sessions: Mapping[int, object], run: Callable[[object], object], runs: int | None = None,
            warmup: int = WARMUP, margin: float = MARGIN, clock: Callable[[], float] = time.perf_counter) -> ThreadTrial:
    """Time ``run(session)`` for every ``{threads: session}``, the candidates interleaved run by run so that a busy
    moment of the machine hits them alike, and return the fewest threads whose median wall time is within
    ``margin`` of the fastest. Wall time, not CPU time: the work of the other threads is the point.

    Args:
        runs: timed runs per candidate (default: what fits in ``BUDGET_S`` at the slowest warm-up run, within
            ``MIN_RUNS``..``MAX_RUNS``).
    """
    if not sessions:
        raise ValueError("no thread counts to choose from")
    if len(sessions) == 1:
        return ThreadTrial(next(iter(sessions)), {}, 0)
    slowest = 0.0
    for session in sessions.values():
        for _ in range(warmup):
            start = clock()
            run(session)
            slowest = max(slowest, clock() - start)
    if runs is None:
        runs = MAX_RUNS if slowest <= 0 else int(min(MAX_RUNS, max(MIN_RUNS, BUDGET_S / slowest)))
    times: dict[int, list[float]] = {t: [] for t in sessions}
    for _ in range(runs):
        for threads, session in sessions.items():
            start = clock()
            run(session)
            times[threads].append(clock() - start)
    p50 = {t: 1e3 * sorted(ts)[len(ts) // 2] for t, ts in times.items()}
    best = min(p50.values())
    chosen = min(t for t, ms in p50.items() if ms <= best * (1 + margin))
    return ThreadTrial(chosen, p50, runs)
