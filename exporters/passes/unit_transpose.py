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
student). Dims come from the value's shape or, failing that, from the constant Reshape / MatMul that
produced it; a dim not known is taken to hold data. Applied after the Kronecker chain rules, which
expect the swaps they remove in pairs.
"""

from __future__ import annotations

import numpy as np
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, ir


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


def static_dims(value) -> list | None:
    """Each dim of ``value`` as an int where known, else None; None for an unknown rank. The producing constant
    Reshape or MatMul is read first: shapes recorded before the rewrites may be stale."""
    node = value.producer()
    if node is None or node.op_type not in ("Reshape", "MatMul"):
        return None if value.shape is None else [d if isinstance(d, int) else None for d in value.shape]
    if node.op_type == "Reshape":
        target = ir.convenience.get_const_tensor(node.inputs[1])
        return None if target is None else [d if d > 0 else None for d in target.numpy().tolist()]
    weight = ir.convenience.get_const_tensor(node.inputs[1])  # MatMul(left, constant 2-D factor)
    left = static_dims(node.inputs[0])
    if weight is None or left is None or weight.numpy().ndim != 2:
        return None
    return left[:-1] + [int(weight.numpy().shape[1])]
