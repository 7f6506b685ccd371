"""ONNX export of tiny kronized and dense BERTs: graph structure, parity on new shapes, int8, errors.

Models are the suite's tiny BERT (tests/helpers.py: hidden 48, 2 layers, fixed seed, BERT's vocabulary so
the packaged tokenizer's ids are valid). Numbers are checked on the informative model (tests/conftest.py),
whose logits depend on the input, and every validation step is shown to fail on a graph broken in the way
it guards against. Every export takes a few seconds.
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import helpers
from exporters.config import ExportOptions
from exporters.export import export_model, torch_to_onnx
from exporters.manifest import sha256
from exporters.validate import ValidationError, check_domains, check_ort_matches, random_inputs, validate
from kronedge.artifact import ArtifactError
from kronedge.kron_shape import KronShape
from kronedge.layers import KroneckerEmbedding, KroneckerLinear

TINY = helpers.TINY_FIELDS
LAYERS = TINY["num_hidden_layers"]
MAX_LEN = 32  # the informative exports' max_length (tests/conftest.py)


def tiny_model(kronecker: bool = True):
    """The untrained tiny BERT, kronized like the informative one: for structure, not for numbers."""
    return helpers.tiny_bert(kronecker=kronecker)


@pytest.fixture(scope="module")
def artifact(informative_artifact) -> Path:
    return informative_artifact


@pytest.fixture(scope="module")
def portable(informative_export_fp32) -> Path:
    return informative_export_fp32


@pytest.fixture(scope="module")
def int8(informative_export_int8) -> Path:
    return informative_export_int8


def ops(path: Path) -> Counter:
    graph = onnx.load(path)
    return Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in graph.graph.node)


def kron_linears(model) -> int:
    return sum(isinstance(m, KroneckerLinear) for m in model.modules())


# Constant-B MatMuls of a kronized tiny model: 2 per Kronecker linear (A side and B side), 1 for the
# embedding factor (Gather rows @ B^E), 1 each for pooler and classifier (Gemm -> MatMul+Add).
KRON_LINEARS = 6 * LAYERS


# KronSmallLeft rewrites the small-factor product of every rank-1 linear of the tiny model (A 1x2, A 2x1), Q, K
# and V each after KronSharedSwap gave them their own copy of the input swap they share (2 copies per layer).
SMALL_LEFT = KRON_LINEARS
SHARED_SWAP_COPIES = 2 * LAYERS
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
    # and every Kronecker linear (+ the word embedding) keeps the (batch, sequence) axes; the key, value and
    # FFN-down biases of every layer were folded away before tracing
    assert manifest["graph"]["passes"] == {"FoldBiases": 3 * LAYERS, "GemmToMatMulAdd": 2, "KronTranspose": KRON_LINEARS, "KronUnitSwap": 0,
                                           "KronSharedSwap": SHARED_SWAP_COPIES, "KronSmallLeft": SMALL_LEFT,
                                           "PositionIds": 1, "OnnxAttention": LAYERS,
                                           "KronRank4": KRON_LINEARS + 1, "UnitTranspose": 0}
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


PARITY_SHAPES = [(1, 7), (4, 19), (3, 31), (2, MAX_LEN)]


def _parity_pairs(portable, reference, how=None):
    from runtime.predictor import create_session

    session = create_session(portable / "model.onnx")
    if how:
        session = helpers.BrokenSession(session, how)
    for batch, seq in PARITY_SHAPES:
        feeds = random_inputs(batch, seq, TINY["vocab_size"], seed=7)
        with torch.no_grad():
            expected = reference(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        yield session.run(["logits"], feeds)[0], expected


def test_parity_on_new_shapes(portable, informative_model):
    for got, expected in _parity_pairs(portable, informative_model):
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("how", helpers.BREAKS)
def test_parity_fails_on_a_broken_graph(portable, informative_model, how):
    # batch 1 rows cannot be shuffled: judge the rows of all shapes together
    worst = max(np.abs(got - expected).max() for got, expected in _parity_pairs(portable, informative_model, how)
                if len(got) > 1)
    assert worst > 100 * 1e-4, f"a {how} output is within {worst:.3g} of torch: the parity check cannot fail"


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
    assert manifest["validation"]["int8"]["min_sqnr_db"] >= ExportOptions().sqnr_floor_db
    graph = onnx.load(int8 / "model.onnx")
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)
    assert (int8 / "model.onnx").stat().st_size < 0.5 * (portable / "model.onnx").stat().st_size


def test_ort_profile_uses_multihead_attention(artifact, tmp_path):
    out = export_model(artifact, tmp_path / "ort", profile="ort", max_length=MAX_LEN, ort_format=False)
    counts = ops(out / "model.onnx")
    assert counts["com.microsoft.MultiHeadAttention"] == LAYERS and counts["Softmax"] == 0
    assert json.loads((out / "manifest.json").read_text())["graph"]["passes"]["MultiHeadAttention"] == LAYERS


def test_dense_teacher_exports_as_is(tmp_path):
    out = export_model(helpers.tiny_spec(tmp_path), tmp_path / "dense", max_length=MAX_LEN, ort_format=False)
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


def test_static_int8_calibrates_on_the_users_own_file(artifact, tmp_path):
    def scales(name, calibration_lines):
        path = tmp_path / f"{name}.txt"
        path.write_text("\n".join(calibration_lines) + "\n")
        out = export_model(artifact, tmp_path / path.stem, target="arm64", quantize="int8-static", calibration=str(path),
                           max_length=MAX_LEN, ort_format=False, calibration_size=16)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["quantization"]["mode"] == "static"
        graph = onnx.load(out / "model.onnx").graph
        return {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_scale")}

    half = len(helpers.PROBE_TEXTS) // 2
    short = scales("first-half", list(helpers.PROBE_TEXTS[:half]))
    varied = scales("second-half", list(helpers.PROBE_TEXTS[half:]) + ["a long and winding sentence about many different things " * 3])
    assert short.keys() == varied.keys() and any(not np.array_equal(short[k], varied[k]) for k in short), \
        "the activation scales do not depend on the calibration file"
    with pytest.raises(ValueError, match="--calibration: .* holds no text"):
        (tmp_path / "empty.txt").write_text("\n\n")
        export_model(artifact, tmp_path / "none", target="arm64", quantize="int8-static",
                     calibration=str(tmp_path / "empty.txt"), max_length=MAX_LEN, ort_format=False)


def _shift_bias(graph):
    bias = next(t for t in graph.graph.initializer if t.name.endswith("classifier.bias"))
    values = onnx.numpy_helper.to_array(bias) + 0.01
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))


def _rename_output(graph):
    graph.graph.output[0].name = "scores"
    for node in graph.graph.node:
        node.output[:] = ["scores" if o == "logits" else o for o in node.output]


def _fix_axes(graph):
    for value in graph.graph.input:
        for dim, size in zip(value.type.tensor_type.shape.dim, (2, 16)):
            dim.ClearField("dim_param")
            dim.dim_value = size


def _append_after_logits(graph, make_nodes):
    """Rename the graph's logits to logits_raw and compute the real output from it with ``make_nodes``."""
    for node in graph.graph.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    nodes, inits = make_nodes()
    graph.graph.node.extend(nodes)
    graph.graph.initializer.extend(inits)
    graph.graph.output[0].type.tensor_type.shape.ClearField("dim")


def _wrong_shape(graph):  # logits concatenated with themselves: (batch, 4)
    from onnx import helper

    concat = helper.make_node("Concat", ["logits_raw", "logits_raw"], ["logits"], axis=1)
    _append_after_logits(graph, lambda: ([concat], []))


def _constant(graph):  # every row the batch mean
    from onnx import helper, numpy_helper

    _append_after_logits(graph, lambda: ([helper.make_node("ReduceMean", ["logits_raw", "axes0"], ["mean"], keepdims=1),
                                          helper.make_node("Shape", ["logits_raw"], ["shape"]),
                                          helper.make_node("Expand", ["mean", "shape"], ["logits"])],
                                         [numpy_helper.from_array(np.array([0], np.int64), "axes0")]))


def _shuffled(graph):  # rows in reverse order: each input gets another input's answer
    from onnx import helper, numpy_helper

    def nodes():
        inits = [numpy_helper.from_array(np.array([-1], np.int64), n) for n in ("start", "step")]
        inits.append(numpy_helper.from_array(np.array([np.iinfo(np.int64).min], np.int64), "end"))
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis"))
        return [helper.make_node("Slice", ["logits_raw", "start", "end", "axis", "step"], ["logits"])], inits

    _append_after_logits(graph, nodes)


BAD_GRAPHS = {  # edit, expected ValidationError
    "values": (_shift_bias, "differ from PyTorch"),
    "output-name": (_rename_output, "outputs \\['scores'\\]"),
    "fixed-axes": (_fix_axes, "is fixed to 2, expected a dynamic axis"),
    "shape": (_wrong_shape, "logits shape \\(1, 4\\)"),
    "constant": (_constant, "differ from PyTorch"),
    "shuffled": (_shuffled, "differ from PyTorch"),
}


@pytest.fixture(scope="module")
def raw_onnx(informative_model, tmp_path_factory):
    return torch_to_onnx(informative_model, tmp_path_factory.mktemp("raw") / "raw.onnx")


def test_validation_passes_on_the_exported_graph(raw_onnx, informative_model):
    assert validate(raw_onnx, informative_model, max_length=MAX_LEN)["passed"]


@pytest.mark.parametrize("case", sorted(BAD_GRAPHS))
def test_validation_fails_loudly(case, raw_onnx, informative_model, tmp_path):
    edit, match = BAD_GRAPHS[case]
    graph = onnx.load(raw_onnx)
    edit(graph)
    onnx.checker.check_model(graph)
    path = tmp_path / f"{case}.onnx"
    onnx.save(graph, path)
    with pytest.raises(ValidationError, match=match):
        validate(path, informative_model, max_length=MAX_LEN)


def _sentences():
    from exporters.export import SAMPLE_SENTENCES

    return [helpers.encode(SAMPLE_SENTENCES, MAX_LEN), helpers.encode(helpers.PROBE_TEXTS, MAX_LEN)]


def test_int8_validation_fails_under_the_floor(int8, informative_model, tmp_path):
    floor = ExportOptions().sqnr_floor_db
    assert validate(int8 / "model.onnx", informative_model, precision="int8", feeds=_sentences(),
                    sqnr_floor=floor)["min_sqnr_db"] >= floor
    helpers.corrupt_weight(int8 / "model.onnx", tmp_path / "corrupt.onnx")
    with pytest.raises(ValidationError, match="int8 logits SQNR"):
        validate(tmp_path / "corrupt.onnx", informative_model, precision="int8", feeds=_sentences(), sqnr_floor=floor)


@pytest.mark.parametrize("noise, passes", [(0.01, True), (0.3, False)])
def test_int8_noise_counts_against_the_logits_level_not_one_undecided_input(raw_onnx, informative_model, tmp_path,
                                                                              noise, passes):
    """An input on the decision boundary has logits near zero, so its own SQNR fails any noise at all, however small.
    Each batch's noise is judged against the logits' RMS over every input: 1% of it passes, 30% fails."""
    import copy

    from runtime.contract import rms

    undecided = helpers.encode(["the film is neither good nor bad"], MAX_LEN)
    feeds = [*_sentences(), undecided]
    model = copy.deepcopy(informative_model).eval()
    with torch.no_grad():  # the head's bias puts the last input on the boundary: its logits are (0, 0)
        model.classifier.bias -= model(**{k: torch.from_numpy(v) for k, v in undecided.items()}).logits[0]
        level = rms(np.concatenate([model(**{k: torch.from_numpy(v) for k, v in f.items()}).logits.numpy().ravel()
                                    for f in feeds]))
    graph = onnx.load(raw_onnx)  # the same model, with noise of a known RMS added to every logit
    bias = next(t for t in graph.graph.initializer if t.name.endswith("classifier.bias"))
    shifted = model.classifier.bias.detach().numpy() + noise * level * np.array([1.0, -1.0])
    bias.CopyFrom(onnx.numpy_helper.from_array(shifted.astype(np.float32), bias.name))
    onnx.save(graph, tmp_path / "noisy.onnx")
    if passes:
        result = validate(tmp_path / "noisy.onnx", model, precision="int8", feeds=feeds, sqnr_floor=20.0)
        assert result["min_sqnr_db"] == pytest.approx(40.0, abs=0.5)
        assert result["shapes"][-1]["own_sqnr_db"] < 0  # judged by its own logits, the undecided input would fail
    else:
        with pytest.raises(ValidationError, match="int8 logits SQNR 10.5 dB < floor 20 dB"):
            validate(tmp_path / "noisy.onnx", model, precision="int8", feeds=feeds, sqnr_floor=20.0)


def test_a_failed_export_names_the_model_not_its_deleted_work_file(artifact, tmp_path):
    with pytest.raises(ValidationError, match=r"^the arm64 int8 export: int8 logits SQNR .* < floor 200 dB"):
        export_model(artifact, tmp_path / "out", target="arm64", quantize="int8", max_length=MAX_LEN,
                     ort_format=False, sqnr_floor_db=200.0)
    assert not (tmp_path / "out").exists()


def test_ort_and_onnx_must_agree(portable, int8, tmp_path):
    import shutil

    assert check_ort_matches(portable, quantized=False)["passed"]
    mixed = shutil.copytree(portable, tmp_path / "mixed")
    shutil.copy2(int8 / "model.ort", mixed / "model.ort")  # another graph's .ort beside this model.onnx
    with pytest.raises(ValidationError, match="model.ort differs from model.onnx"):
        check_ort_matches(mixed, quantized=False)


def test_portable_profile_refuses_custom_domain_ops(portable):
    graph = onnx.load(portable / "model.onnx")
    check_domains(graph, "portable")
    graph.graph.node[0].domain = "com.microsoft"
    with pytest.raises(ValidationError, match="custom-domain ops"):
        check_domains(graph, "portable")
    check_domains(graph, "ort")  # the ort profile may use them


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
    with pytest.raises(ValueError, match="give --task .* or, for your own task, --calibration FILE"):
        ExportOptions(quantize="int8-static")
    with pytest.raises(ValueError, match="--calibration is for --quantize int8-static"):
        ExportOptions(quantize="int8", calibration="texts.txt")
    for target, quantize in (("arm64", "int8"), ("x86_64", "none")):
        with pytest.raises(ValueError, match="--no-vnni picks the x86_64 int8 weights"):
            ExportOptions(target=target, quantize=quantize, vnni=False)
    with pytest.raises(ValueError, match="unknown profile"):
        ExportOptions(profile="fast")
    with pytest.raises(ValueError, match="exact or tanh"):
        ExportOptions(quantize="int8", gelu="quick")
    with pytest.raises(ValueError, match="fp32 export keeps the exact"):
        ExportOptions(gelu="tanh")
    assert ExportOptions(quantize="int8", gelu="exact").gelu == "exact"


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
    assert counts == {"GemmToMatMulAdd": 2, "KronTranspose": 0, "KronUnitSwap": 0, "KronSharedSwap": 0, "KronSmallLeft": 0, "PositionIds": 1,
                      "OnnxAttention": LAYERS, "KronRank4": 0, "UnitTranspose": 0}
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
    assert arm.gelu == "tanh" and preset_for("arm64", "int8", gelu="exact").gelu == "exact"
    with pytest.raises(ValueError, match="gelu"):
        QuantPreset("bad", gelu="quick")
    with pytest.raises(ValueError, match="dynamic quantisation"):
        QuantPreset("bad", activation_type="int8")


@pytest.mark.parametrize("name", ["portable", "int8"])
def test_fused_attention_survives_ort_optimizer(name, portable, int8, tmp_path):
    from runtime.predictor import create_session

    exported = {"portable": portable, "int8": int8}[name]
    create_session(exported / "model.onnx", graph_optimization="extended",
                   optimized_model_path=tmp_path / "ort_optimized.onnx")
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
    from exporters import passes
    from runtime.predictor import create_session

    model = _small_left_graph(4, reshape_to)
    out, counts = passes.optimize(model, "none", 1, 1)
    assert counts["KronSmallLeft"] == 1
    assert Counter(n.op_type for n in out.graph.node)["Transpose"] == 0
    x = np.random.default_rng(1).standard_normal((5, 24)).astype(np.float32)

    def run(m):
        return create_session(m.SerializeToString()).run(None, {"x": x})[0]

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


def _gelu_modes(path: Path) -> list[str]:
    graph = onnx.load(path)
    return [next((a.s.decode() for a in n.attribute if a.name == "approximate"), "none")
            for n in graph.graph.node if n.op_type == "Gelu"]


def test_int8_export_uses_the_tanh_gelu_and_fp32_the_exact_one(int8, portable):
    assert _gelu_modes(portable / "model.onnx") == ["none"] * LAYERS  # fp32 must match PyTorch's erf GELU
    assert _gelu_modes(int8 / "model.onnx") == ["tanh"] * LAYERS
    manifest = json.loads((int8 / "manifest.json").read_text())
    assert manifest["quantization"]["gelu"] == "tanh" and manifest["graph"]["passes"]["GeluTanh"] == LAYERS


def test_tanh_gelu_and_its_bias_fuse_on_load(int8, tmp_path):
    """ORT fuses bias Add + Gelu(tanh) into FastGelu (one pass), as it fuses the exact one into BiasGelu."""
    from runtime.predictor import create_session

    create_session(int8 / "model.onnx", optimized_model_path=tmp_path / "session.onnx")
    counts = ops(tmp_path / "session.onnx")
    assert counts["com.microsoft.FastGelu"] == LAYERS and counts["Gelu"] == 0 and counts["com.microsoft.BiasGelu"] == 0
    fast = [n for n in onnx.load(tmp_path / "session.onnx").graph.node if n.op_type == "FastGelu"]
    assert all(len(n.input) == 2 and n.input[1] for n in fast), "the FFN-up bias was not fused into FastGelu"


def test_gelu_tanh_rule_changes_values_by_little():
    from onnx import TensorProto, helper

    from exporters.passes import approximate_gelu
    from runtime.predictor import create_session

    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])])
    exact = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    approx, count = approximate_gelu(exact)
    assert count == 1 and approximate_gelu(approx)[1] == 0  # an approximate GELU is left alone
    x = {"x": np.linspace(-6, 6, 64, dtype=np.float32)}
    diff = np.abs(create_session(exact.SerializeToString()).run(None, x)[0]
                  - create_session(approx.SerializeToString()).run(None, x)[0]).max()
    assert 1e-6 < diff < 1e-3


# The presets' factor order on the tiny BERT (hidden 48, FFN 96): every role with its small factor first, and the
# same sizes with attention's factors swapped, as the paper's Table 1 lists them (small factor second).
SMALL_FIRST = {"attention": KronShape(4, 2, 12, 24), "ffn_up": KronShape(4, 2, 24, 24),
               "ffn_down": KronShape(2, 4, 24, 24)}
ATTENTION_SMALL_SECOND = {**SMALL_FIRST, "attention": KronShape(12, 24, 4, 2)}
# kb8's attention: either contraction order costs the same; the tie goes to B first, so no swap is even shared
# (with A first, KronSharedSwap would have to copy the Q/K/V input swap; counted below).
SMALL_FIRST_TIE = {**SMALL_FIRST, "attention": KronShape(2, 2, 24, 24)}
# SVD corners, A (m x 1) ⊗ B (1 x n) summed r times (compress's default structure): the last swap of each product
# moves only a size-1 axis.
SVD_CORNERS = {"attention": KronShape(48, 1, 1, 48), "ffn_up": KronShape(96, 1, 1, 48),
               "ffn_down": KronShape(48, 1, 1, 96)}


@pytest.mark.parametrize("role_shapes, rank, transposes", [(SMALL_FIRST, 1, 0), (SMALL_FIRST_TIE, 1, 0),
                                                            (SVD_CORNERS, 1, 0), (SVD_CORNERS, 3, 0),
                                                            (ATTENTION_SMALL_SECOND, 1, 6 * LAYERS)])
def test_factor_orders_export_without_axis_swaps(tmp_path, role_shapes, rank, transposes):
    from exporters import passes
    from kronedge.planner import KronConfig
    from kronedge.surgery import kronize_
    from runtime.predictor import create_session

    torch.manual_seed(0)
    model = helpers.tiny_bert()
    kronize_(model, KronConfig(compression=7, embedding_k=8, rank=rank, role_shapes=role_shapes))
    for p in model.parameters():  # factors large enough that a misplaced axis would show in the logits
        torch.nn.init.normal_(p, std=0.5)
    raw = onnx.load(torch_to_onnx(model, tmp_path / "raw.onnx"))
    heads = TINY["num_attention_heads"]
    out, counts = passes.optimize(raw, "portable", heads, TINY["hidden_size"] // heads, expect_attention=LAYERS)
    assert Counter(n.op_type for n in out.graph.node)["Transpose"] == transposes
    if role_shapes is SMALL_FIRST_TIE:
        assert counts["KronSharedSwap"] == 0
    feeds = helpers.encode(["a first text", "and a second, longer text than the first one"])
    got = create_session(out.SerializeToString()).run(None, {k: v.astype(np.int64) for k, v in feeds.items()})[0]
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in feeds.items()}).logits.numpy()
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("perm, shape, reshaped", [
    ([0, 1, 3, 2], ["B", "S", 1, 7], True),    # (B, S, 1, 7) -> (B, S, 7, 1): no element moves
    ([0, 2, 1], [5, 1, 1], True),
    ([0, 1, 3, 2], ["B", "S", 2, 7], False),   # a real swap
    ([1, 0, 2], ["B", "S", 7], False),          # two unknown dims trade places: they may both hold data
    ([1, 0, 2], [0, 1, 5], False),              # a known 0 would read as "copy the input's dim" in a Reshape
])
def test_unit_transpose_rule(perm, shape, reshaped):
    from onnx import TensorProto, helper

    from exporters import passes
    from runtime.predictor import create_session

    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=perm)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    out, counts = passes.optimize(model, "none", 1, 1)
    assert counts["UnitTranspose"] == int(reshaped)
    assert Counter(n.op_type for n in out.graph.node)["Transpose"] == int(not reshaped)
    dims = [3 if isinstance(d, str) else d for d in shape]
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)

    def run(m):
        return create_session(m.SerializeToString()).run(None, {"x": x})[0]

    np.testing.assert_array_equal(run(out), run(model))


@pytest.mark.parametrize("reshape_to, copies", [([-1, 6, 3], 1), ([-1, 3, 6], 0)])
def test_kron_shared_swap_copies_only_what_kron_small_left_removes(reshape_to, copies):
    """Two small-factor chains share the swap of x (N, 2, 6); a copy is made only when both chains are then
    rewritten (a Reshape that is not a no-op on (N, 6, 3) keeps KronSmallLeft off, so no copy)."""
    from onnx import TensorProto, helper, numpy_helper

    from exporters import passes
    from runtime.predictor import create_session

    rng = np.random.default_rng(0)
    inits, nodes, outputs = [numpy_helper.from_array(np.array(reshape_to, np.int64), "s")], [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1])], []
    for i in range(2):
        inits.append(numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", ["t", f"w{i}"], [f"m{i}"]), helper.make_node("Reshape", [f"m{i}", "s"], [f"r{i}"]),
                  helper.make_node("Transpose", [f"r{i}"], [f"y{i}"], perm=[0, 2, 1])]
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6])],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    out, counts = passes.optimize(model, "none", 1, 1)
    assert counts["KronSharedSwap"] == copies and counts["KronSmallLeft"] == 2 * copies
    assert Counter(n.op_type for n in out.graph.node)["Transpose"] == (0 if copies else 3)
    x = rng.standard_normal((4, 2, 6)).astype(np.float32)
    got, want = (create_session(m.SerializeToString()).run(None, {"x": x}) for m in (out, model))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
