"""Tokenised examples and length-bucketed, padded batches.

Batches of similar length are what make CPU training affordable: SST-2 sentences average 13
tokens, so padding every batch to 128 would spend ~90% of the compute on padding. transformers'
``LengthGroupedSampler`` groups the same way but always serves the longest batch first and keeps
each pool's batches in length order, and its padding collator needs the tokenizer in the loop; the
few lines here shuffle the batch order too, split an epoch across processes by index, and pad
plain token lists.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass
class Encoded:
    """Tokenised examples (unpadded), with optional labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def load_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=True)


def check_max_length(model_config, *encoded: Encoded) -> None:
    """Fail before training when a tokenised example is longer than the model's learned positions (a BERT reads
    at most ``max_position_embeddings`` tokens; a longer one stops training with a shape error)."""
    from .config import TrainingError

    positions = getattr(model_config, "max_position_embeddings", None)
    longest = max((n for enc in encoded for n in enc.lengths()), default=0)
    if positions is not None and longest > positions:
        raise TrainingError(f"--max-length lets {longest}-token examples through, but the teacher has {positions} "
                            f"positions; pass --max-length {positions} or less")


def encode(tokenizer, texts: list, labels: list | None = None, max_length: int = 128) -> Encoded:
    """Tokenise single sentences or (a, b) pairs without padding (batches pad themselves)."""
    if texts and isinstance(texts[0], tuple):
        a, b = [t[0] for t in texts], [t[1] for t in texts]
        enc = tokenizer(a, b, truncation=True, max_length=max_length)
    else:
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    token_types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return Encoded(enc["input_ids"], token_types, list(labels) if labels is not None else None)


def bucket_batches(lengths: list[int], batch_size: int, seed: int, shuffle: bool = True) -> list[list[int]]:
    """Batches of similar length in a seeded random order.

    Examples are shuffled, cut into pools of 50 batches, each pool sorted by length and cut into
    batches, then the batch order is shuffled: padding nearly vanishes while every epoch still
    sees a different mix.
    """
    order = list(range(len(lengths)))
    if not shuffle:
        order.sort(key=lambda i: lengths[i])
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(data: Encoded, index: list[int], device, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad one batch to its longest member."""
    width = max(len(data.input_ids[i]) for i in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(index), width), dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    for row, i in enumerate(index):
        n = len(data.input_ids[i])
        ids[row, :n] = torch.tensor(data.input_ids[i])
        types[row, :n] = torch.tensor(data.token_type_ids[i])
        mask[row, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if data.labels is not None:
        dtype = torch.float if isinstance(data.labels[0], float) else torch.long
        batch["labels"] = torch.tensor([data.labels[i] for i in index], dtype=dtype)
    return {k: _to_device(v, device) for k, v in batch.items()}


def _to_device(t: torch.Tensor, device) -> torch.Tensor:
    # A copy from pageable memory makes the host wait until the GPU has finished all queued work;
    # from pinned memory it is queued like a kernel, so the next batch is prepared while the GPU runs.
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
