"""Rule: the exact GELU becomes its tanh approximation. Quantized exports only (a preset's ``gelu="tanh"``).

::

    x                        x
    |                        |
    Gelu (exact, erf)  ==>   Gelu(approximate="tanh")

The two differ by at most ~5e-4 on each activation, far below the int8 error of the products around it,
so the int8 export's accuracy is unchanged (benchmarks/results/speed_folds.md measures it on SST-2),
while ONNX Runtime's tanh kernel is cheaper than its erf (fewer instructions per value on the Pi CPUs). An
fp32 export keeps the exact GELU: it must match PyTorch to 1e-4.
"""

from __future__ import annotations

from onnxscript.rewriter import MatchResult, RewriteRuleClassBase


class GeluTanhRule(RewriteRuleClassBase):
    def __init__(self):
        super().__init__(name="GeluTanh")

    def pattern(self, op, x):
        return op.Gelu(x, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, x, out, **_):
        result = MatchResult()
        approximate = out.producer().attributes.get("approximate")
        if approximate is not None and approximate.value != "none":
            return result.fail(f"GELU is already approximate={approximate.value!r}")
        return result

    def rewrite(self, op, x, **_):
        return op.Gelu(x, approximate="tanh")
