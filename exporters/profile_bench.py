"""Measure the export profiles (attention core fusion, SkipLayerNorm fusion) on one model, 1 thread.

    python -m exporters.profile_bench runs/export/kb21 --seq 128 --rounds 5

Exports MODEL once, builds the fp32 and dynamic-int8 graph of every profile, then times them
interleaved (round-robin, so drift on a shared VM hits all variants alike) with ORT's default
session (ORT_ENABLE_ALL) and with SkipLayerNormFusion disabled. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from runtime.hostinfo import cpu_model
from runtime.predictor import create_session


def main(argv=None) -> None:
    import onnx
    import onnxruntime as ort

    from . import passes
    from .export import load_source, torch_to_onnx
    from .quantize import QuantPreset, quantize
    from .validate import random_inputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-ln", default="on,off", help="SkipLayerNorm fusion variants to time")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profiles", default="none,portable,ort",
                        help="comma list; PROFILE-RULE drops one rule, e.g. portable-KronTranspose")
    parser.add_argument("--op-profile", action="store_true",
                        help="also print ORT profiler time per op type (fp32, SkipLayerNorm fusion on)")
    args = parser.parse_args(argv)

    model, _, _ = load_source(args.model)
    cfg = model.config
    heads, head_size = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    feeds = random_inputs(args.batch, args.seq, cfg.vocab_size)
    feeds["attention_mask"][:] = 1
    variants = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = onnx.load(torch_to_onnx(model, tmp / "raw.onnx"))
        for profile in args.profiles.split(","):
            base, *off = profile.split("-")  # "portable-KronTranspose": portable without that rule
            graph, counts = passes.optimize(raw, base, heads, head_size, disable=tuple(off) or passes.DISABLED_BY_DEFAULT)
            fp32 = tmp / f"{profile}.fp32.onnx"
            onnx.save(graph, fp32)
            int8 = quantize(fp32, tmp / f"{profile}.int8.onnx", QuantPreset.x86_64(vnni=True))
            for precision, path in (("fp32", fp32), ("int8", int8)):
                for skip_ln in [x == "on" for x in args.skip_ln.split(",")]:
                    disabled = [] if skip_ln else ["SkipLayerNormFusion"]
                    session = create_session(path, args.threads, disabled_optimizers=disabled)
                    name = (profile, precision, "on" if skip_ln else "off")
                    variants[name] = {"session": session, "times": [], "counts": counts,
                                      "mb": path.stat().st_size / 1e6}
        op_tables = {}
        if args.op_profile:
            for profile in args.profiles.split(","):
                op_tables[profile] = _op_profile(tmp / f"{profile}.fp32.onnx", feeds, args.threads, tmp)
        for v in variants.values():  # warm up
            for _ in range(3):
                v["session"].run(["logits"], feeds)
        for _ in range(args.rounds):
            for v in variants.values():
                for _ in range(args.iters):
                    start = time.perf_counter()
                    v["session"].run(["logits"], feeds)
                    v["times"].append((time.perf_counter() - start) * 1e3)

    print(f"model {args.model}: batch {args.batch}, seq {args.seq}, {args.threads} thread(s), "
          f"{args.rounds}x{args.iters} interleaved runs per row")
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, CPU {cpu_model()}, "
          f"provider CPUExecutionProvider, graph_optimization_level ORT_ENABLE_ALL\n")
    print("| profile | attention core | precision | SkipLayerNorm fusion | min ms | p50 ms | p90 ms | file MB |")
    print("|---|---|---|---|---|---|---|---|")
    core = {"none": "unfused MatMul/Softmax", "portable": "ai.onnx Attention (opset 23)",
            "ort": "com.microsoft MultiHeadAttention"}
    for (profile, precision, skip_ln), v in variants.items():
        t = sorted(v["times"])
        p90 = t[int(0.9 * (len(t) - 1))]
        print(f"| {profile} | {core.get(profile.split('-')[0], profile)} | {precision} | {skip_ln} | {t[0]:.2f} | "
              f"{statistics.median(t):.2f} | {p90:.2f} | {v['mb']:.1f} |")
    for profile, table in op_tables.items():
        total = sum(table.values())
        print(f"\nORT profiler, {profile} fp32 (mean ms per run by op type, total {total:.2f} ms):")
        print(", ".join(f"{op} {ms:.2f}" for op, ms in sorted(table.items(), key=lambda kv: -kv[1]) if ms >= 0.05))


def _op_profile(path, feeds, threads: int, tmp: Path, runs: int = 20) -> dict[str, float]:
    """Mean time per run spent in each op type, from ORT's built-in profiler."""
    import json

    session = create_session(path, threads, profile_prefix=str(tmp / f"prof-{Path(path).stem}"))
    for _ in range(3 + runs):
        session.run(["logits"], feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    kernel = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    for event in kernel[-runs * (len(kernel) // (runs + 3)):]:  # skip the warm-up runs
        op = event["args"].get("op_name", "?")
        per_op[op] = per_op.get(op, 0.0) + event["dur"] / 1e3 / runs
    return per_op


if __name__ == "__main__":
    main()
