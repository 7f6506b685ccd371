"""ONNX export of tiny kronized and dense BERTs: graph structure, parity on new shapes, int8, errors.

Models are built in code (hidden 48, 2 layers, fixed seed); the vocabulary is BERT's so that the
packaged tokenizer's ids are valid. Every export takes a few seconds.
"""

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from exporters.config import ExportOptions
from exporters.export import export_model, torch_to_onnx
from exporters.manifest import sha256
from exporters.validate import ValidationError, random_inputs, sqnr, validate
from kronedge.artifact import ArtifactError, save_artifact
from kronedge.layers import KroneckerEmbedding, KroneckerLinear
from kronedge.planner import KronConfig
from kronedge.surgery import kronize_
from kronedge.teachers import minilm_dir

TINY = dict(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
            max_position_embeddings=64, type_vocab_size=2, num_labels=2)
LAYERS = TINY["num_hidden_layers"]
MAX_LEN = 32


def tiny_model(kronecker: bool = True) -> BertForSequenceClassification:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TINY)).eval()
    if kronecker:
        kronize_(model, KronConfig(compression=7, embedding_k=8))
    return model


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("art") / "kron"
    save_artifact(tiny_model(), path, minilm_dir(), {"teacher": "tiny", "kron_config": None})
    return path


@pytest.fixture(scope="module")
def portable(artifact, tmp_path_factory) -> Path:
    return export_model(artifact, tmp_path_factory.mktemp("exp") / "portable", max_length=MAX_LEN)


@pytest.fixture(scope="module")
def int8(artifact, tmp_path_factory) -> Path:
    return export_model(artifact, tmp_path_factory.mktemp("exp") / "int8", target="arm64", quantize="int8",
                        max_length=MAX_LEN)


def ops(path: Path) -> Counter:
    graph = onnx.load(path)
    return Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in graph.graph.node)


def kron_linears(model) -> int:
    return sum(isinstance(m, KroneckerLinear) for m in model.modules())


# Constant-B MatMuls of a kronized tiny model: 2 per Kronecker linear (A side and B side), 1 for the
# embedding factor (Gather rows @ B^E), 1 each for pooler and classifier (Gemm -> MatMul+Add).
KRON_LINEARS = 6 * LAYERS


# KronSmallLeft rewrites the small-factor product of a rank-1 linear when its transposes are its own:
# per tiny layer attention.output, intermediate and output.dense; Q/K/V share one transposed input.
SMALL_LEFT = 3 * LAYERS
EXPECTED_MATMULS = 2 * KRON_LINEARS + 1 + 2


def test_directory_matches_interface(portable):
    names = {p.name for p in portable.iterdir()}
    assert {"model.onnx", "model.ort", "model.required_operators.config", "tokenizer.json", "golden.npz",
            "manifest.json", "config.json"} <= names
    assert not [p for p in portable.parent.iterdir() if p.name.startswith(".")], "temporary dirs left behind"
    manifest = json.loads((portable / "manifest.json").read_text())
    assert manifest["format"] == "kronedge-onnx/1"
    assert manifest["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and manifest["outputs"] == ["logits"]
    assert manifest["opset"] == 23 and manifest["profile"] == "portable" and manifest["quantization"] is None
    assert manifest["max_length"] == MAX_LEN and len(manifest["labels"]) == 2
    for name, entry in manifest["files"].items():
        assert sha256(portable / name) == entry["sha256"] and (portable / name).stat().st_size == entry["bytes"]
    assert manifest["validation"]["fp32"]["passed"] and manifest["validation"]["fp32"]["max_abs_diff"] <= 1e-4
    # every (rank-1) Kronecker linear had its head swap simplified; each layer's attention core fused
    assert manifest["graph"]["passes"] == {"GemmToMatMulAdd": 2, "KronTranspose": KRON_LINEARS,
                                           "KronSmallLeft": SMALL_LEFT, "OnnxAttention": LAYERS}
    golden = np.load(portable / "golden.npz")
    assert golden["input_ids"].dtype == np.int64 and golden["logits"].shape == (golden["input_ids"].shape[0], 2)


def test_kronecker_graph_structure(portable):
    counts = ops(portable / "model.onnx")
    assert counts["MatMul"] == EXPECTED_MATMULS, counts
    assert counts["Attention"] == LAYERS  # the fused attention core, one per layer
    assert counts["Softmax"] == 0 and counts["Gemm"] == 0
    assert counts["Gather"] >= 3  # word (Kronecker A^E rows), position, token type
    graph = onnx.load(portable / "model.onnx")
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node), "custom-domain op in a portable export"
    # No dense-sized weights: the largest dense matrices of the teacher must not reappear.
    h, ffn, vocab = TINY["hidden_size"], TINY["intermediate_size"], TINY["vocab_size"]
    dense_shapes = {(h, h), (h, ffn), (ffn, h), (vocab, h), (h, vocab)}
    big = [(t.name, tuple(t.dims)) for t in graph.graph.initializer if tuple(t.dims) in dense_shapes]
    # The pooler stays dense (h x h) in the paper's layout; nothing else may.
    assert [name for name, _ in big if "pooler" not in name] == [], big
    stored = sum(int(np.prod(t.dims)) for t in graph.graph.initializer)
    assert stored < 1.05 * sum(p.numel() for p in tiny_model().parameters())


def test_parity_on_new_shapes(portable):
    import onnxruntime as ort

    session = ort.InferenceSession(str(portable / "model.onnx"), providers=["CPUExecutionProvider"])
    reference = tiny_model()
    for batch, seq in [(1, 7), (4, 19), (3, 31), (2, MAX_LEN)]:
        feeds = random_inputs(batch, seq, TINY["vocab_size"], seed=7)
        with torch.no_grad():
            expected = reference(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        got = session.run(["logits"], feeds)[0]
        assert got.shape == (batch, 2)
        assert np.abs(got - expected).max() <= 1e-4


def test_int8_quantizes_every_large_constant_matmul(int8, portable):
    from exporters.quantize import QuantPreset, small_inner_matmuls

    counts = ops(int8 / "model.onnx")
    fp32 = onnx.load(portable / "model.onnx")
    inits = {t.name for t in fp32.graph.initializer}
    right = [n for n in fp32.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    left = [n for n in fp32.graph.node if n.op_type == "MatMul" and n.input[0] in inits]
    small = small_inner_matmuls(fp32, QuantPreset.arm64().float_max_inner)
    assert len(right) + len(left) == EXPECTED_MATMULS and len(left) == SMALL_LEFT and small
    # constant-B MatMuls with a large inner dim are int8; tiny-inner ones and left-constant ones stay fp32
    assert counts["MatMulInteger"] == len(right) - len(small), counts
    assert counts["MatMul"] == len(small) + len(left)  # the attention core is fused: no other float MatMul
    assert counts["DynamicQuantizeLinear"] > 0 and counts["Attention"] == LAYERS
    assert counts["DequantizeLinear"] >= 1  # the quantized embedding tables
    manifest = json.loads((int8 / "manifest.json").read_text())
    assert manifest["quantization"]["name"] == "arm64"
    assert manifest["quantization"]["weight_type"] == "int8" and manifest["quantization"]["per_channel"]
    assert manifest["validation"]["int8"]["min_sqnr_db"] >= 20
    graph = onnx.load(int8 / "model.onnx")
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)
    assert (int8 / "model.onnx").stat().st_size < 0.5 * (portable / "model.onnx").stat().st_size


def test_ort_profile_uses_multihead_attention(artifact, tmp_path):
    out = export_model(artifact, tmp_path / "ort", profile="ort", max_length=MAX_LEN, ort_format=False)
    counts = ops(out / "model.onnx")
    assert counts["com.microsoft.MultiHeadAttention"] == LAYERS and counts["Softmax"] == 0
    assert json.loads((out / "manifest.json").read_text())["graph"]["passes"]["MultiHeadAttention"] == LAYERS


def test_dense_teacher_exports_as_is(tmp_path):
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(TINY))
    out = export_model(f"random:{config_file}", tmp_path / "dense", max_length=MAX_LEN, ort_format=False)
    counts = ops(out / "model.onnx")
    assert counts["Attention"] == LAYERS  # the rule starts at projected Q/K/V: dense or Kronecker
    assert counts["MatMul"] == 6 * LAYERS + 2


def test_static_int8_is_qdq_calibrated_on_task(artifact, tmp_path):
    out = export_model(artifact, tmp_path / "static", target="arm64", quantize="int8-static", task="sst2",
                       max_length=MAX_LEN, ort_format=False, calibration_size=16)
    counts = ops(out / "model.onnx")
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > counts["QuantizeLinear"]
    assert counts["MatMul"] == EXPECTED_MATMULS  # QDQ keeps float MatMuls between Q/DQ pairs
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "sst2" and manifest["labels"] == ["negative", "positive"]
    assert manifest["quantization"]["mode"] == "static"


def test_validation_fails_loudly_on_wrong_values(artifact, tmp_path):
    model = tiny_model()
    path = torch_to_onnx(model, tmp_path / "raw.onnx")
    graph = onnx.load(path)
    bias = next(t for t in graph.graph.initializer if t.name.endswith("classifier.bias"))
    values = onnx.numpy_helper.to_array(bias) + 0.01
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(graph, path)
    with pytest.raises(ValidationError, match="differ from PyTorch"):
        validate(path, model, max_length=MAX_LEN)
    assert validate(torch_to_onnx(model, tmp_path / "ok.onnx"), model, max_length=MAX_LEN)["passed"]


def test_sqnr():
    x = np.array([3.0, 4.0])
    assert sqnr(x, x) == float("inf")
    assert abs(sqnr(x, x + np.array([0.05, 0.0])) - 20 * np.log10(5 / 0.05)) < 1e-9


@pytest.mark.parametrize("case", ["missing", "corrupt", "target", "unwritable", "quantize"])
def test_bad_input_leaves_no_output(case, artifact, tmp_path):
    import shutil

    source, out, kwargs = artifact, tmp_path / "out" / "model", {}
    if case == "missing":
        source = tmp_path / "no-such-artifact"
    elif case == "corrupt":
        source = tmp_path / "corrupt"
        shutil.copytree(artifact, source)
        (source / "model.safetensors").write_bytes(b"not a safetensors file")
    elif case == "target":
        kwargs["target"] = "riscv"
    elif case == "quantize":
        kwargs["quantize"] = "int4"
    elif case == "unwritable":
        (tmp_path / "out").write_text("a file, not a directory")
    with pytest.raises(ValueError) as info:
        export_model(source, out, max_length=MAX_LEN, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    if case in ("missing", "corrupt"):
        assert isinstance(info.value, ArtifactError)
    assert not out.exists()
    leftovers = [p.name for p in (tmp_path / "out").iterdir()] if (tmp_path / "out").is_dir() else []
    assert leftovers == []


def test_options_check_themselves():
    with pytest.raises(ValueError, match="give --task"):
        ExportOptions(quantize="int8-static")
    with pytest.raises(ValueError, match="unknown profile"):
        ExportOptions(profile="fast")


def test_embedding_is_gather_plus_product(portable):
    graph = onnx.load(portable / "model.onnx")
    word = [t for t in graph.graph.initializer if "word_embeddings" in t.name]
    assert word and all(int(np.prod(t.dims)) < TINY["vocab_size"] * TINY["hidden_size"] for t in word)
    assert any(isinstance(m, KroneckerEmbedding) for m in tiny_model().modules())


def test_attention_rule_checks_scale_and_counts(tmp_path):
    from exporters import passes

    model = tiny_model(kronecker=False)
    raw = onnx.load(torch_to_onnx(model, tmp_path / "raw.onnx"))
    heads, head_size = TINY["num_attention_heads"], TINY["hidden_size"] // TINY["num_attention_heads"]
    _, counts = passes.optimize(raw, "portable", heads, head_size)
    assert counts == {"GemmToMatMulAdd": 2, "KronTranspose": 0, "KronSmallLeft": 0, "OnnxAttention": LAYERS}
    # A wrong head size makes check() reject every match (the divisor is not sqrt(head_size))...
    _, counts = passes.optimize(raw, "ort", heads, head_size * 2)
    assert counts["MultiHeadAttention"] == 0
    # ...and a partial fusion is an error when the caller says how many layers there are.
    with pytest.raises(ValueError, match="fused 0 attention cores, expected 2"):
        passes.optimize(raw, "ort", heads, head_size * 2, expect_attention=LAYERS)


def test_quant_presets():
    from exporters.quantize import QuantPreset, preset_for

    arm = QuantPreset.arm64()
    assert (arm.activation_type, arm.weight_type, arm.per_channel, arm.reduce_range) == ("uint8", "int8", True, False)
    assert QuantPreset.x86_64(vnni=False).weight_type == "uint8" and QuantPreset.x86_64().weight_type == "int8"
    assert preset_for("arm64", "int8-static").quant_format == "QDQ"
    assert preset_for("x86_64", "int8", per_channel=False).per_channel is False
    with pytest.raises(ValueError, match="dynamic quantisation"):
        QuantPreset("bad", activation_type="int8")


@pytest.mark.parametrize("name", ["portable", "int8"])
def test_fused_attention_survives_ort_optimizer(name, portable, int8, tmp_path):
    import onnxruntime as ort

    exported = {"portable": portable, "int8": int8}[name]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "ort_optimized.onnx")
    ort.InferenceSession(str(exported / "model.onnx"), so, providers=["CPUExecutionProvider"])
    counts = ops(tmp_path / "ort_optimized.onnx")
    assert counts["Attention"] == LAYERS and counts["Softmax"] == 0


def test_export_mode_is_undone():
    from exporters.export import export_mode

    model = tiny_model()
    attention = model.bert.encoder.layer[0].attention.self
    impl = model.config._attn_implementation
    with export_mode(model):
        assert "forward" in vars(attention) and model.config._attn_implementation == "eager"
    assert "forward" not in vars(attention) and model.config._attn_implementation == impl


def _small_left_graph(w_rows: int, reshape_to: list | None, shared: bool = False) -> onnx.ModelProto:
    """x (N, k*6) -> Reshape [-1, k, 6] -> Transpose -> MatMul(W k x 3) [-> Reshape] -> Transpose (k = w_rows)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    p = 6
    w = rng.standard_normal((w_rows, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([-1, w_rows, p], np.int64), "s0")]
    nodes = [helper.make_node("Reshape", ["x", "s0"], ["x3"]),
             helper.make_node("Transpose", ["x3"], ["t1"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t1", "w"], ["mm"])]
    last = "mm"
    if reshape_to is not None:
        inits.append(numpy_helper.from_array(np.array(reshape_to, np.int64), "s1"))
        nodes.append(helper.make_node("Reshape", ["mm", "s1"], ["mr"]))
        last = "mr"
    nodes.append(helper.make_node("Transpose", [last], ["y"], perm=[0, 2, 1]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared:  # a second consumer of the first transpose: the rule must not remove it
        nodes.append(helper.make_node("Identity", ["t1"], ["t1_copy"]))
        outputs.append(helper.make_tensor_value_info("t1_copy", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w_rows * p])],
                              outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("reshape_to", [None, [-1, 6, 3]])
def test_kron_small_left_rule_is_exact(reshape_to):
    import onnxruntime as ort

    from exporters import passes

    model = _small_left_graph(4, reshape_to)
    out, counts = passes.optimize(model, "none", 1, 1)
    assert counts["KronSmallLeft"] == 1
    assert Counter(n.op_type for n in out.graph.node)["Transpose"] == 0
    x = np.random.default_rng(1).standard_normal((5, 24)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run(out), run(model), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["large-inner", "reshape-not-noop", "shared-transpose"])
def test_kron_small_left_rule_refuses(case):
    from exporters import passes
    from exporters.passes.kron_small_left import MAX_INNER

    model = {"large-inner": lambda: _small_left_graph(MAX_INNER + 1, None),
             "reshape-not-noop": lambda: _small_left_graph(4, [-1, 3, 6]),
             "shared-transpose": lambda: _small_left_graph(4, None, shared=True)}[case]()
    _, counts = passes.optimize(model, "none", 1, 1)
    assert counts["KronSmallLeft"] == 0
