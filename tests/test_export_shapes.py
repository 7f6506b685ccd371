"""Symbolic shape inference must not leave files in the user's working directory."""

import pytest
from onnx import TensorProto, helper

from exporters.shapes import infer_symbolic_shapes


def test_failed_inference_leaves_no_files(tmp_path, monkeypatch):
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.unknown")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.unknown", 1)])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception):
        infer_symbolic_shapes(model)
    assert list(tmp_path.iterdir()) == []
