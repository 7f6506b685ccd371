"""Rule: a Kronecker linear keeps the (batch, sequence) axes, so its output has the shape of its input.

::

    x (B, S, H)                                  x (B, S, H)
       |                                            |
    Reshape [-1, n1, n2]     (B*S, n1, n2)       Reshape [0, 0, n1, n2]    (B, S, n1, n2)
       |                                            |
    Transpose (0, 2, 1) / MatMul (const) /  ==>  Transpose (0, 1, 3, 2) / MatMul (const) /
    Reshape [-1, p, q]  (any chain of these)     Reshape [0, 0, p, q]      (the same chain)
       |                                            |
    Reshape Concat(Shape(x)[0], Shape(x)[1], M)  Reshape [0, 0, M]          (B, S, M)
       |                                            |
     (?, ?, M)                                   (B, S, M)   <- the same symbolic dims as x

KroneckerLinear flattens the tokens (``x.reshape(-1, n1, n2)``) and restores them from ``x.shape[:-1]``,
which the TorchScript exporter writes as Shape -> Gather -> Unsqueeze -> Concat. ONNX Runtime's shape
inference cannot name the result, so the residual ``Add`` after the layer sees two different shapes and
SkipLayerNormFusion (which wants equal rank-3 dims) does not fire, nor does BiasGelu (which wants a known
last dim); and every layer runs ~15 tiny shape nodes per call. Kept 4-D, every product in the chain
broadcasts over (B, S) exactly as it did over B*S (a constant 2-D factor on either side), the axis swaps
act on the same two axes, and constant targets with 0 (copy the input dim) give the output x's own
symbolic (B, S). The word embedding's ``Gather -> MatMul -> Reshape`` is the same with nothing to lift.
Exact: no value changes, only shapes.

A chain whose values are used outside it, or that holds any other op (a rank > 1 head permutation),
is left as it is; ``check`` says why.
"""

from __future__ import annotations

import numpy as np
from onnxscript import ir

_CHAIN_OPS = ("MatMul", "Transpose", "Reshape")


class KronRank4Rule:
    """Graph-level rule (the chain has no fixed length, so no onnxscript pattern): same
    ``pattern`` / ``check`` / ``rewrite`` split, applied by :meth:`apply_to_model`."""

    name = "KronRank4"

    # -- pattern: Reshape(y, Concat(Unsqueeze(Gather(Shape(s), 0)), Unsqueeze(Gather(Shape(s), 1)), [M]))
    def pattern(self, node: ir.Node):
        """``(s, M)`` when ``node`` restores (B, S) from ``Shape(s)``, else None."""
        if node.op_type != "Reshape" or len(node.inputs) != 2 or node.inputs[1] is None:
            return None
        concat = node.inputs[1].producer()
        if concat is None or concat.op_type != "Concat" or len(concat.inputs) != 3:
            return None
        sources = [_shape_dim(v) for v in concat.inputs[:2]]
        tail = ir.convenience.get_const_tensor(concat.inputs[2])
        if any(src is None for src in sources) or tail is None or tail.numpy().size != 1:
            return None
        (s0, d0), (s1, d1) = sources
        if s0 is not s1 or (d0, d1) != (0, 1):
            return None
        return s0, int(tail.numpy().reshape(-1)[0])

    def check(self, out_reshape: ir.Node, source: ir.Value) -> tuple[list[ir.Node] | None, str]:
        """The chain's nodes (seed Reshape first) or ``(None, reason)``."""
        chain, seen = [], set()
        stack = [out_reshape.inputs[0]]
        while stack:
            value = stack.pop()
            node = value.producer()
            if node is None:
                return None, f"{value.name} is a graph input or constant"
            if id(node) in seen:
                continue
            if node.op_type == "Gather" and node.inputs[1] is source and _const(node.inputs[0]) is not None:
                continue  # embedding lookup: already (B, S, ...), nothing to lift before it
            if node.op_type not in _CHAIN_OPS:
                return None, f"{node.op_type} {node.name} inside the chain"
            seen.add(id(node))
            chain.append(node)
            if node.op_type == "Reshape":
                target = _const(node.inputs[1])
                if target is None or target.ndim != 1 or target.size != 3 or target[0] != -1:
                    return None, f"reshape {node.name} target is not a constant [-1, p, q]"
                if node.inputs[0] is source:
                    continue  # the seed
                stack.append(node.inputs[0])
            elif node.op_type == "Transpose":
                perm = node.attributes.get("perm")
                if perm is None or list(perm.value) != [0, 2, 1]:
                    return None, f"transpose {node.name} is not a (0, 2, 1) swap"
                stack.append(node.inputs[0])
            else:  # MatMul: one side a 2-D constant factor
                consts = [_const(v) for v in node.inputs]
                sides = [i for i, c in enumerate(consts) if c is not None and c.ndim == 2]
                if len(sides) != 1 or len(node.inputs) != 2:
                    return None, f"matmul {node.name} has no single 2-D constant factor"
                stack.append(node.inputs[1 - sides[0]])
        if not any(n.op_type == "Reshape" and n.inputs[0] is source for n in chain) and not _is_embedding(out_reshape, source):
            return None, "no seed Reshape(x, [-1, n1, n2]) on the source"
        if source.shape is not None and len(source.shape) not in (2, 3):
            return None, f"source rank {len(source.shape)} is not 2 or 3"
        return chain, ""

    def rewrite(self, graph: ir.Graph, out_reshape: ir.Node, chain: list[ir.Node], width: int,
                done: set[int] | None = None) -> None:
        """Lift ``chain`` in place; nodes in ``done`` (shared with a chain already lifted) are skipped."""
        done = set() if done is None else done
        for node in chain:
            if id(node) in done:
                continue
            done.add(id(node))
            if node.op_type == "Reshape":
                target = _const(node.inputs[1])
                node.replace_input_with(1, _constant(graph, [0, 0, int(target[1]), int(target[2])], node.name))
            elif node.op_type == "Transpose":
                node.attributes["perm"] = ir.AttrInt64s("perm", [0, 1, 3, 2])
        out_reshape.replace_input_with(1, _constant(graph, [0, 0, width], out_reshape.name))
        for node in [*chain, out_reshape]:
            for value in node.outputs:
                value.shape = None  # re-inferred downstream (ORT, onnx shape inference)

    def apply_to_model(self, model: ir.Model) -> int:
        """Lift every chain whose values stay inside lifted chains; return how many were lifted."""
        graph = model.graph
        candidates = []
        for node in graph:
            match = self.pattern(node)
            if match is None:
                continue
            chain, _reason = self.check(node, match[0])
            if chain is not None:
                candidates.append((node, chain, match[1]))
        # A value of a chain may feed another chain (the shared x^T of Q, K and V) but nothing else.
        while True:
            inside = {id(n) for out, chain, _ in candidates for n in (*chain, out)}
            keep = [c for c in candidates if all(
                id(use.node) in inside for n in c[1] for v in n.outputs for use in v.uses())]
            if len(keep) == len(candidates):
                break
            candidates = keep
        done: set[int] = set()
        for out, chain, width in candidates:
            self.rewrite(graph, out, chain, width, done)
        return len(candidates)


def _is_embedding(out_reshape: ir.Node, source: ir.Value) -> bool:
    """``Reshape(MatMul(Gather(table, ids), factor), ...)`` restoring Shape(ids): nothing to seed."""
    node = out_reshape.inputs[0].producer()
    while node is not None and node.op_type == "MatMul":
        node = node.inputs[0].producer()
    return node is not None and node.op_type == "Gather" and node.inputs[1] is source


def _shape_dim(value: ir.Value):
    """``(s, d)`` for ``Unsqueeze(Gather(Shape(s), d))``, else None."""
    unsq = value.producer()
    if unsq is None or unsq.op_type != "Unsqueeze":
        return None
    gather = unsq.inputs[0].producer()
    if gather is None or gather.op_type != "Gather":
        return None
    shape = gather.inputs[0].producer()
    index = _const(gather.inputs[1])
    if shape is None or shape.op_type != "Shape" or shape.attributes or index is None or index.size != 1:
        return None
    return shape.inputs[0], int(index.reshape(-1)[0])


def _const(value: ir.Value | None):
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def _constant(graph: ir.Graph, dims: list[int], owner: str) -> ir.Value:
    name = f"{owner}_rank4_shape_{'_'.join(str(d) for d in dims)}"
    value = ir.Value(name=name, const_value=ir.tensor(np.array(dims, dtype=np.int64), name=name))
    if name not in graph.initializers:
        graph.register_initializer(value)
        return value
    return graph.initializers[name]
