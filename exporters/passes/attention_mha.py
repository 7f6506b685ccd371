"""Rule: the attention core becomes ONNX Runtime's ``com.microsoft.MultiHeadAttention``. ORT profile.

::

    q (B,S,D)     k (B,S,D)      v (B,S,D)             q     k     v          mask (B,1,1,S)
      |             |              |                    \\    |    /              |
    Reshape+Transpose (x3, heads split)      ==>         \\   |   /      Expand (B,1,S,S)
      |             |              |                    MultiHeadAttention(num_heads=N,
    MatMul(QK^T) -> Div sqrt(H) -> Add mask               scale=1/sqrt(H), attention_bias)
      -> Softmax(-1) -> MatMul(·V)                                |
      -> Transpose (0,2,1,3) -> Reshape (B,S,D)                (B,S,D)

MultiHeadAttention takes already-projected Q, K, V, which is what a Kronecker projection yields
(ORT's own BERT fusion wants three dense MatMuls hanging off one LayerNorm and never matches).
Its ``attention_bias`` broadcasts over batch and heads only, so the (B,1,1,S) padding mask is
expanded over the query axis first.
"""

from __future__ import annotations

from ._attention import AttentionCoreRule, expand_mask, scale_of


class MultiHeadAttentionRule(AttentionCoreRule):
    def __init__(self, num_heads: int, head_size: int):
        super().__init__("MultiHeadAttention", num_heads, head_size)

    def rewrite(self, op, q, k, v, mask, **_):
        return op.MultiHeadAttention(q, k, v, None, None, expand_mask(op, mask, q), num_heads=self.num_heads,
                                     scale=scale_of(self.head_size), _domain="com.microsoft")
