"""Compute floor: how fast a model could run if all it did were its GEMMs at this CPU's large-GEMM rate.

Definition (the one the bench reports, in its output and in ``benchmarks/results/compute_floor.md``)::

    floor_ms = fp32 GEMM FLOPs / R_fp32 + int8 GEMM FLOPs / R_int8
    fraction of floor = floor_ms / measured p50 ms        (1.0 = nothing but GEMMs at the probe's rate)

The FLOPs come from the model's ONNX graph at the benchmarked (batch, seq) (:mod:`.flops`). R is the
rate of a probe: one ``[N, N] x [N, N]`` MatMul (N = ``probe_size``, default 1024) as an ONNX graph,
fp32 and dynamically quantized to int8 (``quantize_dynamic``, u8 activations, s8 weights where the CPU
has VNNI/AMX and u8 weights otherwise, per-channel: ORT fuses it into ``DynamicQuantizeMatMul``, the
path int8 exports take), measured by the bench itself through the same ORT build, session options and
thread count, interleaved with the models (same p50 protocol). A large GEMM is the best case for
MLAS, so the floor is a lower bound: small GEMMs, elementwise work, copies and per-op overhead all
sit between it and the measured latency.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

from .flops import GemmFlops

PROBE_NAMES = {"fp32": "gemm-probe-fp32", "int8": "gemm-probe-int8"}
FLOOR_DEFINITION = (
    "compute floor = fp32 GEMM FLOPs / R_fp32 + int8 GEMM FLOPs / R_int8, FLOPs counted from the ONNX graph "
    "at the row's (batch, seq) (MatMul/Gemm/FusedMatMul fp32; MatMulInteger/DynamicQuantizeMatMul/QLinearMatMul "
    "and QDQ MatMul int8; attention cores fp32); R = the p50 rate of a one-MatMul ONNX probe ({n}x{n} by {n}x{n}, "
    "fp32 and dynamic int8) run through the same ORT build, session options and threads, interleaved with the "
    "models. fraction of floor = floor / p50 (1.0 = only GEMMs, at large-GEMM speed).")


def probe_weight_type() -> str:
    """s8 weights where the CPU has a VNNI/AMX int8 dot product (the x86_64-vnni export preset), u8 on other
    x86 (VPMADDUBSW saturates u8 x s8), s8 on ARM."""
    from runtime.hostinfo import host_saturates_s8_weights

    return "uint8" if host_saturates_s8_weights() else "int8"


def build_probes(directory: Path, size: int = 1024) -> dict[str, Path]:
    """Write the fp32 and the dynamic-int8 probe graphs into ``directory``; {precision: path}."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if size < 16:
        raise ValueError(f"probe_size must be >= 16, got {size}")
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((size, size)).astype(np.float32) / size ** 0.5, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # Fully static shapes: nothing for quant_pre_process to add, so quantize_dynamic need not ask for it.
    helper.set_model_props(model, {"onnx.quant.pre_process": "onnxruntime.quant"})
    directory.mkdir(parents=True, exist_ok=True)
    fp32, int8 = directory / f"{PROBE_NAMES['fp32']}.onnx", directory / f"{PROBE_NAMES['int8']}.onnx"
    onnx.save(model, str(fp32))
    weight_type = QuantType.QInt8 if probe_weight_type() == "int8" else QuantType.QUInt8
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=weight_type,
                         op_types_to_quantize=["MatMul"])
    finally:
        # ORT's quantizer logs through the root logger's module functions, which install a stderr handler on
        # first use; that handler would print every later kronedge log line a second time.
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
    return {"fp32": fp32, "int8": int8}


def probe_flops(size: int) -> float:
    return 2.0 * size ** 3


@dataclasses.dataclass
class Floor:
    """One model's compute floor at one grid cell."""

    floor_ms: Optional[float]
    fraction: Optional[float]  # floor_ms / p50_ms
    note: str

    def to_row(self) -> dict:
        return {"compute_floor_ms": self.floor_ms, "floor_fraction": self.fraction, "floor_note": self.note}


def rates_from_probe(stats: dict[str, dict], size: int) -> dict[str, float]:
    """{precision: GFLOP/s} from the probes' measured stats (the same dicts bench_core.measure returns)."""
    return {prec: probe_flops(size) / (s["p50_ms"] * 1e6) for prec, s in stats.items() if s["p50_ms"] > 0}


def compute_floor(flops: Optional[GemmFlops], rates: dict[str, float], p50_ms: float) -> Floor:
    """The floor of a model whose GEMM FLOPs are ``flops`` given probe rates in GFLOP/s."""
    if flops is None:
        return Floor(None, None, "no ONNX graph to count GEMM FLOPs in (e.g. a .ort file)")
    if not flops.complete:
        what = f"{len(flops.uncounted)} GEMM nodes without inferred shapes" if flops.uncounted else "no GEMMs found"
        return Floor(None, None, f"GEMM FLOPs unknown: {what}")
    ms = 0.0
    for prec in ("fp32", "int8"):
        work = getattr(flops, prec)
        if work:
            ms += work / (rates[prec] * 1e9) * 1e3
    fraction = ms / p50_ms if p50_ms > 0 else None
    note = "GEMM FLOPs / probe GEMM rate"
    if fraction is not None and fraction > 1:  # only GEMMs yet faster than a large GEMM: the probe ran slow
        note += "; above 1: the probe measured slower than this model's GEMMs ran (a busy machine?)"
    return Floor(ms, fraction, note)
