"""Where the time goes: ONNX Runtime's profiler, summed per op type (``kronedge bench --profile``).

The session is the bench's own (runtime session factory, ORT_ENABLE_ALL), so the op types are those of
the graph after ORT's fusions on load, not of the file. Node counts are distinct nodes per op type in
that optimized graph; times are kernel times per inference averaged over the profiled runs, and shares
are of the summed kernel time (the session's own overhead between kernels is not in it: compare
``kernel_ms`` with ``model_run_mean_ms``, both means). Profiled runs are slower than unprofiled ones
and are not interleaved with other models: read shares, not absolute times.
"""

from __future__ import annotations

import collections
import json
import tempfile
from pathlib import Path

from .. import bench_core
from .flops import ATTENTION_OPS, FP_GEMMS, INT8_GEMMS

# Kernels that are GEMMs once ORT has fused the graph (the file's MatMul + Transpose may run as FusedMatMul).
GEMM_KERNELS = frozenset(FP_GEMMS + INT8_GEMMS + ("FusedGemm", "MatMulNBits"))


def _share(ops: list[dict], kinds) -> float:
    return sum(op["share"] or 0 for op in ops if op["op"] in kinds)


def summarize_trace(trace: list[dict], warmup: int) -> dict:
    """Per-op-type totals of an ORT profile trace, skipping the first ``warmup`` runs."""
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    measured = runs[warmup:]
    if not measured:
        raise ValueError(f"the profile holds {len(runs)} runs, none after {warmup} warm-up runs")
    keep_from = measured[0]["ts"]
    per_op: dict[str, float] = collections.defaultdict(float)
    nodes: dict[str, set] = collections.defaultdict(set)
    for e in trace:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < keep_from:
            continue
        op = e.get("args", {}).get("op_name", "?")
        per_op[op] += e["dur"] / 1e3 / len(measured)
        nodes[op].add(e["name"])
    total = sum(per_op.values())
    ops = [{"op": op, "nodes": len(nodes[op]), "ms": ms, "share": ms / total if total else None}
           for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])]
    run_ms = sorted(e["dur"] / 1e3 for e in measured)
    return {"runs": len(measured), "model_run_p50_ms": run_ms[len(run_ms) // 2],
            "model_run_mean_ms": sum(run_ms) / len(run_ms), "kernel_ms": total,
            "nodes": sum(op["nodes"] for op in ops), "gemm_share": _share(ops, GEMM_KERNELS),
            "attention_share": _share(ops, ATTENTION_OPS), "ops": ops}


def profile_model(path: str, vocab: int, batch: int, seq: int, threads: int, runs: int = 10, warmup: int = 3,
                  disabled_optimizers=()) -> dict:
    """Profile ``runs`` inferences of one model after ``warmup`` (all in the one profiled session: a warm-up
    in another session would not warm this one) and summarise them per op type."""
    with tempfile.TemporaryDirectory(prefix="kronedge-profile-") as tmp:
        sess = bench_core.make_session(path, threads, disabled_optimizers, profile_prefix=str(Path(tmp) / "prof"))
        feed = bench_core.make_inputs(sess, batch, seq, vocab)
        for _ in range(warmup + runs):
            sess.run(None, feed)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    return summarize_trace(trace, warmup)
