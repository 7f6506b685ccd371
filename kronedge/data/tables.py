"""CSV, TSV and JSON Lines files read lazily, one record at a time, with the line each record starts on.

Memory: a :class:`Table` never holds the file. Bytes are read one physical line at a time,
decoded (so a bad byte is reported with its line), parsed, and only the requested columns of a
record are handed on; the rest of the record is garbage as soon as the next one is read. What
stays in memory is whatever the caller keeps.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

from .spec import DataError, DataFileError

# Long MNLI/QQP fields exceed csv's default 128 KiB field limit in some GLUE copies.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

# tsv-raw: tab-separated with quotes as plain characters, as GLUE's TSVs are (only when asked for by name).
FORMATS = ("csv", "tsv", "tsv-raw", "jsonl")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def detect_format(path: str | os.PathLike, format: str | None = None) -> str:
    """``format`` when given (``csv``, ``tsv``, ``jsonl``), else the one the file's extension names."""
    if format is not None:
        fmt = format.lower().lstrip(".")
        fmt = {"json": "jsonl", "ndjson": "jsonl", "tab": "tsv"}.get(fmt, fmt)
        if fmt not in FORMATS:
            raise DataFileError(f"unknown data format {format!r}; choose one of {list(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise DataFileError(f"{path}: cannot tell the format from the extension {suffix or '(none)'!r}; "
                            f"name the file .csv, .tsv or .jsonl, or pass --format {'|'.join(FORMATS)}")
    return EXTENSIONS[suffix]


class Table:
    """One data file, read lazily.

    Args:
        path: the file.
        format: ``csv``, ``tsv`` or ``jsonl``; None: from the extension.
        header: the first record names the columns (CSV/TSV; JSON Lines are always named).
        quoting: CSV quoting rules (``"`` quotes a field). GLUE's TSVs turn it off because their
            texts hold stray ``"`` characters that would swallow the following lines.
        width: the column count of a headerless file (CoLA: 4).
        error: the error class raised for a bad file.

    Example:
        >>> table = Table("reviews.csv")
        >>> table.columns
        ['text', 'label']
        >>> for line, (text, label) in table.rows(["text", "label"]): ...
    """

    def __init__(self, path: str | os.PathLike, format: str | None = None, *, header: bool = True,
                 quoting: bool = True, width: int | None = None, error: type[DataError] = DataFileError):
        self.path = Path(path)
        self.error = error
        if not self.path.exists():
            raise error(f"{self.path} not found")
        if not self.path.is_file():
            raise error(f"{self.path} is not a file")
        self.format = detect_format(self.path, format)
        self.header = header or self.format == "jsonl"
        self.quoting = quoting and self.format != "tsv-raw"
        self.width = width
        self._columns: list[str] | None = None
        self._delimiter: str | None = None

    # -- reading ---------------------------------------------------------------------------

    @property
    def delimiter(self) -> str:
        """A CSV's field separator: ``,``, or ``;`` when the first line has semicolons and no comma, as
        spreadsheets save a .csv where the comma is the decimal mark."""
        if self._delimiter is None:
            self._delimiter = self._csv_delimiter() if self.format == "csv" else "\t"
        return self._delimiter

    def _csv_delimiter(self) -> str:
        lines = self._lines()
        try:
            first = next((line for line in lines if line.strip()), "")
        finally:
            lines.close()
        return ";" if ";" in first and "," not in first else ","

    def _lines(self) -> Iterator[str]:
        # Binary lines split on b"\n", which never occurs inside a UTF-8 multi-byte sequence.
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if lineno == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
                        raise self.error(f"{self.path}:1: UTF-16 text (as Excel's \"Unicode Text\" saves it), not UTF-8; "
                                         "re-save it as UTF-8 (Excel: \"CSV UTF-8\"), e.g. iconv -f UTF-16 -t UTF-8"
                                         ) from None
                    raise self.error(f"{self.path}:{lineno}: not valid UTF-8 (byte {raw[exc.start]:#04x}); "
                                     "re-save the file as UTF-8 (Excel: \"CSV UTF-8\"; from Windows-1252: iconv -f "
                                     "CP1252 -t UTF-8)") from None
                yield line.lstrip("\ufeff") if lineno == 1 else line

    def _records(self) -> Iterator[tuple[int, object]]:
        """(line the record starts on, list of fields or a JSON object), blank lines skipped."""
        if self.format == "jsonl":
            for lineno, line in enumerate(self._lines(), start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise self.error(f"{self.path}:{lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
                if not isinstance(obj, dict):
                    raise self.error(f"{self.path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
                yield lineno, obj
            return
        if self.quoting:
            reader = csv.reader(self._lines(), delimiter=self.delimiter, strict=True)
        else:
            reader = csv.reader(self._lines(), delimiter=self.delimiter, quoting=csv.QUOTE_NONE)
        start = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "new-line character" in str(exc):
                    raise self.error(f"{self.path}:{start}: its lines end with a bare carriage return (old Mac "
                                     "style); convert them to \\n line endings, e.g. tr '\\r' '\\n'") from None
                raw = " (or pass --format tsv-raw if its quotes are plain characters, as in GLUE's TSVs)"
                raise self.error(f"{self.path}:{start}: malformed {self.format.upper()} ({exc}); a field that starts "
                                 'with " must be quoted, with "" for each quote inside it'
                                 f"{raw if self.format == 'tsv' else ''}") from None
            if row and not (len(row) == 1 and not row[0].strip()):
                yield start, row
            start = reader.line_num + 1  # a quoted field may span lines: the next record starts after them

    # -- columns ---------------------------------------------------------------------------

    @property
    def columns(self) -> list[str]:
        """The header's column names (JSON Lines: the first object's keys); reads one record."""
        if self._columns is None:
            if not self.header:
                raise self.error(f"{self.path} has no header row; address its columns by index")
            first = next(self._records(), None)
            if first is None:
                raise self.error(f"{self.path}:1: empty file, expected a header row" if self.format != "jsonl"
                                 else f"{self.path}:1: empty file, expected one JSON object per line")
            record = first[1]
            self._columns = [str(k) for k in record] if isinstance(record, dict) else [h.strip() for h in record]
        return self._columns

    def _index(self, key) -> int:
        if isinstance(key, int):
            return key
        names = self.columns
        if key not in names:
            raise self.error(f"{self.path}:1: no column {key!r}; the file's columns are {names}")
        # Match from the right: MNLI's label is the last of several label-like columns.
        return len(names) - 1 - names[::-1].index(key)

    def rows(self, keys: Sequence) -> Iterator[tuple[int, list]]:
        """(line, [value of each key]) per record: only the requested columns are kept.

        CSV/TSV values are strings and every record must have the header's width; JSON Lines
        values are whatever the JSON holds and every object must have every key.
        """
        records = self._records()
        if self.format == "jsonl":
            for lineno, obj in records:
                missing = [k for k in keys if k not in obj]
                if missing:
                    raise self.error(f"{self.path}:{lineno}: no {missing[0]!r} field (this line has {sorted(obj)})")
                yield lineno, [obj[k] for k in keys]
            return
        index = [self._index(k) for k in keys]
        width = len(self.columns) if self.header else self.width
        if self.header:
            next(records)  # the header itself
        sep = {",": "comma", ";": "semicolon", "\t": "tab"}[self.delimiter]
        for lineno, row in records:
            if width is not None and len(row) != width:
                raise self.error(f"{self.path}:{lineno}: expected {width} {sep}-separated columns, got {len(row)}")
            if width is None and max(index) >= len(row):
                raise self.error(f"{self.path}:{lineno}: expected at least {max(index) + 1} columns, got {len(row)}")
            yield lineno, [row[i] for i in index]
