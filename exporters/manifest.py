"""manifest.json of an exported directory (format fixed in docs/INTERFACES.md)."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

FORMAT = "kronedge-onnx/1"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "machine": platform.machine()}
    for dist in ("kronedge", "torch", "transformers", "onnx", "onnxruntime", "onnxscript", "tokenizers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def file_table(out: Path) -> dict:
    return {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
            for p in sorted(out.iterdir()) if p.is_file() and p.name != "manifest.json"}


def build_manifest(out: Path, model, opts, preset, pass_counts: dict, validation: dict, source: dict,
                   task_data) -> dict:
    import onnx

    graph = onnx.load(out / "model.onnx", load_external_data=False)
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    config = model.config
    if task_data is not None:
        labels = [] if task_data.spec.is_regression else list(task_data.spec.label_names)
        problem = "regression" if task_data.spec.is_regression else "single_label_classification"
        pair = bool(task_data.spec.is_pair)
    else:
        labels = [config.id2label[i] for i in range(config.num_labels)]
        problem = "regression" if config.num_labels == 1 else "single_label_classification"
        pair = False
    ops: dict[str, int] = {}
    for node in graph.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        ops[key] = ops.get(key, 0) + 1
    return {
        "format": FORMAT,
        "task": task_data.spec.name if task_data is not None else None,
        "labels": labels,
        "problem_type": problem,
        "pair_input": pair,
        "max_length": opts.max_length,
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "outputs": ["logits"],
        "opset": opset,
        "target": opts.target,
        "profile": opts.profile,
        "quantization": preset.to_dict() if preset is not None else None,
        "files": file_table(out),
        "validation": validation,
        "graph": {"passes": pass_counts, "op_counts": dict(sorted(ops.items())),
                  "opsets": {o.domain or "ai.onnx": o.version for o in graph.opset_import}},
        "model": {"hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
                  "heads": config.num_attention_heads, "vocab_size": config.vocab_size,
                  "kronecker": bool(getattr(config, "kronecker_layout", None))},
        # The opset-23 Attention op runs on ONNX Runtime's CPU provider from 1.23 on; model.ort is
        # written by (and loads in) the exporting ORT's format version or newer.
        "requires": {"onnxruntime": ">=1.23" if opset >= 23 else ">=1.17"},
        "versions": versions(),
        "source": source,
    }
