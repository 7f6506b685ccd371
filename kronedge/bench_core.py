"""Measurement core of ``kronedge bench``: numpy + onnxruntime only, so it also runs inside the emulated
arm64 userland (``python3 kronedge/bench_core.py SPEC.json`` under QEMU) exactly as on the host.

Timing protocol: every model gets its own session; all models are warmed up, then measured runs are
*interleaved* (round r runs model 0, 1, ..., n-1, the next round starts one model later), so slow phases
of a shared, noisy machine hit every model alike and the ratios between models survive.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

MAGIC_START = 0x6B726F6E0001  # same as kronedge.qemu / kronedge/plugins/insncount.c
MAGIC_STOP = 0x6B726F6E0002


def marker(start: bool) -> None:
    """Tell the instruction-count plugin (if any) where the counted region starts/ends."""
    try:
        os.lseek(-1, MAGIC_START if start else MAGIC_STOP, os.SEEK_SET)
    except OSError:
        pass


def make_session(path: str, threads: int, disabled_optimizers=None, profile_prefix=None):
    """An ORT session from the runtime's own factory (what `Predictor` ships), so the benchmark measures
    what a device runs. The runtime is importable wherever this runs: the guest gets the checkout on its path."""
    from runtime.predictor import create_session

    return create_session(path, int(threads), disabled_optimizers=disabled_optimizers or (),
                          profile_prefix=profile_prefix)


def make_inputs(session, batch: int, seq: int, vocab: int = 1000, seed: int = 0) -> dict:
    """Deterministic BERT-style inputs for whatever int64 inputs the graph declares; a float input (the
    GEMM probe's) gets standard normal values of its declared shape, symbolic dims read as ``batch``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        name = inp.name
        if inp.type == "tensor(float)":
            shape = [d if isinstance(d, int) else batch for d in inp.shape]
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
        elif "mask" in name:
            feeds[name] = np.ones((batch, seq), dtype=np.int64)
        elif "type" in name or "segment" in name:
            feeds[name] = np.zeros((batch, seq), dtype=np.int64)
        elif "position" in name:
            feeds[name] = np.tile(np.arange(seq, dtype=np.int64), (batch, 1))
        else:
            ids = rng.integers(5, max(6, min(int(vocab), 30000)), size=(batch, seq), dtype=np.int64)
            ids[:, 0] = min(101, int(vocab) - 1)  # [CLS]-like first token
            feeds[name] = ids
    return feeds


def percentiles(ms) -> dict:
    arr = np.asarray(ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)),
            "p99_ms": float(np.percentile(arr, 99)), "mean_ms": float(arr.mean()),
            "std_ms": float(arr.std()), "min_ms": float(arr.min()), "n": int(arr.size)}


# With more than one ORT thread, sessions alive side by side disturb each other: after a run, the idle workers of
# one session's pool spin and take the cores the next session's run needs. Multi-thread timing therefore keeps one
# session alive at a time and interleaves the models by rounds instead of by runs.
MULTI_THREAD_ROUNDS = 3


def measure(models: list[dict], batch: int, seq: int, threads: int, warmup: int, iters: int,
            disabled_optimizers=None) -> list[dict]:
    """Interleaved timing of several models at one (batch, seq, threads); one dict per model."""
    if threads > 1 and len(models) > 1:
        return _measure_by_rounds(models, batch, seq, threads, warmup, iters, disabled_optimizers)
    sessions, feeds, results = [], [], []
    for m in models:
        t0 = time.perf_counter()
        sess = make_session(m["path"], threads, disabled_optimizers)
        load_ms = (time.perf_counter() - t0) * 1e3
        sessions.append(sess)
        feeds.append(make_inputs(sess, batch, seq, m.get("vocab", 1000)))
        results.append({"name": m["name"], "load_ms": load_ms, "times": []})
    for _ in range(warmup):
        for sess, feed in zip(sessions, feeds, strict=True):
            sess.run(None, feed)
    n = len(sessions)
    for r in range(iters):
        for k in range(n):
            i = (r + k) % n
            t0 = time.perf_counter()
            sessions[i].run(None, feeds[i])
            results[i]["times"].append((time.perf_counter() - t0) * 1e3)
    return _summaries(results, batch)


def _measure_by_rounds(models: list[dict], batch: int, seq: int, threads: int, warmup: int, iters: int,
                       disabled_optimizers=None) -> list[dict]:
    """One session alive at a time (see MULTI_THREAD_ROUNDS); each round gives every model its share of ``iters``."""
    results = [{"name": m["name"], "load_ms": None, "times": []} for m in models]
    rounds = max(1, min(MULTI_THREAD_ROUNDS, iters))
    for r in range(rounds):
        share = iters // rounds + (1 if r < iters % rounds else 0)
        for k in range(len(models)):
            i = (r + k) % len(models)
            t0 = time.perf_counter()
            sess = make_session(models[i]["path"], threads, disabled_optimizers)
            if results[i]["load_ms"] is None:
                results[i]["load_ms"] = (time.perf_counter() - t0) * 1e3
            feed = make_inputs(sess, batch, seq, models[i].get("vocab", 1000))
            for _ in range(warmup):
                sess.run(None, feed)
            for _ in range(share):
                t0 = time.perf_counter()
                sess.run(None, feed)
                results[i]["times"].append((time.perf_counter() - t0) * 1e3)
            del sess
    return _summaries(results, batch)


def _summaries(results: list[dict], batch: int) -> list[dict]:
    out = []
    for res in results:
        stats = percentiles(res["times"])
        stats.update(name=res["name"], load_ms=res["load_ms"],
                     throughput_seq_per_s=batch * 1e3 / stats["mean_ms"] if stats["mean_ms"] > 0 else None)
        out.append(stats)
    return out


def count_one(model: dict, batch: int, seq: int, threads: int, warmup: int = 1) -> dict:
    """One marked inference after ``warmup`` runs (for the instruction-count plugin)."""
    sess = make_session(model["path"], threads)
    feed = make_inputs(sess, batch, seq, model.get("vocab", 1000))
    for _ in range(warmup):
        sess.run(None, feed)
    marker(True)
    outputs = sess.run(None, feed)
    marker(False)
    return {"name": model["name"], "output_checksum": float(np.asarray(outputs[0], dtype=np.float64).sum())}


def _hwm_mb() -> float:
    """Peak resident set of this process (VmHWM). Not ru_maxrss: Linux carries a parent's peak across
    fork+exec into the child's ru_maxrss, so a child of a big process would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss(model: dict, batch: int, seq: int, threads: int) -> dict:
    """Load + two runs in this (fresh) process, then report its peak RSS (interpreter + numpy + ORT included)."""
    base = _hwm_mb()
    sess = make_session(model["path"], threads)
    feed = make_inputs(sess, batch, seq, model.get("vocab", 1000))
    for _ in range(2):
        sess.run(None, feed)
    return {"name": model["name"], "peak_rss_mb": _hwm_mb(), "baseline_rss_mb": base}


def environment() -> dict:
    import platform

    import onnxruntime as ort

    from runtime.hostinfo import cpu_model

    return {"onnxruntime": ort.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu": cpu_model(), "provider": "CPUExecutionProvider",
            "logical_cpus": os.cpu_count()}


def main(argv=None) -> int:
    """``bench_core.py SPEC.json``: SPEC = {"mode": "measure"|"count"|"rss", "models": [...], ...}."""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    mode = spec.get("mode", "measure")
    result = {"environment": environment(), "mode": mode}
    if mode == "measure":
        result["rows"] = []
        for row in spec["rows"]:
            stats = measure(spec["models"], row["batch"], row["seq"], row["threads"], spec["warmup"], spec["iters"],
                            spec.get("disabled_optimizers"))
            result["rows"].append({**row, "models": stats})
    elif mode == "count":
        result.update(count_one(spec["models"][0], spec["batch"], spec["seq"], spec["threads"], spec.get("warmup", 1)))
    elif mode == "rss":
        result.update(peak_rss(spec["models"][0], spec["batch"], spec["seq"], spec["threads"]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    sys.stdout.write("KRONEDGE_RESULT " + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
