"""Static dims of a value in a graph being rewritten (shared by the rules that need them)."""

from __future__ import annotations

from onnxscript import ir


def static_dims(value) -> list | None:
    """Each dim of ``value`` as a positive int where known, else None; None for an unknown rank.

    The producing constant Reshape or MatMul is read first, since shapes recorded before the rewrites may be
    stale; other values fall back to their recorded shape. A dim of 0 counts as unknown: written into a
    Reshape target it would mean "copy the input's dim".
    """
    node = value.producer()
    if node is None or node.op_type not in ("Reshape", "MatMul"):
        return None if value.shape is None else [d if isinstance(d, int) and d > 0 else None for d in value.shape]
    if node.op_type == "Reshape":
        target = ir.convenience.get_const_tensor(node.inputs[1])
        return None if target is None else [d if d > 0 else None for d in target.numpy().tolist()]
    weight = ir.convenience.get_const_tensor(node.inputs[1])  # MatMul(left, constant 2-D factor)
    left = static_dims(node.inputs[0])
    if weight is None or left is None or weight.numpy().ndim != 2:
        return None
    return left[:-1] + [int(weight.numpy().shape[1]) or None]


def static_dim(value, axis: int):
    """Dim ``axis`` of ``value`` when known (see :func:`static_dims`), else None."""
    dims = static_dims(value)
    return dims[axis] if dims is not None and len(dims) > axis else None
