"""Rule: a Transpose that moves only axes of size 1 is a Reshape.

::

    x (B, S, 1, M)                            x (B, S, 1, M)
       |                                         |
    Transpose (0, 1, 3, 2)          ==>       Reshape [0, 0, M, 1]     (no copy in ORT)
       |                                         |
    (B, S, M, 1)                              (B, S, M, 1)

A permutation keeps every element where it is when the axes that hold more than one element stay in
their order. The SVD corner's products, A (m x 1) ⊗ B (1 x n) summed r times, end in such a swap of
(N, 1, m) to (N, m, 1), and ONNX Runtime runs it as a copy of the layer's whole output (36 per MiniLM
student). Dims come from the constant Reshape / MatMul that produced the value or, for other producers,
from its recorded shape (``_dims.static_dims``); a dim not known is taken to hold data. Applied after the
Kronecker chain rules, which expect the swaps they remove in pairs (KronUnitSwap still drops the SVD
corner's 4-D head swap before KronRank4, which lifts only chains of 3-D swaps).
"""

from __future__ import annotations

import numpy as np
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, ir

from ._dims import static_dims


class UnitTransposeRule(RewriteRuleClassBase):
    def __init__(self):
        super().__init__(name="UnitTranspose")

    def pattern(self, op, x):
        return op.Transpose(x, _allow_other_attributes=True, _outputs=["t_out"])

    def check(self, context, x, t_out, **_):
        result = MatchResult()
        perm = t_out.producer().attributes.get("perm")
        dims = static_dims(x)
        if perm is None or dims is None or len(dims) != len(perm.value):
            return result.fail("no perm, or the input's rank is not known")
        perm = list(perm.value)
        holding = [axis for axis in perm if dims[axis] != 1]
        if holding != sorted(holding):
            return result.fail(f"perm {perm} moves axes that hold data (dims {dims})")
        if reshape_target(perm, dims) is None:
            return result.fail(f"an unknown dim of {dims} changes place")
        return result

    def rewrite(self, op, x, t_out, **_):
        perm = list(t_out.producer().attributes["perm"].value)
        target = reshape_target(perm, static_dims(x))
        return op.Reshape(x, op.Constant(value=ir.tensor(np.array(target, dtype=np.int64))))


def reshape_target(perm: list[int], dims: list) -> list[int] | None:
    """The transposed shape as a Reshape target: known dims as numbers, an unknown one as 0 (copy the input's
    dim) where it stays in place; None when an unknown dim would move."""
    target = []
    for position, axis in enumerate(perm):
        if dims[axis] is not None:
            target.append(dims[axis])
        elif axis == position:
            target.append(0)
        else:
            return None
    return target
