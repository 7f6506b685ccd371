"""Build every model the benchmarks compare (random weights: speed and size only), under benchmarks/work/.

Dense baselines come from optimum (its exporter, ORTOptimizer O2, ORTQuantizer with the hardware preset);
KroneckerBERT kb8 / kb21 come from ``kronedge kronize`` + ``kronedge export`` (exporters.export.export_model).

    python benchmarks/make_models.py [--only dense|tiny|kron] [--force]

Layout (each a directory the benchmark reads):
    work/models/dense-fp32          optimum export of random BERT_BASE (seq-classification, 2 labels)
    work/models/dense-o2            + ORTOptimizer O2 (fused attention / GELU / LayerNorm)
    work/models/dense-int8          + ORTQuantizer dynamic int8, preset matching this CPU (avx512_vnni here)
    work/models/dense-o2-int8       O2 graph quantized with the same preset
    work/models/dense-int8-arm64    dynamic int8 with optimum's arm64 preset (for the emulated Pi runs)
    work/models/tinybert-fp32|int8  dense TinyBERT-4L-312 shape, optimum export (+ matching int8 preset)
    work/models/tinybert-int8-arm64
    work/models/kb8-fp32|int8, kb21-fp32|int8    kronedge export of runs/kb8, runs/kb21 (x86_64 target)
    work/models/kb21-int8-arm64     kronedge export --target arm64 --quantize int8
    work/models/bal21-fp32|int8     the planner's balanced shapes at the same size:
                                    kronedge kronize ... --compression 21 (runs/bal21) + export (x86_64)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
MODELS = WORK / "models"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def host_preset() -> str:
    from runtime.hostinfo import cpu_flags, host_saturates_s8_weights

    if not host_saturates_s8_weights():
        return "avx512_vnni"
    if cpu_flags(("avx512",)):
        return "avx512"
    return "avx2"


def save_random_hf(spec: str, out: Path) -> Path:
    """A random-weight BertForSequenceClassification saved as a Hugging Face folder (optimum's input)."""
    if (out / "config.json").exists():
        return out
    from kronedge.teachers import load_teacher

    teacher = load_teacher(spec, head="sequence-classification", num_labels=2, seed=0)
    out.mkdir(parents=True, exist_ok=True)
    teacher.model.save_pretrained(out)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        src = Path(teacher.tokenizer_dir) / name
        if src.exists():
            shutil.copy(src, out / name)
    return out


def optimum_dense(prefix: str, spec: str, force: bool) -> None:
    """fp32 / O2 / int8 variants of a dense model through optimum."""
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    hf = save_random_hf(spec, WORK / "hf" / prefix)
    fp32 = MODELS / f"{prefix}-fp32"
    if force or not (fp32 / "model.onnx").exists():
        log(f"optimum export {spec} -> {fp32}")
        main_export(str(hf), output=str(fp32), task="text-classification", opset=17, do_validation=False,
                    no_post_process=False)
    preset = host_preset()
    variants = [(f"{prefix}-int8", fp32, getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=True)),
                (f"{prefix}-int8-arm64", fp32, AutoQuantizationConfig.arm64(is_static=False, per_channel=True))]
    if prefix == "dense":
        o2 = MODELS / f"{prefix}-o2"
        if force or not (o2 / "model.onnx").exists():
            log(f"ORTOptimizer O2 -> {o2}")
            tmp = WORK / "tmp-o2"
            shutil.rmtree(tmp, ignore_errors=True)
            ORTOptimizer.from_pretrained(str(fp32)).optimize(AutoOptimizationConfig.O2(), save_dir=str(tmp))
            o2.mkdir(parents=True, exist_ok=True)
            for f in tmp.iterdir():
                shutil.move(str(f), o2 / ("model.onnx" if f.name == "model_optimized.onnx" else f.name))
            shutil.rmtree(tmp, ignore_errors=True)
        variants.append((f"{prefix}-o2-int8", o2, getattr(AutoQuantizationConfig, preset)(is_static=False,
                                                                                            per_channel=True)))
    for name, src, qconfig in variants:
        out = MODELS / name
        if not force and (out / "model.onnx").exists():
            continue
        tmp = WORK / f"tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        if name.endswith("o2-int8"):
            # ORTQuantizer fails on the fused O2 graph ("Unable to find data type for weight_name"); ORT's own
            # quantize_dynamic with the same preset settings plus DefaultTensorType works.
            log(f"quantize_dynamic with optimum's {preset} preset settings ({name}) -> {out}")
            from onnx import TensorProto
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp.mkdir(parents=True)
            quantize_dynamic(str(src / "model.onnx"), str(tmp / "model_quantized.onnx"),
                             per_channel=qconfig.per_channel, reduce_range=qconfig.reduce_range,
                             weight_type=QuantType.QInt8 if qconfig.weights_dtype.name == "QInt8" else QuantType.QUInt8,
                             extra_options={"DefaultTensorType": TensorProto.FLOAT})
            for f in src.iterdir():
                if f.suffix != ".onnx" and f.name != "ort_config.json":
                    shutil.copy(f, tmp / f.name)
        else:
            log(f"ORTQuantizer ({name}) -> {out}")
            ORTQuantizer.from_pretrained(str(src), file_name="model.onnx").quantize(qconfig, save_dir=str(tmp))
        out.mkdir(parents=True, exist_ok=True)
        for f in tmp.iterdir():
            shutil.move(str(f), out / ("model.onnx" if f.name == "model_quantized.onnx" else f.name))
        shutil.rmtree(tmp, ignore_errors=True)


def kron(force: bool) -> None:
    for preset in ("kb8", "kb21", "bal21"):
        art = ROOT / "runs" / preset
        target = ["--compression", "21"] if preset == "bal21" else ["--preset", preset]
        if force or not (art / "kronedge.json").exists():
            log(f"kronedge kronize random:bert-base-uncased {' '.join(target)}")
            subprocess.run(["kronedge", "kronize", "random:bert-base-uncased", *target, "--out", str(art)],
                           check=True)
        jobs = [("none", "x86_64", "fp32"), ("int8", "x86_64", "int8")]
        if preset == "kb21":
            jobs.append(("int8", "arm64", "int8-arm64"))
        for quantize, target, suffix in jobs:
            out = MODELS / f"{preset}-{suffix}"
            if not force and (out / "manifest.json").exists():
                continue
            log(f"kronedge export {art} --target {target} --quantize {quantize} -> {out}")
            subprocess.run(["kronedge", "export", str(art), "--out", str(out), "--target", target,
                            "--quantize", quantize], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("dense", "tiny", "kron"), action="append")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    only = set(args.only or ("dense", "tiny", "kron"))
    MODELS.mkdir(parents=True, exist_ok=True)
    if "dense" in only:
        optimum_dense("dense", "random:bert-base-uncased", args.force)
    if "tiny" in only:
        optimum_dense("tinybert", "random:tinybert-4l-312", args.force)
    if "kron" in only:
        kron(args.force)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
