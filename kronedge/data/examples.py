"""Rows of a :class:`~kronedge.data.tables.Table` -> labelled examples, against a known label set or
inferring it (a user's training file). GLUE presets and user files both come through here.
"""

from __future__ import annotations

import math
import re
from array import array
from typing import Iterator, Sequence

from .spec import CLASSIFICATION, REGRESSION, TaskData, TaskSpec
from .tables import Table

_INT = re.compile(r"[+-]?\d+")
# How spreadsheets, pandas and str(float("nan")) write a missing number. "NA", "null" and "none" are left out:
# they can be real class names.
_MISSING_LABELS = frozenset({"nan", "-nan", "+nan", "<na>", "#n/a"})


def _text(table: Table, lineno: int, column, value) -> str:
    if not isinstance(value, str):
        raise table.error(f"{table.path}:{lineno}: {column!r} holds {type(value).__name__} {value!r}, expected text")
    value = value.strip()
    if not value:
        raise table.error(f"{table.path}:{lineno}: empty text field {column!r}" if isinstance(column, str)
                          else f"{table.path}:{lineno}: empty text field")
    return value


def _raw_label(table: Table, lineno: int, column, value) -> str:
    """A label as a string: JSON numbers keep their JSON spelling (1 vs 1.5), booleans are true/false."""
    if value is None:
        value = ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (int, float)):
        value = json_number(value)
    elif not isinstance(value, str):
        raise table.error(f"{table.path}:{lineno}: label {value!r} is not a string or a number")
    value = value.strip()
    if not value:
        raise table.error(f"{table.path}:{lineno}: empty label in column {column!r}")
    if value.lower() in _MISSING_LABELS:
        raise table.error(f"{table.path}:{lineno}: the label in column {column!r} is {value!r}, a missing value "
                          "(as a spreadsheet or pandas writes one), not a class; fill it in or drop the row")
    return value


def json_number(value) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _number(table: Table, lineno: int, raw: str, task: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise table.error(f"{table.path}:{lineno}: label {raw!r} is not a number "
                          f"({task} is a regression task: every label must be a finite number)")
    return value


def iter_rows(table: Table, text_keys: Sequence, label_key) -> Iterator[tuple[int, object, str]]:
    """(line, text or (text, pair), raw label string) per record."""
    for lineno, values in table.rows([*text_keys, label_key]):
        texts = tuple(_text(table, lineno, k, v) for k, v in zip(text_keys, values))
        yield lineno, texts if len(texts) == 2 else texts[0], _raw_label(table, lineno, label_key, values[-1])


def iter_examples(table: Table, spec: TaskSpec, text_keys: Sequence, label_key, split: str = "dev",
                  chunk_size: int = 10_000) -> Iterator[TaskData]:
    """The file as :class:`TaskData` chunks of at most ``chunk_size`` examples, labels mapped by ``spec``.

    Only one chunk is alive at a time when the caller does not keep them: tokenise a chunk, drop it.
    A label outside ``spec``'s label set is an error naming the file and line.
    """
    if len(text_keys) != (2 if spec.is_pair else 1):
        raise table.error(f"{table.path}: {spec.name} is a {'pair' if spec.is_pair else 'single-text'} task "
                          f"but {len(text_keys)} text column(s) were given")
    from ..artifact import generic_labels

    index = {raw: i for i, raw in enumerate(spec.raw_labels)}
    # A head nobody named (LABEL_0, LABEL_1, ...) takes the class ids 0, 1, ... by position.
    unnamed = list(spec.raw_labels) == generic_labels(len(spec.raw_labels))
    texts, labels = [], []
    for lineno, text, raw in iter_rows(table, text_keys, label_key):
        if spec.is_regression:
            labels.append(_number(table, lineno, raw, spec.name))
        else:
            written = raw
            if raw not in index and _integer(raw) is not None:
                raw = _integer(raw)  # "01", "+1" and "1.0" are the class "1"
                if unnamed and raw not in index and 0 <= int(raw) < len(index):
                    raw = spec.raw_labels[int(raw)]
            if raw not in index:
                raise table.error(f"{table.path}:{lineno}: unknown label {written!r} for {spec.name}; "
                                  f"expected one of {list(spec.raw_labels)}")
            labels.append(index[raw])
        texts.append(text)
        if len(texts) >= chunk_size:
            yield TaskData(spec, split, texts, labels, table.path)
            texts, labels = [], []
    if texts:
        yield TaskData(spec, split, texts, labels, table.path)


def read_examples(table: Table, spec: TaskSpec, text_keys: Sequence, label_key, split: str = "dev") -> TaskData:
    """The whole file as one :class:`TaskData` with ``spec``'s label set (an empty file is an error)."""
    texts, labels = [], []
    for chunk in iter_examples(table, spec, text_keys, label_key, split):
        texts.extend(chunk.texts)
        labels.extend(chunk.labels)
    if not texts:
        raise table.error(f"{table.path}: no examples")
    return TaskData(spec, split, texts, labels, table.path)


class LabelSet:
    """The label set of a training file, gathered in one streaming pass.

    Each distinct raw label gets a small id in order of appearance (rows keep only that id, 4 bytes
    in an ``array``); :meth:`finish` then decides classification or regression and maps the ids to
    class indices (classes sorted: integers numerically, anything else as strings) or floats.
    """

    def __init__(self, table: Table, problem_type: str | None = None):
        self.table = table
        self.problem_type = problem_type
        self.ids: dict[str, int] = {}
        self.first_line: dict[str, int] = {}
        self.rows = array("i")

    def add(self, raw: str, lineno: int) -> None:
        i = self.ids.get(raw)
        if i is None:
            i = self.ids[raw] = len(self.ids)
            self.first_line[raw] = lineno
        self.rows.append(i)

    def is_regression(self) -> bool:
        if self.problem_type is not None:
            return self.problem_type == REGRESSION
        # Fractional labels mean regression; integers and names mean classes (1..5 stars are classes).
        numeric = all(_is_number(raw) for raw in self.ids)
        return numeric and not all(_integer(raw) is not None for raw in self.ids)

    def finish(self) -> tuple[list, tuple[str, ...]]:
        """(labels per row, label names in logit-column order; empty for regression)."""
        if not self.ids:
            return [], ()
        raws = list(self.ids)
        if self.is_regression():
            values = [_number(self.table, self.first_line[raw], raw, "this") for raw in raws]
            return [values[i] for i in self.rows], ()
        if all(_integer(raw) is not None for raw in raws):
            canonical = {raw: _integer(raw) for raw in raws}
            names = sorted(set(canonical.values()), key=int)
        else:
            canonical = {raw: raw for raw in raws}
            names = sorted(canonical.values())
        if len(names) < 2:
            raise self.table.error(f"{self.table.path}: every label is {names[0]!r}; a classifier needs at least "
                                   "two classes (pass --problem-type regression for a numeric target)")
        position = {name: i for i, name in enumerate(names)}
        index = [position[canonical[raw]] for raw in raws]
        return [index[i] for i in self.rows], tuple(names)


def _integer(raw: str) -> str | None:
    """The canonical spelling of an integer label ("02", "+2", "2.0" -> "2"), else None.

    Integral floats count as integers because a spreadsheet or pandas often writes class ids as 1.0.
    """
    if _INT.fullmatch(raw):
        return str(int(raw))
    try:
        value = float(raw)
    except ValueError:
        return None
    return str(int(value)) if math.isfinite(value) and value.is_integer() else None


def _is_number(raw: str) -> bool:
    try:
        return math.isfinite(float(raw))
    except ValueError:
        return False


def infer_examples(table: Table, text_keys: Sequence, label_key, name: str, problem_type: str | None = None,
                   split: str = "train") -> TaskData:
    """Read a training file and build its :class:`TaskSpec` from the labels it holds.

    Args:
        problem_type: ``regression``, ``single_label_classification``, or None to decide from the
            labels (all numbers and some not integers: regression).
    """
    assert problem_type in (None, REGRESSION, CLASSIFICATION), problem_type
    labels = LabelSet(table, problem_type)
    texts = []
    for lineno, text, raw in iter_rows(table, text_keys, label_key):
        texts.append(text)
        labels.add(raw, lineno)
    if not texts:
        raise table.error(f"{table.path}: no examples")
    values, names = labels.finish()
    regression = labels.is_regression()
    spec = file_spec(name, table, text_keys, label_key, names, regression)
    return TaskData(spec, split, texts, values, table.path)


def file_spec(name: str, table: Table, text_keys: Sequence, label_key, label_names: tuple[str, ...],
              regression: bool) -> TaskSpec:
    """The :class:`TaskSpec` of a user's file read through ``table``."""
    return TaskSpec.custom(name, label_names, REGRESSION if regression else CLASSIFICATION, len(text_keys) == 2,
                           tuple(text_keys), label_key, table.path.name)
