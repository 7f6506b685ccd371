"""Kronecker-factored replacements for nn.Linear and nn.Embedding.

A dense weight W (m x n) is replaced by a sum of r Kronecker products
W ~= sum_r A_r (m1 x n1) ⊗ B_r (m2 x n2), with m = m1*m2 and n = n1*n2.

Row-major identity the forward relies on: if x (n,) is viewed as X (n1, n2), then
(A ⊗ B) x = vec(A @ X @ B^T). We never build W in forward; both products are written with the
constant factor as the right-hand MatMul operand, so that ONNX Runtime's dynamic quantizer
(MatMulConstBOnly) quantizes both halves of every Kronecker layer after export.
"""

from __future__ import annotations

import torch
from torch import nn

from .kron_shape import KronShape
from .vocab import ROW_DTYPE, ids_covered


def nearest_kronecker(weight: torch.Tensor, shape: KronShape) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-r sum of Kronecker products in Frobenius norm (Van Loan & Pitsianis, 1993).

    Rearranging W so that every (m2 x n2) block becomes one row turns W = sum A_r ⊗ B_r into the
    rank-r matrix sum vec(A_r) vec(B_r)^T; the truncated SVD of that rearrangement is optimal
    (Eckart-Young), and the squared error equals the sum of the discarded squared singular values.

    Args:
        weight: dense (m1*m2, n1*n2) matrix, e.g. ``nn.Linear.weight``.
        shape: the factor shapes and the number of Kronecker sums.

    Returns:
        A of shape (rank, m1, n1) and B of shape (rank, m2, n2), in ``weight``'s dtype.

    Example:
        >>> A, B = nearest_kronecker(torch.randn(6, 8), KronShape(2, 2, 3, 4))
    """
    m1, n1, m2, n2, rank = shape.as_list()
    assert weight.shape == (m1 * m2, n1 * n2), f"weight {tuple(weight.shape)} does not match {shape}"
    max_rank = min(m1 * n1, m2 * n2)
    if rank > max_rank:
        raise ValueError(f"rank {rank} exceeds the largest useful rank {max_rank} for {shape}")
    u, s, vh = torch.linalg.svd(_rearrange(weight, shape), full_matrices=False)
    root = s[:rank].sqrt()
    a = (u[:, :rank] * root).T.reshape(rank, m1, n1)
    b = (vh[:rank, :] * root[:, None]).reshape(rank, m2, n2)
    return a.to(weight.dtype).contiguous(), b.to(weight.dtype).contiguous()


def _rearrange(weight: torch.Tensor, shape: KronShape) -> torch.Tensor:
    """Van Loan's rearrangement R(W): row (i1, j1) holds the (m2 x n2) block W[i1 block, j1 block]."""
    m1, n1, m2, n2 = shape.m1, shape.n1, shape.m2, shape.n2
    w = weight.detach().to(torch.float64)
    return w.reshape(m1, m2, n1, n2).permute(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)


def kronecker_singular_values(weight: torch.Tensor, shape: KronShape) -> torch.Tensor:
    """Singular values of R(W): the squared tail beyond rank r is the nearest-Kronecker error."""
    return torch.linalg.svdvals(_rearrange(weight, shape))


def kron_dense(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Reference dense matrix sum_r kron(A_r, B_r); for tests and analysis, never for forward."""
    return sum(torch.kron(a[r], b[r]) for r in range(a.shape[0]))


class KroneckerLinear(nn.Module):
    """y = (sum_r A_r ⊗ B_r) x + bias, without ever forming the dense weight.

    Args:
        shape: factor shapes; ``in_features = n1*n2``, ``out_features = m1*m2``.
        bias: keep a dense bias (the paper leaves biases uncompressed).

    Example:
        >>> layer = KroneckerLinear.from_dense(nn.Linear(768, 3072), KronShape(16, 2, 192, 384))
        >>> layer(torch.randn(2, 5, 768)).shape
        torch.Size([2, 5, 3072])
    """

    def __init__(self, shape: KronShape, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.shape = shape
        self.in_features = shape.in_features
        self.out_features = shape.out_features
        factory = {"device": device, "dtype": dtype}
        self.a = nn.Parameter(torch.empty(shape.rank, shape.m1, shape.n1, **factory))
        self.b = nn.Parameter(torch.empty(shape.rank, shape.m2, shape.n2, **factory))
        self.bias = nn.Parameter(torch.zeros(self.out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Scale each factor so the implied dense weight has nn.Linear's default variance
        # (std ~ 1/sqrt(3n)): var(W) = rank * var(A) * var(B).
        std = (1.0 / (3 * self.in_features * self.shape.rank)) ** 0.25
        nn.init.normal_(self.a, std=std)
        nn.init.normal_(self.b, std=std)

    @classmethod
    def from_dense(cls, linear: nn.Linear, shape: KronShape) -> "KroneckerLinear":
        """Nearest-Kronecker initialisation from a dense nn.Linear (the bias is copied)."""
        if (linear.out_features, linear.in_features) != (shape.out_features, shape.in_features):
            raise ValueError(
                f"{shape} implies a {shape.out_features}x{shape.in_features} weight, "
                f"but the layer is {linear.out_features}x{linear.in_features}"
            )
        w = linear.weight
        layer = cls(shape, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
        a, b = nearest_kronecker(w, shape)
        with torch.no_grad():
            layer.a.copy_(a)
            layer.b.copy_(b)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def to_dense(self) -> torch.Tensor:
        """The implied dense weight (out_features, in_features); for tests and analysis only."""
        return kron_dense(self.a, self.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m1, n1, m2, n2, rank = self.shape.as_list()
        lead = x.shape[:-1]
        x = x.reshape(-1, n1, n2)  # (N, n1, n2)
        if self.shape.a_first:
            # A^T stacked over the rank: (n1, r*m1); B^T stacked: (r*n2, m2)
            a_t = self.a.permute(2, 0, 1).reshape(n1, rank * m1)
            b_t = self.b.permute(0, 2, 1).reshape(rank * n2, m2)
            y = x.transpose(1, 2) @ a_t  # (N, n2, r*m1)
            y = y.reshape(-1, n2, rank, m1).permute(0, 3, 2, 1)  # (N, m1, r, n2)
            y = y.reshape(-1, m1, rank * n2) @ b_t  # (N, m1, m2): sums over r and n2
        else:
            b_t = self.b.permute(2, 0, 1).reshape(n2, rank * m2)
            a_t = self.a.permute(0, 2, 1).reshape(rank * n1, m1)
            y = x @ b_t  # (N, n1, r*m2)
            y = y.reshape(-1, n1, rank, m2).permute(0, 3, 2, 1)  # (N, m2, r, n1)
            y = (y.reshape(-1, m2, rank * n1) @ a_t).transpose(1, 2)  # (N, m1, m2)
        y = y.reshape(*lead, m1 * m2)
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.shape}, bias={self.bias is not None}"


class KroneckerEmbedding(nn.Module):
    """The paper's embedding table X (v x d) ~= sum_r A_r (v x d/k) ⊗ B_r (1 x k).

    Each word vector is row i of A tensored with a k-vector shared by the whole vocabulary. The
    table is stored as (v, d/k, r) so a lookup is one Gather followed by a MatMul with the
    constant (r, k) factor on the right. Made from a :class:`kronedge.vocab.TrimmedEmbedding`, it keeps that
    table's rows only and reads each of the ``vocab_size`` ids through its ``row_of_id`` map (one more Gather).

    Example:
        >>> emb = KroneckerEmbedding.from_dense(nn.Embedding(100, 32), k=4)
        >>> emb(torch.tensor([[1, 2]])).shape
        torch.Size([1, 2, 32])
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, k: int, rank: int = 1,
                 padding_idx: int | None = None, device=None, dtype=None, vocab_size: int | None = None):
        super().__init__()
        if embedding_dim % k:
            raise ValueError(f"embedding dim {embedding_dim} is not divisible by k={k}; pick a divisor of it")
        self.num_embeddings = num_embeddings
        # A table of fewer rows than the vocabulary (kronedge.vocab) reads ids through a row map.
        row_of_id = None
        if vocab_size is not None and vocab_size != num_embeddings:
            row_of_id = torch.zeros(vocab_size, dtype=ROW_DTYPE, device=device)
        self.register_buffer("row_of_id", row_of_id)
        self.embedding_dim = embedding_dim
        self.k = k
        self.rank = rank
        self.padding_idx = padding_idx
        factory = {"device": device, "dtype": dtype}
        self.a = nn.Parameter(torch.empty(num_embeddings, embedding_dim // k, rank, **factory))
        self.b = nn.Parameter(torch.empty(rank, k, **factory))
        nn.init.normal_(self.a, std=(0.02 / rank ** 0.5) ** 0.5)
        nn.init.normal_(self.b, std=0.02 ** 0.5)

    @property
    def vocab_size(self) -> int:
        """The ids this table takes: its row map's length, or its rows."""
        return ids_covered(self)

    @property
    def shape(self) -> KronShape:
        return KronShape(self.num_embeddings, self.embedding_dim // self.k, 1, self.k, self.rank)

    @classmethod
    def from_dense(cls, embedding: nn.Embedding, k: int, rank: int = 1) -> "KroneckerEmbedding":
        """Nearest-Kronecker initialisation from a dense nn.Embedding."""
        v, d = embedding.weight.shape
        w = embedding.weight
        row_of_id = getattr(embedding, "row_of_id", None)  # a TrimmedEmbedding's
        layer = cls(v, d, k, rank, embedding.padding_idx, device=w.device, dtype=w.dtype,
                    vocab_size=None if row_of_id is None else row_of_id.numel())
        a, b = nearest_kronecker(w, layer.shape)  # (r, v, d/k), (r, 1, k)
        with torch.no_grad():
            layer.a.copy_(a.permute(1, 2, 0))
            layer.b.copy_(b[:, 0, :])
            if row_of_id is not None:
                layer.row_of_id.copy_(row_of_id)
        return layer

    def to_dense(self) -> torch.Tensor:
        """The implied (v, d) table; for tests and analysis only."""
        return kron_dense(self.a.permute(2, 0, 1), self.b[:, None, :])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.row_of_id is not None:
            input_ids = self.row_of_id[input_ids]
        rows = self.a[input_ids]  # (..., d/k, r)
        return (rows @ self.b).reshape(*input_ids.shape, self.embedding_dim)  # (..., d/k, k) -> (..., d)

    def extra_repr(self) -> str:
        rows = "" if self.row_of_id is None else f" (rows of {self.vocab_size} ids)"
        return (f"{self.num_embeddings}{rows}, {self.embedding_dim}, A {self.num_embeddings}x{self.embedding_dim // self.k}"
                f" ⊗ B 1x{self.k}, rank={self.rank}")
