"""Running an s8-weight int8 export exactly on an x86 host whose int8 kernel would saturate.

ONNX Runtime's u8 x s8 GEMM on x86 without VNNI (AVX2, or AVX-512 without VNNI) multiplies with VPMADDUBSW, which
adds pairs of products into int16 and saturates: an export with s8 weights (the arm64 preset, or x86_64 with VNNI)
then computes wrong logits on such a host (measured: SQNR 7.5 dB instead of > 20 dB on the test model), although it
is right on the ARM or VNNI CPU it was made for. Every check the exporter runs on the host (the SQNR floor, golden.npz,
model.ort against model.onnx) would judge those wrong numbers.

The fix is arithmetic, not tolerance: a weight w in int8 with zero point z dequantizes to (w - z) * scale, and so
does w + 128 in uint8 with zero point z + 128. ``u8_weight_twin`` rewrites every int8 weight that feeds a
``MatMulInteger``, ``DequantizeLinear`` or ``QAttention`` that way; ORT then runs u8 x u8, which widens to int16 before
multiplying and does not saturate, so the host computes the integer products the target CPU computes. The twin is
used for checking only; the exported file keeps its s8 weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from runtime.hostinfo import host_saturates_s8_weights

# (weight input, weight zero point input) of every op whose int8 weights the twin rewrites; com.microsoft's
# QAttention is what ORT's dense BERT fusion quantizes to (the optimum baselines).
TWIN_SLOTS = {"MatMulInteger": (1, 3), "DequantizeLinear": (0, 2), "QAttention": (1, 7)}
# What the manifest's int8 validation says when the checks ran on the twin.
HOST_TWIN_NOTE = ("checked with the weights as uint8 (the same values): this x86 host has no VNNI, and its "
                  "int8 GEMM saturates on s8 weights")


def u8_weight_twin(model: onnx.ModelProto) -> int:
    """Rewrite ``model`` in place so that its int8 weights are uint8 with the same dequantized values; returns how
    many weights changed (0: nothing to do)."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    replaced: dict[str, onnx.TensorProto] = {}  # name -> its uint8 version (weights, zero points, added zeros)
    weights = set()
    for node in graph.node:
        slots = TWIN_SLOTS.get(node.op_type)
        if slots is None or len(node.input) <= slots[0]:
            continue
        weight, zero = slots
        name = node.input[weight]
        if name not in inits or inits[name].data_type != onnx.TensorProto.INT8:
            continue
        weights.add(name)
        replaced.setdefault(name, _shifted(inits[name]))
        zero_name = node.input[zero] if len(node.input) > zero else ""
        if zero_name not in inits:  # an absent zero point is 0 in int8, so 128 in uint8
            zero_name = f"{name}_u8_zero_point"
            replaced.setdefault(zero_name, numpy_helper.from_array(np.array(128, np.uint8), zero_name))
            node.input.extend([""] * (zero + 1 - len(node.input)))
            node.input[zero] = zero_name
        elif inits[zero_name].data_type == onnx.TensorProto.INT8:
            replaced.setdefault(zero_name, _shifted(inits[zero_name]))
    kept = [init for init in graph.initializer if init.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + list(replaced.values()))
    return len(weights)


def _shifted(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """``tensor`` (int8) + 128 as uint8: the same value less its (equally shifted) zero point."""
    return numpy_helper.from_array((numpy_helper.to_array(tensor).astype(np.int16) + 128).astype(np.uint8), tensor.name)


def exact_on_host(model_path: str | os.PathLike, work: str | os.PathLike) -> Path:
    """The file to run on this host to get ``model_path``'s exact int8 results: the file itself, or, on an x86 host
    without VNNI when it holds s8 weights, its u8-weight twin written under ``work``."""
    model_path = Path(model_path)
    if not host_saturates_s8_weights():
        return model_path
    model = onnx.load(str(model_path))
    if not u8_weight_twin(model):
        return model_path
    twin = Path(work) / f"{model_path.stem}.u8-twin.onnx"
    onnx.save(model, str(twin))
    return twin
