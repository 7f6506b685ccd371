"""Where one encoder layer of an exported Kronecker model spends its time, and what GELU costs in each ORT form.

    python benchmarks/layer_costs.py MODEL_DIR [--layer 0] [--runs 300]

1. chains: the layer cut into five subgraphs at the export's tensor names (Q/K/V linears, attention core, output
   linear + residual + LayerNorm, FFN up + GELU, FFN down + residual + LayerNorm), each run alone.
2. GELU forms on (1, T, 3072): the export's Add + Gelu(tanh) with ORT's fusion on and off, contrib FastGelu with
   and without its bias input, and the Tanh op alone (the floor of a tanh GELU).
3. the exported GELU at 16 to 256 tokens: its cost per value.

Every figure is the median thread CPU time of one session run (1 ORT thread, the runtime's session options),
interleaved within each part. The tensor names are those of kronedge's BERT export; another exporter's names are
one error. The forms of the small factor's product are ``benchmarks/small_factor_forms.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.hostinfo import provenance  # noqa: E402
from runtime.predictor import DEFAULT_DISABLED_OPTIMIZERS, create_session  # noqa: E402


def chains(layer: int, previous: str) -> dict[str, tuple[list[str], list[str]]]:
    """Subgraph (inputs, outputs) by tensor name; ``previous`` is the layer's input (the last LayerNorm's output)."""
    p = f"/model/bert/encoder/layer.{layer}/"
    q, k, v = (p + "attention/self/query/Add_output_0", p + "attention/self/key/Reshape_2_output_0",
               p + "attention/self/value/Reshape_2_output_0")
    context, attended = p + "attention/self/Reshape_3_output_0", p + "attention/output/LayerNorm/LayerNormalization_output_0"
    gelu = p + "intermediate/intermediate_act_fn/Gelu_output_0"
    return {
        "Q/K/V linears": ([previous], [q, k, v]),
        "attention core": ([q, k, v, "/model/bert/Mul_output_0"], [context]),
        "output linear + residual + LayerNorm": ([context, previous], [attended]),
        "FFN up + GELU": ([attended], [gelu]),
        "FFN down + residual + LayerNorm": ([gelu, attended], [p + "output/LayerNorm/LayerNormalization_output_0"]),
    }


def _feeds(session, seq: int, rng) -> dict:
    feeds = {}
    for i in session.get_inputs():
        shape = [1 if d == "batch" else seq if isinstance(d, str) or d is None else d for d in i.shape]
        feeds[i.name] = (np.zeros(shape, np.float32) if i.name.endswith("Mul_output_0")  # the additive mask
                         else rng.standard_normal(shape).astype(np.float32))
    return feeds


def interleaved(sessions: dict, feeds: dict, runs: int) -> dict[str, float]:
    """Median thread CPU time (ms) of each session, the runs interleaved."""
    times = {name: [] for name in sessions}
    for i in range(runs + 10):
        for name, session in sessions.items():
            start = time.thread_time()
            session.run(None, feeds[name])
            if i >= 10:
                times[name].append(time.thread_time() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def _model(nodes, initializers: dict, shape, ms: bool = False) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, shape)],
                         [h.make_tensor_value_info("y", T.FLOAT, None)],
                         [nh.from_array(np.asarray(v), k) for k, v in initializers.items()])
    opsets = [h.make_opsetid("", 21)] + ([h.make_opsetid("com.microsoft", 1)] if ms else [])
    return h.make_model(graph, opset_imports=opsets)


def gelu_forms(width: int, rng) -> dict[str, tuple[onnx.ModelProto, tuple]]:
    bias = (rng.standard_normal(width) * 0.1).astype(np.float32)
    shape = ["batch", "sequence", width]
    exported = _model([h.make_node("Add", ["x", "b"], ["xb"]), h.make_node("Gelu", ["xb"], ["y"], approximate="tanh")],
                      {"b": bias}, shape)
    unfused = tuple(DEFAULT_DISABLED_OPTIMIZERS) + ("BiasGeluFusion", "GeluFusion", "FastGeluFusion")
    return {
        "Add + Gelu(tanh), fused (exported)": (exported, DEFAULT_DISABLED_OPTIMIZERS),
        "Add + Gelu(tanh), fusions off": (exported, unfused),
        "FastGelu(x, bias)": (_model([h.make_node("FastGelu", ["x", "b"], ["y"], domain="com.microsoft")],
                                     {"b": bias}, shape, ms=True), DEFAULT_DISABLED_OPTIMIZERS),
        "FastGelu(x), no bias": (_model([h.make_node("FastGelu", ["x"], ["y"], domain="com.microsoft")], {}, shape,
                                        ms=True), DEFAULT_DISABLED_OPTIMIZERS),
        "Tanh alone": (_model([h.make_node("Tanh", ["x"], ["y"])], {}, shape), DEFAULT_DISABLED_OPTIMIZERS),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--layer", type=int, default=0)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    print("\n".join(provenance(sys.argv, ("onnxruntime", "onnx", "numpy"))))
    rng = np.random.default_rng(0)
    source = args.model_dir / "model.onnx"
    produced = {o for node in onnx.load(source, load_external_data=False).graph.node for o in node.output}
    previous = ("/model/bert/embeddings/LayerNorm/LayerNormalization_output_0" if args.layer == 0 else
                f"/model/bert/encoder/layer.{args.layer - 1}/output/LayerNorm/LayerNormalization_output_0")
    with tempfile.TemporaryDirectory() as work:
        sessions, feeds = {}, {}
        for name, (inputs, outputs) in chains(args.layer, previous).items():
            missing = [t for t in inputs + outputs if t not in produced]
            if missing:
                raise SystemExit(f"{source} has no tensor {missing[0]}: not a kronedge BERT export of this layout")
            path = f"{work}/{len(sessions)}.onnx"
            onnx.utils.extract_model(str(source), path, inputs, outputs, check_model=False)
            sessions[name] = create_session(path, threads=1)
            feeds[name] = _feeds(sessions[name], args.seq, rng)
        costs = interleaved(sessions, feeds, args.runs)
        print(f"\n## 1. one encoder layer (layer {args.layer}), seq {args.seq}\n\n| chain | ms |\n|---|---|")
        print("\n".join(f"| {name} | {ms:.3f} |" for name, ms in costs.items()))
        print(f"| sum | {sum(costs.values()):.3f} |")

        print(f"\n## 2. GELU on (1, {args.seq}, 3072)\n\n| form | ms |\n|---|---|")
        x = rng.standard_normal((1, args.seq, 3072)).astype(np.float32)
        sessions = {name: create_session(model.SerializeToString(), threads=1, disabled_optimizers=disabled)
                    for name, (model, disabled) in gelu_forms(3072, rng).items()}
        costs = interleaved(sessions, {name: {"x": x} for name in sessions}, args.runs)
        print("\n".join(f"| {name} | {ms:.4f} |" for name, ms in costs.items()))

        print("\n## 3. the exported GELU by tokens (flat ns per value: compute-bound, not cache-bound)\n\n"
              "| tokens | ms | ns per value |\n|---|---|---|")
        exported = sessions["Add + Gelu(tanh), fused (exported)"]
        tokens = (16, 32, 64, 128, 256)
        xs = {t: rng.standard_normal((1, t, 3072)).astype(np.float32) for t in tokens}
        costs = interleaved({t: exported for t in tokens}, {t: {"x": xs[t]} for t in tokens}, args.runs)
        print("\n".join(f"| {t} | {ms:.4f} | {ms * 1e6 / (t * 3072):.3f} |" for t, ms in costs.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
