"""The eager BERT attention core as the TorchScript exporter writes it; shared by the two attention rules.

The projections before it may be dense (MatMul+Add) or Kronecker (Reshape/MatMul/Transpose chains):
the pattern starts at the projected Q, K, V tensors (B, S, hidden), so it matches both.
"""

from __future__ import annotations

import math

from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, ir


def attention_core(op, q, k, v, mask, q_shape, k_shape, v_shape, out_shape, scale):
    qh = op.Transpose(op.Reshape(q, q_shape), perm=[0, 2, 1, 3])  # (B, N, S, H)
    kt = op.Transpose(op.Reshape(k, k_shape), perm=[0, 2, 3, 1])  # (B, N, H, S)
    vh = op.Transpose(op.Reshape(v, v_shape), perm=[0, 2, 1, 3])  # (B, N, S, H)
    scores = op.Div(op.MatMul(qh, kt), scale)  # (B, N, S, S)
    probs = op.Softmax(op.Add(scores, mask), axis=-1)
    context = op.Transpose(op.MatMul(probs, vh), perm=[0, 2, 1, 3])  # (B, S, N, H)
    return op.Reshape(context, out_shape)  # (B, S, hidden)


def check_core(num_heads: int, head_size: int, scale: ir.Value, mask: ir.Value) -> MatchResult:
    """Accept only the scale 1/sqrt(head_size) and an additive (B, 1, 1, S) float mask."""
    result = MatchResult()
    tensor = ir.convenience.get_const_tensor(scale)
    if tensor is None or tensor.numpy().size != 1:
        return result.fail("the score divisor is not a constant scalar")
    divisor = float(tensor.numpy().reshape(()))
    if not math.isclose(divisor, math.sqrt(head_size), rel_tol=1e-4):
        return result.fail(f"score divisor {divisor} is not sqrt(head_size={head_size})")
    if mask.shape is not None and len(mask.shape) != 4:
        return result.fail(f"mask has rank {len(mask.shape)}, expected (B, 1, 1, S)")
    if mask.dtype is not None and mask.dtype != ir.DataType.FLOAT:
        return result.fail(f"mask is {mask.dtype}, expected an additive float32 mask")
    return result


def scale_of(head_size: int) -> float:
    return 1.0 / math.sqrt(head_size)


def expand_mask(op, mask, q):
    """(B, 1, 1, T) additive mask -> (B, 1, S, T): ORT's Attention and MultiHeadAttention kernels
    broadcast the mask over batch and heads only. Identical across layers, so CSE keeps one."""
    b = op.Shape(mask, start=0, end=1)
    one = op.Constant(value_ints=[1])
    s = op.Shape(q, start=1, end=2)
    t = op.Shape(mask, start=3, end=4)
    return op.Expand(mask, op.Concat(b, one, s, t, axis=0))


class AttentionCoreRule(RewriteRuleClassBase):
    """The shared match of both attention fusions; a subclass only says what the core becomes."""

    def __init__(self, name: str, num_heads: int, head_size: int):
        super().__init__(name=name)
        self.num_heads, self.head_size = num_heads, head_size

    def pattern(self, op, q, k, v, mask, q_shape, k_shape, v_shape, out_shape, scale):
        return attention_core(op, q, k, v, mask, q_shape, k_shape, v_shape, out_shape, scale)

    def check(self, context, mask, scale, **_):
        return check_core(self.num_heads, self.head_size, scale, mask)
