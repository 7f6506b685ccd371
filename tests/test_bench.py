"""`kronedge bench` on tiny ONNX graphs built in code: report structure, ratios, outputs. No timing assertions."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from kronedge.benchmark import describe_model, run_bench, to_markdown
from kronedge.cli import app

VOCAB, WIDTH = 50, 16


def tiny_onnx(path: Path, width: int = WIDTH, seed: int = 0) -> Path:
    """Gather (embedding) -> MatMul -> mean over tokens: BERT-style int64 inputs, float logits."""
    rng = np.random.default_rng(seed)
    emb = numpy_helper.from_array(rng.standard_normal((VOCAB, width)).astype(np.float32), "emb")
    w = numpy_helper.from_array(rng.standard_normal((width, 2)).astype(np.float32), "w")
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["x"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
             helper.make_node("Mul", ["x", "m3"], ["xm"]),
             helper.make_node("MatMul", ["xm", "w"], ["y"]),
             helper.make_node("ReduceMean", ["y", "ax1"], ["logits"], keepdims=0)]
    inits = [emb, w, numpy_helper.from_array(np.array([2], np.int64), "axes"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                                                    ["batch", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path / "model.onnx"))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    return [tiny_onnx(base / "wide", width=64), tiny_onnx(base / "narrow", width=8, seed=1)]


def test_describe_model_reads_graph(models):
    info = describe_model(models[0], seq=32)
    assert info.params == VOCAB * 64 + 64 * 2
    assert info.vocab == VOCAB
    assert info.flops == 2 * 32 * 64 * 2  # MatMul (1, 32, 64) x (64, 2)
    assert info.file_bytes == (models[0] / "model.onnx").stat().st_size


def test_run_bench_structure_and_ratios(models):
    report = run_bench(models, seqs=[8, 16], batches=[1, 2], threads=[1], warmup=1, iters=2)
    assert report["schema"] == "kronedge-bench/1"
    assert report["baseline"] == "wide"
    assert len(report["rows"]) == 2 * 2 * 2
    fields = {"model", "threads", "batch", "seq", "p50_ms", "p90_ms", "p99_ms", "throughput_seq_per_s", "peak_rss_mb",
              "file_bytes", "params", "flops", "onnxruntime", "provider", "cpu", "emulated", "speedup_vs_baseline",
              "size_ratio_vs_baseline", "latency_ratio_vs_baseline"}
    for row in report["rows"]:
        assert fields <= row.keys()
        assert row["p50_ms"] > 0 and row["n"] == 2 and row["emulated"] is False
        assert row["peak_rss_mb"] > 0
        if row["baseline"]:
            assert row["speedup_vs_baseline"] == pytest.approx(1.0)
    narrow = [r for r in report["rows"] if r["model"] == "narrow"]
    assert all(r["size_ratio_vs_baseline"] < 1 for r in narrow)
    group = report["speedup_matrix"]["threads=1,batch=2,seq=16"]
    rows = {r["model"]: r for r in report["rows"] if (r["batch"], r["seq"]) == (2, 16)}
    assert group["narrow"]["wide"] == pytest.approx(rows["wide"]["p50_ms"] / rows["narrow"]["p50_ms"])
    md = to_markdown(report)
    assert "## threads=1,batch=2,seq=16" in md and "| narrow |" in md
    json.dumps(report)  # serialisable


def test_bench_rejects_bad_options(models):
    with pytest.raises(ValueError, match="target"):
        run_bench(models, target="gpu")
    with pytest.raises(ValueError, match="--cpu"):
        run_bench(models, cpu="cortex-a72")
    with pytest.raises(FileNotFoundError):
        run_bench([models[0].parent / "missing"])


def test_cli_bench_json_markdown_plot(models, tmp_path):
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    result = CliRunner().invoke(app, ["bench", str(models[0]), str(models[1]), "--seq", "8", "--batch", "1",
                                      "--threads", "1", "--warmup", "1", "--iters", "1", "--no-rss", "--json",
                                      "--markdown", str(md), "--plot", str(png), "--name", "base", "--name", "small"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert [m["name"] for m in report["models"]] == ["base", "small"]
    assert report["rows"][1]["speedup_vs_baseline"] > 0
    assert md.read_text().startswith("# kronedge bench")
    assert png.stat().st_size > 1000


def test_cli_bench_bad_seq_is_one_line(models):
    result = CliRunner().invoke(app, ["bench", str(models[0]), "--seq", "abc"])
    assert result.exit_code == 1
    assert "comma-separated integers" in result.output
