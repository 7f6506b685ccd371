"""Score an exported model directory on a task's dev set with ONNX Runtime (no torch).

Used by ``kronedge eval DIR`` when DIR holds a manifest.json. Tokenization is the directory's own
tokenizer.json, so what is scored is exactly what the runtime will run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def evaluate_exported(model_dir: str | os.PathLike, task: str, data_dir: str | os.PathLike | None = None,
                      limit: int | None = None, model_file: str = "model.onnx", threads: int | None = None,
                      batch_size: int = 32) -> dict:
    """The task metric of ``model_dir`` on real dev data.

    Args:
        model_dir: a directory written by ``kronedge export``.
        task: GLUE task name ("sst2", ...); the dev split is read via ``kronedge.data.load_task``.
        data_dir: GLUE root for tasks that do not ship with kronedge.
        limit: score only the first N dev examples.
        model_file: "model.onnx" or "model.ort".

    Returns:
        ``{"task", "examples", <metrics...>, "seconds", "model_file"}``, e.g. ``{"accuracy": 0.88, ...}``.

    Example:
        >>> evaluate_exported("runs/sst2-arm64", "sst2")["accuracy"]
    """
    import onnxruntime as ort

    from kronedge.data import compute_metrics, load_task

    from .export import encode

    model_dir = Path(model_dir)
    for name in (model_file, "tokenizer.json"):
        if not (model_dir / name).is_file():
            raise ValueError(f"{model_dir} has no {name}; is it a directory written by `kronedge export`?")
    data = load_task(task, split="dev", data_dir=data_dir)
    texts, labels = list(data.texts), list(data.labels)
    if limit is not None:
        texts, labels = texts[:limit], labels[:limit]
    manifest_max = _manifest_max_length(model_dir)

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_dir / model_file), so, providers=["CPUExecutionProvider"])
    n_out = session.get_outputs()[0].shape[-1]
    if isinstance(n_out, int) and not data.spec.is_regression and n_out != data.spec.num_labels:
        raise ValueError(f"{model_dir} outputs {n_out} logits but {task} has {data.spec.num_labels} labels")

    start = time.perf_counter()
    # Sort by length so each batch pads little; scatter the logits back afterwards.
    order = sorted(range(len(texts)), key=lambda i: len(str(texts[i])))
    logits = np.zeros((len(texts), n_out if isinstance(n_out, int) else 1), dtype=np.float32)
    for at in range(0, len(order), batch_size):
        idx = order[at:at + batch_size]
        feeds = encode(model_dir / "tokenizer.json", [texts[i] for i in idx], manifest_max)
        logits[idx] = session.run(["logits"], feeds)[0]
    seconds = time.perf_counter() - start

    predictions = logits[:, 0] if data.spec.is_regression else logits.argmax(axis=1)
    metrics = compute_metrics(task, predictions.tolist(), labels)
    return {"task": task, "examples": len(texts), **{k: float(v) for k, v in metrics.items()},
            "seconds": round(seconds, 3), "model_file": model_file}


def _manifest_max_length(model_dir: Path) -> int:
    import json

    try:
        return int(json.loads((model_dir / "manifest.json").read_text())["max_length"])
    except (OSError, ValueError, KeyError):
        return 128
