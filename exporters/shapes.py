"""ONNX Runtime's symbolic shape inference, without its litter.

When inference is incomplete, ``SymbolicShapeInference.infer_shapes`` saves
``sym_shape_infer_temp.onnx`` plus a uuid-named external-data file (the whole model's weights,
100+ MB for BERT_BASE) into the current directory before raising. Running it from a throwaway
working directory keeps the user's folder clean.
"""

from __future__ import annotations

import contextlib
import tempfile


def infer_symbolic_shapes(model, auto_merge: bool = True):
    """``SymbolicShapeInference.infer_shapes(model)``; raises as it does, leaves no files behind."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    with tempfile.TemporaryDirectory(prefix="kronedge-shapes-") as scratch, contextlib.chdir(scratch):
        return SymbolicShapeInference.infer_shapes(model, auto_merge=auto_merge)
