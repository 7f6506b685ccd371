"""Unlabelled text for general (stage-1) distillation: the shipped WikiText-2 or any text file."""

from __future__ import annotations

import os
import random
from pathlib import Path

from .glue import PACKAGE_DATA, DataError

WIKITEXT = PACKAGE_DATA / "wikitext-2" / "wiki.valid.tokens"
BUILTIN_CORPORA = {"wikitext-2": WIKITEXT, "builtin:wikitext-2": WIKITEXT}


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
        path: a UTF-8 text file, or None / ``wikitext-2`` for the shipped WikiText-2 validation split.
        max_words: upper bound of words per chunk.
        limit: keep a seeded random sample of this many chunks.
        seed: seed of that sample.

    Example:
        >>> chunks = load_corpus(limit=2000)
    """
    if path is None or str(path) in BUILTIN_CORPORA:
        path = WIKITEXT
    path = Path(path)
    if not path.is_file():
        raise DataError(f"corpus file {path} not found; give a UTF-8 text file or 'wikitext-2'")
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
    if not chunks:
        raise DataError(f"{path}: no text found")
    if limit is not None and limit < len(chunks):
        chunks = random.Random(seed).sample(chunks, limit)
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
