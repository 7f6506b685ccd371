"""An s8-weight int8 export checked exactly on an x86 host whose int8 GEMM saturates (no VNNI): the u8-weight twin,
the host rule, the export's defaults and checks on such a host, and the runtime's error there."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import exporters.export
import exporters.host_int8
import runtime.predictor
from exporters.host_int8 import HOST_TWIN_NOTE, exact_on_host, u8_weight_twin
from runtime import hostinfo
from runtime.predictor import Predictor, create_session


def _matmul_integer(zero_point: bool) -> onnx.ModelProto:
    """y = (a - za) @ (w - zw) in int32, with a u8 and w s8 chosen so that pairs of products pass int16: 2 x 255 x
    127 = 64770, where VPMADDUBSW would saturate at 32767."""
    w = np.array([[127, -128, 5], [127, -128, -7], [127, 100, 3], [127, 90, 1]], np.int8)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["a", "w", "za"]
    if zero_point:
        inits.append(numpy_helper.from_array(np.array([3, -2, 0], np.int8), "zw"))
        inputs.append("zw")
    inits.append(numpy_helper.from_array(np.array(0, np.uint8), "za"))
    graph = h.make_graph([h.make_node("MatMulInteger", inputs, ["y"])], "g",
                         [h.make_tensor_value_info("a", T.UINT8, [2, 4])], [h.make_tensor_value_info("y", T.INT32, None)],
                         initializer=inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


def _dequantized_matmul() -> onnx.ModelProto:
    """The QDQ form: x @ DequantizeLinear(w_s8, scale, zero point)."""
    w = np.array([[127, -128], [-5, 60], [127, 127]], np.int8)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.5, np.float32), "s"),
             numpy_helper.from_array(np.array(-3, np.int8), "z")]
    nodes = [h.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"]), h.make_node("MatMul", ["x", "wf"], ["y"])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


@pytest.mark.parametrize("zero_point", [True, False])
def test_the_twin_computes_the_exact_integer_products(zero_point, tmp_path):
    model = _matmul_integer(zero_point)
    w = numpy_helper.to_array(model.graph.initializer[0]).astype(np.int64)
    zw = np.array([3, -2, 0]) if zero_point else 0
    a = np.array([[255, 255, 255, 255], [0, 17, 255, 128]], np.uint8)
    exact = a.astype(np.int64) @ (w - zw)
    assert np.abs(exact).max() > 2 ** 15  # the products do pass int16
    assert u8_weight_twin(model) == 1
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert weights["w"].dtype == np.uint8 and all(t.dtype != np.int8 for t in weights.values())
    onnx.save(model, tmp_path / "twin.onnx")
    got = create_session(tmp_path / "twin.onnx").run(["y"], {"a": a})[0]
    np.testing.assert_array_equal(got, exact)


def test_the_twin_keeps_dequantized_weights(tmp_path):
    model = _dequantized_matmul()
    onnx.save(model, tmp_path / "s8.onnx")
    x = np.array([[1.0, -2.0, 0.25]], np.float32)
    reference = x @ ((np.array([[127, -128], [-5, 60], [127, 127]]) + 3) * 0.5)
    assert u8_weight_twin(model) == 1 and u8_weight_twin(model) == 0  # a second pass finds nothing left
    onnx.save(model, tmp_path / "twin.onnx")
    # unoptimised: ORT would otherwise fuse DequantizeLinear + MatMul into a dynamically quantized product of x
    unfused = create_session(tmp_path / "twin.onnx", graph_optimization="disabled").run(["y"], {"x": x})[0]
    np.testing.assert_array_equal(unfused, reference.astype(np.float32))


def test_which_hosts_saturate(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    for flags, machine, saturates in (("avx2 fma", "x86_64", True), ("avx2 avx512_vnni", "x86_64", False),
                                      ("avx2 avx_vnni", "x86_64", False), ("fp asimd", "aarch64", False)):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(hostinfo.platform, "machine", lambda machine=machine: machine)
        assert hostinfo.host_saturates_s8_weights(cpuinfo) is saturates, (flags, machine)


def test_exact_on_host_is_the_file_itself_where_nothing_saturates(tmp_path, monkeypatch):
    onnx.save(_matmul_integer(True), tmp_path / "m.onnx")
    monkeypatch.setattr(exporters.host_int8, "host_saturates_s8_weights", lambda: False)
    assert exact_on_host(tmp_path / "m.onnx", tmp_path) == tmp_path / "m.onnx"
    monkeypatch.setattr(exporters.host_int8, "host_saturates_s8_weights", lambda: True)
    twin = exact_on_host(tmp_path / "m.onnx", tmp_path)
    assert twin != tmp_path / "m.onnx" and onnx.load(twin).graph.initializer[0].data_type == T.UINT8
    assert onnx.load(tmp_path / "m.onnx").graph.initializer[0].data_type == T.INT8  # the export is not touched


@pytest.mark.parametrize("saturates", [True, False])
def test_export_on_a_host_without_vnni(informative_artifact, tmp_path, monkeypatch, saturates):
    """On such a host x86_64 int8 defaults to u8 weights, and an arm64 export is checked (SQNR, golden.npz,
    model.ort) on its u8 twin, so its golden logits are the exact ones the Pi computes."""
    for module in (exporters.export, exporters.host_int8):
        monkeypatch.setattr(module, "host_saturates_s8_weights", lambda: saturates)
    x86 = exporters.export.export_model(informative_artifact, tmp_path / "x86", target="x86_64", quantize="int8",
                                        max_length=32, ort_format=False)
    quantization = json.loads((x86 / "manifest.json").read_text())["quantization"]
    assert quantization["name"] == ("x86_64-avx2" if saturates else "x86_64-vnni")
    assert quantization["weight_type"] == ("uint8" if saturates else "int8")
    arm = exporters.export.export_model(informative_artifact, tmp_path / "arm", target="arm64", quantize="int8",
                                        max_length=32)
    validation = json.loads((arm / "manifest.json").read_text())["validation"]
    assert validation["int8"].get("host_twin") == (HOST_TWIN_NOTE if saturates else None)
    assert validation["ort_format"]["passed"]
    if not saturates:
        return  # golden.npz then holds this host's own run, whatever its CPU
    with np.load(arm / "golden.npz") as golden:  # the exact int8 logits, as the twin computes them on any host
        feeds = {k: golden[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        model = onnx.load(arm / "model.onnx")
        u8_weight_twin(model)
        onnx.save(model, tmp_path / "twin.onnx")
        exact = create_session(tmp_path / "twin.onnx").run(["logits"], feeds)[0]
        np.testing.assert_allclose(golden["logits"], exact, atol=1e-5)


def test_the_runtime_names_the_cause_when_this_host_saturates(host_export_int8, tmp_path, monkeypatch):
    d = shutil.copytree(host_export_int8, tmp_path / "m")
    with np.load(d / "golden.npz") as golden:
        data = dict(golden)
    data["logits"] = -data["logits"]  # as far off as a saturated GEMM
    np.savez(d / "golden.npz", **data)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["quantization"]["weight_type"] = "int8"
    (d / "manifest.json").write_text(json.dumps(manifest))
    predictor = Predictor(d, threads=1, verify=False)
    monkeypatch.setattr(runtime.predictor, "host_saturates_s8_weights", lambda: True)
    with pytest.raises(runtime.predictor.ModelDirError, match="no VNNI .* --target x86_64"):
        predictor.check_golden()
    monkeypatch.setattr(runtime.predictor, "host_saturates_s8_weights", lambda: False)
    with pytest.raises(runtime.predictor.ModelDirError, match="the model or runtime is broken"):
        predictor.check_golden()


@pytest.mark.parametrize("saturates", [True, False])
def test_eval_scores_the_numbers_the_target_cpu_computes(informative_export_int8, monkeypatch, tmp_path, saturates):
    """`kronedge eval` of an arm64 int8 export on an x86 host without VNNI scores the u8-weight twin (the Pi's
    numbers), and says so; elsewhere it scores the file as ORT runs it here."""
    from exporters.evaluate import evaluate_exported
    from kronedge.data import load_task

    monkeypatch.setattr(exporters.host_int8, "host_saturates_s8_weights", lambda: saturates)
    result = evaluate_exported(informative_export_int8, "sst2", limit=48, threads=1)
    assert result.get("host_int8") == (HOST_TWIN_NOTE if saturates else None)
    model = onnx.load(informative_export_int8 / "model.onnx")
    if saturates:
        u8_weight_twin(model)
    onnx.save(model, tmp_path / "scored.onnx")
    predictor = Predictor(informative_export_int8, threads=1, max_batch=32)  # eval's batches: int8 scales per batch
    predictor.session = create_session(tmp_path / "scored.onnx", threads=1)
    data = load_task("sst2", "dev")
    predictions = predictor.logits(data.texts[:48]).argmax(axis=1)
    assert result["accuracy"] == pytest.approx(float(np.mean(predictions == np.array(data.labels[:48]))))
