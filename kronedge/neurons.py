"""The FFN as kept neurons: ``--ffn neurons`` keeps whole neurons of the teacher's FFN instead of factoring its maps.

At the FFN's share of the budget, the up map (d -> f) and the down map (f -> d) become up (d -> k) and down (k -> d)
over the k neurons that carry most of the layer's output on calibration text. Neuron j's score is
E[a_j^2] * ||W_down[:, j]||^2, a_j its activation; without calibration statistics E[a_j^2] is replaced by
||W_up[j]||^2. With statistics the kept down map is also refitted so that it rebuilds the whole layer's output over
the calibration activations (least squares, closed form from their second moments).

The FFN then stays a plain dense pair of ``intermediate_size = k``: it saves, loads and exports as any BERT does, and
the GELU runs on k values per token instead of f (the factored FFN's GELU runs on all f).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .kron_config import KronConfig, PlanError
from .vocab import counted_params

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


def neurons_for(model: nn.Module, config: KronConfig) -> int:
    """Neurons per layer that the factored FFN's budget at ``config`` pays for: its up and down budgets plus the up
    bias, over one neuron's 2d + 1 parameters (its up row and bias, its down column). The other layers then keep the
    budgets they would have had, so the two FFN forms compare at one size."""
    from .planner import layer_budgets

    budgets = layer_budgets(model, replace(config, ffn="factored"))
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


def narrower(model: nn.Module, config: KronConfig, stats: dict | None = None) -> KronConfig:
    """With ``config.ffn == "neurons"``: keep each FFN's best neurons (in place) and re-aim ``config`` so that the
    compression stays measured against the model as it was, as ``pipeline.shallower`` does for depth. A model
    narrowed already is left as it is (``kronize_`` narrows, and ``plan_teacher`` before planning)."""
    if config.ffn != "neurons" or config.layer_shapes or narrowed(model):
        return config
    before = counted_params(model)
    keep_neurons_(model, neurons_for(model, config), stats)
    if config.compression is None:
        return config
    # A preset's fixed shapes simply compress the narrower model further; its compression, the target only where
    # those shapes do not fit, is re-aimed like any other (as pipeline.shallower does)
    return replace(config, compression=config.compression * counted_params(model) / before)

