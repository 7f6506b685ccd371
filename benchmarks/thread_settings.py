"""Why are 2 ORT threads slower than 1 on the Kronecker graphs? Interleaved timing of session variants.

Each variant is (model, intra-op threads, allow_spinning, affinity); all sessions are created up front,
warmed up, then run round-robin (round r starts one variant later), like ``kronedge bench``.

    nice -n 5 python benchmarks/thread_settings.py benchmarks/work/models/kb21-int8 \
        benchmarks/work/models/dense-int8 --iters 30 --json runs/speed/threads.json

``--separate ROUNDS`` runs each (model, variant) alone in its own process instead (one session per process, as a
server worker has it), ROUNDS times in turn.

Affinity variants: ``pin`` = ORT's ``session.intra_op_thread_affinities`` ("1" for the single worker
of a 2-thread pool: main thread on CPU 0 by ``os.sched_setaffinity``, worker on CPU 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from kronedge.bench_core import environment, make_inputs, percentiles  # noqa: E402


def session(path: str, threads: int, spinning: bool, pin: bool):
    from runtime.predictor import create_session

    entries = {}
    if pin and threads > 1:
        # one entry per worker thread (threads - 1); logical processors are 1-based in ORT's syntax
        entries["session.intra_op_thread_affinities"] = ";".join(str(i + 2) for i in range(threads - 1))
    return create_session(Path(path) / "model.onnx", threads, allow_spinning=spinning, config_entries=entries)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--variants", default="1:spin,2:spin,2:nospin,2:spin:pin,2:nospin:pin",
                    help="comma list of threads[:spin|nospin][:pin]")
    ap.add_argument("--json")
    ap.add_argument("--separate", type=int, default=0, metavar="ROUNDS",
                    help="run every (model, variant) alone in its own process instead, ROUNDS times in turn: one "
                         "session per process, as a server worker runs it (in one process the idle workers of the "
                         "other sessions' pools spin and take the second core)")
    args = ap.parse_args()
    if args.separate:
        return separate(args)
    variants = []
    for text in args.variants.split(","):
        parts = text.split(":")
        variants.append((int(parts[0]), "nospin" not in parts, "pin" in parts, text))
    runs = []
    for model in args.models:
        for threads, spin, pin, label in variants:
            sess = session(model, threads, spin, pin)
            runs.append({"name": f"{Path(model).name} {label}", "sess": sess,
                         "feed": make_inputs(sess, args.batch, args.seq), "times": []})
    load0 = os.getloadavg()
    for _ in range(args.warmup):
        for r in runs:
            r["sess"].run(None, r["feed"])
    n = len(runs)
    for i in range(args.iters):
        for k in range(n):
            r = runs[(i + k) % n]
            t0 = time.perf_counter()
            r["sess"].run(None, r["feed"])
            r["times"].append((time.perf_counter() - t0) * 1e3)
    load1 = os.getloadavg()
    out = {"environment": environment(), "load_start": load0, "load_end": load1, "seq": args.seq,
           "batch": args.batch, "iters": args.iters, "rows": []}
    print(f"load {load0} -> {load1}")
    for r in runs:
        stats = percentiles(r["times"])
        out["rows"].append({"name": r["name"], **stats})
        print(f"{r['name']:40s} p50 {stats['p50_ms']:8.2f}  min {stats['min_ms']:8.2f}  p90 {stats['p90_ms']:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def separate(args) -> int:
    import subprocess

    p50s: dict[str, list[float]] = {}
    load0 = os.getloadavg()
    for _ in range(args.separate):
        for model in args.models:
            for variant in args.variants.split(","):
                cmd = [sys.executable, __file__, model, "--variants", variant, "--iters", str(args.iters),
                       "--warmup", str(args.warmup), "--seq", str(args.seq), "--batch", str(args.batch)]
                words = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1].split()
                p50s.setdefault(f"{Path(model).name} {variant}", []).append(float(words[words.index("p50") + 1]))
    out = {"environment": environment(), "load_start": load0, "load_end": os.getloadavg(), "seq": args.seq,
           "batch": args.batch, "iters": args.iters, "rounds": args.separate,
           "rows": [{"name": name, "p50_ms_per_round": values, "median_p50_ms": sorted(values)[len(values) // 2]}
                    for name, values in p50s.items()]}
    for row in out["rows"]:
        print(f"{row['name']:40s} p50 per round {' '.join(f'{v:.2f}' for v in row['p50_ms_per_round'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
