"""Rule: residual Add (+ the branch's bias Add) + LayerNormalization becomes ``com.microsoft.SkipLayerNormalization``.
ORT profile, off by default (see below).

::

    y (B, S, H)  bias (H,) const
        \\          /
           Add            x (B, S, H)                  y       x     gamma  beta  bias
             \\           /                   ==>        \\      |       |     |     /
                  Add                                    SkipLayerNormalization(epsilon)
                   |                                                |
        LayerNormalization(gamma, beta, axis=-1)                (B, S, H)

In the portable profile ONNX Runtime fuses this on load once both Add inputs carry the same (batch,
sequence) dims (the KronRank4 and PositionIds rules). Measured on the project's AMD EPYC (ORT 1.32, 1
thread, (1, 128, 768)): the fused CPU kernel takes 0.41 ms against 0.07 ms for Add + Add +
LayerNormalization, so the runtime disables SkipLayerNormFusion by default and this rule is not in the
default ``ort`` pipeline (a file that holds the op cannot be unfused by a session option). Enable it with
``optimize(..., disable=())`` where the fused kernel is faster (measure first).
"""

from __future__ import annotations

from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, ir


class SkipLayerNormRule(RewriteRuleClassBase):
    def __init__(self):
        super().__init__(name="SkipLayerNorm")

    def pattern(self, op, y, bias, x, gamma, beta):
        total = op.Add(op.Add(y, bias), x)
        return op.LayerNormalization(total, gamma, beta, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, bias, gamma, beta, out, **_):
        result = MatchResult()
        node = out.producer()
        axis = node.attributes.get("axis")
        if axis is not None and axis.value != -1:
            return result.fail(f"LayerNormalization axis {axis.value} is not the last")
        for name, value in (("bias", bias), ("gamma", gamma), ("beta", beta)):
            tensor = ir.convenience.get_const_tensor(value)
            if tensor is None or len(tensor.shape) != 1:
                return result.fail(f"{name} is not a constant 1-D tensor")
        return result

    def rewrite(self, op, y, bias, x, gamma, beta, out, **_):
        epsilon = out.producer().attributes.get("epsilon")
        return op.SkipLayerNormalization(y, x, gamma, beta, bias, _domain="com.microsoft",
                                         epsilon=1e-5 if epsilon is None else epsilon.value)
