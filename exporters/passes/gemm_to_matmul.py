"""Rule: ``Gemm(x, W, b, transB=1)`` with constant W becomes ``MatMul(x, W^T) + b``.

::

    x (B,D)   W (M,D) const   b (M,)                x (B,D)   W^T (D,M) const
        \\        |           /          ==>            \\       /
         Gemm(transB=1, alpha=1, beta=1)                  MatMul      b (M,)
              |                                             \\        /
           (B,M)                                               Add
                                                                |
                                                             (B,M)

The pooler and the classifier are written as Gemm by the TorchScript exporter; ONNX Runtime's
dynamic quantizer handles MatMul but not Gemm, so without this rule the dense 768x768 pooler of a
BERT_BASE-shaped model would stay fp32 (2.4 MB) in an int8 export.
"""

from __future__ import annotations

import numpy as np
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, ir


class GemmToMatMulAddRule(RewriteRuleClassBase):
    def __init__(self):
        super().__init__(name="GemmToMatMulAdd")

    def pattern(self, op, x, w, b):
        return op.Gemm(x, w, b, _allow_other_attributes=True, _outputs=["y"])

    def check(self, context, x, w, b, y, **_):
        result = MatchResult()
        node = y.producer()
        attrs = {name: attr.value for name, attr in node.attributes.items()}
        if attrs.get("transA", 0) != 0 or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return result.fail(f"Gemm attributes {attrs} are not plain x @ W^T + b")
        if ir.convenience.get_const_tensor(w) is None:
            return result.fail("Gemm weight is not a constant")
        return result

    def rewrite(self, op, x, w, b, y, **_):
        weight = ir.convenience.get_const_tensor(w).numpy()
        if y.producer().attributes.get("transB") is not None and y.producer().attributes["transB"].value == 1:
            weight = weight.T
        w_t = op.initializer(ir.tensor(np.ascontiguousarray(weight), name=f"{w.name}_t"))
        return op.Add(op.MatMul(x, w_t), b)
