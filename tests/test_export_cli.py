"""`kronedge export` on the command line, and the exported directory in the wider ecosystem
(optimum's ORTModelForSequenceClassification, a transformers pipeline, the dense optimum baseline)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kronedge.cli import app

TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, type_vocab_size=2, num_labels=2)

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return f"random:{path}"


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


def test_cli_bad_target_is_one_line(tiny_spec, tmp_path):
    result = runner.invoke(app, ["export", tiny_spec, "--target", "riscv", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "unknown target" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_evaluate_exported(cli_export):
    from exporters.evaluate import evaluate_exported

    result = evaluate_exported(cli_export, "sst2", limit=24)
    assert result["examples"] == 24 and 0.0 <= result["accuracy"] <= 1.0


def test_loads_with_optimum_and_pipeline(cli_export):
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    model = ORTModelForSequenceClassification.from_pretrained(cli_export, provider="CPUExecutionProvider")
    golden = np.load(cli_export / "golden.npz")
    logits = model(**{k: torch.from_numpy(golden[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    assert np.allclose(np.asarray(logits), golden["logits"], atol=1e-5)
    classify = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(cli_export))
    assert classify("a fine film")[0]["label"] in ("negative", "positive")


def test_optimum_dense_baseline(tiny_spec, tmp_path):
    from collections import Counter

    import onnx

    from exporters.optimum_baseline import optimum_baseline

    out = optimum_baseline(tiny_spec, tmp_path / "dense", target="arm64", quantize="int8", max_length=64)
    ops = Counter(n.op_type for n in onnx.load(out / "model.onnx").graph.node)
    assert ops["QAttention"] == TINY["num_hidden_layers"]  # ORT's dense BERT fusion, then int8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "optimum" and manifest["quantization"]["name"] == "optimum-arm64"
