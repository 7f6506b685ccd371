"""Teacher-labelled augmentation for stage 2: more training inputs made from the task's own text.

A student trained by KD learns from any input the teacher scores, not only from the labelled rows
(TinyBERT augments small GLUE tasks ~20x; AugSBERT labels re-paired sentences with a cross-encoder).
:class:`Augmenter` makes ``copies`` new inputs per training row, each by one edit at the word level:

    mask      words -> the tokenizer's mask token          "the plot is [MASK] and [MASK]"
    replace   words -> words of the training text itself   "the plot is loud and wooden"
    span      one contiguous span of words deleted         "the plot wooden"
    dropout   words dropped independently, order kept      "plot is and wooden"

and, for a pair task, sometimes re-pairs a row's first sentence with another row's second one
(still an ``(a, b)`` pair). The new rows carry :data:`NO_LABEL`: the teacher's outputs are their only
targets (the supervised loss skips them, see :func:`kronedge.distill.supervised_loss`). Everything is
drawn from one seeded generator, so a resumed run rebuilds exactly the same set.

Only the training split goes in (:func:`stage2_examples` refuses any other split), the replacement
vocabulary comes from those rows alone, and unlabelled text that repeats a dev text is dropped.

Example:
    >>> aug = Augmenter(AugmentConfig(copies=4, seed=0))
    >>> new = aug.augment(train.texts)          # 4 * len(train) texts, same kind (str or pair)
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from .data.spec import DataError, TaskData
from .training.config import TrainingError

logger = logging.getLogger(__name__)

# The label of a row without a gold label (cross-entropy's ignore_index); regression rows use NaN.
NO_LABEL = -100
OPERATIONS = ("mask", "replace", "span", "dropout")


@dataclass
class AugmentConfig:
    """How :class:`Augmenter` makes new inputs.

    Args:
        copies: new inputs per original row (0: off).
        mask_prob: share of words replaced by ``mask_token`` ("mask").
        replace_prob: share of words replaced by a word drawn from the training text ("replace").
        span_max: longest deleted span as a share of the words ("span"); at least one word goes.
        dropout_prob: share of words dropped, order kept ("dropout").
        repair_prob: pair tasks: chance that a new input pairs the first sentence with another
            row's second sentence.
        operations: the edits to draw from, one per new input.
        mask_token: the tokenizer's mask token (BERT: ``[MASK]``).
        seed: everything drawn follows from it.

    Example:
        >>> AugmentConfig(copies=4, operations=("mask", "span"))
    """

    copies: int = 0
    mask_prob: float = 0.15
    replace_prob: float = 0.15
    span_max: float = 0.3
    dropout_prob: float = 0.15
    repair_prob: float = 0.25
    operations: tuple = OPERATIONS
    mask_token: str = "[MASK]"
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.copies, int) or self.copies < 0:
            raise TrainingError(f"augment copies must be a whole number >= 0 (0 = off), got {self.copies!r}")
        for name in ("mask_prob", "replace_prob", "span_max", "dropout_prob", "repair_prob"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise TrainingError(f"{name} is a share in [0, 1), got {value!r}")
        self.operations = tuple(self.operations)
        unknown = set(self.operations) - set(OPERATIONS)
        if unknown or not self.operations:
            raise TrainingError(f"augment operations must be a non-empty subset of {OPERATIONS}, got "
                                f"{list(self.operations)}")
        if not self.mask_token:
            raise TrainingError("mask_token is empty: pass the tokenizer's mask token (BERT: [MASK])")

    def to_dict(self) -> dict:
        return asdict(self)


class Augmenter:
    """Makes ``config.copies`` new inputs per text, deterministically (see the module docstring)."""

    def __init__(self, config: AugmentConfig):
        self.config = config

    def augment(self, texts: list) -> list:
        """``copies`` new texts per text, in order (row 0's copies first); strings or ``(a, b)`` pairs."""
        c = self.config
        if not c.copies or not texts:
            return []
        pair = isinstance(texts[0], tuple)
        rng = random.Random(f"kronedge-augment:{c.seed}")  # a str seed hashes the same in every process
        # The replacement vocabulary: every word of these texts, drawn by frequency.
        vocab = [w for t in texts for side in (t if pair else (t,)) for w in side.split()] or [c.mask_token]
        out = []
        for i, text in enumerate(texts):
            for _ in range(c.copies):
                if pair:
                    a, b = text
                    if len(texts) > 1 and rng.random() < c.repair_prob:
                        j = rng.randrange(len(texts) - 1)
                        b = texts[j + (j >= i)][1]  # another row's second sentence
                    op = rng.choice(c.operations)
                    out.append((self.edit(a, op, rng, vocab), self.edit(b, op, rng, vocab)))
                else:
                    out.append(self.edit(text, rng.choice(c.operations), rng, vocab))
        return out

    def edit(self, text: str, op: str, rng: random.Random, vocab: list[str]) -> str:
        """One edit ``op`` of ``text``'s words; never empties a non-empty text."""
        c, words = self.config, text.split()
        if len(words) < 2:
            return text if op in ("span", "dropout") or not words else self._swap(words, op, rng, vocab)
        if op in ("mask", "replace"):
            return self._swap(words, op, rng, vocab)
        if op == "span":
            n = max(1, min(len(words) - 1, math.ceil(rng.random() * c.span_max * len(words))))
            start = rng.randrange(len(words) - n + 1)
            return " ".join(words[:start] + words[start + n:])
        kept = [w for w in words if rng.random() >= c.dropout_prob]
        return " ".join(kept or [rng.choice(words)])

    def _swap(self, words: list[str], op: str, rng: random.Random, vocab: list[str]) -> str:
        c = self.config
        p = c.mask_prob if op == "mask" else c.replace_prob
        picks = [i for i in range(len(words)) if rng.random() < p] or [rng.randrange(len(words))]
        for i in picks:
            words[i] = c.mask_token if op == "mask" else rng.choice(vocab)
        return " ".join(words)


def read_unlabelled(path: str | os.PathLike, is_pair: bool, flag: str = "--unlabelled") -> list:
    """Texts from a file, one a line (pair tasks: ``FIRST<TAB>SECOND``); blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{flag}: {path} is not a file (one text per line)")
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        raise DataError(f"{flag}: {path} looks like a table; this option takes plain text, one input per line "
                        "(write its text column to a .txt file)")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{flag}: {path} is not UTF-8 text (byte {exc.start})") from None
    texts = []
    for lineno, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        if is_pair:
            parts = line.split("\t")
            if len(parts) != 2 or not all(p.strip() for p in parts):
                raise DataError(f"{flag}: {path}:{lineno} needs two texts separated by one tab for this "
                                "pair task")
            texts.append((parts[0].strip(), parts[1].strip()))
        else:
            texts.append(line.strip())
    if not texts:
        raise DataError(f"{flag}: {path} holds no text")
    return texts


def stage2_examples(train: TaskData, config: AugmentConfig, dev_texts: list | None = None,
                    unlabelled: list | None = None) -> tuple[list, list]:
    """Stage 2's texts and labels: the training rows, then their augmented copies, then unlabelled texts.

    Added rows carry :data:`NO_LABEL` (NaN for regression): the teacher labels them through the KD losses.

    Args:
        train: the task's training split (any other split is refused: dev never reaches training).
        config: the augmentation (``copies`` 0 adds none).
        dev_texts: the dev texts; unlabelled texts equal to one of them are dropped.
        unlabelled: in-domain texts without labels (:func:`read_unlabelled`).

    Example:
        >>> texts, labels = stage2_examples(load_task("cola", "train"), AugmentConfig(copies=4))
    """
    assert train.split == "train", f"stage 2 trains on the training split only, got {train.split!r}"
    no_label = float("nan") if train.spec.is_regression else NO_LABEL
    new = Augmenter(config).augment(train.texts)
    extra = list(unlabelled or [])
    if extra:
        if dev_texts is not None:
            dev = set(dev_texts)
            kept = [t for t in extra if t not in dev]
            if len(kept) < len(extra):
                logger.warning(f"[augment] dropped {len(extra) - len(kept)} unlabelled text(s) that repeat dev texts")
            extra = kept
        new += extra
    if new:
        logger.info(f"[augment] {len(train)} training rows + {len(new)} teacher-labelled inputs "
                    f"({config.copies} per row{f', {len(extra)} unlabelled' if extra else ''})")
    return list(train.texts) + new, list(train.labels) + [no_label] * len(new)
