"""Is an ORT fusion faster than the ops it replaces? One fused node vs the same graph with the fusion disabled.

    python benchmarks/fusion_micro.py [--rows 128] [--hidden 768] [--iters 300]

Graphs (batch 1, ``rows`` tokens): bias Add + residual Add + LayerNormalization (SkipLayerNormFusion on/off)
and bias Add + Gelu on a 4x wider activation (BiasGeluFusion on/off). Runs alternate between the variants;
the time is the calling thread's CPU time (``time.thread_time``) of one ``session.run`` at 1 ORT thread,
which a busy machine inflates far less than wall time. Prints the median and the fused op types.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.predictor import create_session  # noqa: E402


def _graph(kind: str, hidden: int) -> bytes:
    width = hidden if kind == "skip" else 4 * hidden
    dims = ["batch", "sequence", width]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, dims), h.make_tensor_value_info("r", T.FLOAT, dims)]
    inits = [numpy_helper.from_array(np.full(width, 0.1, np.float32), "bias"),
             numpy_helper.from_array(np.ones(width, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(width, np.float32), "beta")]
    if kind == "skip":
        nodes = [h.make_node("Add", ["x", "bias"], ["xb"]), h.make_node("Add", ["xb", "r"], ["s"]),
                 h.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    else:
        nodes = [h.make_node("Add", ["x", "bias"], ["xb"]), h.make_node("Gelu", ["xb"], ["g"]),
                 h.make_node("Add", ["g", "r"], ["y"])]
    graph = h.make_graph(nodes, kind, inputs, [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 20)]).SerializeToString()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--iters", type=int, default=300)
    args = parser.parse_args()
    for kind, fusion in (("skip", "SkipLayerNormFusion"), ("gelu", "BiasGeluFusion")):
        model = _graph(kind, args.hidden)
        width = args.hidden if kind == "skip" else 4 * args.hidden
        rng = np.random.default_rng(0)
        feeds = {name: rng.standard_normal((1, args.rows, width)).astype(np.float32) for name in ("x", "r")}
        sessions = {}
        for label, disabled in (("fused", ()), ("unfused", (fusion,))):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "opt.onnx")
                sessions[label] = create_session(model, threads=1, disabled_optimizers=disabled, optimized_model_path=out)
                ops = [n.op_type for n in onnx.load(out).graph.node]
            print(f"{kind} {label}: {ops}")
        times = {label: [] for label in sessions}
        for session in sessions.values():
            for _ in range(20):
                session.run(None, feeds)
        for _ in range(args.iters):
            for label, session in sessions.items():
                t0 = time.thread_time()
                session.run(None, feeds)
                times[label].append((time.thread_time() - t0) * 1e3)
        for label, values in times.items():
            print(f"{kind} {label}: median {np.median(values):.3f} ms, min {np.min(values):.3f} ms (thread CPU time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
