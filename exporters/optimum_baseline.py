"""Dense baselines exported the standard way, through optimum (for side-by-side comparisons).

``optimum_baseline("random:bert-base-uncased", "runs/dense-arm64", target="arm64", quantize="int8")``:
  1. ``optimum.exporters.onnx.main_export`` (task text-classification; optimum validates, at its export
     shape only, and we keep its result);
  2. ``ORTOptimizer`` at level O2 (ORT's BERT fusions: Attention, SkipLayerNorm, BiasGelu, Gelu);
  3. ``ORTQuantizer`` with the target's ``AutoQuantizationConfig`` preset (arm64, avx512_vnni or avx2),
     dynamic, per-channel.
The directory gets the same tokenizer.json / golden.npz / manifest.json as ``kronedge export`` writes,
so the runtime (``runtime.predictor.Predictor``) and the bench load both the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from runtime.contract import MANIFEST_FILE

from .config import ExportError, ExportOptions

OPTIMUM_PRESETS = {"arm64": "arm64", "x86_64": "avx512_vnni", "x86_64-novnni": "avx2"}


def optimum_baseline(model: str, out_dir: str | os.PathLike, target: str = "x86_64", quantize: str = "none",
                     optimization_level: int | None = 2, task: str | None = None, max_length: int = 128,
                     vnni: bool = True) -> Path:
    """Export a dense teacher with optimum (+ ORTOptimizer, + ORTQuantizer preset) into a runtime directory.

    Args:
        model: any teacher spec (``random:bert-base-uncased``, ``builtin:minilm``, a saved BERT dir).
        out_dir: destination, written atomically.
        target: "arm64" or "x86_64" (picks the AutoQuantizationConfig preset).
        quantize: "none" or "int8" (dynamic; optimum's CLI --arm64 is always dynamic as well).
        optimization_level: ORTOptimizer level (1, 2, 99) or None to skip.
        task: GLUE task for labels and golden sentences.

    Example:
        >>> optimum_baseline("random:bert-base-uncased", "runs/dense-int8", target="arm64", quantize="int8")
    """
    from kronedge.artifact import atomic_directory, sibling_prefix

    from .export import _golden_texts, _task_data, _write_golden, _write_tokenizer, load_source
    from .identity import resolve_task

    if quantize not in ("none", "int8"):
        raise ExportError(f"optimum baselines support --quantize none|int8 (dynamic), got {quantize!r}")
    ExportOptions(target=target, quantize=quantize, max_length=max_length, task=task, vnni=vnni)  # checks them
    task_data = _task_data(task)
    torch_model, tokenizer_dir, source = load_source(model, task_data.spec.num_labels if task_data else None)
    info = resolve_task(torch_model.config, source, task_data.spec if task_data is not None else None)
    if getattr(torch_model.config, "kronecker_layout", None):
        raise ExportError("optimum cannot match Kronecker layers; use `kronedge export` for kronedge artifacts")

    with (atomic_directory(out_dir, MANIFEST_FILE) as out,
          tempfile.TemporaryDirectory(prefix=sibling_prefix(Path(out_dir), "work"), dir=out.parent) as work):
        work = Path(work)
        onnx_dir, steps = _export(torch_model, tokenizer_dir, work)
        current = onnx_dir / "model.onnx"
        if optimization_level is not None:
            current = _optimize(current, optimization_level, work / "optimized", steps)
        quant_config = None
        if quantize == "int8":
            preset = OPTIMUM_PRESETS["arm64" if target == "arm64" else ("x86_64" if vnni else "x86_64-novnni")]
            current, quant_config = _quantize(current, preset, work / "quantized", steps)
        shutil.copy2(current, out / "model.onnx")
        shutil.copy2(onnx_dir / "config.json", out / "config.json")
        _write_tokenizer(tokenizer_dir, out, max_length)
        _write_golden(out, _golden_texts(task_data), max_length)
        _write_manifest(out, out_dir, info, max_length, target, quant_config, source | {"steps": steps})
    return Path(out_dir)


def _export(torch_model, tokenizer_dir: Path, work: Path) -> tuple[Path, dict]:
    """optimum's ``main_export`` of the saved model (with its validation): the ONNX directory and the steps."""
    from optimum.exporters.onnx import main_export

    saved = work / "hf"
    torch_model.save_pretrained(saved, safe_serialization=True)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, saved / name)
    onnx_dir = work / "onnx"
    main_export(str(saved), onnx_dir, task="text-classification", local_files_only=True, do_validation=True)
    return onnx_dir, {"export": "optimum main_export"}


def _optimize(model: Path, level: int, out_dir: Path, steps: dict) -> Path:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    optimizer = ORTOptimizer.from_pretrained(model.parent, file_names=[model.name])
    optimizer.optimize(OptimizationConfig(optimization_level=level), out_dir, file_suffix=None)
    steps["optimize"] = f"ORTOptimizer O{level}"
    return out_dir / "model.onnx"


def _quantize(model: Path, preset: str, out_dir: Path, steps: dict) -> tuple[Path, dict]:
    """Dynamic per-channel int8 with optimum's ``AutoQuantizationConfig`` preset: the model and its record."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    qconfig = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=True)
    _infer_types(model)  # else: "Unable to find data type" on fused contrib ops
    quantizer = ORTQuantizer.from_pretrained(model.parent, file_name=model.name)
    quantizer.quantize(qconfig, out_dir, file_suffix=None)
    steps["quantize"] = f"ORTQuantizer AutoQuantizationConfig.{preset}(is_static=False, per_channel=True)"
    return out_dir / "model.onnx", {"name": f"optimum-{preset}", "mode": "dynamic", **_jsonable(qconfig.__dict__)}


def _write_manifest(out: Path, out_dir, info, max_length: int, target: str, quant_config: dict | None,
                    source: dict) -> None:
    from runtime.hostinfo import versions as installed_versions

    from .identity import model_identity
    from .manifest import Manifest, file_table, versions

    files = file_table(out)
    name, version = model_identity(None, None, out_dir, files)
    Manifest(
        name=name, model_version=version, task=info.task, data_file=info.data_file, labels=list(info.labels),
        problem_type=info.problem_type, pair_input=info.pair_input, max_length=max_length,
        opset=_opset(out / "model.onnx"), target=target, profile="optimum",
        quantization=quant_config, files=files, validation={"optimum": "main_export validation"},
        versions=versions() | installed_versions(("optimum", "optimum-onnx")), source=source,
    ).write(out / "manifest.json")


def _infer_types(path: Path) -> None:
    """Annotate every tensor's type (ORT's symbolic shape inference knows the contrib ops); the
    quantizer cannot pass extra_options={"DefaultTensorType": ...} through optimum."""
    import onnx

    from .shapes import infer_symbolic_shapes

    model = infer_symbolic_shapes(onnx.load(path))
    onnx.save(model, path)


def _opset(path: Path) -> int:
    import onnx

    graph = onnx.load(path, load_external_data=False)
    return next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))


def _jsonable(values: dict) -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = [str(v) if not isinstance(v, (str, int, float, bool)) else v for v in value]
        else:
            out[key] = str(value)
    return out
