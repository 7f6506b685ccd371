"""The torch-free runtime: loading, manifest/hash checks, tokenisation, length buckets, parity with torch.

Built on the informative test model (the root conftest.py): its logits move by whole units between texts and
both labels occur, so each parity, golden and int8 check below is also shown to FAIL on a runtime that
returns a constant, shuffles its answers, or runs a corrupted weight.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import helpers
from runtime.contract import GOLDEN_MIN_SQNR_DB, ModelDirError, sha256_file, sqnr, version_tuple
from runtime.predictor import Predictor

MAX_LENGTH = 32  # the informative exports' max_length (the root conftest.py)
# int8 against fp32 of the same weights: a signal-to-noise floor, not an atol (style note 11). The
# informative int8 export scores ~45 dB; a constant, shuffled or corrupted output scores below 10 dB.
INT8_VS_FP32_MIN_SQNR_DB = 20.0
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def texts(probe_texts):
    """Probe sentences and the awkward ones (too long, empty, non-ASCII, one word), interleaved so that
    length buckets and padding mix them."""
    return [t for pair in zip(probe_texts, helpers.EDGE_TEXTS * 3) for t in pair]


@pytest.fixture(scope="module")
def reference(informative_model, texts):
    return helpers.torch_logits(informative_model, texts, MAX_LENGTH)


@pytest.fixture(scope="module")
def pair_export(informative_pair_export):
    return informative_pair_export


@pytest.fixture(scope="module")
def predictor(informative_export_fp32):
    return Predictor(informative_export_fp32, threads=1, max_batch=4)


def assert_parity(got, reference):
    """The runtime's fp32 logits equal torch's, text by text (atol 1e-4, the export tolerance)."""
    np.testing.assert_allclose(got, reference, atol=1e-4, rtol=1e-4)


def assert_int8_close(got, fp32):
    """An int8 run keeps the fp32 run's labels and an SQNR above the floor."""
    assert sqnr(fp32, got) >= INT8_VS_FP32_MIN_SQNR_DB, f"int8 SQNR {sqnr(fp32, got):.1f} dB"
    assert (np.argmax(got, axis=1) == np.argmax(fp32, axis=1)).all()


# ---- correctness -------------------------------------------------------------------------------------
def test_logits_match_torch_despite_buckets_and_padding(predictor, texts, reference):
    assert_parity(predictor.logits(texts), reference)  # max_batch=4: several buckets, padded rows in each


@pytest.mark.parametrize("how", helpers.BREAKS)
def test_parity_check_fails_on_a_broken_runtime(informative_export_fp32, texts, reference, how):
    broken = Predictor(informative_export_fp32, threads=1, max_batch=4)
    broken.session = helpers.BrokenSession(broken.session, how)
    with pytest.raises(AssertionError):
        assert_parity(broken.logits(texts), reference)


def test_labels_match_torch_per_text(predictor, probe_texts, informative_torch_logits):
    labels = [r["label"] for r in predictor.predict(probe_texts)]
    assert labels == [helpers.LABELS[i] for i in informative_torch_logits.argmax(axis=1)]
    assert set(labels) == set(helpers.LABELS)


def test_pairs_match_torch(pair_export, informative_model):
    pairs = list(helpers.PAIRS) + [(a, b) for a, b in zip(helpers.PROBE_TEXTS[:4], helpers.PROBE_TEXTS[4:8])]
    got = Predictor(pair_export, threads=1).logits(pairs)
    assert_parity(got, helpers.torch_logits(informative_model, pairs, MAX_LENGTH))


def test_pair_encoding_has_two_segments_and_is_truncated(pair_export):
    p = Predictor(pair_export, threads=1)
    enc = p.encode(helpers.PAIRS)
    assert set(enc[0].type_ids) == {0, 1}
    assert len(enc[1].ids) == MAX_LENGTH and 1 in enc[1].type_ids  # longest-first keeps both segments


def test_matches_onnxruntime_directly(predictor, informative_export_fp32, probe_texts):
    from runtime.predictor import create_session

    sess = create_session(informative_export_fp32 / "model.onnx", graph_optimization="disabled")
    for text in probe_texts[:4]:
        enc = predictor.tokenizer.encode(text)
        feeds = {"input_ids": np.array([enc.ids]), "attention_mask": np.ones((1, len(enc.ids)), np.int64),
                 "token_type_ids": np.array([enc.type_ids])}
        feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
        np.testing.assert_allclose(predictor.logits([text])[0], sess.run(None, feeds)[0][0], atol=1e-5, rtol=1e-5)


def test_predict_output_structure(predictor, texts):
    out = predictor.predict(texts)
    assert len(out) == len(texts)
    for item, row in zip(out, predictor.logits(texts)):
        assert item["label"] == ["negative", "positive"][int(np.argmax(row))]
        assert set(item["scores"]) == {"negative", "positive"}
        assert abs(sum(item["scores"].values()) - 1) < 1e-6
        assert item["score"] == max(item["scores"].values())
        assert item["latency_ms"] > 0
    assert predictor.predict([]) == []


def test_length_buckets_bound_padding(predictor):
    groups = predictor._groups([5, 40, 6, 7, 30, 5, 5, 5, 5, 8])  # max_batch=4, max_padding=0.3
    assert sorted(i for g in groups for i in g) == list(range(10))
    assert all(len(g) <= 4 for g in groups)
    lengths = [5, 40, 6, 7, 30, 5, 5, 5, 5, 8]
    assert all(max(lengths[i] for i in g) <= 1.3 * min(lengths[i] for i in g) + 2 for g in groups)
    assert [len(g) for g in groups] == [4, 4, 2]


def test_truncation_to_manifest_max_length(predictor, texts):
    assert max(len(e.ids) for e in predictor.encode(texts)) == MAX_LENGTH
    assert predictor.encode(["ok"])[0].ids[-1] == predictor.tokenizer.token_to_id("[SEP]")  # no fixed padding


def test_golden_check(predictor):
    assert predictor.check_golden()["sqnr_db"] > 60


@pytest.mark.parametrize("how", helpers.BREAKS)
def test_golden_check_fails_on_a_broken_runtime(informative_export_fp32, how):
    broken = Predictor(informative_export_fp32, threads=1)
    broken.session = helpers.BrokenSession(broken.session, how)
    with pytest.raises(ModelDirError, match="golden check failed"):
        broken.check_golden()


@pytest.mark.parametrize("kwargs", [dict(graph_optimization="disabled"), dict(graph_optimization="basic", threads=2),
                                    dict(disabled_optimizers=["SkipLayerNormFusion"], allow_spinning=False)])
def test_session_settings_do_not_change_results(informative_export_fp32, predictor, texts, kwargs):
    p = Predictor(informative_export_fp32, **kwargs)
    np.testing.assert_allclose(p.logits(texts), predictor.logits(texts), atol=1e-5, rtol=1e-5)


def test_saved_optimized_graph_and_ort_format(informative_export_fp32, tmp_path, predictor, texts):
    optimized = tmp_path / "model.opt.onnx"
    Predictor(informative_export_fp32, optimized_model_path=optimized)
    assert optimized.stat().st_size > 0

    # An ORT-format model (what ORT Mobile runs) is loaded when there is no model.onnx.
    ort_dir = tmp_path / "ort-only"
    ort_dir.mkdir()
    for name in ("tokenizer.json", "manifest.json", "model.ort"):
        shutil.copy(informative_export_fp32 / name, ort_dir / name)
    p = Predictor(ort_dir)
    assert p.model_file == "model.ort"
    np.testing.assert_allclose(p.logits(texts), predictor.logits(texts), atol=1e-4, rtol=1e-4)


def test_int8_export_runs_and_matches_its_golden(host_export_int8, predictor, probe_texts):
    onnx_p = Predictor(host_export_int8, threads=1, model_file="model.onnx")
    ort_p = Predictor(host_export_int8, threads=1, model_file="model.ort")
    assert onnx_p.check_golden()["sqnr_db"] > 40
    np.testing.assert_allclose(ort_p.logits(probe_texts), onnx_p.logits(probe_texts), atol=1e-4, rtol=1e-4)
    assert_int8_close(onnx_p.logits(probe_texts), predictor.logits(probe_texts))


def test_int8_checks_fail_on_a_corrupted_weight(host_export_int8, predictor, probe_texts, tmp_path):
    d = shutil.copytree(host_export_int8, tmp_path / "m")
    helpers.corrupt_weight(d / "model.onnx", d / "model.onnx")
    with pytest.raises(ModelDirError, match="sha256|bytes"):
        Predictor(d)  # the manifest's hash catches the changed file first...
    helpers.refresh_manifest_hashes(d)  # ...and with the hash updated, the numbers do
    broken = Predictor(d, threads=1, model_file="model.onnx")
    with pytest.raises(AssertionError):
        assert_int8_close(broken.logits(probe_texts), predictor.logits(probe_texts))
    with pytest.raises(ModelDirError, match="golden check failed"):
        broken.check_golden()


@pytest.mark.parametrize("how", helpers.BREAKS)
def test_int8_check_fails_on_a_broken_runtime(host_export_int8, predictor, probe_texts, how):
    broken = Predictor(host_export_int8, threads=1)
    broken.session = helpers.BrokenSession(broken.session, how)
    with pytest.raises(AssertionError):
        assert_int8_close(broken.logits(probe_texts), predictor.logits(probe_texts))


# ---- refusals ---------------------------------------------------------------------------------------
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_tampered_model_is_refused(informative_export_fp32, tmp_path):
    d = _copy(informative_export_fp32, tmp_path / "m")
    data = bytearray((d / "model.onnx").read_bytes())
    data[-1] ^= 1
    (d / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match="sha256"):
        Predictor(d)


def test_verify_false_skips_hashes(informative_export_fp32, tmp_path):
    d = _copy(informative_export_fp32, tmp_path / "m")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["files"]["model.onnx"]["sha256"] = "0" * 64
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match="sha256"):
        Predictor(d)
    Predictor(d, verify=False)  # an explicit opt-out still loads


def test_truncated_tokenizer_is_refused(informative_export_fp32, tmp_path):
    d = _copy(informative_export_fp32, tmp_path / "m")
    (d / "tokenizer.json").write_bytes((d / "tokenizer.json").read_bytes()[:100])
    with pytest.raises(ModelDirError, match="bytes"):
        Predictor(d)
    with pytest.raises(ModelDirError, match="not a readable tokenizer"):
        Predictor(d, verify=False)


def _truncate_model(d: Path) -> None:
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:5000])


def _corrupt_golden(d: Path) -> None:
    data = bytearray((d / "golden.npz").read_bytes())
    data[len(data) // 2:] = b"\0" * (len(data) - len(data) // 2)
    (d / "golden.npz").write_bytes(bytes(data))


def _non_json_manifest(d: Path) -> None:
    (d / "manifest.json").write_text('{"format": "kronedge-onnx/1", "labels": [')


# (break, what Predictor(d) says, what Predictor(d, verify=False) [+ check_golden] says)
CORRUPTIONS = {
    "truncated-model": (_truncate_model, "bytes", "cannot load"),
    "corrupt-golden": (_corrupt_golden, "golden.npz sha256", "not a readable golden file"),
    "non-json-manifest": (_non_json_manifest, "not valid JSON", "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_files_are_refused_with_a_named_error(informative_export_fp32, tmp_path, case):
    corrupt, verified, unverified = CORRUPTIONS[case]
    d = _copy(informative_export_fp32, tmp_path / "m")
    corrupt(d)
    with pytest.raises(ModelDirError, match=verified) as info:
        Predictor(d)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelDirError, match=unverified) as info:
        Predictor(d, verify=False).check_golden()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_files_are_one_line_at_the_entry_points(informative_export_fp32, tmp_path, case):
    """`kronedge eval DIR`, `kronedge serve DIR` and `python -m runtime.serve DIR` say one line and exit 1."""
    from typer.testing import CliRunner

    from kronedge.cli import app

    d = _copy(informative_export_fp32, tmp_path / "m")
    CORRUPTIONS[case][0](d)
    for args in (["eval", str(d), "--task", "sst2", "--limit", "4"], ["serve", str(d), "--port", "0"]):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    server = subprocess.run([sys.executable, "-m", "runtime.serve", str(d), "--port", "0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert server.returncode == 1, server.stderr
    lines = (server.stdout + server.stderr).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(format="kronedge-onnx/9"), "format"),
    (lambda m: m.pop("labels"), "lacks"),
    (lambda m: m.update(problem_type="multi_label_classification"), "problem_type"),
    (lambda m: m.update(max_length=1), "max_length"),
    (lambda m: m.update(inputs=["pixel_values"]), "inputs"),
    (lambda m: m.update(outputs=["scores"]), "outputs"),
    (lambda m: m.update(labels="negative"), "labels"),
    (lambda m: m["files"].pop("model.onnx"), "not listed"),
    (lambda m: m.update(requires={"onnxruntime": ">=99.1"}), "needs onnxruntime >=99.1"),
])
def test_bad_manifest_is_refused(informative_export_fp32, tmp_path, edit, match):
    d = _copy(informative_export_fp32, tmp_path / "m")
    manifest = json.loads((d / "manifest.json").read_text())
    edit(manifest)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match=match):
        Predictor(d)


def test_missing_files_are_refused(informative_export_fp32, tmp_path):
    with pytest.raises(ModelDirError, match="not a directory"):
        Predictor(tmp_path / "nope")
    d = _copy(informative_export_fp32, tmp_path / "m")
    for name in ("model.onnx", "model.ort"):
        (d / name).unlink(missing_ok=True)
    with pytest.raises(ModelDirError, match="neither"):
        Predictor(d)


def test_wrong_input_kind_is_refused(predictor, pair_export):
    with pytest.raises(TypeError):
        predictor.predict("not a list")
    with pytest.raises(ValueError, match="single texts"):
        predictor.predict([("a", "b")])
    with pytest.raises(ValueError, match="pairs"):
        Predictor(pair_export, threads=1).predict(["just one"])


def test_version_parsing():
    assert version_tuple("1.32.0") == (1, 32, 0) and version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert version_tuple("1.23") < version_tuple("1.32.0") and version_tuple("1.24.0rc1") == (1, 24, 0)


def test_max_length_cannot_exceed_export(informative_export_fp32, texts):
    with pytest.raises(ValueError, match="max_length"):
        Predictor(informative_export_fp32, max_length=MAX_LENGTH + 1)
    assert max(len(e.ids) for e in Predictor(informative_export_fp32, max_length=8).encode(texts)) == 8


# ---- the contract ------------------------------------------------------------------------------------
def test_manifest_round_trips_and_keeps_unknown_keys(informative_export_fp32):
    from runtime.contract import FORMAT, Manifest

    raw = json.loads((informative_export_fp32 / "manifest.json").read_text())
    manifest = Manifest.from_dict({**raw, "added_later": {"x": 1}})
    assert manifest.to_dict() == {**raw, "added_later": {"x": 1}}
    assert manifest.format == FORMAT and manifest.version == 1
    assert manifest.files["model.onnx"]["sha256"] == sha256_file(informative_export_fp32 / "model.onnx")


def test_sqnr_is_defined_once():
    import exporters.validate

    x = np.array([3.0, 4.0])
    assert sqnr(x, x) == float("inf")
    assert abs(sqnr(x, x + np.array([0.05, 0.0])) - 20 * np.log10(5 / 0.05)) < 1e-9
    assert exporters.validate.sqnr is sqnr
    with pytest.raises(ValueError, match="equal shapes"):
        sqnr(x, x[:1])
    assert GOLDEN_MIN_SQNR_DB > helpers.MAX_CONSTANT_SQNR_DB  # the floor is above any broken output's score


def test_hostinfo_reads_cpuinfo(tmp_path):
    from runtime import hostinfo

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx2 avx512_vnni\n")
    assert hostinfo.cpu_model(fake) == "Test CPU 9000"
    assert hostinfo.cpu_flags(hostinfo.KERNEL_FLAG_PREFIXES, fake) == ["avx2", "avx512_vnni", "sse4_2"]
    assert hostinfo.has_cpu_flag("avx512_vnni", cpuinfo=fake) and not hostinfo.has_cpu_flag("amx_bf16", cpuinfo=fake)
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd0b\n")
    assert hostinfo.cpu_model(arm) == "0xd0b" and hostinfo.cpu_flags(cpuinfo=arm) == ["asimd", "asimddp", "fp"]
    assert hostinfo.cpu_model(tmp_path / "absent") and hostinfo.cpu_flags(cpuinfo=tmp_path / "absent") == []
    v = hostinfo.versions(("onnxruntime", "no-such-dist-kronedge"))
    assert v["onnxruntime"] and v["no-such-dist-kronedge"] is None and v["python"]


# ---- lean import -------------------------------------------------------------------------------------
def test_runtime_imports_neither_torch_nor_transformers():
    code = ("import sys, runtime, runtime.predictor, runtime.contract, runtime.hostinfo, runtime.serve\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'kronedge.teachers') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
