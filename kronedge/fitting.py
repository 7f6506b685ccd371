"""Data-aware Kronecker fits: the nearest Kronecker product under the norm the layer's inputs induce.

A layer is judged by what it does to its inputs: ``||(W - W_hat) X||_F`` over activations X, i.e.
``||(W - W_hat) S||_F`` with S = C^(1/2) and C = X X^T the input second-moment matrix. When C is
itself a Kronecker product C1 ⊗ C2 (n1 x n1, n2 x n2), its root is S1 ⊗ S2 and
(A ⊗ B)(S1 ⊗ S2) = (A S1) ⊗ (B S2), so the weighted problem is the plain one for W S followed by
A = A' S1^-1, B = B' S2^-1: still closed-form. A general C is first approximated by its nearest
Kronecker product; the SVD corner (n1 = 1) needs no approximation, so there the fit is exact.

The word embeddings get no weighting (``kronedge.calibration`` records no statistics for them): their C, the
token frequencies, would spend a small budget's few ranks on the frequent tokens, which distillation trains
anyway, and blur the rare content words it barely reaches (``benchmarks/results/sst2_structures.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .layers import KronShape, _rearrange, nearest_kronecker

# Ridge added to every covariance, as a fraction of its mean eigenvalue: directions the calibration
# text never excites keep a plain-Frobenius pull instead of an unbounded inverse.
RIDGE = 1e-2
# Power-iteration steps for the Kronecker approximation of a covariance.
POWER_STEPS = 8
# Rearrangements whose smaller side is at most this are always scored by their Gram matrix's eigenvalues.
GRAM_LIMIT = 64


@dataclass
class InputStats:
    """What a linear layer's inputs look like: their second-moment matrix."""

    second_moment: torch.Tensor  # (n, n) float64, sum of x x^T over calibration tokens
    tokens: int = 0
    # square roots of the Kronecker-approximated covariance per input split, shared by every layer
    # fed the same statistics (Q, K and V see one input)
    roots: dict = field(default_factory=dict, repr=False, compare=False)
    # the same statistics of a held-out share of the texts (also counted above), when collected: a search
    # fits on the rest and checks its picks here
    heldout: InputStats | None = field(default=None, repr=False, compare=False)
    # some of the inputs themselves (tokens x n, float32), where a block's error needs them and not only their
    # moments (an FFN's, through its GELU: kronedge.neurons.searched_width)
    samples: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def without_heldout(self) -> InputStats:
        """The statistics of the texts that were not held out."""
        held = self.heldout
        return InputStats(second_moment=self.second_moment - held.second_moment, tokens=self.tokens - held.tokens)

    def covariance(self) -> torch.Tensor:
        assert self.tokens > 0, "no linear inputs were recorded"
        return self.second_moment / self.tokens


def _seeded_lowrank_svd(matrix: torch.Tensor, q: int):
    """Randomized SVD with a fixed seed, leaving the caller's RNG untouched (plans must be reproducible)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.svd_lowrank(matrix, q=q, niter=4)


def _ridged(c: torch.Tensor) -> torch.Tensor:
    c = (c + c.T) / 2
    return c + RIDGE * c.diagonal().mean().clamp_min(1e-12) * torch.eye(c.shape[0], dtype=c.dtype)


def _sqrt_and_inverse(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A root S with S S^T = C (its Cholesky factor) and S^-1.

    Any such S gives the same norm, ||M S||_F^2 = tr(M C M^T), so the cheap triangular factor serves
    as well as the symmetric root (an eigendecomposition, several times slower on a 1536-wide FFN input).
    """
    c = _ridged(c)
    root = torch.linalg.cholesky(c)
    eye = torch.eye(c.shape[0], dtype=c.dtype)
    return root, torch.linalg.solve_triangular(root, eye, upper=False)


def kronecker_covariance(c: torch.Tensor, n1: int, n2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest C1 (n1 x n1) ⊗ C2 (n2 x n2) to a PSD matrix C, both factors PSD.

    Van Loan & Pitsianis: for a symmetric positive definite C the rank-1 nearest Kronecker factors
    are themselves symmetric definite up to a common sign, fixed here by the trace.
    """
    assert c.shape == (n1 * n2, n1 * n2), f"covariance {tuple(c.shape)} does not split as {n1} x {n2}"
    if n1 == 1:
        return torch.ones(1, 1, dtype=c.dtype), c
    if n2 == 1:
        return c, torch.ones(1, 1, dtype=c.dtype)
    # Power iteration on the rearrangement R (n1^2 x n2^2) from the partial traces (c2 = I gives
    # c1 = Tr_2 C), which are already close for a covariance; each step is two matrix-vector products.
    rearranged = c.to(torch.float64).reshape(n1, n2, n1, n2).permute(0, 2, 1, 3).reshape(n1 * n1, n2 * n2)
    c2 = torch.eye(n2, dtype=torch.float64)
    for _ in range(POWER_STEPS):
        c1 = (rearranged @ c2.reshape(-1)).reshape(n1, n1) / (c2 * c2).sum()
        c2 = (rearranged.T @ c1.reshape(-1)).reshape(n2, n2) / (c1 * c1).sum()
    if torch.trace(c1) < 0:
        c1, c2 = -c1, -c2
    return (c1 + c1.T) / 2, (c2 + c2.T) / 2


class WeightedProblem:
    """One layer's weight and input statistics, with the square roots cached per input split.

    ``stats`` None (an embedding's, or without calibration) scores and fits by the plain Frobenius norm."""

    def __init__(self, weight: torch.Tensor, stats: InputStats | None):
        self.weight = weight.detach().to(torch.float64)
        self.stats = stats
        self._transformed: dict[tuple[int, int] | None, torch.Tensor] = {}
        self._energies: dict[tuple[int, int] | None, torch.Tensor] = {}

    @property
    def weighted(self) -> bool:
        return self.stats is not None

    def _split_roots(self, n1: int, n2: int):
        roots = self.stats.roots
        if (n1, n2) not in roots:
            c1, c2 = kronecker_covariance(self.stats.covariance(), n1, n2)
            roots[(n1, n2)] = (*_sqrt_and_inverse(c1), *_sqrt_and_inverse(c2))
        return roots[(n1, n2)]

    def transformed(self, shape: KronShape) -> torch.Tensor:
        """The matrix whose plain nearest Kronecker product solves the (approximately) weighted problem."""
        w = self.weight
        if not self.weighted:
            return w
        key = (shape.n1, shape.n2)  # W S depends only on how the input splits, not on m1
        if key not in self._transformed:
            s1, _, s2, _ = self._split_roots(shape.n1, shape.n2)
            m = w.shape[0]
            self._transformed[key] = torch.einsum("iab,ac,bd->icd", w.reshape(m, shape.n1, shape.n2), s1, s2).reshape(m, -1)
        return self._transformed[key]

    def _energy(self, shape: KronShape) -> torch.Tensor:
        """||W S||_F^2 for this input split (the rearrangement only permutes entries)."""
        key = (shape.n1, shape.n2) if self.weighted else None
        if key not in self._energies:
            self._energies[key] = (self.transformed(shape) ** 2).sum()
        return self._energies[key]

    def error_curve(self, shape: KronShape, max_rank: int) -> torch.Tensor:
        """Relative (weighted) squared error for ranks 1..max_rank of this factor shape, one decomposition."""
        r = _rearrange(self.transformed(shape), shape)
        energy = self._energy(shape)
        small = min(r.shape)
        if small > GRAM_LIMIT and 4 * (max_rank + 8) < small:
            # Only the top singular values matter: a randomized range finder is exact enough to rank
            # shapes and far cheaper than a full SVD of a balanced (sqrt(mn) x sqrt(mn)) rearrangement.
            _, s, _ = _seeded_lowrank_svd(r.to(torch.float32), max_rank + 8)
            s2 = s.to(torch.float64) ** 2
        else:
            # The squared singular values are the eigenvalues of the smaller Gram matrix, in float64:
            # exact, and far cheaper than an SVD of a tall rearrangement (the embedding's is 30522*d/k x k).
            gram = r.T @ r if r.shape[0] >= r.shape[1] else r @ r.T
            s2 = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0.0)
        kept = torch.cumsum(s2[:max_rank], 0)
        return ((energy - kept) / energy.clamp_min(1e-30)).clamp_min(0.0)

    def is_exact(self, shape: KronShape) -> bool:
        """Whether :meth:`error_curve` is the true weighted error (no Kronecker approximation of C)."""
        return not self.weighted or shape.n1 == 1 or shape.n2 == 1

    def fit(self, shape: KronShape) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors (rank, m1, n1), (rank, m2, n2) minimising the weighted error, in float64.

        The plain fit is kept when it scores better under the true statistics (possible where C is
        far from a Kronecker product), so the weighted fit never loses to the plain one.
        """
        plain = nearest_kronecker(self.weight, shape)
        if not self.weighted:
            return plain
        a, b = nearest_kronecker(self.transformed(shape), shape)
        _, s1_inv, _, s2_inv = self._split_roots(shape.n1, shape.n2)
        a = a @ s1_inv
        b = b @ s2_inv
        weighted = (a, b)
        return min((plain, weighted), key=lambda f: self.error(*f))

    def error(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Relative squared error of sum_r A_r ⊗ B_r under the true statistics (plain if none)."""
        if not self.weighted:
            return self.plain_error(a, b)
        diff = self.weight - _dense(a, b)
        c = self.stats.covariance()
        return float(torch.einsum("ij,jk,ik->", diff, c, diff) / torch.einsum("ij,jk,ik->", self.weight, c, self.weight))

    def plain_error(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((self.weight - _dense(a, b)) ** 2).sum() / (self.weight ** 2).sum())


def _dense(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_r A_r ⊗ B_r in one contraction (``kron_dense`` allocates one full matrix per term)."""
    r, m1, n1 = a.shape
    _, m2, n2 = b.shape
    return torch.einsum("rac,rbd->abcd", a.to(torch.float64), b.to(torch.float64)).reshape(m1 * m2, n1 * n2)
