"""The FFN as kept neurons: ``--ffn neurons`` keeps whole neurons of the teacher's FFN instead of factoring its maps.

At the FFN's share of the budget, the up map (d -> f) and the down map (f -> d) become up (d -> k) and down (k -> d)
over the k neurons that carry most of the layer's output on calibration text. Neuron j's score is
E[a_j^2] * ||W_down[:, j]||^2, a_j its activation; without calibration statistics E[a_j^2] is replaced by
||W_up[j]||^2. With statistics the kept down map is also refitted so that it rebuilds the whole layer's output over
the calibration activations (least squares, closed form from their second moments).

The FFN then stays a plain dense pair of ``intermediate_size = k``: it saves, loads and exports as any BERT does, and
the GELU runs on k values per token instead of f (the factored FFN's GELU runs on all f).

A wider FFN (``KronConfig.ffn_width`` K > k) keeps K neurons and factors its two maps, with the structure, at the
budgets the factored FFN would have had: fewer neurons than f, each approximated, instead of k exact ones. Which is
better depends on the budget, so with held-out calibration text the width is searched (``searched_width``;
``benchmarks/results/ffn_width.md``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
from torch import nn

from .fitting import InputStats
from .kron_config import DENSE_WIDTH, KronConfig, PlanError
from .vocab import counted_params

logger = logging.getLogger(__name__)

FFN_FORMS = ("factored", "neurons")
# On a narrowed model's config (saved with it): {"kept": k, "of": the teacher's intermediate size}.
NARROWED_KEY = "kronedge_ffn_neurons"
# Relative ridge of the down map's refit: the second moments of a few hundred texts are near-singular.
REFIT_RIDGE = 1e-4


def ffn_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every BERT encoder layer of ``model``: those with ``intermediate.dense`` and ``output.dense``."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(getattr(getattr(module, "intermediate", None), "dense", None), nn.Linear)
            and isinstance(getattr(getattr(module, "output", None), "dense", None), nn.Linear)]


def _prefixed(layer: str, leaf: str) -> str:
    return f"{layer}.{leaf}" if layer else leaf


def neuron_scores(up: nn.Linear, down: nn.Linear, stats=None) -> torch.Tensor:
    """Each neuron's share of the FFN's output: E[a_j^2] * ||W_down[:, j]||^2 (``stats``: the down map's inputs)."""
    w_down = down.weight.detach().to(torch.float64)
    if stats is not None:
        activation = torch.diagonal(stats.covariance())
    else:
        activation = (up.weight.detach().to(torch.float64) ** 2).sum(1)
    return activation * (w_down ** 2).sum(0)


def refit_down(weight: torch.Tensor, kept: torch.Tensor, stats) -> torch.Tensor:
    """The (d x k) down map over the kept neurons that best rebuilds ``weight`` (d x f) applied to all neurons:
    argmin_W' sum ||weight a - W' a_kept||^2 over the calibration activations a, i.e. W' = W C[:, S] C[S, S]^-1."""
    c = stats.covariance()
    c_kk = c[kept][:, kept]
    ridge = REFIT_RIDGE * torch.diagonal(c_kk).mean() * torch.eye(len(kept), dtype=c.dtype)
    w = weight.detach().to(torch.float64)
    return torch.linalg.solve(c_kk + ridge, (w @ c[:, kept]).T).T


def keep_neurons_(model: nn.Module, k: int, stats: dict | None = None) -> dict[str, list[int]]:
    """Keep the ``k`` best neurons of every FFN of ``model``, in place; returns the kept indices per down map.

    Args:
        k: neurons per layer (one ``intermediate_size``, so the model still loads from its config).
        stats: calibration statistics (``kronedge.calibration.collect_input_stats``) by layer name; the down
            map's own give the scores and the refit. Layers without them use the weight-only score.

    Example:
        >>> kept = keep_neurons_(model, 48)   # every FFN 384 -> 48 -> 384
    """
    layers = ffn_layers(model)
    if not layers:
        raise PlanError("--ffn neurons needs BERT encoder layers (intermediate.dense and output.dense); found none")
    teacher_width = layers[0][1].intermediate.dense.out_features
    kept_all = {}
    for layer_name, layer in layers:
        name, up, down = _prefixed(layer_name, "output.dense"), layer.intermediate.dense, layer.output.dense
        if not 1 <= k <= up.out_features:
            raise PlanError(f"{name}: cannot keep {k} of {up.out_features} FFN neurons")
        meta = up.weight.is_meta
        entry = None if stats is None or meta else stats.get(name)
        if entry is not None and entry.second_moment.shape[0] != up.out_features:
            entry = None  # statistics of another width (an already narrowed layer)
        kept = torch.arange(k) if meta else torch.sort(torch.topk(neuron_scores(up, down, entry), k).indices).values
        factory = {"device": up.weight.device, "dtype": up.weight.dtype}
        new_up = nn.Linear(up.in_features, k, bias=up.bias is not None, **factory)
        new_down = nn.Linear(k, down.out_features, bias=down.bias is not None, **factory)
        if not meta:
            with torch.no_grad():
                new_up.weight.copy_(up.weight[kept])
                if up.bias is not None:
                    new_up.bias.copy_(up.bias[kept])
                w = down.weight[:, kept] if entry is None else refit_down(down.weight, kept, entry)
                new_down.weight.copy_(w)
                if down.bias is not None:
                    new_down.bias.copy_(down.bias)
        layer.intermediate.dense, layer.output.dense = new_up, new_down
        kept_all[name] = kept.tolist()
    if hasattr(model, "config"):
        model.config.intermediate_size = k
        of = (getattr(model.config, NARROWED_KEY, None) or {}).get("of", teacher_width)
        setattr(model.config, NARROWED_KEY, {"kept": k, "of": of})
    return kept_all


def narrowed(model: nn.Module) -> dict | None:
    """{"kept", "of"} when ``keep_neurons_`` narrowed ``model``'s FFNs, else None."""
    return getattr(getattr(model, "config", None), NARROWED_KEY, None)


def factored_budgets(model: nn.Module, config: KronConfig) -> dict[str, int]:
    """Every selected layer's budget in the plan of ``config`` with the FFN factored at full width: what the kept
    neurons' FFN spends, and what every other layer keeps; with ``config.ffn_to_embedding`` that share of each FFN
    map's budget moves to the word embedding."""
    from .layer_roles import layer_role
    from .planner import layer_budgets

    budgets = layer_budgets(model, replace(config, ffn=None, ffn_width=None, ffn_to_embedding=None))
    share = config.ffn_to_embedding
    if not share:
        return budgets
    embedding = next((n for n in budgets if layer_role(n) == "embedding"), None)  # a BERT has one
    if embedding is None:
        raise PlanError("ffn_to_embedding moves FFN budget to the word embedding, which the filter did not select")
    for n in [n for n in budgets if layer_role(n) in ("ffn_up", "ffn_down")]:
        moved = int(budgets[n] * share)
        budgets[n] -= moved
        budgets[embedding] += moved
    return budgets


def neurons_for(model: nn.Module, config: KronConfig, budgets: dict[str, int] | None = None) -> int:
    """Neurons per layer that the factored FFN's budget at ``config`` pays for (``budgets``: ``factored_budgets``,
    computed when not given): its up and down budgets plus the up bias, over one neuron's 2d + 1 parameters (its up
    row and bias, its down column). The other layers then keep the budgets they would have had, so the two FFN forms
    compare at one size."""
    budgets = budgets or factored_budgets(model, config)
    counts = []
    for layer_name, layer in ffn_layers(model):
        up, down = layer.intermediate.dense, layer.output.dense
        names = [_prefixed(layer_name, leaf) for leaf in ("intermediate.dense", "output.dense")]
        if any(n not in budgets for n in names):
            raise PlanError(f"--ffn neurons budgets each FFN from its factored plan, but {layer_name} is not selected")
        spent = sum(budgets[n] for n in names) + up.out_features
        counts.append(min(up.out_features, spent // (up.in_features + down.out_features + 1)))
    k = min(counts)
    if k < 1:
        raise PlanError(f"{config.compression}x leaves the FFN no whole neuron; ask for less compression or --ffn factored")
    return k


# The widths a search tries, as shares of the teacher's intermediate size (those above the dense count k).
WIDTH_SHARES = (1 / 16, 1 / 12, 1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 1)


def _wide_maps(layer: nn.Module, name: str, width: int, budgets: dict[str, int], fit_stats: dict) -> tuple:
    """The kept neurons' (up weight, up bias, down weight) of one FFN as ``narrower`` would build them: the best
    ``width`` neurons, the down map refitted, both maps the weighted SVD corners of their budgets (dense for the
    dense count)."""
    from .fitting import WeightedProblem, _dense
    from .structure import equal_param_rank, svd_corner

    up, down = layer.intermediate.dense, layer.output.dense
    up_name, down_name = _prefixed(name, "intermediate.dense"), _prefixed(name, "output.dense")
    acts = fit_stats[down_name]
    kept = torch.sort(torch.topk(neuron_scores(up, down, acts), width).indices).values
    w_up, b_up = up.weight.detach().to(torch.float64)[kept], _bias(up)[kept]
    w_down = refit_down(down.weight, kept, acts)
    if up_name in budgets:  # factored at the factored FFN's budgets
        pairs = ((w_up, fit_stats[up_name], budgets[up_name]), (w_down, _cut(acts, kept), budgets[down_name]))
        w_up, w_down = (_dense(*WeightedProblem(w, st).fit(svd_corner(*w.shape, equal_param_rank(b, *w.shape))))
                        for w, st, b in pairs)
    return w_up, b_up, w_down


def _bias(linear: nn.Linear) -> torch.Tensor:
    if linear.bias is None:
        return torch.zeros(linear.out_features, dtype=torch.float64)
    return linear.bias.detach().to(torch.float64)


def _ffn(layer: nn.Module, maps: tuple, x: torch.Tensor) -> torch.Tensor:
    """The FFN of ``layer`` (its activation) with the (up weight, up bias, down weight) ``maps``, on ``x``, float64
    and without the down bias."""
    w_up, b_up, w_down = maps
    return layer.intermediate.intermediate_act_fn(x.to(torch.float64) @ w_up.T + b_up) @ w_down.T


def _own_maps(layer: nn.Module) -> tuple:
    up, down = layer.intermediate.dense, layer.output.dense
    return up.weight.detach().to(torch.float64), _bias(up), down.weight.detach().to(torch.float64)


@torch.no_grad()
def block_error(layer: nn.Module, maps: tuple, x: torch.Tensor, target: torch.Tensor | None = None) -> float:
    """Relative squared error of an FFN rebuilt from ``maps`` on inputs ``x``, against the layer's own output
    ``target`` (computed when not given) over that output's spread around its mean."""
    target = _ffn(layer, _own_maps(layer), x) if target is None else target
    rebuilt = _ffn(layer, maps, x)
    return float(((target - rebuilt) ** 2).sum() / ((target - target.mean(0)) ** 2).sum().clamp_min(1e-30))


@torch.no_grad()
def width_errors(model: nn.Module, config: KronConfig, stats: dict | None, k: int,
                 budgets: dict[str, int] | None = None) -> dict[int, float] | None:
    """Mean relative error of the FFNs on the held-out calibration tokens (fitted on the other texts) per width a
    search tries: the dense count ``k`` and the ``WIDTH_SHARES`` of the teacher's intermediate size above it. None
    without held-out FFN inputs (``calibration.collect_input_stats`` keeps them where ``holdout_for`` holds texts
    out); ``budgets``: ``factored_budgets``, computed when not given."""
    layers = ffn_layers(model)
    ups = [(stats or {}).get(_prefixed(name, "intermediate.dense")) for name, _ in layers]
    if any(entry is None or entry.heldout is None or entry.heldout.samples is None for entry in ups):
        return None
    budgets = budgets or factored_budgets(model, config)
    f = layers[0][1].intermediate.dense.out_features
    widths = [k, *sorted({round(share * f) for share in WIDTH_SHARES if round(share * f) > k})]
    errors = dict.fromkeys(widths, 0.0)
    for (name, layer), entry in zip(layers, ups):  # one layer's fitted statistics at a time (BERT_BASE's: 0.9 GB)
        names = [_prefixed(name, leaf) for leaf in ("intermediate.dense", "output.dense")]
        fit_stats = {n: stats[n].without_heldout() if stats[n].heldout is not None else stats[n] for n in names}
        x = entry.heldout.samples
        target = _ffn(layer, _own_maps(layer), x)
        for width in widths:
            maps = _wide_maps(layer, name, width, budgets if width > k else {}, fit_stats)
            errors[width] += block_error(layer, maps, x, target) / len(layers)
    return errors


def pick_width(errors: dict[int, float], k: int) -> int:
    """The width of ``errors`` with the least error, where it starts at least ``structure.GUARD_MARGIN`` lower than
    the dense count ``k`` (as a searched role must against the SVD corners); else ``k``."""
    from .structure import GUARD_MARGIN

    best = min(errors, key=errors.get)
    return best if errors[best] < (1 - GUARD_MARGIN) * errors[k] else k


def searched_width(model: nn.Module, config: KronConfig, stats: dict | None, k: int,
                   budgets: dict[str, int] | None = None) -> int:
    """The FFN width to keep (``pick_width`` of ``width_errors``); ``k`` without held-out FFN inputs."""
    errors = width_errors(model, config, stats, k, budgets)
    if errors is None:
        return k
    width = pick_width(errors, k)
    logger.info("[plan] FFN width search, mean held-out error per kept-neuron count (%d: dense): %s; keeping %d",
                k, ", ".join(f"{w}: {e:.4f}" for w, e in errors.items()), width)
    return width


@dataclass
class Narrowing:
    """What ``narrower`` leaves for planning: the re-aimed config, the statistics under the kept neurons, and, for an
    FFN kept wider than its budget pays for densely, every selected layer's budget as planned before narrowing."""

    config: KronConfig
    stats: dict | None = None
    budgets: dict[str, int] | None = None


def kept_stats(stats: dict | None, kept: dict[str, list[int]]) -> dict | None:
    """``stats`` with each narrowed down map's entry cut to its kept neurons (their activations' second moments),
    so that a factored down map over K neurons is fitted under the norm of its own inputs."""
    if stats is None:
        return None
    out = dict(stats)
    for name, idx in kept.items():
        entry = stats.get(name)
        if entry is not None and entry.second_moment.shape[0] > len(idx):
            out[name] = _cut(entry, torch.tensor(idx))
    return out


def _cut(entry: InputStats, idx: torch.Tensor) -> InputStats:
    """``entry``'s statistics of the inputs ``idx`` alone (and of its held-out share)."""
    out = InputStats(second_moment=entry.second_moment[idx][:, idx], tokens=entry.tokens)
    if entry.heldout is not None:
        out.heldout = _cut(entry.heldout, idx)
    return out


def narrower(model: nn.Module, config: KronConfig, stats: dict | None = None) -> Narrowing:
    """With ``config.ffn == "neurons"``: keep each FFN's best neurons (in place) and re-aim ``config`` so that the
    compression stays measured against the model as it was, as ``pipeline.shallower`` does for depth. A model
    narrowed already is left as it is (``kronize_`` narrows, and ``plan_teacher`` before planning).

    With ``config.ffn_width`` above the dense count k (or, when it is None, a width ``searched_width`` picks for
    the "svd" and "search" structures), that many neurons are kept and ``budgets`` holds every selected layer's
    budget of the factored plan, so the wider FFN's two maps spend what the factored FFN would have, and every
    other layer keeps its own."""
    if config.ffn != "neurons" or config.layer_shapes or narrowed(model):
        return Narrowing(config, stats)
    before = counted_params(model)
    factored = factored_budgets(model, config)
    k = neurons_for(model, config, factored)
    if config.wide_ffn:
        width = config.ffn_width
    elif config.ffn_width == DENSE_WIDTH or config.structure == "paper":
        width = k
    else:
        width = searched_width(model, config, stats, k, factored)
    if width < k:
        raise PlanError(f"--ffn-width {width} keeps fewer neurons than the {k} the FFN's budget holds densely: "
                        f"give at least {k}, or leave --ffn-width out")
    budgets = factored if config.ffn_to_embedding else None  # else the layers left share the budget alike
    if width == k:
        config = replace(config, ffn_width=None)  # k neurons are the dense FFN
    else:
        config = replace(config, ffn_width=width)  # the searched width, recorded with the plan
        budgets = factored
    kept = keep_neurons_(model, width, stats)
    stats = kept_stats(stats, kept) if budgets is not None else stats
    if config.compression is None:
        return Narrowing(config, stats, budgets)
    # A preset's fixed shapes simply compress the narrower model further; its compression, the target only where
    # those shapes do not fit, is re-aimed like any other (as pipeline.shallower does)
    return Narrowing(replace(config, compression=config.compression * counted_params(model) / before), stats, budgets)
