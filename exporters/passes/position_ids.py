"""Rule: position ids are counted along ``input_ids`` instead of sliced from a constant buffer.

::

    input_ids (B, S)                                  input_ids (B, S)
       |                                                 |
    Shape -> Gather 1 -> Unsqueeze   (S,)              Mul 0 -> Add 1                (B, S) ones
       |                                                 |
    Slice (position_ids buffer (1, L), 0:S, axis 1) ==> CumSum (axis 1, exclusive)   (B, S) 0..S-1
       |            (1, ?)                               |
    Gather (position table)          (1, ?, H)         Gather (position table)      (B, S, H)

BERT adds ``position_embeddings(position_ids[:, :S])``, which the TorchScript exporter writes as a Slice
of the registered ``arange`` buffer. Shape inference cannot tell that the slice has S columns, so the
embedding sum, and with it the whole residual stream, gets unnamed dims. ONNX Runtime's
SkipLayerNormFusion compares the dims of both inputs of every residual ``Add`` and gives up on unnamed
ones. Counting along ``input_ids`` gives the same ids (0..S-1 in every row) with the shape
``(batch, sequence)`` by construction. Applied only when the buffer is exactly ``arange(L)[None]``.
"""

from __future__ import annotations

import numpy as np
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, ir


class PositionIdsRule(RewriteRuleClassBase):
    def __init__(self):
        super().__init__(name="PositionIds")

    def pattern(self, op, table, buffer, seq, starts, axes, steps):
        # S's Shape/Gather/Unsqueeze is shared with other shape arithmetic, so it is checked, not matched
        return op.Gather(table, op.Slice(buffer, starts, seq, axes, steps))

    def check(self, context, table, buffer, seq, starts, axes, steps, **_):
        result = MatchResult()
        ids, index = _seq_len_of(seq)
        if ids is None:
            return result.fail("the slice end is not Unsqueeze(Gather(Shape(input_ids), 1))")
        consts = {name: ir.convenience.get_const_tensor(v) for name, v in
                  (("table", table), ("buffer", buffer), ("index", index), ("starts", starts), ("axes", axes),
                   ("steps", steps))}
        missing = [name for name, tensor in consts.items() if tensor is None]
        if missing:
            return result.fail(f"not constant: {missing}")
        values = {name: tensor.numpy() for name, tensor in consts.items()}
        pos = values["buffer"]
        if pos.ndim != 2 or pos.shape[0] != 1 or not np.array_equal(pos[0], np.arange(pos.shape[1])):
            return result.fail("the position buffer is not arange(L)[None]")
        if [values[k].reshape(-1).tolist() for k in ("index", "starts", "axes", "steps")] != [[1], [0], [1], [1]]:
            return result.fail("the slice is not position_ids[:, 0:S] with S = input_ids.shape[1]")
        if ids.shape is not None and len(ids.shape) != 2:
            return result.fail(f"input ids of rank {len(ids.shape)}")
        return result

    def rewrite(self, op, table, seq, **_):
        ids, _ = _seq_len_of(seq)
        zero = op.Constant(value=ir.tensor(np.array(0, dtype=np.int64)))
        one = op.Constant(value=ir.tensor(np.array(1, dtype=np.int64)))
        ones = op.Add(op.Mul(ids, zero), one)
        axis = op.Constant(value=ir.tensor(np.array(1, dtype=np.int64)))
        return op.Gather(table, op.CumSum(ones, axis, exclusive=1))


def _seq_len_of(seq):
    """``(ids, index)`` for ``seq = Unsqueeze(Gather(Shape(ids), index, axis=0), [0])``, else ``(None, None)``."""
    unsq = seq.producer()
    if unsq is None or unsq.op_type != "Unsqueeze":
        return None, None
    axes = ir.convenience.get_const_tensor(unsq.inputs[1]) if len(unsq.inputs) > 1 else None
    gather = unsq.inputs[0].producer()
    if axes is None or axes.numpy().reshape(-1).tolist() != [0] or gather is None or gather.op_type != "Gather":
        return None, None
    axis = gather.attributes.get("axis")
    shape = gather.inputs[0].producer()
    if (axis is not None and axis.value != 0) or shape is None or shape.op_type != "Shape" or shape.attributes:
        return None, None
    return shape.inputs[0], gather.inputs[1]
