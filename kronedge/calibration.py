"""Calibration statistics: what each compressible layer of a teacher sees on real text.

For every selected nn.Linear the sum of x x^T over the tokens of a few hundred sentences (the
second-moment matrix that weights its reconstruction error). The word embeddings get none: they are fitted
unweighted (``kronedge.fitting`` says why). Sentences run one at a time, unpadded, so padding never enters
the statistics.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from .fitting import InputStats
from .layer_roles import FilterFn, default_filter, layer_role

DEFAULT_CALIBRATION_TEXTS = 256
# Held-out tokens kept as they are at each FFN's input (a search scores the FFN's width on them): ~64 texts' worth
# of a task's sentences, 12 MB per layer at BERT_BASE's width.
SAMPLE_TOKENS = 4096
# A structure search fits on the calibration texts but every HOLDOUT_EVERY-th, and keeps a role off the SVD
# corners only if its picks also start lower on those: a gain on the fitted texts alone may not carry over. The
# FFN width of kept neurons is chosen the same way.
HOLDOUT_EVERY = 4


def holdout_for(structure: str, ffn: str | None = None, ffn_width: int | str | None = None) -> int:
    """``collect_input_stats``'s ``holdout_every`` for a structure search, and for kept FFN neurons whose width is
    searched (``kronedge.neurons.searched_width``; not under the paper's fixed shapes, nor with a width given);
    0 otherwise."""
    searched_width = ffn == "neurons" and structure != "paper" and ffn_width is None
    return HOLDOUT_EVERY if structure == "search" or searched_width else 0


def strided_sample(texts: list, limit: int | None = DEFAULT_CALIBRATION_TEXTS) -> list:
    """At most ``limit`` texts spread evenly over ``texts`` (deterministic, so plans are reproducible); every text
    when ``limit`` is None."""
    if limit is None:
        return list(texts)
    return texts[:: max(1, len(texts) // limit)][:limit]


def calibration_texts(source: str | os.PathLike, limit: int | None = DEFAULT_CALIBRATION_TEXTS, seed: int = 0) -> list:
    """Texts for calibration: a GLUE task name (its train split), a data file (.csv, .tsv, .jsonl: its text column,
    as ``compress --train`` reads it), a corpus name, or a text file (all of them when ``limit`` is None).

    Example:
        >>> texts = calibration_texts("sst2", limit=128)
    """
    from .data import TASKS, load_task
    from .data.corpus import load_corpus
    from .data.tables import EXTENSIONS

    source = str(source)
    if source in TASKS:
        return strided_sample(load_task(source, split="train").texts, limit)
    if Path(source).suffix.lower() in EXTENSIONS:
        from .data.files import DataFiles

        return strided_sample(DataFiles(train=source).load("train").texts, limit)
    if not Path(source).exists() and not source.startswith(("wikitext", "builtin:")):
        raise FileNotFoundError(f"calibration text {source!r} is neither a GLUE task, a built-in corpus nor a file")
    return load_corpus(source, limit=limit, seed=seed)


class _Recorder:
    """Adds each forward pass's layer inputs to ``stats`` (and, while ``heldout`` is set, to their held-out part)."""

    def __init__(self, stats: dict[str, InputStats]):
        self.stats = stats
        self.heldout = False
        self.samples: dict[str, list[torch.Tensor]] = {}  # per FFN input, the held-out tokens kept so far

    def keep_samples(self, name: str, x: torch.Tensor) -> None:
        kept = self.samples.setdefault(name, [])
        room = SAMPLE_TOKENS - sum(len(t) for t in kept)
        if room > 0:
            kept.append(x[:room].to(torch.float32))

    def store_samples(self) -> None:
        for name, kept in self.samples.items():
            self.stats[name].heldout.samples = torch.cat(kept)

    def _entries(self, name: str) -> tuple[InputStats, ...]:
        entry = self.stats[name]
        return (entry, entry.heldout) if self.heldout else (entry,)

    def linear(self, name: str):
        def record(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            for entry in self._entries(name):
                entry.second_moment += x.T @ x
                entry.tokens += x.shape[0]
            if self.heldout and layer_role(name) == "ffn_up":
                self.keep_samples(name, x)
        return record


def _empty(module: nn.Linear) -> InputStats:
    return InputStats(second_moment=torch.zeros(module.in_features, module.in_features, dtype=torch.float64))


@torch.no_grad()
def collect_input_stats(model: nn.Module, tokenizer, texts: list, filter_fn: FilterFn | None = None,
                        max_length: int = 128, holdout_every: int = 0) -> dict[str, InputStats]:
    """Input statistics of every linear layer ``filter_fn`` selects, from ``model``'s own forward passes.

    Args:
        model: the dense teacher (any head); it is run in eval mode and left unchanged.
        tokenizer: a transformers tokenizer for ``model``.
        texts: sentences, or (sentence, sentence) pairs.
        holdout_every: when > 0, every such text is also counted in each entry's ``heldout`` part
            (``holdout_for``), and the FFN inputs of those texts are kept there as ``samples`` (at most
            ``SAMPLE_TOKENS``).
    """
    filter_fn = filter_fn or default_filter
    stats: dict[str, InputStats] = {}
    recorder = _Recorder(stats)
    handles = []
    for name, module in model.named_modules():
        if not filter_fn(module, name) or not isinstance(module, nn.Linear):
            continue
        stats[name] = _empty(module)
        if holdout_every:
            stats[name].heldout = _empty(module)
        handles.append(module.register_forward_pre_hook(recorder.linear(name)))

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for i, text in enumerate(texts):
            recorder.heldout = bool(holdout_every) and i % holdout_every == holdout_every - 1
            pair = tuple(text) if isinstance(text, (tuple, list)) else (text,)
            enc = tokenizer(*pair, truncation=True, max_length=max_length, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            model(**enc)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    recorder.store_samples()
    return _shared(stats)


_LAYER = re.compile(r"(^|\.)encoder\.layer\.(\d+)\.")


def for_kept_layers(stats: dict[str, InputStats] | None, kept: list[int]) -> dict[str, InputStats] | None:
    """A teacher's statistics under the names of a student that kept its encoder layers ``kept`` (student layer j is
    teacher layer ``kept[j]``, as ``surgery.keep_layers_`` keeps them): each kept layer is fitted to the inputs it
    saw in the teacher; the statistics of the layers left out are dropped."""
    if stats is None:
        return None
    out = {}
    for name, entry in stats.items():
        found = _LAYER.search(name)
        if found is None:
            out[name] = entry
        elif int(found.group(2)) in kept:
            out[name[:found.start(2)] + str(kept.index(int(found.group(2)))) + name[found.end(2):]] = entry
    return out



def _shared(stats: dict[str, InputStats]) -> dict[str, InputStats]:
    """One object for layers that saw identical inputs (Q, K, V), so their cached roots are computed once."""
    seen: list[InputStats] = []
    out = {}
    for name, entry in stats.items():
        twin = next((s for s in seen if s.tokens == entry.tokens and torch.equal(s.second_moment, entry.second_moment)),
                    None)
        if twin is None:
            seen.append(entry)
        out[name] = twin or entry
    return out
