"""A user's own labelled data files (``--train`` / ``--validation``) as a task.

Memory: files are streamed (see :mod:`kronedge.data.tables`). :meth:`DataFiles.load` keeps only
the text column(s), stripped, and one label per row (a 4-byte id while reading, then an int or a
float), so a 1 GB CSV with other columns costs about the size of its text column in ``str``
objects, once. :meth:`DataFiles.spec` reads the label column alone and keeps the distinct labels
only. :meth:`DataFiles.iter_chunks` hands out fixed-size chunks so a caller that tokenises chunk by
chunk never holds the file's texts at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar, Iterator, NamedTuple

from .examples import LabelSet, file_spec, infer_examples, iter_examples, iter_rows, read_examples
from .spec import CLASSIFICATION, FILE_METRICS, REGRESSION, DataFileError, TaskData, TaskSpec, describe_labels
from .tables import Table, detect_format

logger = logging.getLogger(__name__)

# SST-2 converted to the CSV a user would bring (text,label with label names); see PROVENANCE.md.
MOVIE_REVIEWS = Path(__file__).resolve().parent / "movie-reviews"

# Column defaults, tried in order: first the pair layouts (both columns present; GLUE's RTE, QQP, QNLI, MNLI
# names among them), then a single text column. A pair column is looked for only next to its own text column.
PAIR_COLUMNS = {"text": "text_pair", "sentence1": "sentence2", "question1": "question2", "question": "sentence",
                "premise": "hypothesis", "text_a": "text_b"}
# Then the names users' own exports most often give their one text and their label (review sites, support tickets,
# chat intents); the chosen columns are logged, and --text-column / --label-column override them.
TEXT_COLUMNS = ("text", "sentence", "sentence1", "question1", "premise", "text_a", "review", "content", "body",
                "message", "comment", "utterance", "document", "tweet", "question", "query", "title")
LABEL_COLUMNS = ("label", "labels", "gold_label", "score", "sentiment", "intent", "category", "class", "target",
                 "rating")
# With a training file alone, every HOLDOUT_EVERY-th row of each label (of all rows, for a regression) becomes the
# validation set, or every k-th for the larger k that keeps it near HOLDOUT_ROWS rows: one epoch's score stays cheap.
HOLDOUT_EVERY = 10
HOLDOUT_ROWS = 2000
CLASSIFIER_METRICS = FILE_METRICS[CLASSIFICATION]
LATER_FIELDS = ("metric",)  # written only when set: an options dict saved before a field existed reads the same
PROBLEM_TYPES = {"regression": REGRESSION, "classification": CLASSIFICATION, CLASSIFICATION: CLASSIFICATION}
SPLITS = {"train": "train", "validation": "validation", "dev": "validation", "eval": "validation"}


class Columns(NamedTuple):
    """The columns chosen in one file."""

    text: str
    pair: str | None
    label: str

    @property
    def text_keys(self) -> tuple[str, ...]:
        return (self.text,) if self.pair is None else (self.text, self.pair)


@dataclass(frozen=True)
class DataFiles:
    """Labelled CSV, TSV or JSON Lines files as a task: the same :class:`TaskData` a GLUE preset gives.

    Each field's help (for the CLI's ``--train``, ``--text-column`` ...) is in its metadata:
    ``DataFiles.help("text_column")``.

    Example:
        >>> data = DataFiles(train="tickets.csv", validation="tickets-dev.csv", label_column="queue")
        >>> spec = data.spec()                     # label names, pair or not, regression or not
        >>> train, dev = data.load("train", spec), data.load("validation", spec)
        >>> compute_metrics(spec, predictions, dev.labels)["accuracy"]
    """

    train: str | None = field(default=None, metadata={"help": (
        "Training file (.csv, .tsv or .jsonl); its labels define the label set, sorted (integers numerically).")})
    validation: str | None = field(default=None, metadata={"help": (
        "Validation file; a label the training file lacks is an error. Left out for training (compress, finetune): "
        f"every {HOLDOUT_EVERY}th row of each label of --train is held out as the validation set.")})
    format: str | None = field(default=None, metadata={"help": (
        "csv, tsv, tsv-raw (quotes are plain characters, as in GLUE's TSVs) or jsonl for both files (default: "
        "from each file's extension).")})
    text_column: str | None = field(default=None, metadata={"help": (
        f"Column of the text (default: the first of {', '.join(TEXT_COLUMNS)} present, any case).")})
    text_pair_column: str | None = field(default=None, metadata={"help": (
        "Column of the second text of a pair task (default: the partner of a defaulted text column: "
        f"{', '.join(PAIR_COLUMNS.values())}).")})
    label_column: str | None = field(default=None, metadata={"help": (
        f"Column of the label (default: the first of {', '.join(LABEL_COLUMNS)} present, any case).")})
    problem_type: str | None = field(default=None, metadata={"help": (
        "classification or regression (default: regression when every training label is a number "
        "and some are fractional; 1.0 is the class 1).")})
    metric: str | None = field(default=None, metadata={"help": (
        "What picks a classifier's best epoch and stops its training early: accuracy (default) or f1_macro "
        "(every class counts alike: for imbalanced classes).")})
    name: str | None = field(default=None, metadata={"help": (
        "Task name recorded in the model and manifest (default: the training file's stem without "
        "-train/_train; train.csv: its folder's name).")})

    VERSION: ClassVar[int] = 1

    def __post_init__(self):
        for key in ("train", "validation"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, os.fspath(value))  # JSON-ready, equal after a round trip
        if self.train is None and self.validation is None:
            raise DataFileError("give a training file (--train FILE), a validation file (--validation FILE) or both")
        if self.format is not None:
            object.__setattr__(self, "format", detect_format("", self.format))
        if self.problem_type is not None:
            if self.problem_type not in PROBLEM_TYPES:
                raise DataFileError(f"unknown problem type {self.problem_type!r}; choose classification or regression")
            object.__setattr__(self, "problem_type", PROBLEM_TYPES[self.problem_type])
        if self.metric is not None and self.metric not in CLASSIFIER_METRICS:
            raise DataFileError(f"--metric must be one of {', '.join(CLASSIFIER_METRICS)}, got {self.metric!r}")
        if self.metric is not None and self.problem_type == REGRESSION:
            raise DataFileError("--metric picks a classifier's epochs; a regression is picked by pearson")
        if self.metric == CLASSIFIER_METRICS[0]:  # the default said aloud: the same data, the same cache key
            object.__setattr__(self, "metric", None)
        if self.text_pair_column is not None and self.text_pair_column == self.text_column:
            raise DataFileError(f"the text and text-pair columns are both {self.text_column!r}")
        if self.name is not None and not self.name.strip():
            raise DataFileError("the task name is empty")
        if self.name is not None and ("/" in self.name or "\\" in self.name or self.name.strip() in (".", "..")):
            raise DataFileError(f"--name {self.name!r} becomes a file name (artifacts/kronedge-NAME, "
                                "runs/compress-NAME): it cannot hold '/' or '\\' or be '.' or '..'")

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of a field, for a CLI option."""
        return {f.name: f.metadata["help"] for f in fields(cls)}[name]

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"version": self.VERSION, **{k: v for k, v in asdict(self).items() if k not in LATER_FIELDS or v is not None}}

    @classmethod
    def from_dict(cls, data: dict) -> "DataFiles":
        data = dict(data)
        version = data.pop("version", cls.VERSION)
        if version != cls.VERSION:
            raise DataFileError(f"data files config version {version} is not supported (this kronedge reads {cls.VERSION})")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def fingerprint(self) -> str:
        """sha256 of these options and the files' bytes: a cache key that changes when the data does. The files
        count by name, size and bytes, not by path: the same files reached by another path give the same key."""
        options = self.to_dict()
        for key in ("train", "validation"):
            if options[key] is not None:
                options[key] = Path(options[key]).name
        h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
        for path in (self.train, self.validation):
            if path is None:
                continue
            try:
                with open(path, "rb") as f:
                    h.update(str(os.fstat(f.fileno()).st_size).encode() + b"\0")  # where one file ends
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            except OSError as exc:
                raise DataFileError(f"{path}: cannot read ({exc.strerror})") from None
        return h.hexdigest()

    # -- files and columns -----------------------------------------------------------------

    @property
    def task_name(self) -> str:
        if self.name is not None:
            return self.name.strip()
        path = Path(self.train or self.validation)
        stem = re.sub(r"[-_.](train|training|validation|valid|dev)$", "", path.stem, flags=re.IGNORECASE)
        if stem.lower() in ("train", "training", "validation", "valid", "dev", "data", ""):
            stem = path.resolve().parent.name or stem
        return stem

    @staticmethod
    def split_key(split: str) -> str:
        """``train`` or ``validation`` (``dev`` and ``eval`` mean validation)."""
        key = SPLITS.get(split)
        if key is None:
            raise DataFileError(f"unknown split {split!r}; choose train or validation")
        return key

    def path(self, split: str) -> str:
        key = self.split_key(split)
        path = getattr(self, key)
        if path is None:
            raise DataFileError(f"no {key} file given (--{key} FILE)")
        return path

    def table(self, split: str) -> Table:
        return Table(self.path(split), self.format)

    def columns(self, split: str, spec: TaskSpec | None = None) -> Columns:
        """The text, pair and label columns of ``split``'s file, defaults resolved against its header."""
        table = self.table(split)
        return self._columns(table, spec)

    def _columns(self, table: Table, spec: TaskSpec | None) -> Columns:
        names = table.columns

        def pick(given, defaults, flag, what):
            if given is not None:
                if given not in names:
                    raise DataFileError(f"{table.path}:1: no column {given!r}; the file's columns are {names}")
                if names.count(given) > 1:
                    raise DataFileError(f"{table.path}:1: column {given!r} appears {names.count(given)} times")
                return given
            lowered = [n.lower() for n in names]
            for name in defaults:  # "Text" and "LABEL" count as the defaults too
                if lowered.count(name) > 1:
                    raise DataFileError(f"{table.path}:1: column {name!r} appears {lowered.count(name)} times; "
                                        f"pass {flag} NAME")
                if name in lowered:
                    return names[lowered.index(name)]
            tabbed = len(names) == 1 and "\t" in names[0]  # a TSV read as CSV: one column with tabs in its name
            raise DataFileError(f"{table.path}:1: no {what} column: none of {list(defaults)} is among the file's "
                                f"columns {names}; " + ("its header holds tabs: pass --format tsv" if tabbed else
                                                        f"pass {flag} NAME"))

        lowered = [n.lower() for n in names]
        layout = None
        if self.text_column is None and self.text_pair_column is None:
            # both columns of a known pair layout present (e.g. question + sentence, as QNLI) make a pair task
            layout = next(((a, b) for a, b in PAIR_COLUMNS.items() if lowered.count(a) == 1 and lowered.count(b) == 1),
                          None)
        if layout is not None:
            text, pair = names[lowered.index(layout[0])], names[lowered.index(layout[1])]
        else:
            text = pick(self.text_column, TEXT_COLUMNS, "--text-column", "text")
            pair = None
            if self.text_pair_column is not None:
                pair = pick(self.text_pair_column, (), "--text-pair-column", "text-pair")
        label = pick(self.label_column, LABEL_COLUMNS, "--label-column", "label")
        if spec is not None and spec.is_pair != (pair is not None):
            if spec.is_pair:
                raise DataFileError(f"{table.path}:1: {spec.name} is a sentence-pair task but this file has no "
                                    f"second text column; pass --text-pair-column (the file's columns are {names})")
            how = ("drop --text-pair-column" if layout is None else
                   f"its columns {layout[0]!r} and {layout[1]!r} were read as a sentence pair; pass --text-column "
                   "NAME to read one of them as the text")
            raise DataFileError(f"{table.path}:1: {spec.name} takes one text, but the column {pair!r} makes this "
                                f"file a pair task; {how}")
        if label in (text, pair):
            raise DataFileError(f"{table.path}:1: column {label!r} cannot be both a text and the label")
        return Columns(text, pair, label)

    # -- reading ---------------------------------------------------------------------------

    def spec(self) -> TaskSpec:
        """The task's :class:`TaskSpec`, from one pass over the training file's columns (texts not kept).

        The label names it holds (``spec.label_names``, index = logit column), ``spec.problem_type``
        and ``spec.name``/``spec.data_file`` are what a model trained on this data must persist.
        """
        cached = self.__dict__.get("_spec")
        if cached is not None:
            return cached
        table = self.table("train")
        columns = self._columns(table, None)
        labels = LabelSet(table, self.problem_type)
        for lineno, _, raw in iter_rows(table, columns.text_keys, columns.label, labels.padded):  # checks each row
            labels.add(raw, lineno)
        if not len(labels.rows):
            raise DataFileError(f"{table.path}: no examples")
        _, names = labels.finish()
        spec = file_spec(self.task_name, table, columns.text_keys, columns.label, names, labels.is_regression(),
                         self.metric)
        logger.info("%s: %d rows%s, columns text=%s pair=%s label=%s, %s", table.path, len(labels.rows),
                    " (semicolon-separated)" if table.format == "csv" and table.delimiter == ";" else "",
                    columns.text, columns.pair, columns.label,
                    "regression" if spec.is_regression else f"{len(names)} labels: {describe_labels(names)}")
        self.__dict__["_spec"] = spec  # a cache, not a field: equality and to_dict ignore it
        return spec

    def load(self, split: str = "train", spec: TaskSpec | None = None, skip_unknown: bool = False) -> TaskData:
        """One split as :class:`TaskData` (``split``: ``train`` or ``validation``/``dev``).

        Args:
            spec: the label set to map labels by: the training file's (:meth:`spec`, the default) or
                a trained model's, read back with ``TaskSpec.from_dict``; a label outside it is an
                error naming the file and line.
            skip_unknown: leave the rows with such a label out instead (``TaskData.skipped`` counts them).
        """
        key = self.split_key(split)
        table = self.table(key)
        if spec is None and key == "train" and "_spec" not in self.__dict__:
            columns = self._columns(table, None)
            data = infer_examples(table, columns.text_keys, columns.label, self.task_name, self.problem_type, "train",
                                  self.metric)
            self.__dict__["_spec"] = data.spec
            return data
        spec = spec or self._spec_for(key)
        columns = self._columns(table, spec)
        return read_examples(table, spec, columns.text_keys, columns.label, key, skip_unknown)

    def iter_chunks(self, split: str = "train", spec: TaskSpec | None = None,
                    chunk_size: int = 10_000) -> Iterator[TaskData]:
        """``split`` as :class:`TaskData` chunks of ``chunk_size`` examples, for tokenising a large
        file piece by piece; labels are mapped by ``spec`` (default: :meth:`spec`)."""
        key = self.split_key(split)
        table = self.table(key)
        spec = spec or self._spec_for(key)
        columns = self._columns(table, spec)
        return iter_examples(table, spec, columns.text_keys, columns.label, key, chunk_size)

    def check(self, spec: TaskSpec | None = None, splits=("train", "validation")) -> TaskSpec | None:
        """Read each given file of ``splits`` once, keeping nothing, so a bad row fails before any model
        loads or anything is written. Returns the spec labels are checked against (None when there is
        neither a training file nor ``spec``: then only columns and texts are checked).
        """
        keys = {self.split_key(s) for s in splits}
        if spec is None and self.train is not None:
            spec = self.spec()
        elif "train" in keys and self.train is not None:
            for _ in self.iter_chunks("train", spec):
                pass
        if "validation" in keys and self.validation is not None:
            if spec is not None:
                for _ in self.iter_chunks("validation", spec):
                    pass
            else:
                table = self.table("validation")
                columns = self._columns(table, None)
                for _ in iter_rows(table, columns.text_keys, columns.label):
                    pass
        return spec

    def held_out(self, directory: str | os.PathLike) -> "DataFiles":
        """The training file split in two, for a user who brought one labelled file: every ``HOLDOUT_EVERY``-th row
        of each label (so every class with that many rows is scored) becomes the validation set, the rest the
        training set; the rows repeating a text go where its first row went. Both are written as JSON Lines under
        ``directory`` (atomically; the same file gives the same split, so a resumed run finds the files it started
        with), and returned as the files to use, under this task's name.

        Example:
            >>> DataFiles(train="tickets.csv").held_out("runs/compress-tickets/data").validation
            'runs/compress-tickets/data/tickets-validation.jsonl'
        """
        if self.train is None or self.validation is not None:
            raise DataFileError("a validation set is held out of a training file given alone")
        spec = self.spec()  # one pass: the columns, the labels, regression or not; a bad row fails here
        table = self.table("train")
        columns = self._columns(table, spec)
        strata = Counter(None if spec.is_regression else label
                         for _, _, label in iter_rows(table, columns.text_keys, columns.label))
        rows = sum(strata.values())
        every = max(HOLDOUT_EVERY, -(-rows // HOLDOUT_ROWS))
        if max(strata.values()) < every:  # refused before anything is written
            raise DataFileError(f"{self.train}: no label has the {every} rows it takes to hold out a validation set "
                                f"({rows} rows); pass --validation FILE")
        directory = Path(directory)
        paths = {split: directory / f"{self.task_name}-{split}.jsonl" for split in ("train", "validation")}
        seen: Counter = Counter()
        # Each text's side, by its hash: a repeated text follows its first row, so no text lands on both sides.
        held: dict[int, bool] = {}
        with _JsonlWriter(paths["train"]) as train, _JsonlWriter(paths["validation"]) as validation:
            for _, texts, label in iter_rows(table, columns.text_keys, columns.label):
                key = None if spec.is_regression else label
                seen[key] += 1
                side = held.setdefault(hash(texts), seen[key] % every == 0)
                texts = texts if columns.pair is not None else (texts,)
                (validation if side else train).write({**dict(zip(columns.text_keys, texts)), columns.label: label})
            if not validation.count:  # every row it would hold repeats a text already held for training
                raise DataFileError(f"{self.train}: its rows repeat too few texts to hold out a validation set; pass "
                                    "--validation FILE")
        logger.info("%s: no validation file; every %dth row%s held out as validation: %d rows (%d left to train), "
                    "in %s", self.train, every, "" if spec.is_regression else " of each label", validation.count,
                    train.count, directory)
        return replace(self, train=str(paths["train"]), validation=str(paths["validation"]), format=None,
                       text_column=columns.text, text_pair_column=columns.pair, label_column=columns.label,
                       name=self.task_name)

    def _spec_for(self, key: str) -> TaskSpec:
        if self.train is None:
            raise DataFileError(f"{self.validation}: the label set comes from the training file or the model; "
                                "pass --train FILE, or evaluate a model that records its labels")
        return self.spec()


class _JsonlWriter:
    """JSON Lines written to a temporary sibling and renamed into place on a clean exit (removed otherwise)."""

    def __init__(self, path: Path):
        self.path, self.count = path, 0
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def __enter__(self) -> "_JsonlWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.tmp, "w", encoding="utf-8")
        return self

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def __exit__(self, kind, value, traceback) -> None:
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def check_labels(spec: TaskSpec, label_names, what: str = "the model") -> None:
    """Raise one line when ``label_names`` (e.g. a teacher's ``id2label`` in order) differ from ``spec``'s."""
    ours, theirs = list(spec.label_names), [str(n) for n in label_names]
    if ours == theirs:
        return
    if sorted(ours) == sorted(theirs):
        raise DataFileError(f"{what} orders its labels {theirs} but {spec.name}'s data gives {ours}")
    only_data = [n for n in ours if n not in theirs]
    only_model = [n for n in theirs if n not in ours]
    raise DataFileError(f"{what}'s labels differ from {spec.name}'s: only in the data {only_data}, "
                        f"only in {what} {only_model}")


__all__ = ["DataFiles", "Columns", "check_labels", "MOVIE_REVIEWS", "TEXT_COLUMNS", "PAIR_COLUMNS", "LABEL_COLUMNS"]
