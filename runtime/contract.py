"""The exported-directory contract between `kronedge export` and the runtime, torch-free and written once."""

from __future__ import annotations

import math

import numpy as np


def sqnr(reference, test) -> float:
    """Signal-to-quantisation-noise ratio 20 log10(|x| / |x - y|) in dB (torchao's); inf when identical."""
    reference = np.asarray(reference, np.float64)
    noise = float(np.linalg.norm(reference - np.asarray(test, np.float64)))
    if noise == 0.0:
        return math.inf
    return 20.0 * math.log10(max(float(np.linalg.norm(reference)), 1e-30) / noise)
