"""What an exported model answers and what it is called: label names, task, data file, name and version.

The label names an export records come from, most explicit first:

  1. ``--task`` at export (a GLUE preset's names and input kind),
  2. the artifact's recipe, ``kronedge.json``: its ``task_spec`` (``TaskSpec.to_dict()``: a user's file gives
     the data set's name, label names, problem type, pair input and ``data_file``), else its ``task`` and
     ``labels`` (what ``kronedge compress`` writes),
  3. the model config's ``id2label``.

transformers invents ``LABEL_0, LABEL_1, ...`` for a head nobody named, so those names count as no names:
they are used only when no source has real ones, and never hide a real name. Two sources with different real
names are an error (the head was trained for one of them; guessing which would mislabel every answer). A
regression model has no labels (``[]``) and says ``problem_type: regression``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runtime import contract

from .config import ExportError

CLASSIFICATION = "single_label_classification"
REGRESSION = "regression"


def generic_labels(n: int) -> tuple[str, ...]:
    """The names transformers gives an unnamed head: ``("LABEL_0", "LABEL_1", ...)``."""
    from kronedge.artifact import generic_labels as names  # one definition, beside save_artifact's use of it

    return tuple(names(n))


def is_generic(labels) -> bool:
    return tuple(labels) == generic_labels(len(labels))


@dataclass(frozen=True)
class TaskInfo:
    """What the exported head answers, and where its label names came from.

    Args:
        task: GLUE task or the user's data set name; None when nothing says.
        labels: names in logit-column order; ``()`` for regression.
        problem_type: "single_label_classification" or "regression".
        pair_input: the model takes (text_a, text_b) pairs.
        data_file: the training file's name (no directory) for a task from a user's files.
        origin: where the labels came from ("--task", "kronedge.json task_spec", "kronedge.json", "config.json"),
            or "generic" when no source named them.
    """

    task: str | None
    labels: tuple[str, ...]
    problem_type: str = CLASSIFICATION
    pair_input: bool = False
    data_file: str | None = None
    origin: str = "config.json"

    def __post_init__(self):
        if self.problem_type not in contract.PROBLEM_TYPES:
            raise ExportError(f"problem type {self.problem_type!r} is not one of {contract.PROBLEM_TYPES}")
        if self.problem_type == REGRESSION and self.labels:
            raise ExportError(f"a regression model has no labels, got {list(self.labels)}")
        if self.problem_type == CLASSIFICATION:
            if len(self.labels) < 2:
                raise ExportError(f"a classifier needs at least two label names, got {list(self.labels)}")
            if len(set(self.labels)) != len(self.labels):
                raise ExportError(f"label names repeat: {list(self.labels)}")

    @property
    def is_regression(self) -> bool:
        return self.problem_type == REGRESSION


def _from_spec(spec, origin: str) -> TaskInfo:
    """A kronedge.data TaskSpec (from --task) as a TaskInfo."""
    regression = bool(spec.is_regression)
    return TaskInfo(task=spec.name, labels=() if regression else tuple(spec.label_names),
                    problem_type=REGRESSION if regression else CLASSIFICATION, pair_input=bool(spec.is_pair),
                    data_file=getattr(spec, "data_file", None), origin=origin)


def _from_spec_dict(raw: dict, where: str) -> TaskInfo:
    """A recipe's ``task_spec`` (``TaskSpec.to_dict()``), read by its documented keys only."""
    if not isinstance(raw, dict):
        raise ExportError(f"{where}: task_spec must be an object, got {type(raw).__name__}")
    problem = raw.get("problem_type") or (REGRESSION if raw.get("is_regression") else CLASSIFICATION)
    labels = () if problem == REGRESSION else tuple(str(n) for n in raw.get("label_names") or ())
    data_file = raw.get("data_file")
    return TaskInfo(task=raw.get("name"), labels=labels, problem_type=problem, pair_input=bool(raw.get("is_pair")),
                    data_file=Path(data_file).name if data_file else None, origin="kronedge.json task_spec")


def _glue_pair(task: str | None) -> bool | None:
    """Whether a GLUE preset takes pairs (None when ``task`` is not a preset)."""
    if not task:
        return None
    try:
        from kronedge.data import get_task

        return bool(get_task(task).is_pair)
    except (ImportError, ValueError, KeyError):
        return None


def resolve_task(config, source: dict | None = None, task_spec=None) -> TaskInfo:
    """The label names, task and input kind to record for a model with head ``config``.

    Args:
        config: the model's transformers config (``num_labels``, ``id2label``, ``problem_type``).
        source: :func:`exporters.export.load_source`'s description; for an artifact it carries the recipe's
            ``task``, ``labels`` and ``task_spec``.
        task_spec: the TaskSpec of ``--task``, when given.

    Raises:
        ExportError: two sources name the labels differently, or names do not fit the head (one line).

    Example:
        >>> resolve_task(model.config, {"task": "sst2", "labels": ["negative", "positive"]}).labels
        ('negative', 'positive')
    """
    source = source or {}
    n = int(config.num_labels)
    regression = n == 1 or getattr(config, "problem_type", None) == REGRESSION
    candidates: list[TaskInfo] = []
    if task_spec is not None:
        candidates.append(_from_spec(task_spec, "--task"))
    if source.get("task_spec") is not None:
        candidates.append(_from_spec_dict(source["task_spec"], "kronedge.json"))
    if source.get("labels") or source.get("task"):
        names = tuple(str(x) for x in source.get("labels") or ()) or generic_labels(n)
        candidates.append(TaskInfo(task=source.get("task"), labels=() if regression else names,
                                   problem_type=REGRESSION if regression else CLASSIFICATION,
                                   pair_input=bool(_glue_pair(source.get("task"))), origin="kronedge.json"))
    id2label = getattr(config, "id2label", None) or {}
    config_names = tuple(str(id2label.get(i, id2label.get(str(i), generic)))
                         for i, generic in enumerate(generic_labels(n)))
    if not regression and len(set(config_names)) == n:
        candidates.append(TaskInfo(task=None, labels=config_names, origin="config.json"))
    for info in candidates:
        _check_fits_head(info, n)

    named = [c for c in candidates if not c.is_regression and not is_generic(c.labels)]
    for other in named[1:]:
        if other.labels != named[0].labels:
            raise ExportError(f"the label names of {named[0].origin} {list(named[0].labels)} differ from those of "
                              f"{other.origin} {list(other.labels)}; the head was trained for one of them")
    if regression:
        labels, origin = (), candidates[0].origin if candidates else "config.json"
    elif named:
        labels, origin = named[0].labels, named[0].origin
    else:
        labels, origin = generic_labels(n), "generic"
    # A field the most explicit source leaves empty comes from the next one: the recipe's data file under
    # --task's name, the recipe's task name above a config that only names the labels.
    return TaskInfo(task=next((c.task for c in candidates if c.task), None), labels=labels,
                    problem_type=REGRESSION if regression else CLASSIFICATION,
                    pair_input=candidates[0].pair_input if candidates else False,
                    data_file=next((c.data_file for c in candidates if c.data_file), None), origin=origin)


def _check_fits_head(info: TaskInfo, num_labels: int) -> None:
    if info.is_regression:
        if num_labels != 1:
            raise ExportError(f"{info.origin} says regression but the model's head has {num_labels} outputs")
    elif len(info.labels) != num_labels:
        raise ExportError(f"{info.origin} names {len(info.labels)} labels {list(info.labels)} but the model's head "
                          f"has {num_labels} outputs")


def model_identity(name: str | None, version: str | None, default_dir: str | os.PathLike,
                   files: dict[str, dict]) -> tuple[str, str]:
    """(name, version) to record: the user's, else the contract's defaults (``default_dir``'s name, a short
    hash of model.onnx). ``files`` is the export's file table (for the hash)."""
    name = name or contract.default_name(Path(default_dir).name)
    version = version or contract.default_version(files)
    if version is None:
        raise ValueError("cannot version an export without model.onnx or model.ort")
    return name, version
