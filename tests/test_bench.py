"""`kronedge bench` on tiny ONNX graphs built in code: report structure, ratios, GEMM FLOPs, compute floor,
profile breakdown, outputs. No timing assertions: only structure and arithmetic between reported fields."""

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from kronedge.benchmark import BenchError, count_gemm_flops, describe_model, run_bench, to_markdown
from kronedge.benchmark.flops import GemmFlops
from kronedge.benchmark.floor import compute_floor
from kronedge.benchmark.profile import profile_model, summarize_trace
from kronedge.cli import app

VOCAB, WIDTH = 50, 16
PROBE = 32  # GEMM probe size in these tests: tiny, the arithmetic is what is checked


def _save(path: Path, nodes, inits, outputs, opset: int = 18, ir: int = 9) -> Path:
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(nodes, path.name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path / "model.onnx"))
    return path


def _init(rng, name, shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def tiny_onnx(path: Path, width: int = WIDTH, seed: int = 0) -> Path:
    """Gather (embedding) -> MatMul -> mean over tokens: BERT-style int64 inputs, float logits."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["x"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
             helper.make_node("Mul", ["x", "m3"], ["xm"]),
             helper.make_node("MatMul", ["xm", "w"], ["y"]),
             helper.make_node("ReduceMean", ["y", "ax1"], ["logits"], keepdims=0)]
    inits = [_init(rng, "emb", (VOCAB, width)), _init(rng, "w", (width, 2)),
             numpy_helper.from_array(np.array([2], np.int64), "axes"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    return _save(path, nodes, inits, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])])


def kron_attention_onnx(path: Path) -> Path:
    """A graph with known GEMM FLOPs, shaped like a Kronecker export: Gather -> Reshape (B,S,2,12) ->
    MatMul 12x6 (a factor product) -> Reshape (B,S,12) -> MatMul 12x16 -> ONNX Attention (2 heads) ->
    mean over tokens -> Gemm (transB) to 4 logits. MACs: 144 BS + 192 BS + 2 x 16 B S^2 + 64 B."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["x"]),
             helper.make_node("Reshape", ["x", "shape4"], ["x4"]),
             helper.make_node("MatMul", ["x4", "w1"], ["h4"]),
             helper.make_node("Reshape", ["h4", "shape3"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["q"]),
             helper.make_node("Attention", ["q", "q", "q"], ["ctx"], q_num_heads=2, kv_num_heads=2),
             helper.make_node("ReduceMean", ["ctx", "ax1"], ["pooled"], keepdims=0),
             helper.make_node("Gemm", ["pooled", "w3"], ["logits"], transB=1)]
    inits = [_init(rng, "emb", (VOCAB, 24)), _init(rng, "w1", (12, 6)), _init(rng, "w2", (12, 16)),
             _init(rng, "w3", (4, 16)),
             numpy_helper.from_array(np.array([0, 0, 2, 12], np.int64), "shape4"),
             numpy_helper.from_array(np.array([0, 0, 12], np.int64), "shape3"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    return _save(path, nodes, inits, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
                 opset=23, ir=10)


def kron_attention_macs(batch: int, seq: int) -> tuple[int, int]:
    """(MACs of the GEMMs with a constant weight, MACs of the attention core) of kron_attention_onnx."""
    return 144 * batch * seq + 192 * batch * seq + 64 * batch, 32 * batch * seq * seq


def chain_onnx(path: Path, matmuls: int = 3) -> Path:
    """Gather -> (MatMul -> Tanh) x matmuls -> ReduceMean: nothing for ORT to fuse, node counts known."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [helper.make_node("Gather", ["emb", "input_ids"], ["x0"])], [_init(rng, "emb", (VOCAB, 8))], "x0"
    for i in range(matmuls):
        inits.append(_init(rng, f"w{i}", (8, 8)))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"x{i + 1}"])]
        x = f"x{i + 1}"
    nodes.append(helper.make_node("ReduceMean", [x, "ax1"], ["logits"], keepdims=0))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax1"))
    return _save(path, nodes, inits, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8])])


def quantized(src: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(src / "model.onnx"), str(out / "model.onnx"), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"])
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    return [tiny_onnx(base / "wide", width=64), tiny_onnx(base / "narrow", width=8, seed=1)]


@pytest.fixture(scope="module")
def kron_models(tmp_path_factory):
    base = tmp_path_factory.mktemp("kron")
    fp32 = kron_attention_onnx(base / "kron-fp32")
    return fp32, quantized(fp32, base / "kron-int8")


def test_describe_model_reads_graph(models):
    info = describe_model(models[0], seq=32)
    assert info.params == VOCAB * 64 + 64 * 2
    assert info.vocab == VOCAB
    assert info.flops == 2 * 32 * 64 * 2  # MatMul (1, 32, 64) x (64, 2)
    assert info.file_bytes == (models[0] / "model.onnx").stat().st_size


@pytest.mark.parametrize("batch,seq", [(1, 8), (2, 16), (3, 7)])
def test_gemm_flops_of_a_known_graph(kron_models, batch, seq):
    weights, core = kron_attention_macs(batch, seq)
    fp32 = count_gemm_flops(onnx.load(str(kron_models[0] / "model.onnx")), batch, seq)
    assert fp32.uncounted == [] and fp32.complete
    assert fp32.nodes == {"MatMul": 2, "Attention": 1, "Gemm": 1}
    assert (fp32.fp32, fp32.int8) == (2 * (weights + core), 0)
    # Dynamic int8 moves the GEMMs with a constant weight to int8 (the Gemm too); the attention core stays fp32.
    int8 = count_gemm_flops(onnx.load(str(kron_models[1] / "model.onnx")), batch, seq)
    assert int8.nodes == {"MatMulInteger": 3, "Attention": 1} and int8.complete
    assert (int8.int8, int8.fp32) == (2 * weights, 2 * core)


def contrib_attention_onnx(path: Path) -> Path:
    """Gather -> com.microsoft Attention (2 heads, packed 12 x 36 QKV weight) -> mean: optimum's fused BERT form."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["x"]),
             helper.make_node("Attention", ["x", "wqkv", "bqkv"], ["ctx"], domain="com.microsoft", num_heads=2),
             helper.make_node("ReduceMean", ["ctx", "ax1"], ["logits"], keepdims=0)]
    inits = [_init(rng, "emb", (VOCAB, 12)), _init(rng, "wqkv", (12, 36)), _init(rng, "bqkv", (36,)),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    path = _save(path, nodes, inits, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 12])])
    model = onnx.load(str(path / "model.onnx"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path / "model.onnx"))
    return path


def test_gemm_flops_of_contrib_attention_and_qattention(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = contrib_attention_onnx(tmp_path / "attn")
    (tmp_path / "q").mkdir()
    quantize_dynamic(str(fp32 / "model.onnx"), str(tmp_path / "q" / "model.onnx"), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["Attention"])
    batch, seq = 2, 5
    projection, core = batch * seq * 12 * 36, 2 * batch * seq * seq * 12
    counted = count_gemm_flops(onnx.load(str(fp32 / "model.onnx")), batch, seq)
    assert counted.nodes == {"Attention": 1} and (counted.fp32, counted.int8) == (2 * (projection + core), 0)
    q = count_gemm_flops(onnx.load(str(tmp_path / "q" / "model.onnx")), batch, seq)
    assert q.nodes == {"QAttention": 1} and (q.int8, q.fp32) == (2 * projection, 2 * core)


def test_gemm_flops_reports_what_it_cannot_count(kron_models):
    model = onnx.load(str(kron_models[0] / "model.onnx"))
    shape3 = next(i for i in model.graph.initializer if i.name == "shape3")
    model.graph.initializer.remove(shape3)  # the Reshape target becomes an unknown input: no shape after it
    model.graph.input.append(helper.make_tensor_value_info("shape3", TensorProto.INT64, [3]))
    counted = count_gemm_flops(model, 1, 8)
    assert not counted.complete and len(counted.uncounted) >= 1
    assert counted.fp32 == 2 * 144 * 8  # the MatMul before the unknown Reshape is still counted


def test_compute_floor_arithmetic():
    flops = GemmFlops(batch=1, seq=128, fp32=2e9, int8=4e9)
    floor = compute_floor(flops, {"fp32": 100.0, "int8": 400.0}, p50_ms=60.0)
    assert floor.floor_ms == pytest.approx(20.0 + 10.0)
    assert floor.fraction == pytest.approx(0.5) and "above 1" not in floor.note
    assert "above 1" in compute_floor(flops, {"fp32": 100.0, "int8": 400.0}, p50_ms=20.0).note
    unknown = compute_floor(GemmFlops(batch=1, seq=8, uncounted=["n1"]), {"fp32": 1.0, "int8": 1.0}, 1.0)
    assert unknown.floor_ms is None and "1 GEMM nodes" in unknown.note
    assert compute_floor(None, {}, 1.0).floor_ms is None


def test_run_bench_structure_and_ratios(models):
    report = run_bench(models, seqs=[8, 16], batches=[1, 2], threads=[1], warmup=1, iters=2, probe_size=PROBE)
    assert report["schema"] == "kronedge-bench/2"
    assert report["baseline"] == "wide"
    assert len(report["rows"]) == 2 * 2 * 2
    fields = {"model", "threads", "batch", "seq", "p50_ms", "p90_ms", "p99_ms", "throughput_seq_per_s", "peak_rss_mb",
              "file_bytes", "params", "flops", "onnxruntime", "provider", "cpu", "emulated", "speedup_vs_baseline",
              "size_ratio_vs_baseline", "latency_ratio_vs_baseline", "gemm_flops", "compute_floor_ms",
              "floor_fraction", "gemm_rate_gflops", "floor_note"}
    for row in report["rows"]:
        assert fields <= row.keys()
        assert row["p50_ms"] > 0 and row["n"] == 2 and row["emulated"] is False
        assert row["peak_rss_mb"] > 0
        if row["baseline"]:
            assert row["speedup_vs_baseline"] == pytest.approx(1.0)
    narrow = [r for r in report["rows"] if r["model"] == "narrow"]
    assert all(r["size_ratio_vs_baseline"] < 1 for r in narrow)
    # each row's FLOPs are one sequence at that row's length, not at the bench's longest
    flops = {r["seq"]: r["flops"] for r in narrow if r["batch"] == 1}
    assert 0 < flops[8] < flops[16] and all(f"seq {r['seq']}" in r["flops_note"] for r in narrow)
    group = report["speedup_matrix"]["threads=1,batch=2,seq=16"]
    rows = {r["model"]: r for r in report["rows"] if (r["batch"], r["seq"]) == (2, 16)}
    assert group["narrow"]["wide"] == pytest.approx(rows["wide"]["p50_ms"] / rows["narrow"]["p50_ms"])
    md = to_markdown(report)
    assert "## threads=1,batch=2,seq=16" in md and "| narrow |" in md
    json.dumps(report)  # serialisable


def test_floor_fields_follow_the_graph_and_the_probe(kron_models):
    report = run_bench(list(kron_models), seqs=[8, 16], batches=[1], threads=[1], warmup=1, iters=2,
                       probe_size=PROBE, rss=False)
    assert "GEMM FLOPs" in report["floor"]["definition"] and report["floor"]["probe_size"] == PROBE
    for row in report["rows"]:
        # per row: the FLOPs at that row's (batch, seq)
        assert row["gemm_flops"] == 2 * sum(kron_attention_macs(row["batch"], row["seq"]))
        rates = row["gemm_rate_gflops"]
        assert rates == {p: report["floor"]["probes"][f"threads=1,batch=1,seq={row['seq']}"][p]["gflops"]
                         for p in ("fp32", "int8")}
        assert rates["fp32"] > 0 and rates["int8"] > 0
        expected = (row["gemm_flops_fp32"] / rates["fp32"] + row["gemm_flops_int8"] / rates["int8"]) / 1e6
        assert row["compute_floor_ms"] == pytest.approx(expected)
        assert row["floor_fraction"] == pytest.approx(row["compute_floor_ms"] / row["p50_ms"])
    int8_rows = [r for r in report["rows"] if r["model"] == "kron-int8"]
    assert all(r["gemm_flops_int8"] > 0 for r in int8_rows)
    md = to_markdown(report)
    assert "compute floor ms" in md and "GEMM probe rates" in md and "compute floor =" in md


def test_no_floor_leaves_floor_fields_empty(models):
    report = run_bench(models[:1], seqs=[8], warmup=0, iters=1, floor=False, rss=False)
    row = report["rows"][0]
    assert report["floor"] is None and row["compute_floor_ms"] is None and row["floor_fraction"] is None
    assert row["gemm_flops"] == 2 * 8 * 64 * 2  # FLOPs are counted either way
    assert "compute floor" not in to_markdown(report)


def test_profile_counts_nodes_per_op_type(tmp_path):
    path = chain_onnx(tmp_path / "chain", matmuls=3)
    summary = profile_model(str(path / "model.onnx"), VOCAB, batch=1, seq=8, threads=1, runs=3, warmup=1)
    ops = {op["op"]: op for op in summary["ops"]}
    assert ops["MatMul"]["nodes"] == 3 and ops["Tanh"]["nodes"] == 3 and ops["Gather"]["nodes"] == 1
    assert summary["nodes"] == 8 and summary["runs"] == 3
    assert sum(op["share"] for op in summary["ops"]) == pytest.approx(1.0)
    assert summary["gemm_share"] == pytest.approx(ops["MatMul"]["share"])


def test_summarize_trace_skips_warmup_and_counts_distinct_nodes():
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(ts, name, op, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    trace = [run(0, 100), node(1, "a", "MatMul", 90),  # warm-up: left out
             run(200, 10), node(201, "a", "MatMul", 6000), node(202, "b", "MatMul", 2000), node(203, "c", "Add", 2000),
             run(300, 30), node(301, "a", "MatMul", 6000), node(302, "b", "MatMul", 2000), node(303, "c", "Add", 2000)]
    summary = summarize_trace(trace, warmup=1)
    assert summary["runs"] == 2 and summary["nodes"] == 3 and summary["model_run_mean_ms"] == pytest.approx(0.02)
    assert summary["ops"][0] == {"op": "MatMul", "nodes": 2, "ms": pytest.approx(8.0), "share": pytest.approx(0.8)}
    assert summary["ops"][1]["op"] == "Add" and summary["ops"][1]["nodes"] == 1
    assert summary["gemm_share"] == pytest.approx(0.8) and summary["attention_share"] == 0
    with pytest.raises(ValueError, match="none after 5 warm-up"):
        summarize_trace(trace, warmup=5)


def test_bench_profile_rows(models):
    report = run_bench(models[:1], seqs=[8], warmup=1, iters=1, floor=False, rss=False, profile=True, profile_runs=2)
    prof = report["rows"][0]["profile"]
    assert prof["runs"] == 2 and {op["op"] for op in prof["ops"]} >= {"MatMul", "Gather"}
    assert "Profile of **wide**" in to_markdown(report)


def test_bench_rejects_bad_options(models):
    with pytest.raises(BenchError, match="target"):
        run_bench(models, target="gpu")
    with pytest.raises(ValueError, match="--cpu"):
        run_bench(models, cpu="cortex-a72")
    with pytest.raises(BenchError, match="--profile runs on the host"):
        run_bench(models, target="arm64", profile=True)
    with pytest.raises(BenchError, match="--probe-size"):
        run_bench(models, probe_size=4)
    with pytest.raises(BenchError, match="one optimizer name per flag"):  # ORT would disable nothing, silently
        run_bench(models, disabled_optimizers=("SkipLayerNormFusion,MatmulTransposeFusion",))
    with pytest.raises(FileNotFoundError):
        run_bench([models[0].parent / "missing"])


def test_cli_bench_json_markdown_plot(models, tmp_path):
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    result = CliRunner().invoke(app, ["bench", str(models[0]), str(models[1]), "--seq", "8", "--batch", "1",
                                      "--threads", "1", "--warmup", "1", "--iters", "1", "--no-rss", "--json",
                                      "--probe-size", str(PROBE), "--profile", "--profile-runs", "1",
                                      "--markdown", str(md), "--plot", str(png), "--name", "base", "--name", "small"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert [m["name"] for m in report["models"]] == ["base", "small"]
    assert report["rows"][1]["speedup_vs_baseline"] > 0
    assert report["rows"][1]["floor_fraction"] > 0 and report["rows"][1]["profile"]["ops"]
    assert report["settings"]["probe_size"] == PROBE and report["settings"]["profile"] is True
    assert md.read_text().startswith("# kronedge bench")
    assert png.stat().st_size > 1000


def test_cli_bench_refuses_an_unwritable_report_before_measuring(models, tmp_path, monkeypatch):
    import kronedge.benchmark as benchmark

    monkeypatch.setattr(benchmark, "run_bench", lambda *a, **k: pytest.fail("measured before checking the outputs"))
    (tmp_path / "notes.txt").write_text("x")
    for option, target, message in (("-o", tmp_path, "is a directory"),
                                    ("--markdown", tmp_path / "notes.txt" / "r.md", "notes.txt is a file")):
        result = CliRunner().invoke(app, ["bench", str(models[0]), option, str(target)])
        assert result.exit_code == 1 and message in " ".join(result.output.split()), result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no temporary file left behind


def test_cli_bench_bad_seq_is_one_line(models):
    result = CliRunner().invoke(app, ["bench", str(models[0]), "--seq", "abc"])
    assert result.exit_code == 1
    assert "comma-separated integers" in result.output


def test_cli_bench_profile_on_arm64_is_one_line(models):
    result = CliRunner().invoke(app, ["bench", str(models[0]), "--target", "arm64", "--profile"])
    assert result.exit_code == 1
    assert "--profile runs on the host only" in result.output and "Traceback" not in result.output


def test_gemm_flops_of_kronecker_exports(informative_export_fp32, informative_export_int8):
    """The exporter's own graphs (Kronecker factor products, ONNX Attention, int8 per target): every GEMM
    node gets a shape, and quantizing moves FLOPs between precisions without changing their total."""
    fp32_model = onnx.load(str(informative_export_fp32 / "model.onnx"))
    int8_model = onnx.load(str(informative_export_int8 / "model.onnx"))
    for seq in (8, 32):
        fp32, int8 = count_gemm_flops(fp32_model, 2, seq), count_gemm_flops(int8_model, 2, seq)
        assert fp32.complete and int8.complete, (fp32.uncounted, int8.uncounted)
        assert fp32.int8 == 0 and int8.int8 > 0
        assert int8.total == pytest.approx(fp32.total)
        gemms = sum(1 for n in fp32_model.graph.node if n.op_type in ("MatMul", "Gemm", "Attention"))
        assert sum(fp32.nodes.values()) == gemms
    # Attention's core grows with seq^2, the linears with seq: FLOPs at seq 32 are more than 4x those at 8.
    assert count_gemm_flops(fp32_model, 1, 32).total > 4 * count_gemm_flops(fp32_model, 1, 8).total


def test_bench_options_import_light():
    """The CLI reads BenchConfig for `kronedge bench --help`: that must not pull in numpy or onnxruntime."""
    import subprocess
    import sys

    code = ("import sys; import kronedge.cli, kronedge.commands.bench; from kronedge.benchmark import BenchConfig; "
            "heavy = [m for m in ('numpy', 'onnxruntime', 'onnx') if m in sys.modules]; assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-500:]


@pytest.mark.parametrize("threads, most_alive", [(1, 3), (2, 1)])
def test_multi_thread_timing_keeps_one_session_alive(monkeypatch, threads, most_alive):
    """With 2+ ORT threads the idle workers of a live session's pool spin on the cores another session needs, so
    measure() keeps one session alive at a time (interleaving by rounds); with 1 thread all are timed side by side."""
    from kronedge import bench_core

    alive, peak = [0], [0]

    class FakeSession:
        def __init__(self, *_args, **_kwargs):
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])

        def __del__(self):
            alive[0] -= 1

        def run(self, *_args):
            return [np.zeros(1)]

    monkeypatch.setattr(bench_core, "make_session", FakeSession)
    monkeypatch.setattr(bench_core, "make_inputs", lambda *args, **kwargs: {})
    models = [{"name": f"m{i}", "path": f"/nowhere/m{i}"} for i in range(3)]
    rows = bench_core.measure(models, batch=1, seq=8, threads=threads, warmup=1, iters=10)
    assert peak[0] == most_alive
    assert [row["n"] for row in rows] == [10, 10, 10] and [row["name"] for row in rows] == ["m0", "m1", "m2"]


def test_a_seq_past_the_exported_length_is_flagged(informative_export_fp32, caplog):
    with caplog.at_level(logging.WARNING, logger="kronedge.benchmark.run"):
        run_bench([informative_export_fp32], seqs=[64], batches=[1], threads=[1], warmup=0, iters=1, rss=False,
                  floor=False)
    assert "exported for at most 32 tokens; --seq 64" in caplog.text


def test_a_file_that_is_not_a_model_is_named(tmp_path):
    from kronedge.benchmark.describe import resolve_model_file

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="notes.txt is a file but not a model"):
        resolve_model_file(tmp_path / "notes.txt")
