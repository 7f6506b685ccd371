"""Task metrics: accuracy, F1, macro-F1 and Matthews correlation in numpy; Pearson and Spearman from scipy.

``METRICS`` is the one table of metric names; a :class:`~kronedge.data.spec.TaskSpec` lists the ones its
task is scored by, and :func:`compute_metrics` computes exactly those.
"""

from __future__ import annotations

# numpy is imported inside each metric: the CLI reads this package at start-up.


def accuracy(pred, labels) -> float:
    import numpy as np
    pred, labels = np.asarray(pred), np.asarray(labels)
    return float((pred == labels).mean()) if len(labels) else 0.0


def _counts(pred, labels, c) -> tuple[int, int, int]:
    """(hits, predicted, support) of class ``c``: examples rightly given ``c``, given ``c``, truly ``c``."""
    import numpy as np
    p, t = np.asarray(pred) == c, np.asarray(labels) == c
    return int((p & t).sum()), int(p.sum()), int(t.sum())


def _f1(hits: int, predicted: int, support: int) -> float:
    return 2 * hits / (predicted + support) if predicted + support else 0.0


def f1_binary(pred, labels, positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC/QQP convention); 0 when there is no true or predicted positive."""
    return _f1(*_counts(pred, labels, positive))


def matthews(pred, labels) -> float:
    """Matthews correlation (CoLA's metric), multi-class form (Gorodkin 2004); 0 when undefined."""
    import numpy as np
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


def f1_macro(pred, labels) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions.

    The same definition as ``sklearn.metrics.f1_score(labels, pred, average="macro")`` (a class with
    no true and no predicted example is left out; one with a zero denominator counts as 0), kept
    here so scoring needs no scikit-learn; the tests check the two agree.
    """
    import numpy as np
    pred, labels = np.asarray(pred), np.asarray(labels)
    if not len(labels):
        return 0.0
    return float(np.mean([_f1(*_counts(pred, labels, c)) for c in np.union1d(pred, labels)]))


def _correlation(kind: str, pred, labels) -> float:
    import numpy as np
    from scipy import stats

    pred, labels = np.asarray(pred, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    # scipy answers nan (with a warning) for a constant input; a constant predictor is worth 0.
    if len(pred) < 2 or pred.std() == 0 or labels.std() == 0:
        return 0.0
    fn = stats.pearsonr if kind == "pearson" else stats.spearmanr
    return float(fn(pred, labels)[0])


def pearson(pred, labels) -> float:
    return _correlation("pearson", pred, labels)


def spearman(pred, labels) -> float:
    return _correlation("spearman", pred, labels)


# name -> function(predictions, labels); classification metrics get class indices, regression ones raw scores.
METRICS = {"accuracy": accuracy, "f1": f1_binary, "f1_macro": f1_macro, "matthews": matthews,
           "pearson": pearson, "spearman": spearman}


def compute_metrics(task, predictions, labels) -> dict[str, float]:
    """The task's metrics (``spec.metrics``); the key ``spec.primary_metric`` is always present.

    Args:
        task: a GLUE task name (``sst2``, ``stsb``, ...) or any :class:`~kronedge.data.spec.TaskSpec`
            (a user's file: accuracy and macro-F1, or Pearson and Spearman for regression).
        predictions: class indices, or floats for regression (logits of shape (N, C) are argmax-ed).
        labels: gold labels as loaded by :func:`load_task` or :meth:`DataFiles.load`.

    Example:
        >>> compute_metrics("mrpc", [1, 0, 1], [1, 1, 1])
        {'accuracy': 0.666..., 'f1': 0.8}
    """
    import numpy as np
    from .glue import get_task

    spec = get_task(task)
    pred = np.asarray(predictions)
    if len(pred) != len(labels):
        raise ValueError(f"{len(pred)} predictions for {len(labels)} labels")
    if spec.is_regression:
        pred = pred.reshape(len(pred), -1)[:, 0] if pred.ndim > 1 else pred
    elif pred.ndim > 1:
        pred = pred.argmax(-1)
    return {name: METRICS[name](pred, labels) for name in spec.metrics}


def class_report(task, predictions, labels) -> dict[str, dict]:
    """Per class of a classification task, in logit order: precision, recall, F1, ``support`` (gold examples)
    and ``predicted`` (examples given that class); None scores for a class neither in the file nor predicted.
    What a many-class user reads to find the classes that fail.

    Example:
        >>> class_report("sst2", [1, 1, 0], [1, 0, 0])["positive"]
        {'precision': 0.5, 'recall': 1.0, 'f1': 0.666..., 'support': 1, 'predicted': 2}
    """
    import numpy as np
    from .glue import get_task

    spec = get_task(task)
    pred, gold = np.asarray(predictions), np.asarray(labels)
    if pred.ndim > 1:
        pred = pred.argmax(-1)
    report = {}
    for index, name in enumerate(spec.label_names):
        hits, predicted, support = _counts(pred, gold, index)
        if not predicted and not support:  # not in this file at all: no score, rather than a false 0
            report[name] = {"precision": None, "recall": None, "f1": None, "support": 0, "predicted": 0}
            continue
        report[name] = {"precision": hits / predicted if predicted else 0.0, "recall": hits / support if support else 0.0,
                        "f1": _f1(hits, predicted, support), "support": support, "predicted": predicted}
    return report


def confusions(task, predictions, labels) -> list[dict]:
    """Every (gold class, predicted class) pair a classifier mixed up, most frequent first: the off-diagonal cells
    of the confusion matrix that are not zero, so a 20-class file gives at most its errors, not 400 cells.

    Example:
        >>> confusions("sst2", [1, 1, 0, 1], [0, 0, 0, 1])
        [{'gold': 'negative', 'predicted': 'positive', 'count': 2}]
    """
    import numpy as np
    from .glue import get_task

    names = get_task(task).label_names
    pred, gold = np.asarray(predictions), np.asarray(labels)
    if pred.ndim > 1:
        pred = pred.argmax(-1)
    wrong = pred != gold
    pairs, counts = np.unique(np.stack([gold[wrong], pred[wrong]], axis=1), axis=0, return_counts=True)
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], *pairs[i]))
    return [{"gold": names[pairs[i][0]], "predicted": names[pairs[i][1]], "count": int(counts[i])} for i in order]


def classification_report(task, predictions, labels) -> dict:
    """What ``kronedge eval`` adds for a classifier, on either backend: ``per_class`` (:func:`class_report`) and
    ``confusions`` (:func:`confusions`)."""
    return {"per_class": class_report(task, predictions, labels), "confusions": confusions(task, predictions, labels)}
