"""Where an exported graph spends its time, by ablation: the same model with one kind of node made free.

    python benchmarks/op_ablation.py MODEL_DIR [--seq 128] [--runs 60] [--identity Gelu LayerNormalization Gelu,LayerNormalization]
        [--tanh-gelu] [--disable BiasGeluFusion] [--also OTHER_MODEL_DIR ...]

Variants, all timed interleaved with the model as exported (1 ORT thread, batch 1, the runtime's session
options): every node of the given op types replaced by ``Identity`` (what those nodes cost; the outputs are then
wrong), ``Gelu`` with ``approximate="tanh"``, the model with extra ORT optimizers disabled, and other exported
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
    parser.add_argument("--also", nargs="*", type=Path, default=[], help="other exported model directories")
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
    for name in args.disable:
        variants[f"{name} off"] = (args.model_dir / "model.onnx", (*DEFAULT_DISABLED_OPTIMIZERS, name))
    for other in args.also:
        variants[str(other)] = (other / "model.onnx", DEFAULT_DISABLED_OPTIMIZERS)

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
