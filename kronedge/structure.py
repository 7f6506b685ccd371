"""Structure search: which sum of Kronecker products each layer gets under a parameter budget.

The family W ~= sum_r A_r (m1 x n1) ⊗ B_r (m2 x n2) holds both ends of the usual comparison: the
paper's shapes, and, with A (m x 1) and B (1 x n), a rank-r truncated SVD (the "SVD corner"). For
each layer every factor split and every number of terms that fits is scored by one SVD of its
rearrangement (the tail energy gives the error of every r at once), under the norm of the layer's
real inputs when calibration statistics are given. A Lagrangian then picks one candidate per layer:
minimise the summed relative error subject to the parameter budget, so parameters go where the
error falls most. "global" (the default) pools the budget per role (embedding, attention, ffn_up,
ffn_down) and keeps a role at the SVD corners when those start lower, so no layer type starts worse
than SVD; "across-roles" pools all layers (it may starve one role to feed another); "uniform" gives
each layer the same shrink.

Structures:
  paper   the planner's fixed shapes (KronConfig presets / fewest-FLOPs shapes), one term
  svd     the SVD corner at each layer's uniform budget
  search  the best candidate per layer, SVD corner and the paper's shapes included
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .fitting import InputStats, WeightedProblem
from .kron_shape import KronShape
from .layers import nearest_kronecker
from .shape_choice import divisors

STRUCTURES = ("paper", "search", "svd")
ALLOCATIONS = ("uniform", "global", "across-roles")
# A role leaves the SVD corners only when its searched start is this much lower on the calibration
# text: a smaller gain may not carry over to held-out text (benchmarks/results/structure_search.md).
GUARD_MARGIN = 0.03


@dataclass(frozen=True)
class Candidate:
    shape: KronShape
    error: float  # relative squared error (weighted when statistics are given)

    @property
    def params(self) -> int:
        return self.shape.params


def svd_corner(m: int, n: int, rank: int) -> KronShape:
    """A (m x 1) ⊗ B (1 x n) summed r times: exactly a rank-r factorisation of an (m x n) matrix."""
    return KronShape(m, 1, 1, n, max(1, min(rank, m, n)))


def equal_param_rank(params: int, m: int, n: int) -> int:
    """The largest rank whose (m + n) * r parameters fit ``params`` (at least 1), and no more than a dense (m x n)
    matrix holds: a budget above that (a trimmed vocabulary frees many rows) is left unspent, not doubled."""
    return max(1, min(params // (m + n), m * n // (m + n)))


def base_shapes(kind: str, m: int, n: int) -> list[KronShape]:
    """Every rank-1 factor split of an (m x n) weight; for an embedding, the (v x d/k) ⊗ (1 x k) ones.

    The split (1 x n) ⊗ (m x 1) is left out: it is the SVD corner (m x 1) ⊗ (1 x n) with its factors swapped, the
    same rank-r matrices at the same error, so keeping both would let float rounding choose between two
    orientations of one student, and the search then trains a different model from SVD's for no gain."""
    if kind == "embedding":
        return [KronShape(m, n // k, 1, k) for k in divisors(n) if k > 1]
    return [KronShape(m1, n1, m // m1, n // n1) for m1 in divisors(m) for n1 in divisors(n)
            if (m1, n1) not in ((1, 1), (m, n), (1, n))]


def per_token_macs(kind: str, shape: KronShape) -> int:
    return shape.n1 * shape.n2 * shape.rank if kind == "embedding" else shape.macs


def corner_macs(kind: str, m: int, n: int, params: int) -> int:
    """Multiply-adds per token of the SVD corner holding ``params`` parameters."""
    return per_token_macs(kind, svd_corner(m, n, equal_param_rank(params, m, n)))


def layer_candidates(problem: WeightedProblem, kind: str, max_params: int,
                     max_macs: int | None = None) -> list[Candidate]:
    """Every (split, rank) of one layer within ``max_params`` and ``max_macs`` per token, scored.

    Without a ceiling, a candidate may cost no more multiply-adds than the SVD corner of the same
    size: many-term balanced splits reach low errors only at dense-like FLOPs, which no edge user wants.
    """
    m, n = problem.weight.shape
    if max_macs is None:
        max_macs = corner_macs(kind, m, n, max_params)
    out = []
    for base in base_shapes(kind, m, n):
        per_term = base.m1 * base.n1 + base.m2 * base.n2
        top = min(max_params // per_term, base.m1 * base.n1, base.m2 * base.n2)
        if max_macs is not None:
            top = min(top, max_macs // max(1, per_token_macs(kind, base)))
        if top < 1:
            continue
        curve = problem.error_curve(base, top)
        for r in range(1, len(curve) + 1):
            out.append(Candidate(KronShape(base.m1, base.n1, base.m2, base.n2, r), float(curve[r - 1])))
    return out


def _pareto(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates no other beats on both params and error, fewest params first."""
    front, best = [], math.inf
    for c in sorted(candidates, key=lambda c: (c.params, c.error, c.shape.macs)):
        if c.error < best:
            front.append(c)
            best = c.error
    return front


def allocate(fronts: dict[str, list[Candidate]], budget: int) -> dict[str, Candidate]:
    """One candidate per layer minimising the summed error with total params <= ``budget``.

    Lagrangian relaxation: each layer takes argmin(error + lam * params); lam is bisected (in log
    space) to the smallest value whose picks fit the budget.
    """
    def pick(lam: float) -> dict[str, Candidate]:
        return {name: min(front, key=lambda c: (c.error + lam * c.params, c.params)) for name, front in fronts.items()}

    def cost(choice) -> int:
        return sum(c.params for c in choice.values())

    cheapest = {name: front[0] for name, front in fronts.items()}
    if cost(cheapest) > budget:
        raise ValueError(f"even the smallest structures need {cost(cheapest):,} parameters, over the budget {budget:,}")
    lo, hi = -30.0, 5.0  # log10 lam: lam = 1e5 always picks the cheapest
    for _ in range(60):
        mid = (lo + hi) / 2
        if cost(pick(10 ** mid)) <= budget:
            hi = mid
        else:
            lo = mid
    return pick(10 ** hi)


@dataclass
class LayerChoice:
    """What the search picked for one layer, with both starting errors of the fitted factors."""

    shape: KronShape
    error_plain: float  # ||W - W_hat||^2 / ||W||^2
    error_weighted: float | None  # ||(W - W_hat) X||^2 / ||W X||^2 on the calibration inputs

    def to_dict(self) -> dict:
        return {"error_plain": round(self.error_plain, 6),
                "error_weighted": None if self.error_weighted is None else round(self.error_weighted, 6)}


def search_structure(layers: list[tuple[str, str, torch.Tensor]], budgets: dict[str, int], allocation: str = "global",
                     stats: dict[str, InputStats] | None = None, max_macs: int | None = None,
                     progress=None, roles: dict[str, str] | None = None) -> dict[str, KronShape]:
    """Searched factor shapes for ``layers`` = [(name, kind, weight)] under per-layer ``budgets``.

    Args:
        budgets: each layer's uniform share of the parameter budget; "global" allocation may move
            parameters between the layers of one role, "across-roles" between any layers; both keep the sum.
        allocation: "global", "uniform" or "across-roles".
        stats: calibration statistics per layer name (``kronedge.calibration``); None scores by
            the plain Frobenius error.
        max_macs: optional ceiling on multiply-adds per token per layer.
        roles: each layer's role ('embedding', 'attention', ...); "global" pools budgets per role.
            Defaults to each layer's kind.
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    stats, heldout = _split_heldout(stats or {})
    roles = roles or {name: kind for name, kind, _ in layers}
    fronts, exact, problems, checks = {}, {}, {}, {}
    for name, kind, weight in layers:
        problem = problems[name] = WeightedProblem(weight, stats.get(name))
        if name in heldout:
            checks[name] = WeightedProblem(weight, heldout[name])
        cap = budgets[name] if allocation == "uniform" else 2 * budgets[name]
        found = layer_candidates(problem, kind, cap, max_macs)
        if not found:
            raise ValueError(f"{name}: no Kronecker structure fits {cap:,} parameters"
                             + (f" and {max_macs:,} multiply-adds per token" if max_macs else ""))
        fronts[name] = _pareto(found)
        exact[name] = _pareto([c for c in found if problem.is_exact(c.shape)])
        if progress is not None:
            progress(name)
    if allocation == "uniform":
        picks = {name: _pareto([c for c in front if c.params <= budgets[name]])[-1] for name, front in fronts.items()}
        return {name: _verified(problems[name], pick, exact[name], budgets[name]).shape for name, pick in picks.items()}
    pools = {"all": list(fronts)} if allocation == "across-roles" else _group(roles, fronts)
    shapes = {}
    for names in pools.values():
        picks = allocate({n: fronts[n] for n in names}, sum(budgets[n] for n in names))
        picks = {n: _verified(problems[n], pick, exact[n], pick.params) for n, pick in picks.items()}
        if allocation == "global":
            picks = _guarded(picks, {n: problems[n] for n in names}, exact, budgets, checks)
        shapes.update({n: pick.shape for n, pick in picks.items()})
    return shapes


def _group(roles: dict[str, str], names) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(roles[name], []).append(name)
    return groups


def _split_heldout(stats: dict[str, InputStats]) -> tuple[dict[str, InputStats], dict[str, InputStats]]:
    """(the statistics to fit on, those of the held-out texts): all of them and none when nothing was held out."""
    if not any(s.heldout is not None for s in stats.values()):
        return stats, {}
    fitted: dict[int, InputStats] = {}  # layers that share statistics (Q, K, V) keep sharing them
    for entry in stats.values():
        fitted.setdefault(id(entry), entry.without_heldout())
    return {n: fitted[id(s)] for n, s in stats.items()}, {n: s.heldout for n, s in stats.items()}


def _guarded(picks: dict[str, Candidate], problems: dict[str, WeightedProblem], exact: dict[str, list[Candidate]],
             budgets: dict[str, int], checks: dict[str, WeightedProblem]) -> dict[str, Candidate]:
    """One role's picks, or the exactly scored corner of every layer at its uniform budget unless the
    picks' summed true error is at least GUARD_MARGIN lower, no higher on the weights themselves (plain
    nearest-Kronecker fits) and, with held-out statistics in ``checks``, lower on the held-out texts too:
    the search never starts a role worse than SVD. A few hundred texts estimate a 1536-wide FFN input's
    covariance loosely, so a gain under it alone may be the estimate's noise."""
    fits: dict[tuple[str, KronShape], tuple] = {}  # each candidate is fitted once for all three checks

    def fit(name: str, shape: KronShape) -> tuple:
        if (name, shape) not in fits:
            fits[name, shape] = problems[name].fit(shape)
        return fits[name, shape]

    def true_error(name: str, c: Candidate) -> float:
        return c.error if problems[name].is_exact(c.shape) else problems[name].error(*fit(name, c.shape))

    def heldout_error(chosen: dict[str, Candidate]) -> float:
        return sum(checks[n].error(*fit(n, c.shape)) for n, c in chosen.items())

    def plain_error(chosen: dict[str, Candidate]) -> float:
        return sum(problems[n].plain_error(*nearest_kronecker(problems[n].weight, c.shape)) for n, c in chosen.items())

    corners = {}
    for name in picks:
        fitting = [c for c in exact[name] if c.params <= budgets[name]]
        if not fitting:
            return picks
        corners[name] = min(fitting, key=lambda c: c.error)
    searched = sum(true_error(n, c) for n, c in picks.items())
    if searched >= (1 - GUARD_MARGIN) * sum(c.error for c in corners.values()):
        return corners
    if all(n in checks for n in picks) and heldout_error(picks) >= heldout_error(corners):
        return corners
    if problems[next(iter(picks))].weighted and plain_error(picks) > plain_error(corners):
        return corners
    return picks


def _verified(problem: WeightedProblem, pick: Candidate, exact: list[Candidate], limit: int) -> Candidate:
    """The pick, unless an exactly-scored candidate (the SVD corner) of no more params beats its true error.

    A split's weighted score rests on a Kronecker approximation of the input covariance; the corner's
    is exact. Checking the pick's real error keeps the search from ever starting worse than SVD.
    """
    if problem.is_exact(pick.shape):
        return pick
    true_error = problem.error(*problem.fit(pick.shape))
    best_exact = min((c for c in exact if c.params <= limit), key=lambda c: c.error, default=None)
    return best_exact if best_exact is not None and best_exact.error < true_error else pick


def fit_report(name: str, weight: torch.Tensor, shape: KronShape,
               stats: dict[str, InputStats] | None) -> LayerChoice:
    """Both starting errors of the factors :class:`WeightedProblem` fits for ``shape``."""
    problem = WeightedProblem(weight, (stats or {}).get(name))
    a, b = problem.fit(shape)
    return LayerChoice(shape, problem.plain_error(a, b), problem.error(a, b) if problem.weighted else None)
