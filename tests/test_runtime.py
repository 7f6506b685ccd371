"""The torch-free runtime: loading, manifest/hash checks, tokenisation, length buckets, parity with torch."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.contract import sha256_file, version_tuple as _version_tuple
from runtime.predictor import ModelDirError, Predictor

SENTENCES = [
    "a gripping, funny and sad film",
    "dull.",
    "the plot is thin, " * 30 + "but the cast is great",  # longer than max_length: must be truncated
    "",
    "Ünïcödé and emoji 🎬 work too",
    "ok",
]
PAIRS = [("A man is playing a guitar.", "Someone plays music."), ("It rains.", "The weather is dry " * 40)]
MAX_LENGTH = 32


def build_tiny_export(out_dir: Path, max_length: int = MAX_LENGTH, quantize: str = "none") -> Path:
    """A tiny BERT classifier exported like `kronedge export` does; torch logits saved for parity tests.

    Uses the real exporter (exporters.export.export_model), so the runtime is tested on what
    `kronedge export` writes; the shapes are tiny so the whole thing takes a few seconds.
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    from exporters.export import export_model
    from kronedge.teachers import minilm_dir

    out_dir = Path(out_dir)
    if (out_dir / "manifest.json").is_file():  # built already by another test module this session
        return out_dir
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = BertForSequenceClassification(config).eval()
    tokenizer_json = minilm_dir() / "tokenizer.json"
    export_model(model, out_dir, target="x86_64", quantize=quantize, task="sst2", max_length=max_length,
                 tokenizer_dir=minilm_dir())
    if quantize != "none":
        return out_dir

    # Reference logits from torch, one sentence at a time (no padding), for parity tests.
    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(max_length)
    ref = []
    with torch.no_grad():
        for text in SENTENCES:
            enc = tok.encode(text)
            ids = torch.tensor([enc.ids])
            ref.append(model(input_ids=ids, attention_mask=torch.ones_like(ids),
                             token_type_ids=torch.tensor([enc.type_ids])).logits[0].numpy())
        for a, b in PAIRS:
            enc = tok.encode(a, b)
            ids = torch.tensor([enc.ids])
            ref.append(model(input_ids=ids, attention_mask=torch.ones_like(ids),
                             token_type_ids=torch.tensor([enc.type_ids])).logits[0].numpy())
    np.save(out_dir.parent / f"{out_dir.name}-torch-logits.npy", np.stack(ref))
    return out_dir


def make_pair_variant(src: Path, dst: Path) -> Path:
    """The same graph declared as a pair task (RTE-like): only the manifest changes."""
    if not (dst / "manifest.json").is_file():
        shutil.copytree(src, dst, dirs_exist_ok=True)
        manifest = json.loads((dst / "manifest.json").read_text())
        manifest.update(task="rte", pair_input=True, labels=["entailment", "not_entailment"])
        (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny-export")


@pytest.fixture(scope="session")
def tiny_pair_export(tiny_export, tmp_path_factory):
    return make_pair_variant(tiny_export, tmp_path_factory.getbasetemp() / "tiny-export-pair")


@pytest.fixture(scope="session")
def predictor(tiny_export):
    return Predictor(tiny_export, threads=1, max_batch=4)


def torch_logits(export_dir: Path) -> np.ndarray:
    return np.load(export_dir.parent / f"{export_dir.name}-torch-logits.npy")


# ---- correctness -------------------------------------------------------------------------------------
def test_logits_match_torch_despite_buckets_and_padding(predictor, tiny_export):
    ref = torch_logits(tiny_export)[: len(SENTENCES)]
    got = predictor.logits(SENTENCES)  # max_batch=4: two buckets, padded rows in both
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_pairs_match_torch(tiny_export, tiny_pair_export):
    ref = torch_logits(tiny_export)[len(SENTENCES):]
    got = Predictor(tiny_pair_export, threads=1).logits(PAIRS)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_pair_encoding_has_two_segments_and_is_truncated(tiny_pair_export):
    p = Predictor(tiny_pair_export, threads=1)
    enc = p.encode(PAIRS)
    assert set(enc[0].type_ids) == {0, 1}
    assert len(enc[1].ids) == MAX_LENGTH and 1 in enc[1].type_ids  # longest-first keeps both segments


def test_matches_onnxruntime_directly(predictor, tiny_export):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny_export / "model.onnx"), providers=["CPUExecutionProvider"])
    for text in SENTENCES[:3]:
        enc = predictor.tokenizer.encode(text)
        feeds = {"input_ids": np.array([enc.ids]), "attention_mask": np.ones((1, len(enc.ids)), np.int64),
                 "token_type_ids": np.array([enc.type_ids])}
        feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
        np.testing.assert_allclose(predictor.logits([text])[0], sess.run(None, feeds)[0][0], atol=1e-5, rtol=1e-5)


def test_predict_output_structure(predictor):
    out = predictor.predict(SENTENCES)
    assert len(out) == len(SENTENCES)
    for item, row in zip(out, predictor.logits(SENTENCES)):
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


def test_truncation_to_manifest_max_length(predictor):
    assert max(len(e.ids) for e in predictor.encode(SENTENCES)) == MAX_LENGTH
    assert predictor.encode(["ok"])[0].ids[-1] == predictor.tokenizer.token_to_id("[SEP]")  # no fixed padding


def test_golden_check(predictor):
    report = predictor.check_golden()
    assert report["sqnr_db"] > 60


@pytest.mark.parametrize("kwargs", [dict(graph_optimization="disabled"), dict(graph_optimization="basic", threads=2),
                                    dict(disabled_optimizers=["SkipLayerNormFusion"], allow_spinning=False)])
def test_session_settings_do_not_change_results(tiny_export, predictor, kwargs):
    p = Predictor(tiny_export, **kwargs)
    np.testing.assert_allclose(p.logits(SENTENCES), predictor.logits(SENTENCES), atol=1e-5, rtol=1e-5)


def test_saved_optimized_graph_and_ort_format(tiny_export, tmp_path, predictor):
    optimized = tmp_path / "model.opt.onnx"
    Predictor(tiny_export, optimized_model_path=optimized)
    assert optimized.stat().st_size > 0

    # An ORT-format model (what ORT Mobile runs) is loaded when there is no model.onnx.
    ort_dir = tmp_path / "ort-only"
    ort_dir.mkdir()
    for name in ("tokenizer.json", "manifest.json"):
        shutil.copy(tiny_export / name, ort_dir / name)
    if (tiny_export / "model.ort").is_file():  # the exporter writes one
        shutil.copy(tiny_export / "model.ort", ort_dir / "model.ort")
    else:
        shutil.copy(tiny_export / "model.onnx", tmp_path / "model.onnx")
        subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(tmp_path / "model.onnx"),
                        "--output_dir", str(tmp_path / "conv")], check=True, capture_output=True)
        shutil.copy(next((tmp_path / "conv").glob("*.ort")), ort_dir / "model.ort")
    manifest = json.loads((ort_dir / "manifest.json").read_text())
    manifest["files"]["model.ort"] = {"sha256": sha256_file(ort_dir / "model.ort"), "bytes": (ort_dir / "model.ort").stat().st_size}
    (ort_dir / "manifest.json").write_text(json.dumps(manifest))
    p = Predictor(ort_dir)
    assert p.model_file == "model.ort"
    np.testing.assert_allclose(p.logits(SENTENCES), predictor.logits(SENTENCES), atol=1e-4, rtol=1e-4)


def test_int8_export_runs_and_matches_its_golden(tmp_path_factory, predictor):
    d = build_tiny_export(tmp_path_factory.getbasetemp() / "tiny-export-int8", quantize="int8")
    onnx_p, ort_p = Predictor(d, threads=1, model_file="model.onnx"), Predictor(d, threads=1, model_file="model.ort")
    assert onnx_p.check_golden()["sqnr_db"] > 40
    np.testing.assert_allclose(ort_p.logits(SENTENCES), onnx_p.logits(SENTENCES), atol=1e-4, rtol=1e-4)
    # int8 against fp32 of the same weights: a signal-to-noise floor, not an atol (style note 11).
    ref, got = predictor.logits(SENTENCES), onnx_p.logits(SENTENCES)
    assert 20 * np.log10(np.linalg.norm(ref) / np.linalg.norm(ref - got)) > 15
    assert [r["label"] for r in onnx_p.predict(SENTENCES)][0] in ("negative", "positive")


# ---- refusals ---------------------------------------------------------------------------------------
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_tampered_model_is_refused(tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path / "m")
    data = bytearray((d / "model.onnx").read_bytes())
    data[-1] ^= 1
    (d / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match="sha256"):
        Predictor(d)


def test_verify_false_skips_hashes(tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path / "m")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["files"]["model.onnx"]["sha256"] = "0" * 64
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match="sha256"):
        Predictor(d)
    Predictor(d, verify=False)  # an explicit opt-out still loads


def test_truncated_tokenizer_is_refused(tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path / "m")
    (d / "tokenizer.json").write_bytes((d / "tokenizer.json").read_bytes()[:100])
    with pytest.raises(ModelDirError, match="bytes"):
        Predictor(d)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(format="kronedge-onnx/9"), "format"),
    (lambda m: m.pop("labels"), "lacks"),
    (lambda m: m.update(problem_type="multi_label_classification"), "problem_type"),
    (lambda m: m.update(max_length=1), "max_length"),
    (lambda m: m.update(inputs=["pixel_values"]), "inputs"),
    (lambda m: m["files"].pop("model.onnx"), "not listed"),
    (lambda m: m.update(requires={"onnxruntime": ">=99.1"}), "needs onnxruntime >=99.1"),
])
def test_bad_manifest_is_refused(tiny_export, tmp_path, edit, match):
    d = _copy(tiny_export, tmp_path / "m")
    manifest = json.loads((d / "manifest.json").read_text())
    edit(manifest)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match=match):
        Predictor(d)


def test_missing_files_are_refused(tiny_export, tmp_path):
    with pytest.raises(ModelDirError, match="not a directory"):
        Predictor(tmp_path / "nope")
    d = _copy(tiny_export, tmp_path / "m")
    for name in ("model.onnx", "model.ort"):
        (d / name).unlink(missing_ok=True)
    with pytest.raises(ModelDirError, match="neither"):
        Predictor(d)


def test_wrong_input_kind_is_refused(predictor, tiny_pair_export):
    with pytest.raises(TypeError):
        predictor.predict("not a list")
    with pytest.raises(ValueError, match="single texts"):
        predictor.predict([("a", "b")])
    with pytest.raises(ValueError, match="pairs"):
        Predictor(tiny_pair_export, threads=1).predict(["just one"])


def test_version_parsing():
    assert _version_tuple("1.32.0") == (1, 32, 0) and _version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert _version_tuple("1.23") < _version_tuple("1.32.0") and _version_tuple("1.24.0rc1") == (1, 24, 0)


def test_max_length_cannot_exceed_export(tiny_export):
    with pytest.raises(ValueError, match="max_length"):
        Predictor(tiny_export, max_length=MAX_LENGTH + 1)
    assert max(len(e.ids) for e in Predictor(tiny_export, max_length=8).encode(SENTENCES)) == 8


# ---- lean import -------------------------------------------------------------------------------------
def test_runtime_imports_neither_torch_nor_transformers():
    code = ("import sys, runtime, runtime.predictor, runtime.serve\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'kronedge.teachers') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
