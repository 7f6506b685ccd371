"""Factor shapes for the "paper" structure (presets and a target compression) and the per-layer budgets.

Among shapes of equal parameter count, FLOPs differ several-fold; the planner takes the cheapest shape
near the budget that is not a low-rank bottleneck.
"""

from __future__ import annotations

import functools
import math

from torch import nn

from .kron_config import KronConfig, PlanError
from .layer_roles import dense_shape
from .vocab import dropped_params, row_map_entries
from .kron_shape import KronShape


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@functools.lru_cache(maxsize=256)
def linear_candidates(m: int, n: int, rank: int = 1) -> list[KronShape]:
    """Every non-trivial split of an (m x n) weight; (1,1) and (m,n) are just a scaled dense matrix."""
    out = []
    for m1 in divisors(m):
        for n1 in divisors(n):
            if (m1, n1) in ((1, 1), (m, n)):
                continue
            shape = KronShape(m1, n1, m // m1, n // n1, rank)
            if rank <= min(m1 * n1, shape.m2 * shape.n2):
                out.append(shape)
    return out


def rank_capacity(shape: KronShape) -> int:
    """Largest rank the implied dense weight can have: rank(A ⊗ B) = rank(A) * rank(B)."""
    return min(shape.rank * min(shape.m1, shape.n1) * min(shape.m2, shape.n2),
               shape.out_features, shape.in_features)


def choose_linear_shape(m: int, n: int, budget: float, rank: int = 1, slack: float = 1.25,
                        min_rank_fraction: float = 1 / 2) -> KronShape:
    """The cheapest-to-run shape near ``budget`` parameters that is not a low-rank bottleneck.

    Equal parameter counts can differ several-fold in FLOPs (A 128x3 ⊗ B 6x256 vs A 32x32 ⊗ B 24x24),
    but the cheapest shapes are often degenerate (A 1 x n1 makes W rank <= n2, a plain low-rank
    map). So: shapes within ``slack`` of the budget whose rank capacity is at least
    ``min_rank_fraction`` of full rank, fewest multiply-adds
    first, then the larger capacity.
    """
    candidates = linear_candidates(m, n, rank)
    if not candidates:
        raise PlanError(f"a {m}x{n} weight has no Kronecker factorisation with rank {rank}")
    near = [c for c in candidates if budget / slack <= c.params <= budget * slack]
    if not near:
        return min(candidates, key=lambda c: (abs(math.log(c.params / budget)), -rank_capacity(c), c.macs))
    full = min(m, n)
    expressive = [c for c in near if rank_capacity(c) >= full * min_rank_fraction]
    if not expressive:
        return max(near, key=lambda c: (rank_capacity(c), -c.macs))
    return min(expressive, key=lambda c: (c.macs, -rank_capacity(c), abs(math.log(c.params / budget))))


def choose_embedding_k(dim: int, shrink: float) -> int:
    """The divisor k of the embedding width closest (in ratio) to the wanted shrink factor."""
    return min((k for k in divisors(dim) if k > 1), key=lambda k: abs(math.log(k / shrink)))


def embedding_shape(module: nn.Embedding, k: int, rank: int) -> KronShape:
    v, d = dense_shape(module)
    if d % k:
        raise PlanError(f"embedding width {d} is not divisible by k={k}: pass --embedding-k with one of "
                        f"{divisors(d)[1:]}, or --compression X instead of a preset")
    return KronShape(v, d // k, 1, k, rank)


def shapes_from_roles(roles, config: KronConfig, notes: list[str]) -> dict[str, KronShape] | None:
    """Apply a preset's per-role shapes, or return None when they do not fit this model."""
    if not config.role_shapes:
        return None
    shapes = {}
    for name, module, role in roles:
        if role == "embedding":
            shapes[name] = embedding_shape(module, config.embedding_k or 8, config.rank)
            continue
        shape = config.role_shapes.get(role)
        if shape is None or (shape.out_features, shape.in_features) != dense_shape(module):
            notes.append(f"preset {config.name}'s factor shapes are for BERT_BASE (hidden 768, FFN 3072) and do not "
                         f"fit {name} {dense_shape(module)}; planned for its compression {config.compression:.4g}x instead")
            return None
        shapes[name] = KronShape(shape.m1, shape.n1, shape.m2, shape.n2, config.rank)
    return shapes


def shapes_for_compression(roles, config: KronConfig, params_teacher: int, notes: list[str]) -> dict[str, KronShape]:
    """Shrink every selected matrix by one common factor c, searching c to hit the target."""
    target, _, kept = _budget(roles, config, params_teacher)

    linears = {dense_shape(m) for _, m, _ in roles if not isinstance(m, nn.Embedding)}
    embeddings = [(n, m) for n, m, _ in roles if isinstance(m, nn.Embedding)]
    widths = {m.embedding_dim for _, m in embeddings}
    if config.embedding_k is not None:
        k_options = [config.embedding_k]
    elif len(widths) == 1:
        k_options = [k for k in divisors(widths.pop()) if k > 1]
    else:
        k_options = [None]  # no embedding selected (or several widths): k follows the linears' factor

    def linear_shapes_at(c: float) -> dict[tuple[int, int], KronShape]:
        return {d: choose_linear_shape(*d, budget=d[0] * d[1] / c, rank=config.rank) for d in linears}

    def shapes_for(per_dense: dict, c: float, k: int | None) -> dict[str, KronShape]:
        out = {}
        for name, module, _ in roles:
            if isinstance(module, nn.Embedding):
                out[name] = embedding_shape(module, k or choose_embedding_k(module.embedding_dim, c), config.rank)
            else:
                out[name] = per_dense[dense_shape(module)]
        return out

    # The embedding table often dominates a small BERT (MiniLM: half the weights), so its k and the
    # linears' shrink c are searched jointly; among plans within 3% of the target, the one whose
    # k and c are closest (every matrix shrunk alike, as in the paper's presets) wins.
    best = None
    for step in range(200):
        c = 1.2 * (1.05 ** step)  # 1.2x .. ~20000x per matrix
        per_dense = linear_shapes_at(c)
        for k in k_options:
            shapes = shapes_for(per_dense, c, k)
            total = kept + sum(s.params for s in shapes.values())
            error = abs(math.log(total / target))
            balance = abs(math.log((k or c) / c))
            key = (max(error, math.log(1.03)), balance, error)
            if best is None or key < best[0]:
                best = (key, shapes, total)
    (_, _, error), shapes, total = best
    if error > math.log(1.10):
        got = params_teacher / total
        raise PlanError(f"cannot reach {config.compression}x with rank-{config.rank} Kronecker factors of these "
                        f"layers; the nearest plan gives {got:.2f}x. Ask for a compression near that.")
    return shapes


def uniform_budgets(roles, config: KronConfig, params_teacher: int) -> dict[str, int]:
    """Each selected matrix's parameters when all are shrunk by the one factor that meets the target; with
    ``config.embedding_share`` the word embeddings get that share of the budget and the others one shrink."""
    target, replaced, kept = _budget(roles, config, params_teacher)
    budget = target - kept
    embedding = {name for name, m, _ in roles if isinstance(m, nn.Embedding)}
    if config.embedding_share is None or not embedding or len(embedding) == len(roles):
        return {name: int(math.prod(dense_shape(m)) / (replaced / budget)) for name, m, _ in roles}
    embedding_params = sum(math.prod(dense_shape(m)) for name, m, _ in roles if name in embedding)
    shrink = {True: embedding_params / (budget * config.embedding_share),
              False: (replaced - embedding_params) / (budget * (1 - config.embedding_share))}
    return {name: int(math.prod(dense_shape(m)) / shrink[name in embedding]) for name, m, _ in roles}


def _budget(roles, config: KronConfig, params_teacher: int) -> tuple[float, int, int]:
    """(student params wanted, params of the selected matrices, params left dense); refuses an impossible target.

    A trimmed word embedding (kronedge.vocab) offers only its kept rows to the factors; the rows it dropped are
    gone, and its id -> row map counts as kept parameters."""
    target = params_teacher / config.compression
    replaced = sum(math.prod(dense_shape(m)) for _, m, _ in roles)
    kept = params_teacher - replaced - sum(dropped_params(m) - row_map_entries(m) for _, m, _ in roles)
    if kept >= target:
        raise PlanError(
            f"{config.compression}x needs <= {target / 1e6:.2f}M parameters, but the layers left dense "
            f"(pooler, position embeddings, LayerNorms, biases, head) already hold {kept / 1e6:.2f}M; "
            f"the most this selection allows is about {params_teacher / kept:.1f}x"
        )
    return target, replaced, kept
