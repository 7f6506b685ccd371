"""Rule: bias Add + GELU becomes ONNX Runtime's ``com.microsoft.BiasGelu``. ORT profile.

::

    y (B, S, F)    bias (F,) const            y (B, S, F)    bias (F,) const
         \\          /                  ==>          \\          /
            Add                                      BiasGelu        (one pass over the activation)
             |                                          |
        Gelu (exact, erf)                           (B, S, F)

In the portable profile the file keeps ``Add -> Gelu`` and ONNX Runtime fuses it on load (BiasGeluFusion
wants a 1-D constant bias whose length is the known last dim: the KronRank4 rule makes the dim known).
The ORT profile writes the fused op into the file. Only the exact GELU: BiasGelu computes erf, so
fp32 parity with PyTorch holds; the tanh approximation (FastGelu) would not.
"""

from __future__ import annotations

from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, ir


class BiasGeluRule(RewriteRuleClassBase):
    def __init__(self):
        super().__init__(name="BiasGelu")

    def pattern(self, op, y, bias):
        return op.Gelu(op.Add(y, bias), _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, y, bias, out, **_):
        result = MatchResult()
        approximate = out.producer().attributes.get("approximate")
        if approximate is not None and approximate.value != "none":
            return result.fail(f"Gelu approximate={approximate.value!r}: BiasGelu is the exact (erf) GELU")
        tensor = ir.convenience.get_const_tensor(bias)
        if tensor is None or len(tensor.shape) != 1:
            return result.fail("the bias is not a constant 1-D tensor")
        if y.shape is not None and len(y.shape) and isinstance(y.shape[-1], int) and y.shape[-1] != tensor.shape[0]:
            return result.fail(f"bias length {tensor.shape[0]} != last dim {y.shape[-1]}")
        return result

    def rewrite(self, op, y, bias, **_):
        return op.BiasGelu(y, bias, _domain="com.microsoft")
