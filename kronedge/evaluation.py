"""Scoring with torch: logits, GLUE metrics, saved artifacts, and how far a score is from chance."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .training import Encoded, TrainingError, bucket_batches, collate

CORRELATIONS = ("matthews", "pearson", "spearman")  # metrics whose chance level is 0 whatever the labels
CHANCE_Z = 2.0  # a score within this many standard errors of chance is "near chance" (~95% one-sided)


@torch.no_grad()
def predict_logits(model: nn.Module, data: Encoded, batch_size: int = 64, device=None) -> torch.Tensor:
    """Logits (N, C) in the original example order; fp32, eval mode, batches sorted by length."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [None] * len(data)
    for index in bucket_batches(data.lengths(), batch_size, seed=0, shuffle=False):
        batch = collate(data, index, device)
        batch.pop("labels", None)
        logits = model(**batch).logits.float().cpu()
        for row, i in enumerate(index):
            out[i] = logits[row]
    model.train(was_training)
    return torch.stack(out)


def evaluate_model(model: nn.Module, task: str, data: Encoded, batch_size: int = 64,
                   per_class: bool = False) -> dict:
    """GLUE metrics of a sequence-classification model on tokenised labelled data (``per_class``: and, for a
    classifier, :func:`~kronedge.data.classification_report`'s ``per_class`` and ``confusions``)."""
    from .data import classification_report, compute_metrics, get_task

    logits = predict_logits(model, data, batch_size)
    spec = get_task(task)
    preds = logits[:, 0].numpy() if spec.is_regression else logits.argmax(-1).numpy()
    metrics = compute_metrics(task, preds, data.labels)
    if per_class and not spec.is_regression:
        metrics.update(classification_report(task, preds, data.labels))
    return metrics


class TeacherNearChanceError(TrainingError):
    """The teacher scores about what a constant guess scores: nothing worth distilling."""


@dataclass
class Chance:
    """What a constant guess scores on a dev set, and how far above it a real model must be."""

    metric: str
    level: float
    margin: float

    def near(self, value: float) -> bool:
        return value <= self.level + self.margin


def chance_level(task: str, labels: list) -> Chance:
    """The primary metric's chance level on these labels: the best constant prediction's score
    (accuracy: the majority class's share; F1: always the positive class), 0 for correlations;
    the margin is ``CHANCE_Z`` standard errors of that score on ``len(labels)`` examples.

    Example:
        >>> chance_level("sst2", [0, 1, 1, 1]).level
        0.75
    """
    from .data import get_task
    from .data.metrics import METRICS

    spec = get_task(task)
    metric, n = spec.primary_metric, max(1, len(labels))
    if metric in CORRELATIONS or spec.is_regression:
        return Chance(metric, 0.0, CHANCE_Z / math.sqrt(n))
    level = max(METRICS[metric]([c] * len(labels), labels) for c in range(spec.num_labels))
    return Chance(metric, level, CHANCE_Z * math.sqrt(max(level * (1 - level), 0.01) / n))


def check_not_chance(task: str, metrics: dict, labels: list, who: str = "teacher") -> Chance:
    """Raise :class:`TeacherNearChanceError` when ``metrics`` sit within the margin of chance."""
    from .data import get_task

    chance = chance_level(task, labels)
    value = metrics[chance.metric]
    # Worse than a constant guess: the teacher answers, but with its labels in another order than the data's.
    if not get_task(task).is_regression and value < chance.level - chance.margin:
        raise TeacherNearChanceError(
            f"the {who} scores {chance.metric} {value:.4f} on {get_task(task).name} dev, far below chance "
            f"({chance.level:.4f}, a constant guess): its head most likely orders the labels otherwise than the data "
            f"({', '.join(map(str, get_task(task).label_names))}). Name them in its config.json's id2label, in its "
            "head's order, or pass --no-teacher-check to go on anyway")
    if chance.near(value):
        raise TeacherNearChanceError(
            f"the {who} scores {chance.metric} {value:.4f} on {get_task(task).name} dev, within {chance.margin:.3f} of chance "
            f"({chance.level:.4f}, a constant guess): a student distilled from it would learn nothing useful. "
            "Fine-tune it longer or with another learning rate (kronedge finetune --epochs ... --lr ...), use a "
            "stronger teacher, or pass --no-teacher-check to go on anyway")
    return chance


def _sorted_file_labels(source, path: Path, outputs: int) -> list[str]:
    """The labels of the data's own files in sorted order (the training file's, else the validation file's): what a
    head nobody named answers, as compress and finetune train it; refused when their number is not the head's."""
    from dataclasses import replace

    files = source.files if source.files.train is not None else replace(source.files, train=source.files.validation)
    labels = list(files.spec().label_names)
    if len(labels) != outputs:
        raise TrainingError(f"{path}'s head names no labels and has {outputs} outputs, but the data has "
                            f"{len(labels)} ({', '.join(labels)}): name its labels in config.json's id2label")
    return labels


def _head_labels(config: dict) -> list[str]:
    """The label names a saved model's config.json gives its head ([] when it names none, or not as integers)."""
    from .artifact import head_labels

    try:
        return head_labels(config)
    except ValueError:
        return []


def _saved_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}


def evaluate_artifact(path: str | os.PathLike, task: str | None = None, data_dir=None, limit: int | None = None,
                      batch_size: int = 64, split: str = "dev", source=None, skip_unknown_labels: bool = False) -> dict:
    """Score a kronedge artifact (or any saved BERT classifier) on a GLUE split or a user's file with torch.

    Args:
        path: artifact directory.
        task: GLUE task (default: the one in the artifact's recipe).
        data_dir: GLUE root for tasks that do not ship.
        limit: score only the first ``limit`` examples.
        source: a :class:`~kronedge.data.TaskSource` of data files (``--validation FILE``) instead of
            ``task``; the file's labels are mapped by name to the model's (its recipe's ``task_spec``,
            else its config's ``id2label``).
        skip_unknown_labels: leave out the rows of ``source``'s file whose label the model lacks (the result's
            ``skipped_rows`` and ``skipped_labels``) instead of failing on them.

    Example:
        >>> evaluate_artifact("artifacts/kronedge-sst2", "sst2")["accuracy"]
    """
    from .artifact import RECIPE_FILE, generic_labels, load_artifact, read_recipe
    from .data import get_task, load_task
    from .data.spec import check_answers
    from .finetune import finetune_record
    from .teachers import load_teacher
    from .training import encode, load_tokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    recipe = read_recipe(path) if (path / RECIPE_FILE).is_file() else {}  # corrupt: one-line ArtifactError
    # What the head answers: the artifact's recipe, or what `kronedge finetune` recorded beside a teacher.
    answers = recipe if recipe.get("task_spec") or recipe.get("task") else finetune_record(path, recipe)
    if source is not None and source.files is not None:
        task_spec = answers.get("task_spec") or {}
        config = _saved_config(path) if not task_spec else {}
        labels = task_spec.get("label_names") or _head_labels(config)
        regression = task_spec.get("is_regression", config.get("problem_type") == "regression")
        if not regression and (not labels or labels == list(generic_labels(len(labels)))):
            # A head nobody named answers in the data's sorted label order, as compress and finetune train it.
            labels = _sorted_file_labels(source, path, len(labels) or config.get("num_labels") or 2)
        spec = source.model_spec(labels, regression, task_spec.get("name") or answers.get("task"),
                                 task_spec.get("primary_metric"))
        data = source.load(split, spec, skip_unknown_labels)  # else a label the model lacks is an error
        task = spec.name
    else:
        asked = task or (source.task if source is not None else None)
        task = asked or answers.get("task")
        if task is None:
            raise TrainingError(f"{path} does not record its task: pass --task")
        own_file = (answers.get("task_spec") or {}).get("data_file")
        if own_file and asked is None:
            raise TrainingError(f"{path} was trained on your own file {own_file}: score it with --validation FILE")
        spec = get_task(task)
        if asked:
            recorded = (answers.get("task_spec") or {}).get("label_names") or answers.get("labels")
            check_answers(path, recorded or _head_labels(_saved_config(path)), spec)
        data = None
    if recipe:
        model = load_artifact(path)
    else:
        # the head as saved: a head for other labels is refused below, not replaced by a new one
        model = load_teacher(str(path), head="sequence-classification").model.eval()
    if getattr(model.config, "num_labels", spec.num_labels) != spec.num_labels:
        raise TrainingError(f"{path}'s head has {model.config.num_labels} output(s), but {task} has "
                            f"{spec.num_labels} labels")
    tokenizer = load_tokenizer(path if (path / "tokenizer.json").exists() or (path / "vocab.txt").exists() else
                               load_teacher(str(path), meta=True).tokenizer_dir)
    data = data if data is not None else load_task(task, split, data_dir)
    if limit is not None:
        data.texts, data.labels = data.texts[:limit], data.labels[:limit]
    # At the length the student was trained and scored at by `compress` (its recipe's), else encode's default.
    length = (recipe.get("compress_config") or {}).get("max_length")
    t = time.perf_counter()
    encoded = encode(tokenizer, data.texts, data.labels, **({"max_length": length} if length else {}))
    metrics = evaluate_model(model, spec, encoded, batch_size, per_class=True)
    return {"task": task, "split": split, "examples": len(data), "primary_metric": spec.primary_metric,
            **metrics, "seconds": round(time.perf_counter() - t, 2), "backend": "torch", "path": str(path),
            **data.skipped_report()}
