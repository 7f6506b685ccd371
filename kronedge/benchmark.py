"""``kronedge bench``: latency, throughput, memory and size of exported models, side by side.

Protocol (onnxruntime's benchmark_helper, made robust to a shared machine):
  * every model gets its own ONNX Runtime session with the runtime's session options;
  * warm-up runs, then measured runs *interleaved* across models (see :mod:`kronedge.bench_core`);
  * p50/p90/p99, mean and throughput per (model, batch, sequence length, threads);
  * peak RSS of a fresh process that loads the model and runs it (one per model and shape);
  * every row says where it ran: ORT version, provider, threads, batch, sequence length, CPU;
  * the first model is the baseline: every other row carries ratios to it (speedup = baseline p50 / p50),
    and a pairwise speedup matrix is kept in the JSON, so any pair can be read off.

``target="arm64"`` runs the same measurement in the emulated arm64 userland (:mod:`kronedge.qemu`) under
``-cpu cortex-a53|a72|a76``: those wall times are *emulated* (hundreds of times slower than a Pi, and
not proportional to it) and labelled so. With ``instructions=True`` each model's single inference
after a warm-up is counted by the TCG plugin (1 thread, fixed environment): a deterministic ARM cost.

Example:
    >>> report = run_bench(["runs/dense-fp32", "runs/kb21-int8"], seqs=[128], batches=[1], threads=[2])
    >>> report["rows"][1]["speedup_vs_baseline"]
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from runtime import hostinfo

from . import bench_core

MODEL_FILE_CANDIDATES = ("model.onnx", "model_quantized.onnx", "model_optimized.onnx", "model.ort")
SCHEMA = "kronedge-bench/1"


@dataclasses.dataclass
class ModelInfo:
    """What is known about one model before it runs."""

    name: str
    dir: str
    path: str  # the .onnx/.ort file measured
    file_bytes: int
    params: Optional[int]
    flops: Optional[float]  # at seq 128, batch 1 unless flops_note says otherwise
    flops_note: str
    quantization: Any
    vocab: int
    manifest: Optional[dict]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("manifest")
        return d


def _resolve_model_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a model directory nor an .onnx/.ort file")
    for name in MODEL_FILE_CANDIDATES:
        if (path / name).is_file():
            return path / name
    onnx_files = sorted(path.glob("*.onnx"))
    if len(onnx_files) == 1:
        return onnx_files[0]
    raise FileNotFoundError(f"{path} holds no model.onnx/model.ort (found {[p.name for p in onnx_files]})")


def _vocab_size(model_dir: Path, manifest: Optional[dict]) -> int:
    for key in ("vocab_size",):
        if manifest and isinstance(manifest.get("source"), dict) and manifest["source"].get(key):
            return int(manifest["source"][key])
    cfg = model_dir / "config.json"
    if cfg.is_file():
        try:
            return int(json.loads(cfg.read_text()).get("vocab_size", 1000))
        except (ValueError, TypeError):
            pass
    tok = model_dir / "tokenizer.json"
    if tok.is_file():
        try:
            vocab = json.loads(tok.read_text()).get("model", {}).get("vocab", {})
            if vocab:
                return len(vocab)
        except ValueError:
            pass
    return 1000


def _find_key(obj: Any, words: tuple[str, ...]) -> Optional[tuple[str, Any]]:
    """Depth-first search of a JSON object for the first numeric value whose key contains all `words`."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            low = key.lower()
            if all(w in low for w in words) and isinstance(value, (int, float)) and not isinstance(value, bool):
                return key, value
        for key, value in obj.items():
            hit = _find_key(value, words)
            if hit:
                return f"{key}.{hit[0]}", hit[1]
    return None


def _graph_vocab(model) -> Optional[int]:
    """Rows of the table that input_ids index (Gather of an initializer), if the graph says."""
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    ids = {i.name for i in model.graph.input if "ids" in i.name and "type" not in i.name and "position" not in i.name}
    sizes = [inits[n.input[0]][0] for n in model.graph.node
             if n.op_type == "Gather" and len(n.input) == 2 and n.input[1] in ids and n.input[0] in inits]
    return min(sizes) if sizes else None


def graph_stats(path: Path, batch: int = 1, seq: int = 128) -> tuple[Optional[int], Optional[float], Optional[int]]:
    """(parameters, FLOPs) from the ONNX graph: initializer elements, and 2 x MACs of every
    MatMul/Gemm/MatMulInteger at (batch, seq) after shape inference. Attention cores fused into
    contrib ops are not counted. (None, None) without the ``onnx`` package or for .ort files."""
    if path.suffix != ".onnx":
        return None, None, None, False
    try:
        import numpy as np
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None, None, None, False
    model = onnx.load(str(path), load_external_data=False)
    vocab = _graph_vocab(model)
    params = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        params += n if n > 1 else 0  # skip scalars (scales, zero points, shape constants)
    quant_ops = {"MatMulInteger", "DynamicQuantizeLinear", "QAttention", "DynamicQuantizeMatMul",
                 "MatMulIntegerToFloat", "QLinearMatMul", "DequantizeLinear"}
    int8 = any(n.op_type in quant_ops for n in model.graph.node)
    flops = None
    try:
        for inp in model.graph.input:
            dims = inp.type.tensor_type.shape.dim
            if len(dims) == 2:
                dims[0].dim_value, dims[1].dim_value = batch, seq
        try:  # ORT's symbolic inference follows computed Reshape shapes; onnx's does not
            from exporters.shapes import infer_symbolic_shapes

            inferred = infer_symbolic_shapes(model)
        except Exception:
            inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        shapes = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                shapes[vi.name] = [d.dim_value for d in dims]
        for init in inferred.graph.initializer:
            shapes[init.name] = list(init.dims)
        macs, missing = 0, 0
        for node in inferred.graph.node:
            if node.op_type in ("MatMul", "MatMulInteger", "Gemm", "FusedMatMul", "DynamicQuantizeMatMul",
                                "MatMulIntegerToFloat"):
                a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
                if a and out:
                    k = a[-1] if not (node.op_type == "Gemm" and any(
                        at.name == "transA" and at.i for at in node.attribute)) else a[0]
                    macs += int(np.prod(out)) * k
                else:
                    missing += 1
        flops = 2.0 * macs if macs and not missing else None
    except Exception:  # shape inference on exotic graphs: FLOPs unknown, not an error
        flops = None
    return params, flops, vocab, int8


def describe_model(path: str | os.PathLike, name: Optional[str] = None, seq: int = 128) -> ModelInfo:
    path = Path(path).resolve()
    model_file = _resolve_model_file(path)
    model_dir = model_file.parent
    manifest = None
    if (model_dir / "manifest.json").is_file():
        manifest = json.loads((model_dir / "manifest.json").read_text())
    graph_params, graph_flops, graph_vocab, graph_int8 = graph_stats(model_file, 1, seq)
    params = graph_params
    flops, note = graph_flops, f"graph: 2 x MACs of MatMul/Gemm at batch 1, seq {seq}" if graph_flops else "unknown"
    if manifest:
        hit = _find_key(manifest.get("source", manifest), ("flop",))
        if hit:
            flops, note = float(hit[1]), f"manifest {hit[0]}"
        elif flops is None and isinstance(manifest.get("source"), dict) and manifest["source"].get("path"):
            recipe = Path(manifest["source"]["path"]) / "kronedge.json"
            try:
                planned = json.loads(recipe.read_text()).get("flops_student")
            except (OSError, ValueError):
                planned = None
            if planned:
                flops, note = float(planned), "planner (kronedge plan) FLOPs at seq 128, from the source artifact"
        hit = _find_key(manifest.get("source", manifest), ("param",))
        if hit and params is None:
            params = int(hit[1])
    quant = manifest.get("quantization") if manifest else None
    if quant is None and graph_int8:
        quant = "int8"
        ort_cfg = model_dir / "ort_config.json"
        if ort_cfg.is_file():
            try:
                q = json.loads(ort_cfg.read_text()).get("quantization") or {}
                quant = {"name": "optimum int8 " + ("per-channel" if q.get("per_channel") else "per-tensor")
                         + (" reduce_range" if q.get("reduce_range") else ""),
                         **{k: q.get(k) for k in ("is_static", "per_channel", "reduce_range", "weights_dtype",
                                                  "activations_dtype")}}
            except (OSError, ValueError):
                pass
    return ModelInfo(name=name or (model_dir.name if path.is_dir() else model_file.stem), dir=str(model_dir),
                     path=str(model_file), file_bytes=model_file.stat().st_size, params=params, flops=flops,
                     flops_note=note, quantization=quant,
                     vocab=graph_vocab or _vocab_size(model_dir, manifest), manifest=manifest)


def _guest_result(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("KRONEDGE_RESULT "):
            return json.loads(line[len("KRONEDGE_RESULT "):])
    raise RuntimeError(f"no result from the benchmark process:\n{stdout[-2000:]}")


def _run_core_subprocess(spec: dict, timeout: Optional[float] = None) -> dict:
    """bench_core in a fresh host process (used for peak RSS)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        env = dict(os.environ, ORT_DISABLE_TELEMETRY="1")
        proc = subprocess.run([sys.executable, bench_core.__file__, f.name], capture_output=True, text=True,
                              timeout=timeout, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark process failed:\n{proc.stderr[-3000:]}")
        return _guest_result(proc.stdout)
    finally:
        os.unlink(f.name)


def _run_core_guest(qenv, cpu: str, spec: dict, count: bool = False, timeout: Optional[float] = None):
    from . import qemu

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=qenv.cache) as f:
        json.dump(spec, f)
    try:
        res = qemu.run_python(qenv, cpu, Path(bench_core.__file__), [f.name], count=count,
                              pythonpath=[bench_core.__file__.rsplit("/kronedge/", 1)[0]], timeout=timeout)
    finally:
        os.unlink(f.name)
    if res.returncode != 0:
        raise RuntimeError(f"emulated benchmark failed under {cpu} (rc {res.returncode}):\n{res.stderr[-3000:]}")
    return _guest_result(res.stdout), res


def run_bench(model_dirs: Sequence[str | os.PathLike], *, seqs: Sequence[int] = (128,), batches: Sequence[int] = (1,),
              threads: Sequence[int] = (1,), warmup: int = 3, iters: int = 20, target: str = "host",
              cpu: Optional[str] = None, instructions: bool = False, rss: bool = True,
              names: Optional[Sequence[str]] = None, disabled_optimizers: Sequence[str] = (),
              log=None) -> dict:
    """Measure every model at every (threads, batch, seq); the first model is the baseline.

    Args:
        model_dirs: exported model directories (or .onnx files); the first is the baseline.
        seqs, batches, threads: the grid; each row of the report is one (model, threads, batch, seq).
        warmup, iters: runs per model before / during measurement (interleaved across models).
        target: "host" (this machine) or "arm64" (emulated under QEMU; needs ``cpu``).
        cpu: QEMU CPU model for target arm64: cortex-a53 (Pi 3), cortex-a72 (Pi 4), cortex-a76 (Pi 5).
        instructions: arm64 only: count executed guest instructions of one inference (1 thread).
        rss: measure peak RSS in a fresh process per model and shape (host only).
        names: labels for the models (default: directory names).
    """
    log = log or (lambda msg: None)
    load_at_start = list(os.getloadavg())
    if not model_dirs:
        raise ValueError("give at least one model directory")
    if target not in ("host", "arm64"):
        raise ValueError(f"target must be 'host' or 'arm64', got {target!r}")
    if target == "arm64" and not cpu:
        cpu = "cortex-a72"
    if target == "host" and (cpu or instructions):
        raise ValueError("--cpu and --instructions need --target arm64")
    if iters < 1 or warmup < 0:
        raise ValueError("iters must be >= 1 and warmup >= 0")
    for values, what in ((seqs, "seq"), (batches, "batch"), (threads, "threads")):
        if not values or any(int(v) < 1 for v in values):
            raise ValueError(f"--{what} needs positive integers, got {list(values)}")
    if names is not None and len(names) != len(model_dirs):
        raise ValueError(f"{len(names)} names for {len(model_dirs)} models")
    infos = [describe_model(p, names[i] if names else None, seq=max(seqs)) for i, p in enumerate(model_dirs)]
    seen: dict[str, int] = {}
    for info in infos:  # unique names
        if info.name in seen:
            seen[info.name] += 1
            info.name = f"{info.name}#{seen[info.name]}"
        else:
            seen[info.name] = 1
    core_models = [{"name": i.name, "path": i.path, "vocab": i.vocab} for i in infos]
    grid = [{"threads": int(t), "batch": int(b), "seq": int(s)} for t in threads for b in batches for s in seqs]

    emulated = target == "arm64"
    qenv, qemu_ver = None, None
    if emulated:
        from . import qemu

        qenv = qemu.ensure(plugin=instructions, log=log)
        qemu_ver = qemu.qemu_version(qenv.qemu_static or qenv.qemu_plugin_host)
        log(f"measuring {len(infos)} models under qemu-aarch64 -cpu {cpu} (emulated)")
        measured, _ = _run_core_guest(qenv, cpu, {"mode": "measure", "models": core_models, "rows": grid,
                                                  "warmup": warmup, "iters": iters,
                                                  "disabled_optimizers": list(disabled_optimizers)})
        env_info, row_results = measured["environment"], measured["rows"]
    else:
        env_info = bench_core.environment()
        env_info["cpu"] = hostinfo.cpu_model()
        row_results = []
        for row in grid:
            log(f"measuring {len(infos)} models at threads={row['threads']} batch={row['batch']} seq={row['seq']}")
            stats = bench_core.measure(core_models, row["batch"], row["seq"], row["threads"], warmup, iters,
                                       list(disabled_optimizers))
            row_results.append({**row, "models": stats})

    rows = []
    for row in row_results:
        for info, stats in zip(infos, row["models"]):
            entry = {
                "model": info.name, "baseline": info is infos[0], "threads": row["threads"], "batch": row["batch"],
                "seq": row["seq"], **{k: stats[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
                                                            "min_ms", "n", "load_ms", "throughput_seq_per_s")},
                "file_bytes": info.file_bytes, "file_mb": info.file_bytes / 1e6, "params": info.params,
                "flops": info.flops, "quantization": info.quantization, "onnxruntime": env_info["onnxruntime"],
                "provider": env_info["provider"], "target": target,
                "cpu": (f"{cpu} (QEMU {qemu_ver} TCG, emulated)" if emulated else env_info["cpu"]),
                "emulated": emulated, "latency_kind": "emulated wall time" if emulated else "wall time",
                "peak_rss_mb": None, "instructions": None,
            }
            rows.append(entry)

    if rss and not emulated:
        for entry, info in zip(rows, infos * len(grid)):
            log(f"peak RSS: {info.name} threads={entry['threads']} batch={entry['batch']} seq={entry['seq']}")
            res = _run_core_subprocess({"mode": "rss", "models": [core_models[infos.index(info)]],
                                        "batch": entry["batch"], "seq": entry["seq"], "threads": entry["threads"]})
            entry["peak_rss_mb"] = res["peak_rss_mb"]

    if instructions:
        if not emulated:
            raise ValueError("instruction counts need --target arm64")
        counted: dict[tuple, int] = {}
        for b in batches:
            for s in seqs:
                for model in core_models:
                    log(f"counting instructions: {model['name']} batch={b} seq={s} under {cpu} (1 thread)")
                    res, guest = _run_core_guest(qenv, cpu, {"mode": "count", "models": [model], "batch": int(b),
                                                             "seq": int(s), "threads": 1, "warmup": 1}, count=True)
                    if len(guest.regions) != 1:
                        raise RuntimeError(f"expected one counted region, got {guest.regions}")
                    counted[(model["name"], int(b), int(s))] = guest.regions[0]
        for entry in rows:
            entry["instructions"] = counted.get((entry["model"], entry["batch"], entry["seq"]))
            entry["instructions_note"] = "guest instructions of one inference, 1 ORT thread, marker thread only"

    _add_ratios(rows)
    return {
        "schema": SCHEMA,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(sys.argv) if sys.argv and "kronedge" in sys.argv[0] else None,
        "machine": {"host_cpu": hostinfo.cpu_model(), "host_flags": hostinfo.cpu_flags(hostinfo.KERNEL_FLAG_PREFIXES), "logical_cpus": os.cpu_count(),
                    "platform": platform.platform(), "load_avg_at_start": load_at_start,
                    "load_avg_at_end": list(os.getloadavg()),
                    "target": target, "emulated_cpu": cpu if emulated else None, "qemu": qemu_ver},
        "environment": env_info,
        "settings": {"seqs": list(seqs), "batches": list(batches), "threads": list(threads), "warmup": warmup,
                     "iters": iters, "interleaved": True, "disabled_optimizers": list(disabled_optimizers),
                     "session": "runtime.predictor.session_options (arena off, sequential, ORT_ENABLE_ALL)"},
        "baseline": infos[0].name,
        "models": [i.to_dict() for i in infos],
        "rows": rows,
        "speedup_matrix": _speedup_matrix(rows),
    }


def _group_key(entry: dict) -> str:
    return f"threads={entry['threads']},batch={entry['batch']},seq={entry['seq']}"


def _add_ratios(rows: list[dict]) -> None:
    base = {_group_key(r): r for r in rows if r["baseline"]}
    for r in rows:
        b = base[_group_key(r)]
        r["speedup_vs_baseline"] = b["p50_ms"] / r["p50_ms"] if r["p50_ms"] else None
        r["latency_ratio_vs_baseline"] = r["p50_ms"] / b["p50_ms"] if b["p50_ms"] else None
        r["size_ratio_vs_baseline"] = r["file_bytes"] / b["file_bytes"] if b["file_bytes"] else None
        r["params_ratio_vs_baseline"] = (r["params"] / b["params"]) if r["params"] and b["params"] else None
        r["instructions_ratio_vs_baseline"] = (r["instructions"] / b["instructions"]
                                               if r.get("instructions") and b.get("instructions") else None)


def _speedup_matrix(rows: list[dict]) -> dict:
    """{group: {model_a: {model_b: p50_b / p50_a}}}: how many times faster a is than b."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_group_key(r), []).append(r)
    return {g: {a["model"]: {b["model"]: b["p50_ms"] / a["p50_ms"] for b in rs} for a in rs}
            for g, rs in groups.items()}


# ----------------------------------------------------------------------------------------------- output

def _fmt(v, spec=".1f") -> str:
    return "—" if v is None else format(v, spec)


def _measured_cells(r: dict, has_insn: bool) -> list[str]:
    """The measured columns shared by the Markdown and the terminal table: latency to size ratio."""
    cells = [_fmt(r["p50_ms"], ".2f"), _fmt(r["p90_ms"], ".2f"), _fmt(r["p99_ms"], ".2f"),
             _fmt(r["throughput_seq_per_s"], ".1f"), _fmt(r["peak_rss_mb"], ".0f"),
             _fmt(r["speedup_vs_baseline"], ".2f") + "x", _fmt(r["size_ratio_vs_baseline"], ".3f")]
    if has_insn:
        cells += [_fmt(r.get("instructions") and r["instructions"] / 1e9, ".4f"),
                  _fmt(r.get("instructions_ratio_vs_baseline"), ".3f")]
    return cells


def to_markdown(report: dict) -> str:
    m, e = report["machine"], report["environment"]
    emulated = m["target"] == "arm64"
    lines = [f"# kronedge bench ({'EMULATED ' + m['emulated_cpu'] + ' under QEMU ' + str(m['qemu']) if emulated else 'host'})", ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`", ""]
    lines += [f"- created {report['created_utc']}; host CPU {m['host_cpu']} ({m['logical_cpus']} logical), "
              f"{m['platform']}; load average (1/5/15 min) at start {', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])}"
              + (f", at end {', '.join(f'{x:.2f}' for x in m['load_avg_at_end'])}" if m.get("load_avg_at_end") else ""),
              f"- onnxruntime {e['onnxruntime']} ({e['provider']}), numpy {e['numpy']}, python {e['python']}",
              f"- warm-up {report['settings']['warmup']}, {report['settings']['iters']} measured runs per model, "
              f"interleaved; baseline (ratios): **{report['baseline']}**"]
    if emulated:
        lines.append("- **Latencies are EMULATED wall times** (QEMU TCG on x86): they are not Raspberry Pi speed.")
    lines.append("")
    groups: dict[str, list[dict]] = {}
    for r in report["rows"]:
        groups.setdefault(_group_key(r), []).append(r)
    for g, rs in groups.items():
        lines += [f"## {g}" + (" (emulated)" if emulated else ""), ""]
        head = ["model", "quant", "file MB", "params M", "GFLOPs", "p50 ms", "p90 ms", "p99 ms", "seq/s",
                "peak RSS MB", "speedup vs baseline", "size vs baseline"]
        has_insn = any(r.get("instructions") for r in rs)
        if has_insn:
            head += ["instructions (G)", "instr. vs baseline"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rs:
            q = r["quantization"]
            qtxt = "fp32" if not q else (q if isinstance(q, str) else q.get("name") or q.get("mode") or "int8")
            cells = [r["model"], str(qtxt), _fmt(r["file_mb"], ".2f"), _fmt(r["params"] and r["params"] / 1e6, ".2f"),
                     _fmt(r["flops"] and r["flops"] / 1e9, ".2f"), *_measured_cells(r, has_insn)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def print_table(report: dict, console) -> None:
    from rich.table import Table

    emulated = report["machine"]["target"] == "arm64"
    groups: dict[str, list[dict]] = {}
    for r in report["rows"]:
        groups.setdefault(_group_key(r), []).append(r)
    for g, rs in groups.items():
        title = f"{g} · ORT {rs[0]['onnxruntime']} · {rs[0]['cpu']}" + (" · EMULATED wall times" if emulated else "")
        table = Table(title=title)
        cols = ["model", "file MB", "params M", "p50 ms", "p90 ms", "p99 ms", "seq/s", "RSS MB", "speedup", "size"]
        has_insn = any(r.get("instructions") for r in rs)
        if has_insn:
            cols += ["G instr", "instr ratio"]
        for c in cols:
            table.add_column(c, justify="left" if c == "model" else "right")
        for r in rs:
            cells = [r["model"] + (" (base)" if r["baseline"] else ""), _fmt(r["file_mb"], ".2f"),
                     _fmt(r["params"] and r["params"] / 1e6, ".2f"), *_measured_cells(r, has_insn)]
            table.add_row(*cells)
        console.print(table)


def plot(report: dict, path: str | os.PathLike) -> Path:
    """Latency (p50) vs file size, one point per model and grid cell, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emulated = report["machine"]["target"] == "arm64"
    fig, ax = plt.subplots(figsize=(7.5, 5))
    groups: dict[str, list[dict]] = {}
    for r in report["rows"]:
        groups.setdefault(_group_key(r), []).append(r)
    markers = "osD^v<>px*"
    for gi, (g, rs) in enumerate(groups.items()):
        ax.scatter([r["file_mb"] for r in rs], [r["p50_ms"] for r in rs], marker=markers[gi % len(markers)], label=g)
        for r in rs:
            ax.annotate(r["model"], (r["file_mb"], r["p50_ms"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model file size (MB)")
    ax.set_ylabel("p50 latency (ms, EMULATED under QEMU)" if emulated else "p50 latency (ms)")
    cpu = report["rows"][0]["cpu"]
    ax.set_title(f"latency vs size · ORT {report['environment']['onnxruntime']} · {cpu}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
