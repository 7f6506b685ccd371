"""Rule: the attention core becomes the standard ONNX ``Attention`` op (opset 23). Portable profile.

::

    q (B,S,D)     k (B,S,D)      v (B,S,D)                 q       k       v    Expand(mask)
      |             |              |                        \\      |      /      /
    Reshape       Reshape        Reshape                     \\     |     /      /
    Transpose     Transpose      Transpose      ==>          Attention(q_num_heads=N,
      (0,2,1,3)     (0,2,3,1)      (0,2,1,3)                   kv_num_heads=N, scale=1/sqrt(H))
       \\           /                |                            |
        MatMul (QK^T)               |                          (B,S,D)
          |                         |
        Div sqrt(H)                 |
          |                         |
        Add mask (B,1,1,S)          |
          |                         |
        Softmax(-1)                 |
            \\                     /
              MatMul (probs · V)
                 |
              Transpose (0,2,1,3)
              Reshape (B,S,D)

The 3-D form of Attention takes the projections as they come out of the (Kronecker) linears, so the
head split/merge Reshape+Transpose pairs disappear with the core. ONNX Runtime runs it on the CPU
provider since 1.23; it is in the ai.onnx domain, so a portable export stays custom-op free.
"""

from __future__ import annotations

from ._attention import AttentionCoreRule, expand_mask, scale_of


class OnnxAttentionRule(AttentionCoreRule):
    def __init__(self, num_heads: int, head_size: int):
        super().__init__("OnnxAttention", num_heads, head_size)

    def rewrite(self, op, q, k, v, mask, **_):
        return op.Attention(q, k, v, expand_mask(op, mask, q), q_num_heads=self.num_heads, kv_num_heads=self.num_heads,
                            scale=scale_of(self.head_size))
