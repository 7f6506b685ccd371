"""Where the time goes: ONNX Runtime's profiler, summed per op type, for several exported models.

    python benchmarks/profile_ops.py [--seq 128] [--threads 1] [--runs 20] NAME=MODEL_DIR ...

The same profile as ``kronedge bench --profile`` (kronedge.benchmark.profile): the runtime's session
options (ORT_ENABLE_ALL: the graph after ORT's fusions), 3 warm-up runs, then RUNS profiled runs; per op
type: distinct nodes, ms per inference and share of the kernel time. Writes
benchmarks/results/profile_ops.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kronedge import bench_core  # noqa: E402
from kronedge.benchmark import describe_model  # noqa: E402
from kronedge.benchmark.profile import profile_model  # noqa: E402


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
        result["models"][name] = {"path": info.path,
                                  **profile_model(info.path, info.vocab, 1, args.seq, args.threads, args.runs)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, res in result["models"].items():
        print(f"\n### {name}: {res['model_run_p50_ms']:.1f} ms per run (p50), kernel time {res['kernel_ms']:.1f} ms\n")
        print("| op type | nodes | ms / inference | share |\n|---|---|---|---|")
        for op in res["ops"][:12]:
            print(f"| {op['op']} | {op['nodes']} | {op['ms']:.2f} | {100 * op['share']:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
