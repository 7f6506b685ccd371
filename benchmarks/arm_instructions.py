"""Executed ARM instructions of one inference under emulated Pi CPUs, each measured twice (repeatability).

    python benchmarks/arm_instructions.py [--cpus cortex-a72,cortex-a76] [--seq 128] MODEL_DIR...

Uses ``kronedge.benchmark.run_bench(target="arm64", instructions=True)``: the insncount TCG plugin counts the
guest instructions of the thread that runs one inference (after one warm-up run), ORT at 1 thread, fixed
environment and address layout. Writes benchmarks/results/arm_instructions.json and .md. Emulated wall
times are recorded too and labelled emulated: they are not Pi speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KRONEDGE_QEMU_CACHE", str(ROOT / "device_tests" / ".cache"))  # the checkout's userland

from kronedge.benchmark import run_bench  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--names", default=None, help="comma-separated labels")
    parser.add_argument("--cpus", default="cortex-a72,cortex-a76")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "arm_instructions"))
    args = parser.parse_args()
    names = args.names.split(",") if args.names else None
    cpus = args.cpus.split(",")
    runs: dict[str, list[dict]] = {}
    qemu = None
    for cpu in cpus:
        for rep in range(args.repeats):
            t0 = time.time()
            print(f"[{time.strftime('%H:%M:%S')}] {cpu} run {rep + 1}", flush=True)
            report = run_bench(args.models, seqs=[args.seq], batches=[1], threads=[1], warmup=0, iters=1,
                               target="arm64", cpu=cpu, instructions=True, names=names,
                               log=lambda m: print("  " + m, flush=True))
            qemu = report["machine"]["qemu"]
            runs.setdefault(cpu, []).append({"wall_s": time.time() - t0, "rows": report["rows"],
                                             "environment": report["environment"]})
    table = []
    for cpu, reps in runs.items():
        for i, row in enumerate(reps[0]["rows"]):
            counts = [rep["rows"][i]["instructions"] for rep in reps]
            table.append({
                "cpu": cpu, "model": row["model"], "file_mb": row["file_mb"], "params": row["params"],
                "instructions": counts, "max_rel_diff": (max(counts) - min(counts)) / min(counts),
                "ratio_to_first_model": counts[0] / reps[0]["rows"][0]["instructions"],
                "emulated_p50_ms": [rep["rows"][i]["p50_ms"] for rep in reps],
            })
    result = {
        "what": "guest instructions executed by the inference thread for ONE inference (batch 1, seq "
                f"{args.seq}, 1 ORT thread) after one warm-up run; insncount TCG plugin; QEMU {qemu} user mode",
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python " + " ".join(sys.argv),
        "qemu": qemu, "guest_environment": runs[cpus[0]][0]["environment"],
        "models": args.models, "table": table,
        "note": "emulated_p50_ms are EMULATED wall times on the x86 host under QEMU TCG, not Raspberry Pi speed",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Executed ARM instructions per inference (emulated Raspberry Pi CPUs)", "",
             f"Command: `{result['command']}`", "",
             f"- {result['what']}", f"- guest: onnxruntime {result['guest_environment']['onnxruntime']}, "
             f"numpy {result['guest_environment']['numpy']}, Python {result['guest_environment']['python']} "
             f"(Debian bookworm arm64 userland)", f"- created {result['created_utc']}",
             "- the last column is EMULATED wall time (QEMU TCG on x86): it is not Pi speed", "",
             "| CPU (Pi) | model | file MB | instructions run 1 | run 2 | max rel. diff | vs first model | emulated ms, 1 cold run |",
             "|---|---|---|---|---|---|---|---|"]
    pis = {"cortex-a53": "Pi 3", "cortex-a72": "Pi 4", "cortex-a76": "Pi 5"}
    for t in table:
        c = t["instructions"]
        lines.append(f"| {t['cpu']} ({pis.get(t['cpu'], '?')}) | {t['model']} | {t['file_mb']:.2f} | {c[0]:,} | "
                     f"{f'{c[1]:,}' if len(c) > 1 else '—'} | {t['max_rel_diff']:.2e} | {t['ratio_to_first_model']:.4f} | "
                     f"{t['emulated_p50_ms'][0]:.0f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
