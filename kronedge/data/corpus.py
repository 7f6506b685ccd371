"""Unlabelled text for general (stage-1) distillation: the shipped WikiText-2, everything unlabelled that
ships (``general``), or any text file."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from .glue import PACKAGE_DATA, DataError

WIKITEXT = PACKAGE_DATA / "wikitext-2" / "wiki.valid.tokens"
WIKITEXT_TEST = PACKAGE_DATA / "wikitext-2" / "wiki.test.tokens"
# name -> files read in order
BUILTIN_CORPORA = {"wikitext-2": [WIKITEXT], "builtin:wikitext-2": [WIKITEXT],
                   "wikitext-2-all": [WIKITEXT, WIKITEXT_TEST], "builtin:wikitext-2-all": [WIKITEXT, WIKITEXT_TEST]}
# Every unlabelled text that ships: both WikiText-2 splits and the shipped GLUE tasks' training inputs.
GENERAL_CORPUS = ("general", "builtin:general")
GENERAL_TASKS = ("sst2", "cola", "rte")  # the GLUE tasks whose files ship (kronedge/data/glue); no SQuAD ships
MIN_WORDS = 4  # shorter texts (SST-2's many sub-phrases) are dropped, as stray WikiText fragments are


def _clean_wikitext(line: str) -> str:
    # WikiText's tokenized form splits hyphens and number separators as " @-@ ", " @,@ ", " @.@ ".
    return line.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")


def load_corpus(path: str | os.PathLike | None = None, max_words: int = 48, limit: int | None = None,
                seed: int = 0) -> list[str]:
    """Text chunks of at most ``max_words`` words (whole sentences where possible).

    Blank lines and WikiText section headings (`` = Title = ``) are skipped; each paragraph is cut
    into runs of sentences so that chunks fit a short sequence length (short sequences are what
    CPU training can afford).

    Args:
        path: a UTF-8 text file; None or ``wikitext-2`` for the shipped WikiText-2 validation split;
            ``wikitext-2-all`` for its validation and test splits (about 13k chunks); ``general`` for
            everything unlabelled that ships (:func:`general_texts`).
        max_words: upper bound of words per chunk.
        limit: keep a seeded random sample of this many chunks.
        seed: seed of that sample.

    Example:
        >>> chunks = load_corpus(limit=2000)
    """
    if str(path) in GENERAL_CORPUS:
        chunks = general_texts(max_words)
        files = [WIKITEXT]
    else:
        files = [WIKITEXT] if path is None else BUILTIN_CORPORA.get(str(path)) or [Path(path)]
        chunks = []
        for file in files:
            chunks.extend(_read_chunks(file, max_words))
    if not chunks:
        raise DataError(f"{path or files[0]}: no text found")
    if limit is not None and limit < len(chunks):
        chunks = random.Random(seed).sample(chunks, limit)
    return chunks


def general_texts(max_words: int = 48) -> list[str]:
    """Every unlabelled text the package ships, in a fixed order, each once.

    Both WikiText-2 splits (chunked as :func:`load_corpus` does) and the training inputs of the shipped
    GLUE tasks without their labels (SST-2, CoLA, RTE; a pair's two sentences as two texts). Dev splits
    stay out: they score the students. Texts under ``MIN_WORDS`` words are dropped (most of SST-2's
    training rows are sub-phrases of its sentences); longer ones are cut to ``max_words`` words.
    """
    from .glue import load_task

    texts = [chunk for file in (WIKITEXT, WIKITEXT_TEST) for chunk in _read_chunks(file, max_words)]
    for task in GENERAL_TASKS:
        for row in load_task(task, "train").texts:
            for text in (row if isinstance(row, (tuple, list)) else (row,)):
                words = str(text).split()
                if len(words) >= MIN_WORDS:
                    texts.append(" ".join(words[:max_words]))
    return list(dict.fromkeys(texts))  # first occurrence kept: the order is fixed, so is the fingerprint


def corpus_fingerprint(texts: list[str]) -> str:
    """A short hash of a corpus's texts (order included): the general student's cache key uses it."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def check_corpus(path: str | os.PathLike | None) -> None:
    """Refuse a corpus that names neither a built-in one nor a file, before any training reads it."""
    if path is not None and str(path) not in GENERAL_CORPUS and str(path) not in BUILTIN_CORPORA:
        _check_file(Path(path))


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"corpus file {path} not found; give a UTF-8 text file, 'wikitext-2', "
                        "'wikitext-2-all' or 'general'")


def _read_chunks(path: Path, max_words: int) -> list[str]:
    _check_file(path)
    chunks: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise DataError(f"{path}:{lineno}: not valid UTF-8; re-save the file as UTF-8") from None
            if not line or (line.startswith("=") and line.endswith("=")):
                continue
            chunks.extend(_chunk(_clean_wikitext(line), max_words))
    return chunks


def _chunk(paragraph: str, max_words: int) -> list[str]:
    out, current = [], []
    for sentence in paragraph.replace(" . ", " .\n").split("\n"):
        words = sentence.split()
        if current and len(current) + len(words) > max_words:
            out.append(" ".join(current))
            current = []
        current.extend(words)
        while len(current) > max_words:
            out.append(" ".join(current[:max_words]))
            current = current[max_words:]
    if len(current) >= 4:  # drop stray fragments
        out.append(" ".join(current))
    return out
