"""What one Kronecker axis swap costs at 1 and at 2 ORT threads, per layout of the same data.

    python benchmarks/transpose_threads.py [--rows 128] [--iters 40]

A Kronecker linear of kb21 swaps the last two axes of its (batch, sequence, p, q) activation (p x q = 384 x 2 or
2 x 48). ORT runs such a swap as one small transpose per token, and with a thread pool each of them is dispatched
to the pool. Each graph chains 48 swaps (24 there and back, so the shape returns) with graph optimisation off (ORT
would cancel the pairs otherwise); the figure is wall time per swap. Layouts:
  last-two   perm (0, 1, 3, 2): what the export emits
  sequence   perm (0, 2, 1, 3): the sequence axis moved instead (one transpose per sequence, not per token)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

PERMS = {"last-two": [0, 1, 3, 2], "sequence": [0, 2, 1, 3]}
SWAPS = 48


def _graph(perm: list[int], p: int, q: int) -> bytes:
    nodes, current = [], "x"
    for i in range(SWAPS):
        nodes.append(h.make_node("Transpose", [current], [f"t{i}"], perm=perm))
        current = f"t{i}"
    nodes.append(h.make_node("Identity", [current], ["y"]))
    graph = h.make_graph(nodes, "swaps", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "sequence", p, q])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]).SerializeToString()


def main() -> int:
    import onnxruntime as ort

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--iters", type=int, default=40)
    args = parser.parse_args()
    for p, q in ((384, 2), (2, 48)):
        x = np.random.default_rng(0).standard_normal((1, args.rows, p, q)).astype(np.float32)
        row = []
        for layout, perm in PERMS.items():
            for threads in (1, 2):
                options = ort.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                session = ort.InferenceSession(_graph(perm, p, q), options, providers=["CPUExecutionProvider"])
                for _ in range(5):
                    session.run(None, {"x": x})
                times = []
                for _ in range(args.iters):
                    start = time.perf_counter()
                    session.run(None, {"x": x})
                    times.append(time.perf_counter() - start)
                row.append(f"{layout} {threads}t {np.median(times) / SWAPS * 1e6:.1f} us")
        print(f"(1, {args.rows}, {p}, {q}): " + ", ".join(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
