"""Rule: the head-swap between the two products of a rank-1 Kronecker layer becomes a plain 2-D transpose.

::

    y (N, p, q)                               y (N, p, q)
       |                                         |
    Reshape [-1, p, 1, q]            ==>      Reshape [-1, p, q]     (free in ORT: no copy)
       |                                         |
    Transpose (0, 3, 2, 1)                    Transpose (0, 2, 1)
       |                                         |
    Reshape [-1, q, p]                        MatMul (· , B^T const)   <- ORT folds the transpose
       |                                                                 into FusedMatMul(transA=1)
    MatMul (· , B^T const)

KroneckerLinear writes ``y.reshape(N, n2, r, m1).permute(0, 3, 2, 1)`` so that a sum of r products
is one MatMul. For r = 1 the permutation only swaps the last two axes, but as a 4-D Transpose
ONNX Runtime materialises it; as a 3-D swap before a MatMul it becomes the MatMul's ``transA``
(fp32), or a cheap uint8 transpose (dynamic int8). Ranks above 1 are left alone (check says why).
"""

from __future__ import annotations

import numpy as np
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, ir


class _HeadSwapRule(RewriteRuleClassBase):
    """The head swap ``Reshape [-1, p, r, q] -> Transpose (0, 3, 2, 1) -> Reshape [-1, q, r*p]``; a subclass says
    which (p, r, q) it refuses (``refusal``: a reason, or "" to take it) and what the swap becomes (``rewrite``)."""

    def pattern(self, op, y, shape4, shape3):
        swapped = op.Transpose(op.Reshape(y, shape4, _allow_other_attributes=True), perm=[0, 3, 2, 1])
        return op.Reshape(swapped, shape3, _allow_other_attributes=True)

    def check(self, context, shape4, shape3, **_):
        result = MatchResult()
        s4, s3 = (ir.convenience.get_const_tensor(v) for v in (shape4, shape3))
        if s4 is None or s3 is None:
            return result.fail("reshape shapes are not constants")
        s4, s3 = s4.numpy().tolist(), s3.numpy().tolist()
        if len(s4) != 4 or len(s3) != 3 or s4[0] != -1 or s3[0] != -1 or s3[1:] != [s4[3], s4[2] * s4[1]]:
            return result.fail(f"shapes {s4} -> {s3} are not the Kronecker head swap (-1, p, r, q) -> (-1, q, r*p)")
        _, p, r, q = s4
        reason = self.refusal(p, r, q)
        return result.fail(reason) if reason else result

    def refusal(self, p: int, r: int, q: int) -> str:
        raise NotImplementedError


class KronTransposeRule(_HeadSwapRule):
    def __init__(self):
        super().__init__(name="KronTranspose")

    def refusal(self, p: int, r: int, q: int) -> str:
        return f"rank {r} > 1: the permutation is not a 2-axis swap" if r != 1 else ""

    def rewrite(self, op, y, shape4, **_):
        _, p, _, q = ir.convenience.get_const_tensor(shape4).numpy().tolist()
        shape = op.Constant(value=ir.tensor(np.array([-1, p, q], dtype=np.int64)))
        return op.Transpose(op.Reshape(y, shape), perm=[0, 2, 1])


class KronUnitSwapRule(_HeadSwapRule):
    """The head swap of an SVD-corner layer, A (m x 1) ⊗ B (1 x n) summed r times, is no swap at all.

    ::

        y (N, 1, r)                             y (N, 1, r)
           |                                       |
        Reshape [-1, 1, r, 1]                      |
           |                              ==>      |
        Transpose (0, 3, 2, 1)   (moves only       |
           |                      size-1 axes)     |
        Reshape [-1, 1, r]                      Reshape [-1, 1, r]

    With p = q = 1 the permutation leaves every element where it is, so the three nodes are one Reshape. The
    chain is then only MatMul/Reshape/Transpose(0, 2, 1), which KronRank4 lifts to 4-D (no per-layer shape
    arithmetic, named dims, and ORT's bias + GELU fusion on load), as it does for rank-1 layers.
    """

    def __init__(self):
        super().__init__(name="KronUnitSwap")

    def refusal(self, p: int, r: int, q: int) -> str:
        return "" if p == 1 and q == 1 else f"p = {p}, q = {q}: the permutation moves axes that hold data"

    def rewrite(self, op, y, shape3, **_):
        return op.Reshape(y, shape3)
