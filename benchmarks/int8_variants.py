"""Build int8 variants of an fp32 Kronecker export (the optimized graph `kronedge export --quantize none`
writes) to see where the int8 graph's Transposes and re-quantisations cost time.

Variants (written to OUT/<name>/model.onnx):
  all        every constant-B MatMul + Gather quantized (what `kronedge export --quantize int8` does)
  big-only   MatMuls whose constant has inner dim (rows) <= --small-k stay fp32: the tiny factor
             products (inner 1-16) keep their Transpose foldable into FusedMatMul(transA)
  u8-transpose  like `all`, then Transpose -> DynamicQuantizeLinear is swapped into
             DynamicQuantizeLinear -> Transpose (the quantisation is per tensor, so it commutes): the
             copy moves 1 byte per element instead of 4
  big-only-u8t  both
  matmulnbits8  (--matmulnbits, alone) every constant-B MatMul as 8-bit MatMulNBits (ORT contrib op)

    python benchmarks/int8_variants.py benchmarks/work/models/kb21-fp32/model.onnx runs/speed/int8v
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def small_k_matmuls(model: onnx.ModelProto, small_k: int) -> list[str]:
    inits = {i.name: i for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            dims = list(inits[node.input[1]].dims)
            if len(dims) == 2 and dims[0] <= small_k:
                names.append(node.name)
    return names


def quantize(src: Path, dst: Path, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                     reduce_range=False, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})


def swap_transpose_quantize(model: onnx.ModelProto) -> int:
    """Transpose(x) -> DynamicQuantizeLinear  ==>  DynamicQuantizeLinear(x) -> Transpose(y_u8)."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    swapped = 0
    for node in list(model.graph.node):
        if node.op_type != "Transpose":
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "DynamicQuantizeLinear":
            continue
        dql = users[0]
        x, t_out = node.input[0], node.output[0]
        q_out = dql.output[0]
        # DQL now reads x and writes a new u8 tensor; the Transpose turns that into the old q_out.
        dql.input[0] = x
        dql.output[0] = q_out + "_pre_transpose"
        node.input[0] = dql.output[0]
        node.output[0] = q_out
        del t_out
        swapped += 1
    # restore topological order: DQL must come before the Transpose now
    _toposort(model)
    return swapped


def _toposort(model: onnx.ModelProto) -> None:
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    nodes, ordered = list(graph.node), []
    while nodes:
        rest = []
        for node in nodes:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(nodes):
            raise RuntimeError("graph has a cycle or a missing input")
        nodes = rest
    del graph.node[:]
    graph.node.extend(ordered)


def matmulnbits(src: Path, dst: Path) -> int:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from exporters.passes import approximate_gelu

    model, _ = approximate_gelu(onnx.load(str(src)))
    quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=32, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantizer.model.save_model_to_file(str(dst))
    print(dst)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("fp32_model")
    ap.add_argument("out")
    ap.add_argument("--small-k", type=int, default=16)
    ap.add_argument("--matmulnbits", action="store_true",
                    help="only write OUT/matmulnbits8: every constant-B MatMul as com.microsoft MatMulNBits "
                         "(8 bits, blocks of 32, symmetric, int8 compute), GELU tanh as in the int8 presets")
    args = ap.parse_args()
    src, out = Path(args.fp32_model), Path(args.out)
    if args.matmulnbits:
        return matmulnbits(src, out / "matmulnbits8" / "model.onnx")
    fp32 = onnx.load(str(src))
    exclude = small_k_matmuls(fp32, args.small_k)
    print(f"{len(exclude)} MatMuls with inner dim <= {args.small_k} (kept fp32 in big-only)")
    quantize(src, out / "all" / "model.onnx", [])
    quantize(src, out / "big-only" / "model.onnx", exclude)
    for base in ("all", "big-only"):
        model = onnx.load(str(out / base / "model.onnx"))
        n = swap_transpose_quantize(model)
        dst = out / (base + "-u8t" if base != "all" else "u8-transpose") / "model.onnx"
        dst.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(dst))
        print(f"{dst}: swapped {n} Transpose/DynamicQuantizeLinear pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def left_small(model: onnx.ModelProto, small_k: int) -> int:
    """Transpose(0,2,1) -> MatMul(., W) [-> Reshape] -> Transpose(0,2,1)  ==>  MatMul(W^T, .) (experiment;
    the Reshape is assumed to be a no-op and the result must be validated numerically)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only(name):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 else None

    def perm(node):
        return [list(a.ints) for a in node.attribute if a.name == "perm"]

    drop, count = set(), 0
    for t1 in list(graph.node):
        if t1.op_type != "Transpose" or perm(t1) != [[0, 2, 1]]:
            continue
        mm = only(t1.output[0])
        if mm is None or mm.op_type != "MatMul" or mm.input[0] != t1.output[0] or mm.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[mm.input[1]])
        if w.ndim != 2 or w.shape[0] > small_k:
            continue
        nxt = only(mm.output[0])
        chain = [t1, mm]
        if nxt is not None and nxt.op_type == "Reshape":
            chain.append(nxt)
            nxt = only(nxt.output[0])
        if nxt is None or nxt.op_type != "Transpose" or perm(nxt) != [[0, 2, 1]]:
            continue
        chain.append(nxt)
        wt = numpy_helper.from_array(w.T.copy(), name=mm.input[1] + "_T_left")
        graph.initializer.append(wt)
        new = onnx.helper.make_node("MatMul", [wt.name, t1.input[0]], [nxt.output[0]], name=mm.name + "_left")
        graph.node.append(new)
        drop.update(id(n) for n in chain)
        count += 1
    keep = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(keep)
    _toposort(model)
    return count


def build_left(fp32: Path, out: Path, small_k: int) -> None:
    model = onnx.load(str(fp32))
    n = left_small(model, small_k)
    (out / "left-fp32").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "left-fp32" / "model.onnx"))
    print(f"left-small: rewrote {n} Transpose-MatMul-Transpose chains")
    exclude = small_k_matmuls(model, small_k)  # right-constant small MatMuls left (attention B side)
    quantize(out / "left-fp32" / "model.onnx", out / "left-bigonly" / "model.onnx", exclude)
    q = onnx.load(str(out / "left-bigonly" / "model.onnx"))
    print("swapped", swap_transpose_quantize(q))
    (out / "left-bigonly-u8t").mkdir(parents=True, exist_ok=True)
    onnx.save(q, str(out / "left-bigonly-u8t" / "model.onnx"))
