"""int8 quantisation presets per target, as factories (optimum's AutoQuantizationConfig.arm64() style).

Every preset quantizes the MatMuls whose second input is a constant (both products of every
Kronecker layer, the embedding factor, pooler and classifier) and the Gathers of constant tables
(the Kronecker embedding's A^E, position and token-type embeddings). The attention core is a fused
op and stays float. Factor products with a tiny inner dimension (constant with <= ``float_max_inner``
rows, e.g. kb21's A 16x2 factors) stay fp32: int8 buys nothing on a K=2 GEMM, while the fp32 MatMul
lets ONNX Runtime fold the axis swap in front of it into FusedMatMul(transA) instead of running a
Transpose + DynamicQuantizeLinear (kb21 int8: 29.0 -> 23.3 ms at 1 thread, with the KronSmallLeft rule
19.9 ms; benchmarks/results/speed_followup.md). The exact preset is saved in manifest.json.

Presets:
  arm64()            u8 activations / s8 weights, per-channel, no reduce_range (ARM has no VPMADDUBSW
                     saturation; u8s8 is what ORT's NEON and SDOT kernels are fastest at).
  x86_64(vnni=True)  u8/s8 per-channel (AVX-512 VNNI or AVX-VNNI).
  x86_64(vnni=False) u8/u8 per-channel: u8s8 can saturate in VPMADDUBSW on AVX2/AVX-512 without VNNI.
Add ``static=True`` for QDQ with activations calibrated on real task sentences (MinMax).
Every preset writes the GELUs as their tanh approximation (``gelu="tanh"``, passes/gelu_tanh.py): cheaper, and
far inside the int8 error; ``gelu="exact"`` keeps erf.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class QuantPreset:
    """One quantisation recipe; ``to_dict()`` goes into the manifest verbatim."""

    name: str
    is_static: bool = False
    activation_type: str = "uint8"  # dynamic quantisation is always u8 activations in ORT
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = ("MatMul", "Gather")
    calibration_method: str = "minmax"
    quant_format: str = "QOperator"  # dynamic: MatMulInteger/DynamicQuantizeLinear; static: QDQ
    float_max_inner: int = 16  # MatMuls whose constant has at most this many rows stay fp32 (0: quantize all)
    gelu: str = "tanh"  # "tanh": the quantized graph's GELUs use the tanh approximation (passes/gelu_tanh.py)

    def __post_init__(self):
        for field_name in ("activation_type", "weight_type"):
            if getattr(self, field_name) not in ("uint8", "int8"):
                raise ValueError(f"{field_name} must be 'uint8' or 'int8', got {getattr(self, field_name)!r}")
        if not self.is_static and self.activation_type != "uint8":
            raise ValueError("dynamic quantisation in ONNX Runtime quantizes activations to uint8; use static=True for int8")
        if self.gelu not in ("exact", "tanh"):
            raise ValueError(f"gelu must be 'exact' or 'tanh', got {self.gelu!r}")
        if self.quant_format not in ("QOperator", "QDQ"):
            raise ValueError(f"quant_format must be QOperator or QDQ, got {self.quant_format!r}")

    @classmethod
    def arm64(cls, static: bool = False, per_channel: bool = True) -> "QuantPreset":
        """ARM64 (Raspberry Pi 3/4/5): u8 activations / s8 weights, per-channel."""
        return cls(name="arm64" + ("-static" if static else ""), is_static=static, activation_type="uint8",
                   weight_type="int8", per_channel=per_channel, quant_format="QDQ" if static else "QOperator")

    @classmethod
    def x86_64(cls, vnni: bool = True, static: bool = False, per_channel: bool = True) -> "QuantPreset":
        """x86_64: u8/s8 with VNNI; u8/u8 without (no VPMADDUBSW saturation)."""
        return cls(name=("x86_64-vnni" if vnni else "x86_64-avx2") + ("-static" if static else ""),
                   is_static=static, activation_type="uint8", weight_type="int8" if vnni else "uint8",
                   per_channel=per_channel, quant_format="QDQ" if static else "QOperator")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["op_types"] = list(self.op_types)
        out["mode"] = "static" if self.is_static else "dynamic"
        return out


def preset_for(target: str, quantize: str, vnni: bool = True, per_channel: bool | None = None,
               gelu: str | None = None) -> QuantPreset:
    """The preset for a target and a --quantize choice ("int8" dynamic, "int8-static"); ``per_channel`` and
    ``gelu`` override the preset's when given."""
    static = quantize == "int8-static"
    if quantize not in ("int8", "int8-static"):
        raise ValueError(f"no quantisation preset for {quantize!r}")
    if target == "arm64":
        preset = QuantPreset.arm64(static=static)
    elif target == "x86_64":
        preset = QuantPreset.x86_64(vnni=vnni, static=static)
    else:
        raise ValueError(f"unknown target {target!r}; choose arm64 or x86_64")
    overrides = {k: v for k, v in (("per_channel", per_channel), ("gelu", gelu)) if v is not None}
    return replace(preset, **overrides)


def small_inner_matmuls(model, max_inner: int) -> list[str]:
    """Names of the MatMuls whose constant second input is 2-D with at most ``max_inner`` rows."""
    if max_inner <= 0:
        return []
    inits = {t.name: t for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            dims = list(inits[node.input[1]].dims)
            if len(dims) == 2 and dims[0] <= max_inner:
                if not node.name:
                    raise ValueError("a MatMul without a name cannot be excluded from quantisation")
                names.append(node.name)
    return names


class _DropPreprocessHint(logging.Filter):
    """ORT's quantizer logs "Please consider (to run) pre-processing before quantization" on the root logger
    for every graph without quant_pre_process's metadata tag. That pre-processing is symbolic shape inference
    plus ORT's graph optimisation, which would write ORT-only fusions into a graph the exporter keeps portable
    (the static path runs it with both skipped); the advice does not apply here, and a user cannot act on it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("Please consider") and "pre-processing before quantization" in message)


@contextmanager
def quiet_preprocess_hint():
    """Drop only that hint, only while the quantizer runs. ``logging.warning`` on a root logger without
    handlers also installs a stderr handler (``basicConfig``); one installed during the call is removed
    again, so later warnings of unrelated libraries are not printed because of us either."""
    root = logging.getLogger()
    hint_filter = _DropPreprocessHint()
    handlers = list(root.handlers)
    root.addFilter(hint_filter)
    try:
        yield
    finally:
        root.removeFilter(hint_filter)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)


class _FeedReader:
    """CalibrationDataReader over a list of input dicts."""

    def __init__(self, feeds: list[dict]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - ORT calls it for some methods only
        pass


def quantize(model_in: str | os.PathLike, model_out: str | os.PathLike, preset: QuantPreset,
             calibration: list[dict] | None = None) -> Path:
    """Quantize an fp32 ONNX file with ONNX Runtime's quantizer, following ``preset``.

    Args:
        calibration: input dicts (one sentence each) for a static preset; required then.

    Example:
        >>> quantize("model.fp32.onnx", "model.onnx", QuantPreset.arm64())
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    # Fused graphs confuse the quantizer's type lookup for some tensors; float is the right default here.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True}
    model_out = Path(model_out)
    exclude = small_inner_matmuls(onnx.load(str(model_in)), preset.float_max_inner)
    if not preset.is_static:
        with quiet_preprocess_hint():
            quantize_dynamic(str(model_in), str(model_out), op_types_to_quantize=list(preset.op_types),
                             per_channel=preset.per_channel, reduce_range=preset.reduce_range,
                             weight_type=qtype[preset.weight_type], nodes_to_exclude=exclude, extra_options=extra)
        return model_out
    if not calibration:
        raise ValueError("static int8 needs calibration sentences (give --task)")
    import tempfile

    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(model_in), str(prepped), skip_optimization=True, skip_symbolic_shape=True)
        with quiet_preprocess_hint():
            quantize_static(str(prepped), str(model_out), _FeedReader(calibration),
                            quant_format=QuantFormat.QDQ if preset.quant_format == "QDQ" else QuantFormat.QOperator,
                            op_types_to_quantize=list(preset.op_types), per_channel=preset.per_channel,
                            reduce_range=preset.reduce_range, activation_type=qtype[preset.activation_type],
                            weight_type=qtype[preset.weight_type], nodes_to_exclude=exclude,
                            calibrate_method={"minmax": CalibrationMethod.MinMax,
                                              "entropy": CalibrationMethod.Entropy,
                                              "percentile": CalibrationMethod.Percentile}[preset.calibration_method],
                            extra_options=extra | {"WeightSymmetric": True, "ActivationSymmetric": False})
    return model_out
