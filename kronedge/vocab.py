"""A task's vocabulary: the student's word embedding keeps only the rows of the tokens its task uses.

The word embedding is half of MiniLM's embedding + encoder parameters, yet one task's text uses a fraction of
the vocabulary (SST-2's 67k training sentences use 11.6k of its 30,522 wordpieces). Fitted on the kept rows alone,
at the same parameter budget counted against the full teacher, every factorised matrix gets more rank. An id left
out reads the row of the kept token nearest to it in the teacher's embedding (taxes -> tax, trauma -> injuries), so a
word seen only at test time keeps most of its meaning. The id -> row map counts one parameter per id, and its int32
entries take 4 bytes each in the export.

    >>> KeptVocabulary.of_texts(tokenizer, train_texts).trim_(student)   # before kronize_
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from .errors import KronedgeError
from .layer_roles import layer_role

# What an id left out reads (TrimmedEmbedding.from_dense).
FALLBACKS = ("nearest", "unk")
# Row-map entries are stored as int32: ONNX Gather takes int32 indices, and half the bytes of int64.
ROW_DTYPE = torch.int32


class VocabularyError(KronedgeError):
    """A vocabulary to keep that cannot work (no [UNK] among it, ids outside the table, no word embedding)."""


class TrimmedEmbedding(nn.Embedding):
    """An ``nn.Embedding`` over the kept rows; ``row_of_id`` maps each of the ``vocab_size`` ids to its row.

    Example:
        >>> emb = TrimmedEmbedding.from_dense(nn.Embedding(100, 8), keep_ids=[0, 1, 5, 7], unk_id=1)
        >>> emb(torch.tensor([[5, 42]])).shape        # id 42 reads the row of 0, 5 or 7, whichever is nearest
        torch.Size([1, 2, 8])
    """

    def __init__(self, vocab_size: int, rows: int, embedding_dim: int, padding_idx: int | None = None,
                 device=None, dtype=None):
        super().__init__(rows, embedding_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self.register_buffer("row_of_id", torch.zeros(vocab_size, dtype=ROW_DTYPE, device=device))

    @classmethod
    def from_dense(cls, embedding: nn.Embedding, keep_ids: Sequence[int], unk_id: int,
                   fallback: str = "nearest", special_ids: Sequence[int] = ()) -> "TrimmedEmbedding":
        """The kept rows of ``embedding``; an id left out reads the row of ``fallback``: "nearest", the kept token
        (other than ``special_ids``) whose teacher embedding is closest in cosine, or "unk", the [UNK] row."""
        vocab, dim = embedding.weight.shape
        keep = torch.tensor(sorted(set(keep_ids)), dtype=torch.long)
        if keep.numel() == 0 or keep[0] < 0 or keep[-1] >= vocab:
            raise VocabularyError(f"token ids to keep must lie in [0, {vocab}); got {keep_ids[:5]}...")
        if unk_id not in set(keep.tolist()):
            raise VocabularyError(f"the [UNK] id {unk_id} must be kept: an id left out may read its row")
        if fallback not in FALLBACKS:
            raise VocabularyError(f"fallback must be one of {FALLBACKS}, not {fallback!r}")
        w = embedding.weight
        if w.is_meta:
            raise VocabularyError("trimming the vocabulary copies the teacher's rows: load its weights (not meta)")
        rows = torch.full((vocab,), -1, dtype=torch.long)
        rows[keep] = torch.arange(keep.numel())
        left_out = (rows < 0).nonzero().flatten()
        rows[left_out] = int(rows[unk_id])
        if fallback == "nearest":
            targets = keep[~torch.isin(keep, torch.tensor(list(special_ids) + [unk_id], dtype=torch.long))]
            if targets.numel():
                rows[left_out] = rows[targets[nearest_rows(w.detach(), left_out, targets).cpu()]]
        # a pad id left out would freeze the gradient of the row it reads, a real token's
        padding = None if embedding.padding_idx is None or embedding.padding_idx not in keep else int(
            rows[embedding.padding_idx])
        layer = cls(vocab, keep.numel(), dim, padding, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            layer.weight.copy_(w[keep.to(w.device)])
            layer.row_of_id.copy_(rows.to(ROW_DTYPE))
        return layer

    @property
    def vocab_size(self) -> int:
        return self.row_of_id.numel()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(self.row_of_id[input_ids])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings} of {self.vocab_size} rows, {self.embedding_dim}"


@dataclass(frozen=True)
class KeptVocabulary:
    """The token ids a student's word embedding keeps, and the id that every other one reads."""

    keep_ids: tuple[int, ...]
    unk_id: int
    special_ids: tuple[int, ...] = ()
    fallback: str = "nearest"

    def __post_init__(self):
        if self.fallback not in FALLBACKS:
            raise VocabularyError(f"fallback must be one of {FALLBACKS}, not {self.fallback!r}")

    @classmethod
    def of_texts(cls, tokenizer, texts: Iterable, max_length: int | None = None,
                 fallback: str = "nearest") -> "KeptVocabulary":
        """The tokens of ``texts`` (strings or (first, second) pairs) as ``tokenizer`` splits them, its special
        tokens, and its [UNK]."""
        if tokenizer.unk_token_id is None:
            raise VocabularyError("the tokenizer has no [UNK] token for the ids a trimmed vocabulary leaves out")
        return cls(tuple(task_vocabulary(tokenizer, texts, max_length)), tokenizer.unk_token_id,
                   tuple(tokenizer.all_special_ids), fallback)

    def trim_(self, model: nn.Module) -> TrimmedEmbedding:
        """Give ``model`` (a copy of the teacher, before ``kronize_``) the trimmed word embedding, in place."""
        return trim_vocabulary_(model, self.keep_ids, self.unk_id, self.fallback, self.special_ids)


def nearest_rows(weight: torch.Tensor, queries: torch.Tensor, targets: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """For each query row of ``weight``, the index into ``targets`` of the row closest in cosine."""
    unit = nn.functional.normalize(weight.float(), dim=1)
    queries, targets = queries.to(weight.device), targets.to(weight.device)
    candidates = unit[targets].T  # (d, T)
    return torch.cat([(unit[queries[i:i + chunk]] @ candidates).argmax(1) for i in range(0, queries.numel(), chunk)])


def task_vocabulary(tokenizer, texts: Iterable, max_length: int | None = None, chunk: int = 1024) -> list[int]:
    """Sorted ids of every token the tokenizer makes of ``texts`` (strings or (first, second) pairs), with all of
    its special tokens."""
    seen: set[int] = set(tokenizer.all_special_ids)
    texts = list(texts)
    kwargs = {"truncation": max_length is not None, "max_length": max_length}
    for start in range(0, len(texts), chunk):
        batch = texts[start:start + chunk]
        pairs = [t for t in batch if isinstance(t, (tuple, list))]
        singles = [t for t in batch if not isinstance(t, (tuple, list))]
        encoded = (tokenizer(singles, **kwargs)["input_ids"] if singles else []) + (
            tokenizer([p[0] for p in pairs], [p[1] for p in pairs], **kwargs)["input_ids"] if pairs else [])
        for ids in encoded:
            seen.update(ids)
    return sorted(seen)


def word_embedding_name(model: nn.Module) -> str:
    """The fully-qualified name of the model's word embedding (the one module in the "embedding" role)."""
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Embedding) and layer_role(name) == "embedding"]
    if len(names) != 1:
        raise VocabularyError(f"expected one word embedding (embeddings.word_embeddings), found {names or 'none'}")
    return names[0]


def trim_vocabulary_(model: nn.Module, keep_ids: Sequence[int], unk_id: int, fallback: str = "nearest",
                     special_ids: Sequence[int] = ()) -> TrimmedEmbedding:
    """Replace the model's word embedding by a :class:`TrimmedEmbedding` of the ``keep_ids`` rows, in place."""
    name = word_embedding_name(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    trimmed = TrimmedEmbedding.from_dense(getattr(parent, attr), keep_ids, unk_id, fallback, special_ids)
    setattr(parent, attr, trimmed)
    return trimmed


# The one test of "a trimmed table" (a TrimmedEmbedding, or the KroneckerEmbedding made from one): a row map.
def row_map_entries(module: nn.Module) -> int:
    """Entries of the id -> row map a module carries; 0 for a table that keeps every row."""
    rows = getattr(module, "row_of_id", None)
    return 0 if rows is None else rows.numel()


def ids_covered(embedding: nn.Module) -> int:
    """The ids an embedding takes: its vocabulary when it reads them through a row map, else its rows."""
    return row_map_entries(embedding) or embedding.num_embeddings


def dropped_params(module: nn.Module) -> int:
    """The teacher's parameters in the rows a trimmed table left out (0 for any other module)."""
    if not row_map_entries(module):
        return 0
    return (row_map_entries(module) - module.num_embeddings) * module.embedding_dim


def counted_params(model: nn.Module) -> int:
    """A model's parameters as the planner counts them: a trimmed table still counts the teacher's whole table."""
    return sum(p.numel() for p in model.parameters()) + sum(dropped_params(m) for m in model.modules())
