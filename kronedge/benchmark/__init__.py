"""``kronedge bench``: latency, throughput, memory, size and compute floor of exported models, side by side.

Protocol (onnxruntime's benchmark_helper, made robust to a shared machine):
  * every model gets its own ONNX Runtime session from the runtime's session factory;
  * warm-up runs, then measured runs *interleaved* across models (see :mod:`kronedge.bench_core`);
  * p50/p90/p99, mean and throughput per (model, batch, sequence length, threads);
  * peak RSS of a fresh process that loads the model and runs it (one per model and shape);
  * every row says where it ran: ORT version, provider, threads, batch, sequence length, CPU;
  * the first model is the baseline: every other row carries ratios to it (speedup = baseline p50 / p50),
    and a pairwise speedup matrix is kept in the JSON, so any pair can be read off;
  * each row's compute floor (GEMM FLOPs of its graph / this CPU's measured large-GEMM rate, see
    :mod:`.floor`) and the fraction of it achieved; ``profile=True`` adds ORT's per-op-type breakdown.

``target="arm64"`` runs the same measurement in the emulated arm64 userland (:mod:`kronedge.qemu`) under
``-cpu cortex-a53|a72|a76``: those wall times are *emulated* (hundreds of times slower than a Pi, and
not proportional to it) and labelled so. With ``instructions=True`` each model's single inference
after a warm-up is counted by the TCG plugin (1 thread, fixed environment): a deterministic ARM cost.

Modules, one job each: ``config`` (options), ``describe`` (what a model is), ``flops`` (GEMM FLOPs from
the graph), ``floor`` (GEMM probe and compute floor), ``profile`` (ORT profiler per op type),
``drivers`` (host subprocess and QEMU guest), ``run`` (one bench run), ``report`` (ratios, Markdown,
terminal table), ``plotting``.

Example:
    >>> report = run_bench(["runs/dense-fp32", "runs/kb21-int8"], seqs=[128], batches=[1], threads=[1])
    >>> report["rows"][1]["speedup_vs_baseline"], report["rows"][1]["floor_fraction"]
"""

from __future__ import annotations

import importlib

# Public name -> submodule. Loaded on first use so that `kronedge --help` (which reads BenchConfig for the
# bench options) does not import numpy and onnxruntime.
_EXPORTS = {"BenchConfig": "config", "BenchError": "config", "ModelInfo": "describe", "describe_model": "describe",
            "GemmFlops": "flops", "count_gemm_flops": "flops", "plot": "plotting", "print_table": "report",
            "to_markdown": "report", "SCHEMA": "run", "Bench": "run", "run_bench": "run"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
