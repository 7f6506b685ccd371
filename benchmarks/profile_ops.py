"""Where the time goes: ONNX Runtime's profiler, summed per op type, for several exported models.

    python benchmarks/profile_ops.py [--seq 128] [--threads 1] [--runs 20] NAME=MODEL_DIR ...

Each model runs with the runtime's session options (ORT_ENABLE_ALL: the profile shows the graph after
ORT's fusions), 3 warm-up runs, then RUNS profiled runs; per op type: ms per inference and share of the
node time. Writes benchmarks/results/profile_ops.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kronedge import bench_core  # noqa: E402
from kronedge.benchmark import describe_model  # noqa: E402


def profile(path: str, vocab: int, seq: int, threads: int, runs: int, warmup: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up in an unprofiled session would not warm the profiled one: profile everything, drop warm-up.
        sess = bench_core.make_session(path, threads, profile_prefix=os.path.join(tmp, "prof"))
        feed = bench_core.make_inputs(sess, 1, seq, vocab)
        for _ in range(warmup + runs):
            sess.run(None, feed)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    runs_seen = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    keep_from = runs_seen[warmup]["ts"] if len(runs_seen) > warmup else 0
    per_op: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.Counter()
    for e in trace:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < keep_from:
            continue
        op = e.get("args", {}).get("op_name", "?")
        per_op[op] += e["dur"] / 1e3 / runs
        counts[op] += 1
    model_ms = sorted(e["dur"] / 1e3 for e in runs_seen[warmup:])
    total = sum(per_op.values())
    ops = sorted(({"op": k, "ms": v, "share": v / total, "nodes": counts[k] // runs} for k, v in per_op.items()),
                 key=lambda d: -d["ms"])
    return {"model_run_p50_ms": model_ms[len(model_ms) // 2] if model_ms else None, "node_ms": total, "ops": ops}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="NAME=MODEL_DIR")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "profile_ops.json"))
    args = parser.parse_args()
    result = {"seq": args.seq, "batch": 1, "threads": args.threads, "runs": args.runs,
              "command": "python " + " ".join(sys.argv), "environment": bench_core.environment(), "models": {}}
    for item in args.models:
        name, path = item.split("=", 1)
        info = describe_model(path, seq=args.seq)
        print(f"profiling {name}", file=sys.stderr, flush=True)
        result["models"][name] = {"path": info.path, **profile(info.path, info.vocab, args.seq, args.threads, args.runs)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, res in result["models"].items():
        print(f"\n### {name}: {res['model_run_p50_ms']:.1f} ms per run (p50), node time {res['node_ms']:.1f} ms\n")
        print("| op type | nodes | ms / inference | share |\n|---|---|---|---|")
        for op in res["ops"][:12]:
            print(f"| {op['op']} | {op['nodes']} | {op['ms']:.2f} | {100 * op['share']:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
