"""s8-weight int8 on an x86 host whose int8 GEMM saturates (no VNNI): the host rule, ORT's precision mode in the one
session factory, and the exporter, eval and runtime on such a host. Where the host does not saturate, the
monkeypatched rule still drives the code paths; the exactness checks can fail only on a host that saturates."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import exporters.evaluate
import exporters.export
import runtime.predictor
from runtime import hostinfo
from runtime.predictor import HOST_INT8_NOTE, X64_QUANT_PRECISION, ModelDirError, Predictor, create_session

WEIGHTS = np.array([[127, -128, 5], [127, -128, -7], [127, 100, 3], [127, 90, 1]], np.int8)


def _precision_entry(session):
    """The session's x64 precision-mode entry, or None when it has none."""
    try:
        return session.get_session_options().get_session_config_entry(X64_QUANT_PRECISION)
    except RuntimeError:
        return None


def _saturating_matmul(tmp_path):
    """y = a @ (w - zw) in int32, with pairs of products past int16 (2 x 255 x 127 = 64770): what VPMADDUBSW clips."""
    inits = [numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(np.array(0, np.uint8), "za"),
             numpy_helper.from_array(np.array([3, -2, 0], np.int8), "zw")]
    graph = h.make_graph([h.make_node("MatMulInteger", ["a", "w", "za", "zw"], ["y"])], "g",
                         [h.make_tensor_value_info("a", T.UINT8, [2, 4])], [h.make_tensor_value_info("y", T.INT32, None)],
                         initializer=inits)
    path = tmp_path / "matmul.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), path)
    return path


def test_sessions_compute_exact_int8_products_on_this_host(tmp_path):
    a = np.array([[255, 255, 255, 255], [0, 17, 255, 128]], np.uint8)
    exact = a.astype(np.int64) @ (WEIGHTS.astype(np.int64) - np.array([3, -2, 0]))
    assert np.abs(exact).max() > 2 ** 15
    session = create_session(_saturating_matmul(tmp_path))
    np.testing.assert_array_equal(session.run(["y"], {"a": a})[0], exact)
    assert _precision_entry(session) == ("1" if hostinfo.host_saturates_s8_weights() else None)
    if hostinfo.host_saturates_s8_weights():  # without the precision mode this host clips: the mode is what helps
        plain = create_session(_saturating_matmul(tmp_path), config_entries={X64_QUANT_PRECISION: "0"})
        assert not np.array_equal(plain.run(["y"], {"a": a})[0], exact)


def test_which_hosts_saturate(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    for flags, machine, saturates in (("avx2 fma", "x86_64", True), ("avx2 avx512_vnni", "x86_64", False),
                                      ("avx2 avx_vnni", "x86_64", False), ("fp asimd", "aarch64", False)):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(hostinfo.platform, "machine", lambda machine=machine: machine)
        assert hostinfo.host_saturates_s8_weights(cpuinfo) is saturates, (flags, machine)


def test_the_precision_mode_is_set_only_where_the_host_saturates(tmp_path, monkeypatch):
    model = _saturating_matmul(tmp_path)
    for saturates in (True, False):
        monkeypatch.setattr(runtime.predictor, "host_saturates_s8_weights", lambda saturates=saturates: saturates)
        assert _precision_entry(create_session(model)) == ("1" if saturates else None)
    monkeypatch.setattr(runtime.predictor, "host_saturates_s8_weights", lambda: True)
    kept = create_session(model, config_entries={X64_QUANT_PRECISION: "0"})
    assert _precision_entry(kept) == "0"  # a caller can keep the clipped products


@pytest.mark.parametrize("saturates", [True, False])
def test_export_and_eval_say_how_they_ran_s8_weights(informative_export_int8, informative_artifact, tmp_path,
                                                      monkeypatch, saturates):
    """The arm64 export's checks ran its s8 weights exactly on such a host, and golden.npz holds those logits:
    what a Pi computes. model.ort (optimised ahead of time) is checked against model.onnx run the same way."""
    for module in (runtime.predictor, hostinfo):  # the session factory's binding and the one clips_s8_weights reads
        monkeypatch.setattr(module, "host_saturates_s8_weights", lambda: saturates)
    arm = exporters.export.export_model(informative_artifact, tmp_path / "arm", target="arm64", quantize="int8",
                                        max_length=32)
    validation = json.loads((arm / "manifest.json").read_text())["validation"]
    assert validation["int8"].get("host_int8") == (HOST_INT8_NOTE if saturates else None)
    assert validation["ort_format"]["passed"]
    with np.load(arm / "golden.npz") as golden:
        feeds = {k: golden[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        session = create_session(arm / "model.onnx", config_entries={X64_QUANT_PRECISION: "1"} if saturates else None)
        np.testing.assert_allclose(golden["logits"], session.run(["logits"], feeds)[0], atol=1e-5)
    scored = exporters.evaluate.evaluate_exported(arm, "sst2", limit=16, threads=1)
    assert scored.get("host_int8") == (HOST_INT8_NOTE if saturates else None)
    on_ort = exporters.evaluate.evaluate_exported(arm, "sst2", limit=16, threads=1, model_file="model.ort")
    assert ("host_int8" in on_ort) is saturates


def test_the_runtime_names_the_cause_when_a_model_ort_saturates(host_export_int8, tmp_path, monkeypatch):
    d = shutil.copytree(host_export_int8, tmp_path / "m")
    with np.load(d / "golden.npz") as golden:
        data = dict(golden)
    data["logits"] = -data["logits"]  # as far off as a saturated GEMM
    np.savez(d / "golden.npz", **data)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["quantization"]["weight_type"] = "int8"
    (d / "manifest.json").write_text(json.dumps(manifest))
    for module in (runtime.predictor, hostinfo):
        monkeypatch.setattr(module, "host_saturates_s8_weights", lambda: True)
    with pytest.raises(ModelDirError, match="no VNNI .* model.ort"):
        Predictor(d, threads=1, verify=False, model_file="model.ort").check_golden()
    with pytest.raises(ModelDirError, match="the model or runtime is broken"):  # model.onnx runs exactly
        Predictor(d, threads=1, verify=False, model_file="model.onnx").check_golden()
