"""GEMM FLOPs of an ONNX graph at a given (batch, seq), counted per precision from the graph itself.

The count is what a compute floor divides by a measured GEMM rate (:mod:`.floor`), so it has to work
for dense and Kronecker exports alike: no planner numbers, no model-family knowledge, only the nodes
and the shapes that shape inference gives them once the int64 ``(batch, sequence)`` inputs are fixed.

Counted (2 x multiply-accumulates):
  * fp32: ``MatMul``, ``Gemm``, ``FusedMatMul``; int8: ``MatMulInteger``, ``MatMulIntegerToFloat``,
    ``DynamicQuantizeMatMul``, ``QLinearMatMul``, ``QGemm``, and a ``MatMul`` whose two inputs both come
    from ``DequantizeLinear`` (QDQ: ORT runs it as an int8 GEMM); ``MatMulNBits`` is int8 only at
    ``accuracy_level`` 4 (int8 compute), fp32 otherwise.
  * attention: ``Attention``/``QAttention`` (contrib: input projection, int8 for QAttention, plus the
    core), ``MultiHeadAttention`` (contrib) and the ONNX ``Attention`` op: the core ``QK^T`` and
    ``softmax(.)V`` products, which ORT runs in fp32.
Nodes inside subgraphs (If/Loop bodies) are not counted.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

log = logging.getLogger(__name__)

FP_GEMMS = ("MatMul", "Gemm", "FusedMatMul")
INT8_GEMMS = ("MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm")
ATTENTION_OPS = ("Attention", "QAttention", "MultiHeadAttention")
COUNTED_OPS = FP_GEMMS + INT8_GEMMS + ATTENTION_OPS + ("MatMulNBits",)
SMALL_CONSTANT = 64  # initializers up to this many elements may be shape constants: kept by value


@dataclasses.dataclass
class GemmFlops:
    """GEMM FLOPs of one graph at one (batch, seq), split by the precision the GEMM runs in."""

    batch: int
    seq: int
    fp32: float = 0.0
    int8: float = 0.0
    nodes: dict[str, int] = dataclasses.field(default_factory=dict)  # counted nodes per op type
    uncounted: list[str] = dataclasses.field(default_factory=list)  # GEMM nodes whose shapes are unknown

    @property
    def total(self) -> float:
        return self.fp32 + self.int8

    @property
    def complete(self) -> bool:
        return not self.uncounted and self.total > 0

    def to_dict(self) -> dict:
        return {"batch": self.batch, "seq": self.seq, "fp32": self.fp32, "int8": self.int8, "total": self.total,
                "nodes": dict(self.nodes), "uncounted": list(self.uncounted)}


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _attr(node, name: str, default=0):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else list(a.ints)
    return default


def skeleton(model):
    """A copy of ``model`` whose large initializers are graph inputs of the same type and shape: shape
    inference needs their shapes, not their bytes (a dense BERT_BASE is 400 MB of them). Small
    initializers stay, since Reshape targets and other shape constants are read by value."""
    from onnx import helper

    graph = model.graph
    small = [init for init in graph.initializer if _prod(init.dims) <= SMALL_CONSTANT]
    weights = [helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
               for init in graph.initializer if _prod(init.dims) > SMALL_CONSTANT]
    out = helper.make_model(
        helper.make_graph(list(graph.node), graph.name, list(graph.input) + weights, list(graph.output), small,
                          value_info=list(graph.value_info)),
        opset_imports=list(model.opset_import), functions=list(model.functions))
    out.ir_version = model.ir_version
    return out


def fix_input_dims(model, batch: int, seq: int) -> None:
    """Pin every rank-2 int64 graph input (input_ids, attention_mask, ...) to ``(batch, seq)``, in place."""
    from onnx import TensorProto

    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 2 and inp.type.tensor_type.elem_type == TensorProto.INT64:
            dims[0].dim_value, dims[1].dim_value = batch, seq


def _mul(dim, n: int):
    return dim * n if isinstance(dim, int) else f"{dim}*{n}" if n != 1 else dim


def _div(dim, n: int):
    return dim // n if isinstance(dim, int) else f"{dim}/{n}" if n != 1 else dim


def _symbolic_inference(model):
    """ORT's symbolic shape inference with two additions: it sends every ``Attention`` node to its contrib-op
    rule, which asserts on the ONNX-domain op (opset 23), and it has no rule for contrib ``QAttention``
    (optimum's O2 + int8 BERT); both get their output shape here. Private API of ``SymbolicShapeInference``;
    any failure falls back to onnx's inference."""
    import onnx
    from onnx import helper
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    class _Inference(SymbolicShapeInference):
        def __init__(self, *args):
            super().__init__(*args)
            self.dispatcher_["QAttention"] = self._infer_QAttention  # optimum's fused int8 BERT: no rule in ORT

        def _infer_QAttention(self, node):  # noqa: N802
            # (B, S, hidden_in) x (hidden_in, q + k + v) -> (B, S, v)
            x, w = self._get_shape(node, 0), self._get_shape(node, 1)
            sizes = _attr(node, "qkv_hidden_sizes", []) or [_div(w[1], 3)] * 3
            vi = helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, [x[0], x[1], sizes[2]])
            self.known_vi_[node.output[0]].CopyFrom(vi)

        def _infer_Attention(self, node):  # noqa: N802 (ORT's naming)
            if node.domain == "com.microsoft":
                return super()._infer_Attention(node)
            # ONNX Attention: Y is Q's layout with V's head size, (B, Hq, S, Dv) or (B, S, Hq * Dv).
            q, v = self._get_shape(node, 0), self._get_shape(node, 2)
            if len(q) == 4:
                shape = [*q[:3], v[-1]]
            else:
                q_heads, kv_heads = _attr(node, "q_num_heads", 1), _attr(node, "kv_num_heads", 1)
                head_v = v[-1] if len(v) == 4 else _div(v[-1], kv_heads)
                shape = [q[0], q[1], _mul(head_v, q_heads)]
            elem = self.known_vi_[node.input[0]].type.tensor_type.elem_type
            self.known_vi_[node.output[0]].CopyFrom(helper.make_tensor_value_info(node.output[0], elem, shape))

    inference = _Inference(2**31 - 1, True, False, 0)
    inference._preprocess(model)
    while inference.run_:  # an incomplete pass still leaves every shape it could infer; GEMMs short of one
        inference._infer_impl()  # are reported as uncounted
    inference._update_output_from_vi()
    return inference.out_mp_


def infer_shapes(model) -> dict[str, list[int]]:
    """Concrete shapes of every value after shape inference. ORT's symbolic inference first: it follows
    computed Reshape and Slice bounds and knows the contrib ops; onnx's own inference is the fallback."""
    from onnx import shape_inference

    try:
        inferred = _symbolic_inference(model)
    except Exception as exc:  # ORT's inference gives up on some graphs; onnx's may still know enough
        log.debug("symbolic shape inference failed (%s); using onnx shape inference", exc)
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.HasField("tensor_type") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _matmul_macs(node, shapes) -> Optional[int]:
    a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    if a is None or out is None:
        return None
    if node.op_type in ("Gemm", "QGemm"):
        k = a[0] if _attr(node, "transA") else a[1]
    elif node.op_type == "FusedMatMul" and _attr(node, "transA") and len(a) >= 2:
        k = a[-2]
    else:
        k = a[-1]
    return _prod(out) * k


def _attention_macs(node, shapes) -> Optional[tuple[int, int]]:
    """(projection MACs, core MACs) of an attention node; the core is QK^T plus softmax(.)V."""
    out = shapes.get(node.output[0])
    inp = shapes.get(node.input[0])
    if out is None or inp is None:
        return None
    if node.domain == "com.microsoft" and node.op_type in ("Attention", "QAttention"):
        weights = shapes.get(node.input[1])  # (hidden_in, q + k + v)
        if weights is None:
            return None
        sizes = _attr(node, "qkv_hidden_sizes", []) or [weights[1] // 3] * 3
        batch, seq = inp[0], inp[1]
        projection = batch * seq * inp[2] * weights[1]
        return projection, batch * seq * seq * sizes[0] + batch * seq * seq * sizes[2]
    # ONNX Attention (B, heads, S, head) or (B, S, hidden); contrib MultiHeadAttention (B, S, D).
    key = shapes.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if key is None:  # packed QKV in the query input: keys are the queries
        kv_len = inp[-3] if len(inp) == 5 else inp[-2] if len(inp) == 4 else inp[1]
        q_elems = _prod(out)
    else:
        kv_len = key[-2] if len(key) == 4 else key[1]
        q_elems = _prod(inp)
    return 0, q_elems * kv_len + _prod(out) * kv_len


def _is_qdq_matmul(node, producers) -> bool:
    return node.op_type == "MatMul" and all(
        producers.get(name) is not None and producers[name].op_type == "DequantizeLinear" for name in node.input[:2])


def count_gemm_flops(model, batch: int = 1, seq: int = 128) -> GemmFlops:
    """GEMM FLOPs of ``model`` (an ``onnx.ModelProto``, not modified) at ``(batch, seq)``.

    Example:
        >>> count_gemm_flops(onnx.load("runs/kb21-int8/model.onnx"), 1, 128).int8 / 1e9
    """
    pinned = skeleton(model)
    fix_input_dims(pinned, batch, seq)
    shapes = infer_shapes(pinned)
    producers = {out: node for node in pinned.graph.node for out in node.output}
    result = GemmFlops(batch=batch, seq=seq)
    for node in pinned.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        if node.op_type in ATTENTION_OPS:
            macs = _attention_macs(node, shapes)
            if macs is None:
                result.uncounted.append(node.name or node.op_type)
                continue
            projection, core = macs
            result.int8 += 2.0 * projection if node.op_type == "QAttention" else 0.0
            result.fp32 += 2.0 * core + (2.0 * projection if node.op_type != "QAttention" else 0.0)
        else:
            macs = _matmul_macs(node, shapes)
            if macs is None:
                result.uncounted.append(node.name or node.op_type)
                continue
            int8 = (node.op_type in INT8_GEMMS or _is_qdq_matmul(node, producers)
                    or (node.op_type == "MatMulNBits" and _attr(node, "accuracy_level") == 4))
            if int8:
                result.int8 += 2.0 * macs
            else:
                result.fp32 += 2.0 * macs
        result.nodes[node.op_type] = result.nodes.get(node.op_type, 0) + 1
    return result
