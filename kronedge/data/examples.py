"""Rows of a :class:`~kronedge.data.tables.Table` -> labelled examples, against a known label set or
inferring it (a user's training file). GLUE presets and user files both come through here.
"""

from __future__ import annotations

import logging
import math
import re
from array import array
from collections import Counter, defaultdict
from typing import Iterator, Sequence

from .spec import CLASSIFICATION, REGRESSION, DataError, TaskData, TaskSpec, UnknownLabelsError, describe_labels
from .tables import Table

logger = logging.getLogger(__name__)
_INT = re.compile(r"[+-]?\d+")
_PADDED = re.compile(r"[+-]?0\d+")
# Below this share of fractional labels among integers, auto-detection asks instead of choosing regression:
# one "7.5" in a file of class ids is more likely a typo than a numeric target.
MIN_FRACTIONAL_SHARE = 0.05
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


def iter_rows(table: Table, text_keys: Sequence, label_key,
              padded: dict[str, Counter] | None = None) -> Iterator[tuple[int, object, str]]:
    """(line, text or (text, pair), raw label string) per record.

    Args:
        padded: collects, per label, how the rows that wrote it with surrounding spaces spelled it (the label is
            the text without them).
    """
    for lineno, values in table.rows([*text_keys, label_key]):
        texts = tuple(_text(table, lineno, k, v) for k, v in zip(text_keys, values))
        label = _raw_label(table, lineno, label_key, values[-1])
        if padded is not None and isinstance(values[-1], str) and values[-1] != label:
            padded.setdefault(label, Counter())[values[-1]] += 1
        yield lineno, texts if len(texts) == 2 else texts[0], label


def iter_examples(table: Table, spec: TaskSpec, text_keys: Sequence, label_key, split: str = "dev",
                  chunk_size: int = 10_000, skipped: Counter | None = None) -> Iterator[TaskData]:
    """The file as :class:`TaskData` chunks of at most ``chunk_size`` examples, labels mapped by ``spec``.

    Only one chunk is alive at a time when the caller does not keep them: tokenise a chunk, drop it.
    A label outside ``spec``'s label set is an error naming the file and line, or, given ``skipped``, a
    row left out and counted there under its label.
    """
    if len(text_keys) != (2 if spec.is_pair else 1):
        raise table.error(f"{table.path}: {spec.name} is a {'pair' if spec.is_pair else 'single-text'} task "
                          f"but {len(text_keys)} text column(s) were given")
    from ..artifact import generic_labels

    classes = _ClassIndex(spec, generic_labels(len(spec.raw_labels)))
    rows = iter_rows(table, text_keys, label_key)
    texts, labels = [], []
    for lineno, text, raw in rows:
        if spec.is_regression:
            labels.append(_number(table, lineno, raw, spec.name))
        else:
            label = classes.get(raw)
            if label is None and skipped is not None:
                skipped[raw] += 1
                continue
            if label is None:
                raise _unknown_labels(table, spec, classes, lineno, raw, rows)
            labels.append(label)
        texts.append(text)
        if len(texts) >= chunk_size:
            yield TaskData(spec, split, texts, labels, table.path)
            texts, labels = [], []
    if texts:
        yield TaskData(spec, split, texts, labels, table.path)


class _ClassIndex:
    """A file's label -> the class index of ``spec``, or None for a label the model does not have."""

    def __init__(self, spec: TaskSpec, generic: list[str]):
        self.names = list(spec.raw_labels)
        self.index = {raw: i for i, raw in enumerate(self.names)}
        # A head nobody named (LABEL_0, LABEL_1, ...) takes the class ids 0, 1, ... by position.
        self.unnamed = self.names == generic
        # JSON writes booleans true/false, pandas' CSV True/False: one spelling per model class, any case.
        self.booleans = {name.lower(): i for i, name in enumerate(self.names) if name.lower() in ("true", "false")}
        if len(self.booleans) != sum(name.lower() in ("true", "false") for name in self.names):
            self.booleans = {}  # "True" and "true" are two classes here: no folding
        # Whole-number names by value: 1 is the class "001".
        self.by_value = {v: i for i, v in enumerate((whole_number_values(self.names) or {}).values())}

    def get(self, raw: str) -> int | None:
        if raw not in self.index and _integer(raw) is not None:
            raw = _integer(raw)  # "01", "+1" and "1.0" are the class "1"
            if self.unnamed and raw not in self.index and 0 <= int(raw) < len(self.index):
                raw = self.names[int(raw)]
            if raw not in self.index:
                return self.by_value.get(int(raw))
        found = self.index.get(raw)
        return self.booleans.get(raw.lower()) if found is None else found


def _unknown_labels(table: Table, spec: TaskSpec, classes: _ClassIndex, lineno: int, raw: str,
                    rest: Iterator[tuple[int, object, str]]) -> Exception:
    """The error for labels the model lacks, naming every one in the file (the rest of it is read, up to a row
    that is itself wrong), not only the first, so that one fix covers them all."""
    unknown = Counter({raw: 1})
    try:
        for _, _, other in rest:
            if classes.get(other) is None:
                unknown[other] += 1
    except DataError:
        pass  # that row's own error comes once these labels are fixed
    # spec is the training file's labels in compress and the model's in eval: name it, not "the model"
    return UnknownLabelsError(f"{table.path}:{lineno}: unknown label {raw!r} for {spec.name}: {sum(unknown.values())} "
                              f"row(s) hold {len(unknown)} label(s) that {spec.name} lacks ({describe_counts(unknown)}); "
                              f"{spec.name}'s labels: {describe_labels(classes.names)}")


def describe_counts(rows_per_label: Counter, shown: int = 10) -> str:
    """``"'x' (3), 'y' (2) and 4 more"``: the ``shown`` most frequent labels with their rows, and how many others."""
    listed = ", ".join(f"{label!r} ({n})" for label, n in rows_per_label.most_common(shown))
    return listed + (f" and {len(rows_per_label) - shown} more" if len(rows_per_label) > shown else "")


def describe_skipped(rows_per_label: Counter) -> str:
    """How a warning or a CLI line names the rows left out because the model lacks their label."""
    return f"{sum(rows_per_label.values())} row(s) whose label the model lacks: {describe_counts(rows_per_label)}"


def read_examples(table: Table, spec: TaskSpec, text_keys: Sequence, label_key, split: str = "dev",
                  skip_unknown: bool = False) -> TaskData:
    """The whole file as one :class:`TaskData` with ``spec``'s label set (an empty file is an error).

    Args:
        skip_unknown: leave out the rows whose label ``spec`` lacks, counted per label in ``TaskData.skipped``
            (a warning names them), instead of failing on the first.
    """
    texts, labels = [], []
    skipped = Counter() if skip_unknown else None
    for chunk in iter_examples(table, spec, text_keys, label_key, split, skipped=skipped):
        texts.extend(chunk.texts)
        labels.extend(chunk.labels)
    if skipped:
        logger.warning("%s: left out %s", table.path, describe_skipped(skipped))
    if not texts:
        raise table.error(f"{table.path}: no examples" + (f" with a label of {spec.name} (all {sum(skipped.values())} "
                                                          "rows were left out)" if skipped else ""))
    return TaskData(spec, split, texts, labels, table.path, dict(skipped or {}))


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
        self.padded: dict[str, Counter] = {}  # iter_rows(..., padded=labels.padded) fills it

    def add(self, raw: str, lineno: int) -> None:
        i = self.ids.get(raw)
        if i is None:
            i = self.ids[raw] = len(self.ids)
            self.first_line[raw] = lineno
        self.rows.append(i)

    def is_regression(self) -> bool:
        if self.problem_type is not None:
            return self.problem_type == REGRESSION
        if "_regression" not in self.__dict__:
            self.__dict__["_regression"] = self._detect_regression()
        return self.__dict__["_regression"]

    def _detect_regression(self) -> bool:
        # Fractional labels mean regression; integers and names mean classes (1..5 stars are classes).
        if not all(_is_number(raw) for raw in self.ids):
            return False
        fractional = [raw for raw in self.ids if _integer(raw) is None]
        if not fractional:
            return False
        counts = Counter(self.rows)
        rows = sum(counts[self.ids[raw]] for raw in fractional)
        if rows / len(self.rows) < MIN_FRACTIONAL_SHARE:
            first = min(fractional, key=self.first_line.__getitem__)
            raise self.table.error(
                f"{self.table.path}:{self.first_line[first]}: {first!r} is one of {rows} fractional labels among "
                f"{len(self.rows)} otherwise whole numbers: a class id with a typo, or a numeric target? Fix those "
                "labels, or pass --problem-type regression (or classification) to say which")
        return True

    def finish(self) -> tuple[list, tuple[str, ...]]:
        """(labels per row, label names in logit-column order; empty for regression)."""
        if not self.ids:
            return [], ()
        raws = list(self.ids)
        if self.is_regression():
            values = [_number(self.table, self.first_line[raw], raw, "this") for raw in raws]
            return [values[i] for i in self.rows], ()
        if all(_integer(raw) is not None for raw in raws):
            canonical = _integer_classes(raws)
            names = sorted(set(canonical.values()), key=lambda name: (int(name), name))
        else:
            canonical = {raw: raw for raw in raws}
            for value in ("true", "false"):  # JSON's true beside a CSV's "True": one class, not two
                spelled = [raw for raw in raws if raw.lower() == value]
                if len(spelled) > 1:
                    canonical.update({raw: value for raw in spelled})
            names = sorted(set(canonical.values()))
        spellings = defaultdict(list)
        for raw in raws:
            spellings[canonical[raw]].append(raw)
        for name, written in spellings.items():
            if len(written) > 1:
                logger.warning("%s: the labels %s are one class, %r (whole numbers are read by value, codes of one "
                               "width such as 001..020 keep their spelling, true/false in any case)", self.table.path,
                               ", ".join(map(repr, written)), name)
        self._warn_padding(canonical)
        by_case = defaultdict(list)
        for name in names:
            by_case[name.casefold()].append(name)
        for written in by_case.values():
            if len(written) > 1:
                logger.warning("%s: the labels %s differ only in case and are %d classes; if they are one, write them "
                               "one way", self.table.path, ", ".join(map(repr, written)), len(written))
        if len(names) < 2:
            hint = " (pass --problem-type regression for a numeric target)" if _is_number(names[0]) else ""
            raise self.table.error(f"{self.table.path}: every label is {names[0]!r}; a classifier needs at least "
                                   f"two classes{hint}")
        position = {name: i for i, name in enumerate(names)}
        index = [position[canonical[raw]] for raw in raws]
        return [index[i] for i in self.rows], tuple(names)

    def _warn_padding(self, canonical: dict[str, str]) -> None:
        """One warning per class that some rows write with surrounding spaces and others without (or with other
        spaces): they are one class, which a user who meant two should know."""
        if not self.padded:
            return
        rows, total, by_class = Counter(self.rows), Counter(), defaultdict(Counter)
        for raw, i in self.ids.items():
            total[canonical[raw]] += rows[i]
            by_class[canonical[raw]].update(self.padded.get(raw, {}))
        for name, padded in sorted(by_class.items()):
            if padded and (len(padded) > 1 or padded.total() < total[name]):
                logger.warning("%s: %d of the %d rows of the class %r write it with surrounding spaces (%s); "
                               "spaces around a label are ignored, so they are one class", self.table.path,
                               padded.total(), total[name], name, ", ".join(repr(w) for w, _ in padded.most_common(3)))


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


def _integer_classes(raws: Sequence[str]) -> dict[str, str]:
    """Whole-number labels -> class names, one per value: "2.0", "02", "+2" are "2"; but when the integers are
    codes of one width, some zero-padded ("001" .. "020"), each value keeps its code's spelling ("1.0" is "001")."""
    integers = [raw for raw in raws if _INT.fullmatch(raw)]
    if len({len(raw.lstrip("+-")) for raw in integers}) != 1 or not any(_PADDED.fullmatch(raw) for raw in integers):
        return {raw: _integer(raw) for raw in raws}
    code = {}
    for raw in integers:
        if raw[0] not in "+-":
            code.setdefault(int(raw), raw)
    return {raw: code.get(int(_integer(raw)), _integer(raw)) for raw in raws}


def whole_number_values(names: Sequence[str]) -> dict[str, int] | None:
    """Each name's value when every name is a whole number ("001", "+2") and no value repeats, else None: then a
    label may be matched to a name by value."""
    values = {name: int(name) for name in names if _INT.fullmatch(name)}
    return values if len(values) == len(names) and len(set(values.values())) == len(values) else None


def _is_number(raw: str) -> bool:
    try:
        return math.isfinite(float(raw))
    except ValueError:
        return False


def infer_examples(table: Table, text_keys: Sequence, label_key, name: str, problem_type: str | None = None,
                   split: str = "train", metric: str | None = None) -> TaskData:
    """Read a training file and build its :class:`TaskSpec` from the labels it holds.

    Args:
        problem_type: ``regression``, ``single_label_classification``, or None to decide from the
            labels (all numbers and some not integers: regression).
        metric: the spec's primary metric (default: accuracy, or Pearson for regression).
    """
    assert problem_type in (None, REGRESSION, CLASSIFICATION), problem_type
    labels = LabelSet(table, problem_type)
    texts = []
    for lineno, text, raw in iter_rows(table, text_keys, label_key, labels.padded):
        texts.append(text)
        labels.add(raw, lineno)
    if not texts:
        raise table.error(f"{table.path}: no examples")
    values, names = labels.finish()
    regression = labels.is_regression()
    spec = file_spec(name, table, text_keys, label_key, names, regression, metric)
    return TaskData(spec, split, texts, values, table.path)


def file_spec(name: str, table: Table, text_keys: Sequence, label_key, label_names: tuple[str, ...],
              regression: bool, metric: str | None = None) -> TaskSpec:
    """The :class:`TaskSpec` of a user's file read through ``table`` (``metric``: its primary metric)."""
    return TaskSpec.custom(name, label_names, REGRESSION if regression else CLASSIFICATION, len(text_keys) == 2,
                           tuple(text_keys), label_key, table.path.name, primary_metric=metric)
