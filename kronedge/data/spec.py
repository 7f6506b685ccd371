"""The contract between the data layer and everything that trains, scores or exports a model.

A :class:`TaskSpec` says what one labelled task looks like (text or text pair, label names in
logit-column order, classification or regression, how it is scored); a :class:`TaskData` is one
split of it as parallel lists. GLUE presets (``glue.py``) and a user's own files (``files.py``)
both produce these, so the pipeline never needs to know where a task came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import KronedgeError
from .metrics import METRICS


class DataError(KronedgeError, ValueError):
    """A data file that cannot be read; the message names the file and the line."""


class DataFileError(DataError):
    """A user's own data file (``--train``/``--validation``) that cannot be used as given.

    A :class:`~kronedge.errors.KronedgeError`, so the CLI prints it as one line with exit code 1.
    """


class UnknownLabelsError(DataFileError):
    """Rows whose label the model does not have (``kronedge eval --skip-unknown-labels`` scores the others)."""


REGRESSION = "regression"
CLASSIFICATION = "single_label_classification"
# What a task from a user's files is scored by, the primary metric first unless one is chosen (--metric).
FILE_METRICS = {CLASSIFICATION: ("accuracy", "f1_macro"), REGRESSION: ("pearson", "spearman")}
SPEC_VERSION = 1


@dataclass(frozen=True)
class TaskSpec:
    """What a labelled task looks like and how it is scored.

    Args:
        name: task name: a GLUE preset (``sst2``, ``mnli``, ...) or, for a user's file, the
            data set's name (the training file's stem by default).
        num_labels: classes of the head (1 for regression).
        label_names: names in logit-column order; the file's raw labels map to these indices.
        is_pair: sentence-pair task (texts are ``(a, b)`` tuples).
        is_regression: float labels, MSE head, scored by Pearson/Spearman.
        primary_metric: the key of :func:`compute_metrics` used to rank checkpoints.
        folder: GLUE folder name (``SST-2``); empty for a user's file.
        header: True when the file starts with a header row.
        text_columns: column names (header files) or indices (CoLA) of the text field(s).
        label_column: column name or index of the label.
        raw_labels: raw label strings in the same order as ``label_names``.
        splits: split name -> file stem (``dev`` -> ``dev_matched`` for MNLI).
        metrics: the keys :func:`compute_metrics` returns (default: derived from the primary metric
            as GLUE scores the task).
        data_file: for a user's file, the training file's name (no directory); None for GLUE.
    """

    name: str
    num_labels: int
    label_names: tuple[str, ...]
    is_pair: bool
    is_regression: bool
    primary_metric: str
    folder: str
    header: bool
    text_columns: tuple
    label_column: object
    raw_labels: tuple[str, ...] = ()
    splits: dict = field(default_factory=lambda: {"train": "train", "dev": "dev"})
    metrics: tuple[str, ...] = ()
    data_file: str | None = None

    def __post_init__(self):
        if self.is_pair != (len(self.text_columns) == 2):
            raise DataError(f"{self.name}: a pair task needs two text columns, a single-sentence task one")
        if not self.is_regression and len(self.raw_labels) != self.num_labels:
            raise DataError(f"{self.name}: raw_labels must list one raw label per class")
        if not self.metrics:
            # GLUE's convention: accuracy for every classification task, plus its own primary metric.
            derived = ("pearson", "spearman") if self.is_regression else \
                ("accuracy",) + ((self.primary_metric,) if self.primary_metric != "accuracy" else ())
            object.__setattr__(self, "metrics", derived)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise DataError(f"{self.name}: unknown metrics {unknown}; choose from {sorted(METRICS)}")
        if self.primary_metric not in self.metrics:
            raise DataError(f"{self.name}: primary metric {self.primary_metric!r} is not among {list(self.metrics)}")

    @property
    def problem_type(self) -> str:
        """transformers' ``config.problem_type`` for this task's head."""
        return REGRESSION if self.is_regression else CLASSIFICATION

    @classmethod
    def custom(cls, name: str, label_names=(), problem_type: str = CLASSIFICATION, is_pair: bool = False,
               text_columns: tuple | None = None, label_column: str = "label", data_file: str | None = None,
               primary_metric: str | None = None) -> "TaskSpec":
        """The spec of a task that is not a GLUE preset: scored by accuracy and macro-F1, or by
        Pearson and Spearman for regression; ``primary_metric`` (one of those, default the first) is the one
        that picks the best epoch and stops training early.

        :meth:`DataFiles.spec` builds it from a training file; an exported model's manifest
        (``task``, ``labels``, ``problem_type``, ``pair_input``) is enough to rebuild it for scoring.

        Example:
            >>> TaskSpec.custom("tickets", ["billing", "bug", "other"])
        """
        if problem_type not in (CLASSIFICATION, REGRESSION):
            raise DataError(f"unknown problem type {problem_type!r}; choose {CLASSIFICATION} or {REGRESSION}")
        regression = problem_type == REGRESSION
        names = () if regression else tuple(str(n) for n in label_names)
        if not regression and len(names) < 2:
            raise DataError(f"{name}: a classifier needs at least two labels, got {list(names)}")
        if not regression and len(set(names)) != len(names):
            raise DataError(f"{name}: label names repeat: {list(names)}")
        text_columns = tuple(text_columns or (("text", "text_pair") if is_pair else ("text",)))
        metrics = FILE_METRICS[problem_type]
        if primary_metric is not None and primary_metric not in metrics:
            raise DataError(f"{name}: a {'regression' if regression else 'classifier'} is scored by "
                            f"{' or '.join(metrics)}, not {primary_metric!r}")
        return cls(name=name, num_labels=1 if regression else len(names), label_names=names, is_pair=is_pair,
                   is_regression=regression, primary_metric=primary_metric or metrics[0], folder="",
                   header=True, text_columns=text_columns, label_column=label_column, raw_labels=names,
                   splits={"train": data_file} if data_file else {}, metrics=metrics, data_file=data_file)

    def to_dict(self) -> dict:
        """JSON-ready form (persist it next to a model; :meth:`from_dict` reads it back)."""
        return {"version": SPEC_VERSION, **asdict(self), "label_names": list(self.label_names),
                "text_columns": list(self.text_columns), "raw_labels": list(self.raw_labels),
                "metrics": list(self.metrics)}

    @classmethod
    def from_dict(cls, data: dict) -> "TaskSpec":
        data = dict(data)
        version = data.pop("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise DataError(f"task spec version {version} is not supported (this kronedge reads {SPEC_VERSION})")
        for key in ("label_names", "text_columns", "raw_labels", "metrics"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass
class TaskData:
    """One split of one task: parallel lists of texts and labels."""

    spec: TaskSpec
    split: str
    texts: list  # list[str] or list[tuple[str, str]]
    labels: list  # list[int] (class indices) or list[float] (regression)
    path: Path | None = None
    # Rows left out because the model lacks their label (read with skip_unknown): label -> rows
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def skipped_report(self) -> dict:
        """What an evaluation result says about the rows left out: ``{"skipped_rows", "skipped_labels"}``, or {}."""
        if not self.skipped:
            return {}
        return {"skipped_rows": sum(self.skipped.values()), "skipped_labels": dict(self.skipped)}

    def seen_in(self, other: "TaskData") -> int:
        """How many of these examples have a text (or text pair) that ``other`` holds too: a validation set's rows
        that its training set saw (duplicates in a user's export, or one file split twice)."""
        seen = set(other.texts)
        return sum(text in seen for text in self.texts)

    def subset(self, n: int | None, seed: int = 0) -> "TaskData":
        """A seeded random subset of ``n`` examples (all of them when n is None or larger)."""
        if n is None or n >= len(self):
            return self
        import random

        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return TaskData(self.spec, self.split, [self.texts[i] for i in idx], [self.labels[i] for i in idx], self.path,
                        dict(self.skipped))


def describe_labels(labels, shown: int = 12, longest: int = 40) -> str:
    """Label names for one line of output: the first ``shown`` and a count, a label with a comma quoted, a long
    one cut."""
    def one(label: str) -> str:
        label = label if len(label) <= longest else label[:longest - 1] + "…"
        return repr(label) if "," in label else label

    head = ", ".join(one(label) for label in labels[:shown])
    return head if len(labels) <= shown else f"{head}, … ({len(labels)} in all)"


def reordered(theirs, ours) -> bool:
    """Whether two label lists name the same labels (case aside) in another order: a head whose answers, matched by
    position, would be swapped."""
    theirs, ours = [str(n).lower() for n in theirs], [str(n).lower() for n in ours]
    return theirs != ours and sorted(theirs) == sorted(ours)


def check_answers(model: str, trained_labels, spec: TaskSpec) -> None:
    """Refuse to score a model on ``spec`` when its head names other labels (a head nobody named, ``LABEL_i``, and a
    regression head are not checked): its accuracy there would be a number about nothing."""
    from ..artifact import generic_labels

    trained = list(trained_labels or ())
    if not trained or spec.is_regression or trained == generic_labels(len(trained)):
        return
    if [str(n).lower() for n in trained] == [str(n).lower() for n in spec.label_names]:
        return  # "NEGATIVE, POSITIVE" as many hub heads name them: the same answers
    if reordered(trained, spec.label_names):
        raise DataError(f"{model}'s head orders its labels {trained}, {spec.name} orders them "
                        f"{list(spec.label_names)}: its scores on {spec.name} would be those of swapped answers. "
                        "Score it on a file of your own (its labels are matched by name)")
    raise DataError(f"{model} answers {trained}, not {spec.name}'s labels {list(spec.label_names)}: score it on "
                    "the task or file it was trained for")
