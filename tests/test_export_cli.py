"""`kronedge export` on the command line, and the exported directory in the wider ecosystem
(optimum's ORTModelForSequenceClassification, a transformers pipeline, the dense optimum baseline)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import helpers
from kronedge.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    return helpers.tiny_spec(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def cli_export(tiny_spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "exported"
    result = runner.invoke(app, ["export", tiny_spec, "--target", "arm64", "--quantize", "int8", "--task", "sst2",
                                 "--max-length", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_export_help():
    result = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--target", "--quantize", "--profile", "--task", "--out"):
        assert option in result.output


def test_cli_export_writes_directory(cli_export):
    manifest = json.loads((cli_export / "manifest.json").read_text())
    assert manifest["target"] == "arm64" and manifest["quantization"]["name"] == "arm64"
    assert manifest["task"] == "sst2" and manifest["labels"] == ["negative", "positive"]
    assert (cli_export / "model.ort").is_file() and (cli_export / "golden.npz").is_file()


def test_sqnr_floor_is_for_int8_and_its_help_shows_the_exporters_default(tiny_spec, tmp_path):
    from exporters.config import BertOnnxConfig
    from kronedge.commands.export import SQNR_FLOOR_HELP

    assert SQNR_FLOOR_HELP == BertOnnxConfig.SQNR_FLOOR_INT8_DB
    result = runner.invoke(app, ["export", tiny_spec, "--sqnr-floor", "5", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "--sqnr-floor judges an int8 export" in " ".join(result.output.split())
    assert not (tmp_path / "x").exists()


def test_cli_bad_target_is_one_line(tiny_spec, tmp_path):
    result = runner.invoke(app, ["export", tiny_spec, "--target", "riscv", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "unknown target" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_evaluate_exported(cli_export):
    from exporters.evaluate import evaluate_exported

    result = evaluate_exported(cli_export, "sst2", limit=24)
    assert result["examples"] == 24 and 0.0 <= result["accuracy"] <= 1.0


def test_evaluate_exported_scores_what_torch_predicts(informative_export_fp32, informative_model):
    """The export's score is the torch model's score on the same sentences (same tokenisation, same labels)."""
    from exporters.evaluate import evaluate_exported
    from kronedge.data import compute_metrics, load_task

    data = load_task("sst2", split="dev")
    texts, labels = list(data.texts[:48]), list(data.labels[:48])
    predicted = helpers.torch_logits(informative_model, texts, 32).argmax(axis=1).tolist()
    assert 0 < sum(predicted) < len(predicted)  # the answers vary on these sentences
    # Accuracy alone is blind to some shuffles; three prefixes (batched differently) rarely all are.
    for limit in (7, 20, 48):
        expected = compute_metrics("sst2", predicted[:limit], labels[:limit])["accuracy"]
        result = evaluate_exported(informative_export_fp32, "sst2", limit=limit, batch_size=8)
        assert result["examples"] == limit and result["accuracy"] == pytest.approx(expected, abs=1e-9), limit


def test_loads_with_optimum_and_pipeline(cli_export):
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    from runtime.predictor import X64_QUANT_PRECISION, create_session

    model = ORTModelForSequenceClassification.from_pretrained(cli_export, provider="CPUExecutionProvider")
    golden = np.load(cli_export / "golden.npz")
    feeds = {k: golden[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    logits = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
    # optimum's session runs the s8 weights as ORT does by default: on an x86 CPU without VNNI that saturates, where
    # golden.npz (and kronedge's runtime) hold the exact products
    plain = create_session(cli_export / "model.onnx", config_entries={X64_QUANT_PRECISION: "0"}).run(["logits"], feeds)[0]
    assert np.allclose(np.asarray(logits), plain, atol=1e-5)
    classify = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(cli_export))
    assert classify("a fine film")[0]["label"] in ("negative", "positive")


def test_optimum_dense_baseline(tiny_spec, tmp_path):
    from collections import Counter

    import onnx

    from exporters.optimum_baseline import optimum_baseline

    out = optimum_baseline(tiny_spec, tmp_path / "dense", target="arm64", quantize="int8", max_length=64)
    ops = Counter(n.op_type for n in onnx.load(out / "model.onnx").graph.node)
    assert ops["QAttention"] == helpers.TINY_FIELDS["num_hidden_layers"]  # ORT's dense BERT fusion, then int8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "optimum" and manifest["quantization"]["name"] == "optimum-arm64"
