"""Score an exported model directory on a task's dev set through the runtime's ``Predictor`` (no torch).

Used by ``kronedge eval DIR`` when DIR holds a manifest.json. The texts go through
``runtime.predictor.Predictor`` (its tokenizer.json, truncation, length buckets and session options),
so the score is that of exactly what the runtime and the server will run.
"""

from __future__ import annotations

import os
import time

from .config import ExportError


def evaluate_exported(model_dir: str | os.PathLike, task, data_dir: str | os.PathLike | None = None,
                      limit: int | None = None, model_file: str = "model.onnx", threads: int | None = None,
                      batch_size: int = 32, data=None) -> dict:
    """The task metric of ``model_dir`` on real dev data.

    Args:
        model_dir: a directory written by ``kronedge export``.
        task: GLUE task name ("sst2", ...); the dev split is read via ``kronedge.data.load_task``.
        data_dir: GLUE root for tasks that do not ship with kronedge.
        limit: score only the first N dev examples.
        model_file: "model.onnx" or "model.ort".
        threads: ORT intra-op threads (None: the Predictor's default for the model, runtime.hostinfo.default_threads).
        batch_size: most texts per model run (the Predictor's ``max_batch``).
        data: a labelled split already read (``TaskData``, e.g. a user's ``--validation`` file mapped to
            the manifest's labels); ``task`` is then its TaskSpec or name.

    Returns:
        ``{"task", "examples", <metrics...>, "seconds", "model_file"}``, e.g. ``{"accuracy": 0.88, ...}``.

    Example:
        >>> evaluate_exported("runs/sst2-arm64", "sst2")["accuracy"]
    """
    from kronedge.data import classification_report, compute_metrics, load_task
    from kronedge.data.spec import check_answers
    from runtime.predictor import Predictor

    predictor = Predictor(model_dir, threads=threads, model_file=model_file, max_batch=batch_size)
    host_int8 = _host_int8(predictor, model_file)
    data = data if data is not None else load_task(task, split="dev", data_dir=data_dir)
    task = data.spec.name
    if data.spec.is_regression != predictor.manifest.is_regression or (
            not data.spec.is_regression and predictor.manifest.num_outputs != data.spec.num_labels):
        raise ExportError(f"{model_dir} outputs {predictor.manifest.num_outputs} logits but {task} has "
                         f"{data.spec.num_labels} labels")
    check_answers(model_dir, predictor.manifest.labels, data.spec)
    if bool(data.spec.is_pair) != predictor.manifest.pair_input:
        raise ExportError(f"{task} is a {'pair' if data.spec.is_pair else 'single-text'} task but {model_dir} was "
                         f"exported for {'pairs' if predictor.manifest.pair_input else 'single texts'}")
    texts, labels = list(data.texts), list(data.labels)
    if limit is not None:
        texts, labels = texts[:limit], labels[:limit]

    start = time.perf_counter()
    logits = predictor.logits(texts)
    seconds = time.perf_counter() - start

    predictions = logits[:, 0] if data.spec.is_regression else logits.argmax(axis=1)
    metrics = compute_metrics(data.spec, predictions.tolist(), labels)
    report = {} if data.spec.is_regression else classification_report(data.spec, predictions, labels)
    return {"task": task, "split": "dev", "examples": len(texts), "primary_metric": data.spec.primary_metric,
            **{k: float(v) for k, v in metrics.items()}, "seconds": round(seconds, 3), "backend": "onnxruntime",
            "path": str(model_dir), "model_file": model_file, **data.skipped_report(), **host_int8, **report}


def _host_int8(predictor, model_file: str) -> dict:
    """What the score says when s8 weights run on an x86 host without VNNI: model.onnx runs exactly there (ORT's
    precision mode, which create_session sets), model.ort keeps the saturating products it was optimised with."""
    from runtime.hostinfo import clips_s8_weights
    from runtime.predictor import HOST_INT8_NOTE

    if not clips_s8_weights(predictor.manifest.quantization):
        return {}
    return {"host_int8": HOST_INT8_NOTE if model_file == "model.onnx" else
            "model.ort keeps this CPU's saturating int8 products (no VNNI): score model.onnx for the target CPU's"}
