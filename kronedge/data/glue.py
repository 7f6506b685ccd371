"""GLUE task readers for the TSV layouts GLUE distributes.

Every file is read strictly: UTF-8, tab-separated with quoting disabled (QNLI's dev set holds
stray ``"`` characters that csv's default dialect would swallow across lines), the exact column
count of the header on every row, and labels from the task's label set. A bad row raises
:class:`DataError` naming the file and the 1-based line.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Files shipped inside the package (SST-2, CoLA, RTE); other tasks need --data-dir.
PACKAGE_DATA = Path(__file__).resolve().parent
SHIPPED_GLUE = PACKAGE_DATA / "glue"

# Long MNLI/QQP fields exceed csv's default 128 KiB field limit in some GLUE copies.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class DataError(ValueError):
    """A data file that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class TaskSpec:
    """What a GLUE task looks like on disk and how it is scored.

    Args:
        name: kronedge task name (``sst2``, ``mnli``, ``mnli-mm``, ...).
        num_labels: classes of the head (1 for the regression task STS-B).
        label_names: names in logit-column order; the file's raw labels map to these indices.
        is_pair: sentence-pair task (texts are ``(a, b)`` tuples).
        is_regression: STS-B: float labels in [0, 5], MSE head.
        primary_metric: the key of :func:`compute_metrics` used to rank checkpoints.
        folder: GLUE folder name (``SST-2``).
        header: True when the TSV starts with a header row.
        text_columns: column names (header files) or indices (CoLA) of the text field(s).
        label_column: column name or index of the label.
        raw_labels: raw label strings in the same order as ``label_names``.
        splits: split name -> file stem (``dev`` -> ``dev_matched`` for MNLI).
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

    def __post_init__(self):
        if self.is_pair != (len(self.text_columns) == 2):
            raise ValueError(f"{self.name}: a pair task needs two text columns, a single-sentence task one")
        if not self.is_regression and len(self.raw_labels) != self.num_labels:
            raise ValueError(f"{self.name}: raw_labels must list one raw label per class")

    @property
    def problem_type(self) -> str:
        return "regression" if self.is_regression else "single_label_classification"


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


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` for a task name (case-insensitive; ``SST-2`` and ``sst2`` both work)."""
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[key]


@dataclass
class TaskData:
    """One split of one task: parallel lists of texts and labels."""

    spec: TaskSpec
    split: str
    texts: list  # list[str] or list[tuple[str, str]]
    labels: list  # list[int] or list[float] (stsb)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None, seed: int = 0) -> "TaskData":
        """A seeded random subset of ``n`` examples (all of them when n is None or larger)."""
        if n is None or n >= len(self):
            return self
        import random

        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return TaskData(self.spec, self.split, [self.texts[i] for i in idx], [self.labels[i] for i in idx], self.path)


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


def _decode_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {raw[exc.start]:#04x}); re-save the file as UTF-8") from None
    return text.lstrip("\ufeff").splitlines()


def _column(spec: TaskSpec, header: list[str] | None, key, path: Path) -> int:
    if isinstance(key, int):
        return key
    assert header is not None
    # MNLI's label is the last column, so match from the right (its dev set repeats label names).
    names = [h.strip() for h in header]
    if key not in names:
        raise DataError(f"{path}:1: header lacks column {key!r} expected for {spec.name} (found {names})")
    return len(names) - 1 - names[::-1].index(key)


def read_tsv(spec: TaskSpec, path: str | os.PathLike, split: str = "dev") -> TaskData:
    """Parse one GLUE TSV file of ``spec``'s layout, strictly.

    Example:
        >>> ds = read_tsv(get_task("sst2"), "glue/SST-2/dev.tsv")
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found")
    lines = _decode_lines(path)
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = None
    start = 0
    if spec.header:
        if not rows:
            raise DataError(f"{path}:1: empty file, expected a header row")
        header, start = rows[0], 1
    width = len(header) if header is not None else 4  # CoLA: source, label, original label, sentence
    text_cols = [_column(spec, header, c, path) for c in spec.text_columns]
    label_col = _column(spec, header, spec.label_column, path)
    label_index = {raw: i for i, raw in enumerate(spec.raw_labels)}

    texts, labels = [], []
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line (trailing newline)
        if len(row) != width:
            raise DataError(f"{path}:{lineno}: expected {width} tab-separated columns for {spec.name}, got {len(row)}")
        fields = [row[c].strip() for c in text_cols]
        if any(not f for f in fields):
            raise DataError(f"{path}:{lineno}: empty text field")
        raw = row[label_col].strip()
        if spec.is_regression:
            try:
                value = float(raw)
            except ValueError:
                raise DataError(f"{path}:{lineno}: label {raw!r} is not a number (STS-B scores are 0-5)") from None
            labels.append(value)
        else:
            if raw not in label_index:
                raise DataError(f"{path}:{lineno}: unknown label {raw!r} for {spec.name}; "
                                f"expected one of {list(spec.raw_labels)}")
            labels.append(label_index[raw])
        texts.append(tuple(fields) if spec.is_pair else fields[0])
    if not texts:
        raise DataError(f"{path}: no examples")
    return TaskData(spec, split, texts, labels, path)


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
