"""Elementwise fusions and copy-free layouts on Kronecker graphs (issue #15, items 2, 3 and 5).

Structure is checked where it is decided: in the graph ONNX Runtime actually runs (the session's optimised
graph, saved with ``optimized_model_filepath``), not only in the file. Numbers are checked against the
graph before the rules. No timing is asserted here; the measurements are in
benchmarks/results/speed_fusions.md.
"""

import json
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import helpers
from exporters import passes
from exporters.export import torch_to_onnx
from exporters.validate import random_inputs
from runtime.predictor import DEFAULT_DISABLED_OPTIMIZERS, Predictor, create_session

TINY = helpers.TINY_FIELDS
LAYERS = TINY["num_hidden_layers"]
HEADS = TINY["num_attention_heads"]
HEAD_SIZE = TINY["hidden_size"] // HEADS
# per layer: the attention and the FFN residual LayerNorm; plus the embedding LayerNorm
LAYER_NORMS = 2 * LAYERS + 1


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def session_graph(model, tmp_path, disabled=DEFAULT_DISABLED_OPTIMIZERS) -> onnx.ModelProto:
    """The graph ORT runs for ``model`` (a path or a ModelProto), after its session optimizers."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    out = tmp_path / "session_optimized.onnx"
    create_session(source, threads=1, optimized_model_path=out, disabled_optimizers=disabled)
    return onnx.load(out)


def session_ops(model, tmp_path, disabled=DEFAULT_DISABLED_OPTIMIZERS) -> Counter:
    """Op types of the graph ORT runs for ``model``."""
    return op_counts(session_graph(model, tmp_path, disabled))


def trans_a_matmuls(model, tmp_path, disabled=DEFAULT_DISABLED_OPTIMIZERS) -> int:
    """FusedMatMul nodes with transA=1 (an axis swap folded into the product) in the graph ORT runs."""
    return sum(any(a.name == "transA" and a.i == 1 for a in n.attribute)
               for n in session_graph(model, tmp_path, disabled).graph.node if n.op_type == "FusedMatMul")


@pytest.fixture(scope="module")
def raw_kron(tmp_path_factory):
    """The untrained tiny kronized BERT as the TorchScript exporter writes it (before any rule)."""
    path = tmp_path_factory.mktemp("fusion") / "raw.onnx"
    return onnx.load(torch_to_onnx(helpers.tiny_bert(kronecker=True), path))


@pytest.fixture(scope="module")
def raw_kron_swaps(tmp_path_factory):
    """The tiny kronized BERT with attention's small factor second (Table 1's order for kb21's attention): axis
    swaps that no rule removes, for the tests of what the runtime does with them."""
    from kronedge.kron_shape import KronShape
    from kronedge.planner import KronConfig
    from kronedge.surgery import kronize_

    model = helpers.tiny_bert()
    shapes = {"attention": KronShape(12, 24, 4, 2), "ffn_up": KronShape(4, 2, 24, 24), "ffn_down": KronShape(2, 4, 24, 24)}
    kronize_(model, KronConfig(compression=7, embedding_k=8, role_shapes=shapes))
    return onnx.load(torch_to_onnx(model, tmp_path_factory.mktemp("swaps") / "raw.onnx"))


def _same_logits(a: onnx.ModelProto, b: onnx.ModelProto, atol=1e-5):
    sa, sb = (create_session(m.SerializeToString(), threads=1) for m in (a, b))
    for batch, seq in [(1, 7), (3, 19), (2, 33)]:  # none of them the export shape
        feeds = random_inputs(batch, seq, TINY["vocab_size"], seed=3)
        np.testing.assert_allclose(sa.run(None, feeds)[0], sb.run(None, feeds)[0], atol=atol, rtol=0)


def test_portable_graph_gets_ort_fusions_on_load(raw_kron, tmp_path):
    graph, counts = passes.optimize(raw_kron, "portable", HEADS, HEAD_SIZE, expect_attention=LAYERS)
    # every Kronecker linear and the word embedding keep (batch, sequence); position ids follow input_ids
    assert counts["KronRank4"] == 6 * LAYERS + 1 and counts["PositionIds"] == 1
    assert counts["KronUnitSwap"] == 0  # rank-1 paper shapes: their swaps move data (KronTranspose's case)
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)
    # the shape arithmetic that restored (B, S) per linear is gone (left: the attention mask's expand)
    assert op_counts(graph)["Shape"] <= 2 * LAYERS
    with_all = session_ops(graph, tmp_path, disabled=())
    assert with_all["SkipLayerNormalization"] == LAYER_NORMS and with_all["LayerNormalization"] == 0
    assert with_all["BiasGelu"] == LAYERS and with_all["Gelu"] == 0
    assert with_all["Transpose"] == 0  # fp32: every remaining swap folds into FusedMatMul
    default = session_ops(graph, tmp_path)  # the runtime's default skips the slower SkipLayerNorm kernel
    assert default["SkipLayerNormalization"] == 0 and default["LayerNormalization"] == LAYER_NORMS
    assert default["BiasGelu"] == LAYERS
    # without the rules, ORT fuses neither (the dims it compares are unnamed)
    before, _ = passes.optimize(raw_kron, "portable", HEADS, HEAD_SIZE, disable=("KronRank4", "PositionIds"))
    plain = session_ops(before, tmp_path, disabled=())
    assert plain["SkipLayerNormalization"] == 0 and plain["BiasGelu"] == 0
    _same_logits(graph, before)


def test_ort_profile_writes_fused_ops(raw_kron, tmp_path):
    graph, counts = passes.optimize(raw_kron, "ort", HEADS, HEAD_SIZE, expect_attention=LAYERS)
    ops = op_counts(graph)
    assert counts["BiasGelu"] == LAYERS and ops["BiasGelu"] == LAYERS and ops["Gelu"] == 0
    assert "SkipLayerNorm" not in counts and ops["SkipLayerNormalization"] == 0  # off by default (slower here)
    fused, counts = passes.optimize(raw_kron, "ort", HEADS, HEAD_SIZE, disable=())
    # the residual Adds of both sublayers; the embedding sum has no constant bias, ORT fuses that one on load
    assert counts["SkipLayerNorm"] == 2 * LAYERS and op_counts(fused)["SkipLayerNormalization"] == 2 * LAYERS
    assert all(n.domain == "com.microsoft" for n in fused.graph.node if n.op_type in ("BiasGelu", "SkipLayerNormalization"))
    portable, _ = passes.optimize(raw_kron, "portable", HEADS, HEAD_SIZE)
    _same_logits(graph, portable)
    _same_logits(fused, portable)


@pytest.mark.parametrize("swaps", [False, True])
def test_int8_session_graph(raw_kron, raw_kron_swaps, tmp_path, swaps):
    from exporters.quantize import QuantPreset, quantize

    graph, _ = passes.optimize(raw_kron_swaps if swaps else raw_kron, "portable", HEADS, HEAD_SIZE)
    onnx.save(graph, tmp_path / "fp32.onnx")
    quantize(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", QuantPreset.arm64())
    ops = session_ops(tmp_path / "int8.onnx", tmp_path)
    assert ops["BiasGelu"] == LAYERS and ops["LayerNormalization"] == LAYER_NORMS
    in_file = op_counts(onnx.load(tmp_path / "int8.onnx"))["Transpose"]
    if not swaps:  # the tiny planner's shapes (A 1x2 ⊗ B 48x24): the rules leave no axis swap at all
        assert in_file == ops["Transpose"] == 0
        return
    # int8 keeps the swaps in front of quantized products (MatMulInteger has no transA), and the runtime's
    # default also keeps those in front of fp32 small-factor products (MatmulTransposeFusion off).
    assert ops["Transpose"] == in_file > 0 and trans_a_matmuls(tmp_path / "int8.onnx", tmp_path) == 0
    folded = session_ops(tmp_path / "int8.onnx", tmp_path, disabled=("SkipLayerNormFusion",))
    assert folded["Transpose"] < in_file  # ORT's fusion would fold the fp32 ones
    assert trans_a_matmuls(tmp_path / "int8.onnx", tmp_path, disabled=("SkipLayerNormFusion",)) > 0
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"] > 0


def test_default_session_keeps_the_axis_swap_out_of_matmul(raw_kron_swaps, tmp_path):
    """MatMul(transA) over (B, S, p, q) runs one tiny GEMM per token; the runtime keeps the Transpose instead,
    so that the product is one GEMM over all tokens (benchmarks/results/speed_folds.md)."""
    graph, _ = passes.optimize(raw_kron_swaps, "portable", HEADS, HEAD_SIZE)
    in_file = op_counts(graph)["Transpose"]
    default = session_ops(graph, tmp_path)
    assert in_file > 0 and default["Transpose"] == in_file and trans_a_matmuls(graph, tmp_path) == 0
    fused = session_ops(graph, tmp_path, disabled=("SkipLayerNormFusion",))
    # ORT's fusion folds every one (a swap shared by Q, K and V into each of the three products)
    assert fused["Transpose"] == 0 and trans_a_matmuls(graph, tmp_path, disabled=("SkipLayerNormFusion",)) >= in_file


# --- KronRank4 on a hand-written chain ---------------------------------------------------------------

def _kron_chain(shared_middle: bool = False) -> onnx.ModelProto:
    """x (B, S, 6) -> Reshape [-1, 2, 3] -> Transpose -> MatMul(W 2x4) -> Transpose -> MatMul(V 3x5)
    -> Reshape Concat(Shape(x)[0], Shape(x)[1], [20]) -> y (B, S, 20), as KroneckerLinear exports."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((3, 5)).astype(np.float32), "v"),
             numpy_helper.from_array(np.array([-1, 2, 3], np.int64), "s3"),
             numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1"),
             numpy_helper.from_array(np.array([0], np.int64), "ax"), numpy_helper.from_array(np.array([20], np.int64), "m")]
    nodes = [helper.make_node("Reshape", ["x", "s3"], ["x3"]),
             helper.make_node("Transpose", ["x3"], ["t1"], perm=[0, 2, 1]),  # (N, 3, 2)
             helper.make_node("MatMul", ["t1", "w"], ["a"]),                  # (N, 3, 4)
             helper.make_node("Transpose", ["a"], ["t2"], perm=[0, 2, 1]),   # (N, 4, 3)
             helper.make_node("MatMul", ["t2", "v"], ["b"]),                  # (N, 4, 5)
             helper.make_node("Shape", ["x"], ["shp"]),
             helper.make_node("Gather", ["shp", "i0"], ["d0"], axis=0), helper.make_node("Gather", ["shp", "i1"], ["d1"], axis=0),
             helper.make_node("Unsqueeze", ["d0", "ax"], ["u0"]), helper.make_node("Unsqueeze", ["d1", "ax"], ["u1"]),
             helper.make_node("Concat", ["u0", "u1", "m"], ["target"], axis=0),
             helper.make_node("Reshape", ["b", "target"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared_middle:  # a chain value used outside the chain: the layout must not change under it
        nodes.append(helper.make_node("Identity", ["a"], ["a_copy"]))
        outputs.append(helper.make_tensor_value_info("a_copy", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 6])],
                              outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _run(model, x):
    return create_session(model.SerializeToString(), threads=1).run(None, {"x": x})


def test_kron_rank4_keeps_batch_and_sequence_exactly():
    model = _kron_chain()
    out, counts = passes.optimize(model, "none", 1, 1)
    assert counts["KronRank4"] == 1
    ops = op_counts(out)
    assert ops["Shape"] == 0 and ops["Concat"] == 0  # (the small W also went left: KronSmallLeft)
    inits = {i.name for i in out.graph.initializer}
    assert all(n.input[1] in inits for n in out.graph.node if n.op_type == "Reshape")  # constant targets
    inferred = onnx.shape_inference.infer_shapes(out)
    y = next(v for v in inferred.graph.output if v.name == "y")
    assert [d.dim_param or d.dim_value for d in y.type.tensor_type.shape.dim] == ["batch", "sequence", 20]
    for shape in [(1, 7, 6), (3, 2, 6)]:
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(_run(out, x)[0], _run(model, x)[0])


def test_kron_rank4_refuses_a_chain_used_elsewhere():
    model = _kron_chain(shared_middle=True)
    out, counts = passes.optimize(model, "none", 1, 1)
    assert counts["KronRank4"] == 0
    x = np.random.default_rng(1).standard_normal((2, 5, 6)).astype(np.float32)
    for got, want in zip(_run(out, x), _run(model, x)):
        np.testing.assert_array_equal(got, want)


def test_position_ids_rule_needs_the_arange_buffer(raw_kron):
    broken = onnx.ModelProto()
    broken.CopyFrom(raw_kron)
    buffer = next(n.input[0] for n in broken.graph.node if n.op_type == "Slice")
    reverse = 0  # the buffer is an initializer or a Constant node, depending on the exporter's folding
    for init in broken.graph.initializer:
        if init.name == buffer:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:, ::-1].copy(), buffer))
            reverse += 1
    for node in broken.graph.node:
        if node.op_type == "Constant" and node.output[0] == buffer:
            value = numpy_helper.to_array(node.attribute[0].t)[:, ::-1].copy()
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(value))
            reverse += 1
    assert reverse == 1
    _, counts = passes.optimize(broken, "portable", HEADS, HEAD_SIZE)
    assert counts["PositionIds"] == 0
    _, counts = passes.optimize(raw_kron, "portable", HEADS, HEAD_SIZE)
    assert counts["PositionIds"] == 1


# --- runtime defaults ----------------------------------------------------------------------------------

def test_default_threads_follow_the_model():
    from runtime.hostinfo import default_threads

    assert default_threads({"passes": {"KronTranspose": 12, "OnnxAttention": 2}}) == 1
    assert default_threads({"passes": {"KronTranspose": 0, "KronRank4": 0, "OnnxAttention": 2}}) is None
    assert default_threads(None) is None


def test_predictor_and_ort_file_skip_the_slow_fusion(informative_export_fp32):
    assert Predictor(informative_export_fp32).threads == 1  # a Kronecker export
    assert Predictor(informative_export_fp32, threads=2).threads == 2
    # model.ort is optimised ahead of time: the skipped fusion must not be baked into it
    config = (informative_export_fp32 / "model.required_operators.config").read_text()
    assert "SkipLayerNormalization" not in config and "LayerNormalization" in config
    ort_info = json.loads((informative_export_fp32 / "manifest.json").read_text())["validation"]["ort_format"]
    assert ort_info["disabled_optimizers"] == list(DEFAULT_DISABLED_OPTIMIZERS)


@pytest.fixture(scope="module")
def raw_svd(tmp_path_factory):
    """The tiny BERT with SVD-corner layers (rank > 1), as the TorchScript exporter writes it."""
    from kronedge.planner import KronConfig
    from kronedge.surgery import kronize_

    model = helpers.tiny_bert()
    kronize_(model, KronConfig(compression=4, structure="svd"))
    return onnx.load(torch_to_onnx(model.eval(), tmp_path_factory.mktemp("svd") / "raw.onnx"))


def test_svd_corner_layers_lose_their_head_swap_and_get_the_fusions(raw_svd, tmp_path):
    graph, counts = passes.optimize(raw_svd, "portable", HEADS, HEAD_SIZE, expect_attention=LAYERS)
    # one head swap per linear, of size-1 axes only; then every linear (and the embedding) is lifted to 4-D
    assert counts["KronUnitSwap"] == 6 * LAYERS and counts["KronRank4"] == 6 * LAYERS + 1
    assert op_counts(graph)["Shape"] <= 2 * LAYERS
    assert session_ops(graph, tmp_path)["BiasGelu"] == LAYERS
    without, counts_without = passes.optimize(raw_svd, "portable", HEADS, HEAD_SIZE, disable=("KronUnitSwap",))
    assert counts_without["KronRank4"] == 1  # the 4-D head swap blocks the lift: only the embedding
    assert session_ops(without, tmp_path)["BiasGelu"] == 0
    _same_logits(graph, without)
