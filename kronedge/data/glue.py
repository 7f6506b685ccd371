"""GLUE tasks as presets: fixed label sets and the TSV layouts GLUE distributes.

Every file is read strictly: UTF-8, tab-separated with quoting disabled (QNLI's dev set holds
stray ``"`` characters that csv's default dialect would swallow across lines), the exact column
count of the header on every row, and labels from the task's label set. A bad row raises
:class:`DataError` naming the file and the 1-based line.
"""

from __future__ import annotations

import os
from pathlib import Path

from .examples import read_examples
from .spec import DataError, TaskData, TaskSpec
from .tables import Table

__all__ = ["TASKS", "TaskSpec", "TaskData", "DataError", "get_task", "task_file", "read_tsv", "load_task"]

# Files shipped inside the package (SST-2, CoLA, RTE); other tasks need --data-dir.
PACKAGE_DATA = Path(__file__).resolve().parent
SHIPPED_GLUE = PACKAGE_DATA / "glue"


def _cls(name, folder, labels, raw, text, label, metric, header=True, splits=None) -> TaskSpec:
    return TaskSpec(name=name, num_labels=len(labels), label_names=tuple(labels), is_pair=len(text) == 2,
                    is_regression=False, primary_metric=metric, folder=folder, header=header,
                    text_columns=tuple(text), label_column=label, raw_labels=tuple(raw),
                    splits=splits or {"train": "train", "dev": "dev"})


_MNLI_LABELS = ("entailment", "neutral", "contradiction")

TASKS: dict[str, TaskSpec] = {
    "cola": _cls("cola", "CoLA", ["unacceptable", "acceptable"], ["0", "1"], [3], 1, "matthews", header=False),
    "sst2": _cls("sst2", "SST-2", ["negative", "positive"], ["0", "1"], ["sentence"], "label", "accuracy"),
    "mrpc": _cls("mrpc", "MRPC", ["not_equivalent", "equivalent"], ["0", "1"], ["#1 String", "#2 String"],
                 "Quality", "f1"),
    "stsb": TaskSpec(name="stsb", num_labels=1, label_names=(), is_pair=True, is_regression=True,
                     primary_metric="pearson", folder="STS-B", header=True,
                     text_columns=("sentence1", "sentence2"), label_column="score"),
    "qqp": _cls("qqp", "QQP", ["not_duplicate", "duplicate"], ["0", "1"], ["question1", "question2"],
                "is_duplicate", "f1"),
    "mnli": _cls("mnli", "MNLI", _MNLI_LABELS, _MNLI_LABELS, ["sentence1", "sentence2"], "gold_label", "accuracy",
                 splits={"train": "train", "dev": "dev_matched"}),
    "mnli-mm": _cls("mnli-mm", "MNLI", _MNLI_LABELS, _MNLI_LABELS, ["sentence1", "sentence2"], "gold_label",
                    "accuracy", splits={"train": "train", "dev": "dev_mismatched"}),
    "qnli": _cls("qnli", "QNLI", ["entailment", "not_entailment"], ["entailment", "not_entailment"],
                 ["question", "sentence"], "label", "accuracy"),
    "rte": _cls("rte", "RTE", ["entailment", "not_entailment"], ["entailment", "not_entailment"],
                ["sentence1", "sentence2"], "label", "accuracy"),
    "wnli": _cls("wnli", "WNLI", ["not_entailment", "entailment"], ["0", "1"], ["sentence1", "sentence2"],
                 "label", "accuracy"),
}

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_mismatched": "mnli-mm", "mnli-mismatched": "mnli-mm"}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The :class:`TaskSpec` for a task name (case-insensitive; ``SST-2`` and ``sst2`` both work).

    A :class:`TaskSpec` is returned as it is, so code written for GLUE names also takes the spec
    of a user's file (:meth:`~kronedge.data.files.DataFiles.spec`).
    """
    if isinstance(name, TaskSpec):
        return name
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[key]


def task_file(spec: TaskSpec, split: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of ``split`` of a task; ``data_dir`` is a GLUE root (holding ``SST-2/``) or the task folder."""
    if split not in spec.splits:
        raise DataError(f"task {spec.name} has no split {split!r}; choose one of {sorted(spec.splits)}")
    stem = spec.splits[split] + ".tsv"
    if data_dir is None:
        path = SHIPPED_GLUE / spec.folder / stem
        if not path.is_file():
            shipped = sorted(p.name for p in SHIPPED_GLUE.iterdir() if p.is_dir()) if SHIPPED_GLUE.is_dir() else []
            raise DataError(f"task {spec.name} does not ship with kronedge (shipped: {shipped}); "
                            f"pass --data-dir pointing at a GLUE folder holding {spec.folder}/{stem}")
        return path
    root = Path(data_dir)
    for path in (root / spec.folder / stem, root / stem):
        if path.is_file():
            return path
    raise DataError(f"{root / spec.folder / stem} not found (nor {root / stem})")


def read_tsv(spec: TaskSpec, path: str | os.PathLike, split: str = "dev") -> TaskData:
    """Parse one GLUE TSV file of ``spec``'s layout, strictly (streamed, like a user's file).

    Example:
        >>> ds = read_tsv(get_task("sst2"), "glue/SST-2/dev.tsv")
    """
    table = Table(path, "tsv", header=spec.header, quoting=False, width=None if spec.header else 4, error=DataError)
    return read_examples(table, spec, spec.text_columns, spec.label_column, split)


def load_task(task: str, split: str = "dev", data_dir: str | os.PathLike | None = None) -> TaskData:
    """Load one split of a GLUE task.

    Args:
        task: ``cola sst2 mrpc stsb qqp mnli mnli-mm qnli rte wnli`` (GLUE folder names work too).
        split: ``train`` or ``dev`` (MNLI: dev_matched; mnli-mm: dev_mismatched).
        data_dir: GLUE root folder (``DIR/SST-2/dev.tsv``) or the task folder itself; None reads
            the copies shipped with kronedge (SST-2, CoLA, RTE).

    Example:
        >>> ds = load_task("sst2", "dev")
        >>> len(ds), ds.spec.primary_metric
        (872, 'accuracy')
    """
    spec = get_task(task)
    return read_tsv(spec, task_file(spec, split, data_dir), split)
