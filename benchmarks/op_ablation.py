"""Where an exported graph spends its time, by ablation: the same model with one kind of node made free.

    python benchmarks/op_ablation.py MODEL_DIR [--seq 128] [--runs 60] [--identity Gelu LayerNormalization Gelu,LayerNormalization]
        [--tanh-gelu] [--disable BiasGeluFusion] [--enable MatmulTransposeFusion] [--swaps-as-reshapes]
        [--also OTHER_MODEL_DIR ...]

Variants, all timed interleaved with the model as exported (1 ORT thread, batch 1, the runtime's session
options): every node of the given op types replaced by ``Identity`` (what those nodes cost; the outputs are then
wrong), ``Gelu`` with ``approximate="tanh"``, the Kronecker axis swaps made free, the model with extra ORT
optimizers disabled or with ones the runtime skips enabled, and other exported
models (e.g. another ``--profile``). The time is the median of the calling thread's CPU time per run
(``time.thread_time``), which a busy machine inflates far less than wall time.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.hostinfo import machine, versions  # noqa: E402
from runtime.predictor import DEFAULT_DISABLED_OPTIMIZERS, create_session  # noqa: E402


def _rewritten(model: onnx.ModelProto, identity: set[str], tanh: bool) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for node in model.graph.node:
        if node.op_type in identity:
            node.op_type, node.domain = "Identity", ""
            del node.input[1:]
            del node.attribute[:]
        elif tanh and node.op_type == "Gelu":
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("approximate", "tanh"))
    return model


def _swaps_as_reshapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every axis swap ``Transpose(perm=[0, 1, 3, 2])`` of a constant 4-D Reshape -> a Reshape to the swapped
    shape: the same tensor sizes everywhere, no copy (what the Kronecker linears' transposes cost)."""
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    for i, node in enumerate(model.graph.node):
        source = producers.get(node.input[0]) if node.op_type == "Transpose" else None
        perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
        if source is None or source.op_type != "Reshape" or source.input[1] not in inits or perm != [[0, 1, 3, 2]]:
            continue
        dims = numpy_helper.to_array(inits[source.input[1]]).tolist()
        name = f"ablation_swapped_shape_{i}"
        model.graph.initializer.append(numpy_helper.from_array(np.array(dims[:2] + dims[:1:-1], np.int64), name))
        node.op_type = "Reshape"
        node.input.append(name)
        del node.attribute[:]
    return model


def _int8_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every 3-D ``Attention`` (opset 23) -> its core with both products in int8: Q, K, V and the probabilities
    quantized dynamically (u8, per tensor) and multiplied by ``MatMulInteger``; the scores are rescaled, masked and
    softmaxed in fp32. What an int8 attention core would cost and keep (the model's outputs change slightly)."""
    from onnx import TensorProto, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = []
    for i, node in enumerate(model.graph.node):
        if node.op_type != "Attention" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        heads, scale = attrs["q_num_heads"], attrs["scale"]
        q, k, v, mask = node.input[:4]
        p = f"int8attn{i}_"
        model.graph.initializer.extend([
            numpy_helper.from_array(np.array([0, 0, heads, -1], np.int64), p + "split"),
            numpy_helper.from_array(np.array([0, 0, -1], np.int64), p + "merge"),
            numpy_helper.from_array(np.array(scale, np.float32), p + "scale")])

        def quantized_heads(x, tag, perm):
            nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [p + tag, p + tag + "_s", p + tag + "_z"]))
            nodes.append(helper.make_node("Reshape", [p + tag, p + "split"], [p + tag + "_r"]))
            nodes.append(helper.make_node("Transpose", [p + tag + "_r"], [p + tag + "_h"], perm=perm))
            return p + tag + "_h", p + tag + "_s", p + tag + "_z"

        def product(a, b, tag, extra_scale=None):
            (ah, a_s, az), (bh, b_s, bz) = a, b
            nodes.append(helper.make_node("MatMulInteger", [ah, bh, az, bz], [p + tag + "_i"]))
            nodes.append(helper.make_node("Cast", [p + tag + "_i"], [p + tag + "_f"], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Mul", [a_s, b_s], [p + tag + "_ab"]))
            factor = p + tag + "_ab"
            if extra_scale is not None:
                nodes.append(helper.make_node("Mul", [factor, extra_scale], [p + tag + "_abs"]))
                factor = p + tag + "_abs"
            nodes.append(helper.make_node("Mul", [p + tag + "_f", factor], [p + tag]))
            return p + tag

        qh = quantized_heads(q, "q", [0, 2, 1, 3])
        kt = quantized_heads(k, "k", [0, 2, 3, 1])
        vh = quantized_heads(v, "v", [0, 2, 1, 3])
        scores = product(qh, kt, "scores", p + "scale")
        nodes.append(helper.make_node("Add", [scores, mask], [p + "masked"]))
        nodes.append(helper.make_node("Softmax", [p + "masked"], [p + "probs"], axis=-1))
        nodes.append(helper.make_node("DynamicQuantizeLinear", [p + "probs"], [p + "pq", p + "pq_s", p + "pq_z"]))
        context = product((p + "pq", p + "pq_s", p + "pq_z"), vh, "context")
        nodes.append(helper.make_node("Transpose", [context], [p + "ctx_t"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [p + "ctx_t", p + "merge"], [node.output[0]]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _write_variants(model_dir: Path, variants: dict, out: Path) -> None:
    """Each rewritten variant as a copy of ``model_dir`` with its model.onnx (no model.ort and golden.npz, which
    describe the original)."""
    import re
    import shutil

    for label, (path, _) in variants.items():
        if path == model_dir / "model.onnx":
            continue
        target = out / re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
        shutil.copytree(model_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.ort", "golden.npz"))
        shutil.copyfile(path, target / "model.onnx")
        print(target)


def _feeds(session, seq: int) -> dict:
    ids = np.random.RandomState(0).randint(1000, 2000, (1, seq)).astype(np.int64)
    fill = {"attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {i.name: fill.get(i.name, ids) for i in session.get_inputs()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--identity", nargs="*", default=[], help="op types made Identity, comma-joined per variant")
    parser.add_argument("--tanh-gelu", action="store_true")
    parser.add_argument("--disable", nargs="*", default=[], help="ORT optimizers disabled, one variant each")
    parser.add_argument("--enable", nargs="*", default=[], help="ORT optimizers the runtime skips, turned on, one variant each")
    parser.add_argument("--swaps-as-reshapes", action="store_true", help="Kronecker axis swaps made free (see _swaps_as_reshapes)")
    parser.add_argument("--int8-attention", action="store_true", help="attention cores in int8 (see _int8_attention)")
    parser.add_argument("--also", nargs="*", type=Path, default=[], help="other exported model directories")
    parser.add_argument("--write", type=Path, default=None,
                        help="also write each rewritten variant as a model directory here (e.g. for "
                             "benchmarks/arm_instructions.py), and time nothing")
    args = parser.parse_args(argv)

    base = onnx.load(args.model_dir / "model.onnx")
    variants = {"as exported": (args.model_dir / "model.onnx", DEFAULT_DISABLED_OPTIMIZERS)}
    work = Path(tempfile.mkdtemp(prefix="kronedge-ablation-"))
    rewrites = [(f"{ops} -> Identity", set(ops.split(",")), False) for ops in args.identity]
    rewrites += [("Gelu approximate=tanh", set(), True)] if args.tanh_gelu else []
    for i, (label, ops, tanh) in enumerate(rewrites):
        path = work / f"variant{i}.onnx"
        onnx.save(_rewritten(base, ops, tanh), path)
        variants[label] = (path, DEFAULT_DISABLED_OPTIMIZERS)
    if args.swaps_as_reshapes:
        path = work / "swaps.onnx"
        onnx.save(_swaps_as_reshapes(base), path)
        variants["axis swaps -> Reshape"] = (path, DEFAULT_DISABLED_OPTIMIZERS)
    if args.int8_attention:
        path = work / "int8_attention.onnx"
        onnx.save(_int8_attention(base), path)
        variants["attention core in int8"] = (path, DEFAULT_DISABLED_OPTIMIZERS)
    for name in args.enable:
        variants[f"{name} on"] = (args.model_dir / "model.onnx", tuple(o for o in DEFAULT_DISABLED_OPTIMIZERS if o != name))
    for name in args.disable:
        variants[f"{name} off"] = (args.model_dir / "model.onnx", (*DEFAULT_DISABLED_OPTIMIZERS, name))
    for other in args.also:
        variants[str(other)] = (other / "model.onnx", DEFAULT_DISABLED_OPTIMIZERS)

    if args.write is not None:
        _write_variants(args.model_dir, variants, args.write)
        return
    sessions = {label: create_session(path, threads=1, disabled_optimizers=off) for label, (path, off) in variants.items()}
    feeds = {label: _feeds(s, args.seq) for label, s in sessions.items()}
    times = {label: [] for label in sessions}
    for _ in range(args.runs):
        for label, session in sessions.items():
            start = time.thread_time()
            session.run(None, feeds[label])
            times[label].append(time.thread_time() - start)
    host = machine()
    print(f"command: python benchmarks/op_ablation.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"host: {host['cpu']} ({host['logical_cpus']} logical), flags {' '.join(host['flags'])}; {platform.platform()}")
    print(f"versions: {versions(('onnxruntime', 'numpy', 'onnx'))}")
    print(f"seq {args.seq}, batch 1, 1 thread, median thread CPU time of {args.runs} interleaved runs (first 5 dropped)")
    reference = float(np.median(times["as exported"][5:]))
    for label, values in times.items():
        ms = 1000 * float(np.median(values[5:]))
        print(f"| {label} | {ms:.2f} ms | {1000 * reference - ms:+.2f} ms saved |")


if __name__ == "__main__":
    main()
