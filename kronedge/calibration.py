"""Calibration statistics: what each compressible layer of a teacher sees on real text.

For every selected nn.Linear the sum of x x^T over the tokens of a few hundred sentences (the
second-moment matrix that weights its reconstruction error), and for the word embeddings the token
counts. Sentences run one at a time, unpadded, so padding never enters the statistics.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .fitting import InputStats
from .layer_roles import FilterFn, default_filter

DEFAULT_CALIBRATION_TEXTS = 256


def calibration_texts(source: str | os.PathLike, limit: int = DEFAULT_CALIBRATION_TEXTS, seed: int = 0) -> list:
    """Texts for calibration: a GLUE task name (its train split), a corpus name, or a text file.

    Example:
        >>> texts = calibration_texts("sst2", limit=128)
    """
    from .data import TASKS, load_task
    from .data.corpus import load_corpus

    source = str(source)
    if source in TASKS:
        texts = load_task(source, split="train").texts
        step = max(1, len(texts) // limit)
        return texts[::step][:limit]
    if not Path(source).exists() and not source.startswith(("wikitext", "builtin:")):
        raise FileNotFoundError(f"calibration text {source!r} is neither a GLUE task, a built-in corpus nor a file")
    return load_corpus(source, limit=limit, seed=seed)


@torch.no_grad()
def collect_input_stats(model: nn.Module, tokenizer, texts: list, filter_fn: FilterFn | None = None,
                        max_length: int = 128) -> dict[str, InputStats]:
    """Input statistics of every layer ``filter_fn`` selects, from ``model``'s own forward passes.

    Args:
        model: the dense teacher (any head); it is run in eval mode and left unchanged.
        tokenizer: a transformers tokenizer for ``model``.
        texts: sentences, or (sentence, sentence) pairs.
    """
    filter_fn = filter_fn or default_filter
    stats: dict[str, InputStats] = {}
    handles = []

    def hook(name):
        def record(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            entry = stats[name]
            entry.second_moment += x.T @ x
            entry.tokens += x.shape[0]
        return record

    embeddings = []
    for name, module in model.named_modules():
        if not filter_fn(module, name):
            continue
        if isinstance(module, nn.Linear):
            stats[name] = InputStats(second_moment=torch.zeros(module.in_features, module.in_features, dtype=torch.float64))
            handles.append(module.register_forward_pre_hook(hook(name)))
        elif isinstance(module, nn.Embedding):
            stats[name] = InputStats(token_counts=torch.zeros(module.num_embeddings, dtype=torch.float64))
            embeddings.append(name)

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for text in texts:
            pair = tuple(text) if isinstance(text, (tuple, list)) else (text,)
            enc = tokenizer(*pair, truncation=True, max_length=max_length, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            model(**enc)
            for name in embeddings:
                stats[name].token_counts += torch.bincount(enc["input_ids"].reshape(-1).cpu(),
                                                           minlength=stats[name].token_counts.numel()).double()
                stats[name].tokens += enc["input_ids"].numel()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return _shared(stats)


def _shared(stats: dict[str, InputStats]) -> dict[str, InputStats]:
    """One object for layers that saw identical inputs (Q, K, V), so their cached roots are computed once."""
    seen: list[InputStats] = []
    out = {}
    for name, entry in stats.items():
        twin = next((s for s in seen if entry.second_moment is not None and s.second_moment is not None
                     and s.tokens == entry.tokens and torch.equal(s.second_moment, entry.second_moment)), None)
        if twin is None:
            seen.append(entry)
        out[name] = twin or entry
    return out
