"""What BERT_BASE's attention core costs in each form ONNX Runtime can run it, at 1 thread.

    python benchmarks/attention_forms.py [--seq 32,128] [--runs 60]

Every Kronecker student keeps its teacher's 12 heads of 64 at width 768, so this core (QK^T, the mask, softmax, the
product with V) is the same work in kb21 as in the dense model. Forms, each one graph over the same inputs
(batch 1, an additive float mask as the export feeds it):
  onnx-attention  the standard Attention op (opset 23) with 3-D Q/K/V: what the portable export emits
  unfused         Reshape/Transpose, MatMul, Mul, Add, Softmax, MatMul: what the attention passes replace
  contrib-mha     com.microsoft MultiHeadAttention: what the `ort` profile emits
The figure is the median thread CPU time of one core per run, times 12 layers; the runs are interleaved.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.hostinfo import provenance  # noqa: E402

HEADS, HEAD_SIZE, LAYERS = 12, 64, 12
WIDTH = HEADS * HEAD_SIZE


def _model(nodes, initializers, opset: int, seq: int) -> bytes:
    inputs = [h.make_tensor_value_info(n, T.FLOAT, [1, seq, WIDTH]) for n in "qkv"]
    inputs.append(h.make_tensor_value_info("mask", T.FLOAT, [1, 1, 1, seq]))
    graph = h.make_graph(nodes, "core", inputs, [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=initializers)
    opsets = [h.make_opsetid("", opset), h.make_opsetid("com.microsoft", 1)]
    return h.make_model(graph, opset_imports=opsets).SerializeToString()


def _ints(name: str, values) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def forms(seq: int) -> dict[str, bytes]:
    scale = 1 / np.sqrt(HEAD_SIZE)
    attention = _model([h.make_node("Expand", ["mask", "square"], ["full_mask"]),
                        h.make_node("Attention", ["q", "k", "v", "full_mask"], ["y"], q_num_heads=HEADS,
                                    kv_num_heads=HEADS, scale=float(scale))],
                       [_ints("square", [1, HEADS, seq, seq])], 23, seq)
    unfused = _model([
        h.make_node("Reshape", ["q", "heads"], ["q4"]), h.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
        h.make_node("Reshape", ["k", "heads"], ["k4"]), h.make_node("Transpose", ["k4"], ["kh"], perm=[0, 2, 3, 1]),
        h.make_node("Reshape", ["v", "heads"], ["v4"]), h.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
        h.make_node("MatMul", ["qh", "kh"], ["scores"]), h.make_node("Mul", ["scores", "scale"], ["scaled"]),
        h.make_node("Add", ["scaled", "mask"], ["masked"]), h.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        h.make_node("MatMul", ["probs", "vh"], ["context"]),
        h.make_node("Transpose", ["context"], ["merged"], perm=[0, 2, 1, 3]),
        h.make_node("Reshape", ["merged", "width"], ["y"])],
        [_ints("heads", [0, 0, HEADS, HEAD_SIZE]), _ints("width", [0, 0, WIDTH]),
         onnx.numpy_helper.from_array(np.array(scale, np.float32), "scale")], 18, seq)
    # MultiHeadAttention takes a key-padding mask (1 = keep) instead of the additive one; all ones here, as the
    # additive mask is all zeros.
    mha = _model([h.make_node("Reshape", ["mask", "flat"], ["mask2"]),
                  h.make_node("Greater", ["mask2", "minus_one"], ["keep"]),
                  h.make_node("Cast", ["keep"], ["keep32"], to=T.INT32),
                  h.make_node("MultiHeadAttention", ["q", "k", "v", "", "keep32"], ["y"], domain="com.microsoft",
                              num_heads=HEADS)],
                 [_ints("flat", [1, seq]), onnx.numpy_helper.from_array(np.array(-1, np.float32), "minus_one")], 18, seq)
    return {"onnx-attention": attention, "unfused": unfused, "contrib-mha": mha}


def main() -> int:
    import onnxruntime as ort

    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", default="32,128")
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    print("\n".join(provenance(sys.argv, ("onnxruntime", "onnx", "numpy"))))
    print(f"1 thread, batch 1, median thread CPU time of {args.runs} interleaved runs")
    for seq in (int(s) for s in args.seq.split(",")):
        rng = np.random.default_rng(0)
        feeds = {n: rng.standard_normal((1, seq, WIDTH), dtype=np.float32) for n in "qkv"}
        feeds["mask"] = np.zeros((1, 1, 1, seq), np.float32)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        sessions = {name: ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
                    for name, model in forms(seq).items()}
        reference = sessions["unfused"].run(None, feeds)[0]
        times = {name: [] for name in sessions}
        for i in range(args.runs + 5):
            for name, session in sessions.items():
                start = time.thread_time()
                out = session.run(None, feeds)[0]
                if i >= 5:
                    times[name].append(time.thread_time() - start)
                if i == 0 and not np.allclose(out, reference, atol=1e-4):
                    raise SystemExit(f"{name} differs from the unfused core by {np.abs(out - reference).max():.2e}")
        for name, t in times.items():
            print(f"seq {seq:4d}  {name:15s} {np.median(t) * 1e3:7.3f} ms per layer, {np.median(t) * LAYERS * 1e3:7.2f} "
                  f"ms for {LAYERS} layers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
