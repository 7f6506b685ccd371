"""GLUE metrics in numpy/scipy: accuracy, F1, Matthews correlation, Pearson and Spearman."""

from __future__ import annotations

import numpy as np


def accuracy(pred, labels) -> float:
    pred, labels = np.asarray(pred), np.asarray(labels)
    return float((pred == labels).mean()) if len(labels) else 0.0


def f1_binary(pred, labels, positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC/QQP convention); 0 when there is no true or predicted positive."""
    pred, labels = np.asarray(pred) == positive, np.asarray(labels) == positive
    tp = float((pred & labels).sum())
    denom = float(pred.sum() + labels.sum())
    return 2 * tp / denom if denom else 0.0


def matthews(pred, labels) -> float:
    """Matthews correlation (CoLA's metric), multi-class form (Gorodkin 2004); 0 when undefined."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    classes = np.union1d(pred, labels)
    conf = np.zeros((len(classes), len(classes)), dtype=np.float64)
    index = {c: i for i, c in enumerate(classes)}
    for t, p in zip(labels, pred):
        conf[index[t], index[p]] += 1
    t_sum, p_sum = conf.sum(1), conf.sum(0)
    n, correct = conf.sum(), np.trace(conf)
    cov_ytyp = correct * n - t_sum @ p_sum
    cov_ypyp = n * n - p_sum @ p_sum
    cov_ytyt = n * n - t_sum @ t_sum
    denom = np.sqrt(cov_ytyt * cov_ypyp)
    return float(cov_ytyp / denom) if denom else 0.0


def pearson(pred, labels) -> float:
    pred, labels = np.asarray(pred, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if pred.std() == 0 or labels.std() == 0:
        return 0.0
    return float(np.corrcoef(pred, labels)[0, 1])


def _rank(x: np.ndarray) -> np.ndarray:
    # Average ranks for ties, as scipy.stats.rankdata(method="average").
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(pred, labels) -> float:
    pred, labels = np.asarray(pred, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    return pearson(_rank(pred), _rank(labels))


def compute_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The task's GLUE metrics; the key ``get_task(task).primary_metric`` is always present.

    Args:
        task: task name (``sst2``, ``stsb``, ...).
        predictions: class indices, or floats for STS-B (logits of shape (N, C) are argmax-ed).
        labels: gold labels as loaded by :func:`load_task`.

    Example:
        >>> compute_metrics("mrpc", [1, 0, 1], [1, 1, 1])
        {'accuracy': 0.666..., 'f1': 0.8}
    """
    from .glue import get_task

    spec = get_task(task)
    pred = np.asarray(predictions)
    if len(pred) != len(labels):
        raise ValueError(f"{len(pred)} predictions for {len(labels)} labels")
    if spec.is_regression:
        pred = pred.reshape(len(pred), -1)[:, 0] if pred.ndim > 1 else pred
        return {"pearson": pearson(pred, labels), "spearman": spearman(pred, labels)}
    if pred.ndim > 1:
        pred = pred.argmax(-1)
    out = {"accuracy": accuracy(pred, labels)}
    if spec.name in ("mrpc", "qqp"):
        out["f1"] = f1_binary(pred, labels)
    if spec.name == "cola":
        out["matthews"] = matthews(pred, labels)
    return out
