"""Truncated-SVD low-rank factorisation: the baseline KroneckerBERT is compared against.

Every layer the Kronecker plan replaces gets a rank-r product U V instead, with r chosen so that
the low-rank layer has (at most) the parameters of the Kronecker layer it stands in for: the two
students then have the same parameter count and differ only in the factorisation.
"""

from __future__ import annotations

import torch
from torch import nn

from .planner import FilterFn, KronConfig, Plan, plan_model


class LowRankLinear(nn.Module):
    """y = U (V x) + bias with U (out, r), V (r, in); initialised from the truncated SVD of W.

    Example:
        >>> layer = LowRankLinear.from_dense(nn.Linear(384, 1536), rank=48)
        >>> layer(torch.randn(2, 5, 384)).shape
        torch.Size([2, 5, 1536])
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"rank {rank} must be in [1, {min(in_features, out_features)}]")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        factory = {"device": device, "dtype": dtype}
        self.u = nn.Parameter(torch.randn(out_features, rank, **factory) * (1 / rank) ** 0.5)
        self.v = nn.Parameter(torch.randn(rank, in_features, **factory) * (1 / (3 * in_features)) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None

    @classmethod
    def from_dense(cls, linear: nn.Linear, rank: int) -> "LowRankLinear":
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, rank, linear.bias is not None, w.device, w.dtype)
        u, v = _svd_factors(w, rank)
        with torch.no_grad():
            layer.u.copy_(u)
            layer.v.copy_(v)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    @property
    def params(self) -> int:
        return self.rank * (self.in_features + self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x @ self.v.T) @ self.u.T  # (..., r) then (..., out)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.rank} -> {self.out_features}"


class LowRankEmbedding(nn.Module):
    """Embedding table X (v, d) ~= A (v, r) B (r, d), from the truncated SVD of X."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx=None, device=None, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rank, self.padding_idx = num_embeddings, embedding_dim, rank, padding_idx
        factory = {"device": device, "dtype": dtype}
        self.a = nn.Parameter(torch.randn(num_embeddings, rank, **factory) * 0.02**0.5)
        self.b = nn.Parameter(torch.randn(rank, embedding_dim, **factory) * 0.02**0.5)

    @classmethod
    def from_dense(cls, embedding: nn.Embedding, rank: int) -> "LowRankEmbedding":
        w = embedding.weight
        layer = cls(*w.shape, rank, embedding.padding_idx, w.device, w.dtype)
        a, b = _svd_factors(w, rank)
        with torch.no_grad():
            layer.a.copy_(a)
            layer.b.copy_(b)
        return layer

    @property
    def params(self) -> int:
        return self.rank * (self.num_embeddings + self.embedding_dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.a[input_ids] @ self.b  # (..., r) @ (r, d)


def _svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Split sqrt(s) between both factors so neither dominates the gradient scale.
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (root[:, None] * vh[:rank]).to(weight.dtype)


def equal_param_rank(plan_params: int, m: int, n: int) -> int:
    """The largest rank whose U V factors hold no more than ``plan_params`` (at least 1)."""
    return max(1, min(plan_params // (m + n), min(m, n)))


def lowrank_(model: nn.Module, config: KronConfig, filter_fn: FilterFn | None = None) -> Plan:
    """Replace the layers a Kronecker plan would replace by truncated-SVD factors of equal size, in place.

    Args:
        model: a transformers BERT model.
        config: the KronConfig whose plan fixes which layers and how many parameters each may keep.
        filter_fn: as for :func:`kronedge.surgery.kronize_`.

    Returns:
        The Kronecker plan that set the budgets (its ``params_student`` is an upper bound of the
        low-rank model's size; count the model's parameters for the exact figure).

    Example:
        >>> lowrank_(model, KronConfig(compression=5))
    """
    plan = plan_model(model, config, filter_fn)
    modules = dict(model.named_modules())
    for layer in plan.layers:
        parent_name, _, attr = layer.name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        dense = getattr(parent, attr)
        m, n = layer.dense_shape
        rank = equal_param_rank(layer.params_after, m, n)
        new = LowRankEmbedding.from_dense(dense, rank) if isinstance(dense, nn.Embedding) else LowRankLinear.from_dense(dense, rank)
        setattr(parent, attr, new)
    return plan
