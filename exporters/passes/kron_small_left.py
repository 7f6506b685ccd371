"""Rule: a small Kronecker factor sandwiched between two axis swaps becomes a left-hand MatMul.

::

    x (N, k, p)                                x (N, k, p)
       |                                          |
    Transpose (0, 2, 1)       (N, p, k)           |
       |                                          |
    MatMul (· , W const k x m) (N, p, m)  ==>  MatMul (W^T const m x k, ·)   (N, m, p)
       |
    [Reshape [-1, p, m]]      (no-op, checked)
       |
    Transpose (0, 2, 1)       (N, m, p)

(X^T W)^T = W^T X. KroneckerLinear contracts the second factor of a layer with both a transpose in
front (the factor axis is the middle one) and, after the head swap, one behind. When the factor's
inner dimension k is small (2-16 in the paper's shapes, e.g. kb21's FFN A 16x2) the two transposes
move the whole activation (for FFN up, the 3072-wide output) to feed a tiny product. As one MatMul with
the constant on the left there is no copy. The constant is then MatMul's *first* input, so dynamic
int8 (MatMulConstBOnly) leaves it fp32; for k <= MAX_INNER that is the faster choice anyway
(measured on kb21, see benchmarks/results/speed_followup.md). Larger k is left alone: W^T X then
broadcasts into one small GEMM per token and the big factor would lose int8.
"""

from __future__ import annotations

import numpy as np
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, ir

from ._dims import static_dim

MAX_INNER = 16


def _perm_is_swap(node) -> bool:
    perm = node.attributes.get("perm")
    return perm is not None and list(perm.value) == [0, 2, 1]


class _KronSmallLeftBase(RewriteRuleClassBase):
    def check(self, context, x, w, t1_out, t2_out, **kwargs):
        result = MatchResult()
        if not (_perm_is_swap(t1_out.producer()) and _perm_is_swap(t2_out.producer())):
            return result.fail("the transposes are not (0, 2, 1) swaps")
        reason = small_factor_refusal(x, w)
        return result.fail(reason) if reason else result

    def rewrite(self, op, x, w, **_):
        weight = ir.convenience.get_const_tensor(w).numpy()
        w_left = op.initializer(ir.tensor(np.ascontiguousarray(weight.T), name=f"{w.name}_left"))
        return op.MatMul(w_left, x)


class KronSmallLeftRule(_KronSmallLeftBase):
    def __init__(self):
        super().__init__(name="KronSmallLeft")

    def pattern(self, op, x, w):
        t1 = op.Transpose(x, _allow_other_attributes=True, _outputs=["t1_out"])
        return op.Transpose(op.MatMul(t1, w), _allow_other_attributes=True, _outputs=["t2_out"])


class KronSmallLeftReshapeRule(_KronSmallLeftBase):
    """The same with the no-op Reshape [-1, p, m] that the KronTranspose rule leaves in between."""

    def __init__(self):
        super().__init__(name="KronSmallLeft")

    def pattern(self, op, x, w, shape):
        t1 = op.Transpose(x, _allow_other_attributes=True, _outputs=["t1_out"])
        y = op.Reshape(op.MatMul(t1, w), shape, _allow_other_attributes=True)
        return op.Transpose(y, _allow_other_attributes=True, _outputs=["t2_out"])

    def check(self, context, x, w, t1_out, t2_out, shape, **kwargs):
        result = super().check(context, x, w, t1_out, t2_out, **kwargs)
        if not result:
            return result
        reason = reshape_refusal(x, w, shape)
        return result.fail(reason) if reason else result


def small_factor_refusal(x, w) -> str:
    """Why MatMul(swap(x), w) cannot become a left-hand product ("" when it can)."""
    weight = ir.convenience.get_const_tensor(w)
    if weight is None:
        return "the factor is not a constant"
    shape = weight.numpy().shape
    if len(shape) != 2 or shape[0] > MAX_INNER:
        return f"factor {shape} is not 2-D with inner dim <= {MAX_INNER}"
    if x.shape is not None and len(x.shape) != 3:
        return f"input rank {len(x.shape)} != 3"
    return ""


def reshape_refusal(x, w, shape) -> str:
    """Why the Reshape between the product and the second swap is not a no-op on (N, p, m) ("" when it is)."""
    target = ir.convenience.get_const_tensor(shape)
    if target is None:
        return "reshape target is not a constant"
    target = target.numpy().tolist()
    m = ir.convenience.get_const_tensor(w).numpy().shape[1]
    p = static_dim(x, 2)
    if len(target) != 3 or target[0] != -1 or target[2] != m or p is None or target[1] != p:
        return f"reshape {target} is not a no-op on (N, {p}, {m})"
    return ""


class KronSharedSwapRule:
    """Graph-level rule, run before the two above: an axis swap that several small-factor products share gets one
    copy per product, so that each chain becomes its own copy-free left-hand product.

    ::

        x (N, k, p)                                  x (N, k, p)
           |                                          |      |      |
        Transpose (0, 2, 1)                ==>     Transpose Transpose Transpose    (each then removed by
         |        |        |                          |      |      |               KronSmallLeft)
        MatMul  MatMul  MatMul  (k x m const)       MatMul  MatMul  MatMul
        [Reshape] -> Transpose (0, 2, 1) each      [Reshape] -> Transpose (0, 2, 1) each

    When A is the cheaper factor to contract first, Q, K and V each start with the same swap of the layer input,
    and the exporter keeps one; shared, it belongs to none of the three patterns. Only a swap whose every use is
    such a chain is copied, so nothing is copied that KronSmallLeft does not then remove.
    """

    name = "KronSharedSwap"

    def apply_to_model(self, model: ir.Model) -> int:
        """Copy every shared swap whose uses all open a small-factor chain; return how many copies were made."""
        copies = 0
        for node in list(model.graph):
            if node.op_type != "Transpose" or not _perm_is_swap(node) or node.outputs[0].is_graph_output():
                continue
            uses = list(node.outputs[0].uses())
            x = node.inputs[0]
            if len(uses) < 2 or not all(index == 0 and _opens_small_chain(user, x) for user, index in uses):
                continue
            for user, index in uses[1:]:
                copy = ir.Node("", "Transpose", [x], attributes=[ir.AttrInt64s("perm", [0, 2, 1])],
                               name=f"{node.name}_for_{user.name}")
                model.graph.insert_before(user, copy)
                user.replace_input_with(index, copy.outputs[0])
                copies += 1
        return copies


def _opens_small_chain(node, x) -> bool:
    """``node`` is MatMul(swap(x), w) that KronSmallLeft rewrites once the swap is its own: a small constant ``w``,
    then a (0, 2, 1) swap alone, maybe through the no-op Reshape."""
    if node.op_type != "MatMul" or small_factor_refusal(x, node.inputs[1]):
        return False
    nxt = _only_user(node)
    if nxt is not None and nxt.op_type == "Reshape":
        if reshape_refusal(x, node.inputs[1], nxt.inputs[1]):
            return False
        nxt = _only_user(nxt)
    return nxt is not None and nxt.op_type == "Transpose" and _perm_is_swap(nxt)


def _only_user(node):
    uses = list(node.outputs[0].uses())
    return uses[0][0] if len(uses) == 1 and not node.outputs[0].is_graph_output() else None
