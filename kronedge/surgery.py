"""Model surgery: replace selected dense layers by Kronecker layers, in place."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .fitting import InputStats, WeightedProblem
from .layers import KronShape, KroneckerEmbedding, KroneckerLinear
from .neurons import narrower
from .planner import FilterFn, KronConfig, Plan, PlanError, model_flops, plan_model
from .vocab import counted_params, ids_covered

# Which Kronecker layer replaces which dense layer (peft's layers_mapping).
_REPLACEMENTS: dict[type, type] = {nn.Linear: KroneckerLinear, nn.Embedding: KroneckerEmbedding}

# Key under which the chosen layout is stored in a transformers config (and so in config.json).
CONFIG_KEY = "kronecker_layout"


def _build(dense: nn.Module, shape: KronShape, init: str, stats: InputStats | None = None) -> nn.Module:
    # isinstance, not type(): a TrimmedEmbedding (kronedge.vocab) is an nn.Embedding
    new_type = next(new for old, new in _REPLACEMENTS.items() if isinstance(dense, old))
    if init == "nearest" and stats is not None:
        return _weighted_fit(dense, shape, stats)
    if new_type is KroneckerEmbedding:
        if init == "nearest":
            if shape.m1 != dense.num_embeddings:
                raise PlanError(f"embedding factors of {shape.m1} rows for a table of {dense.num_embeddings}: only a "
                                "saved trimmed layout (kronedge.vocab) is loaded with fewer rows")
            return KroneckerEmbedding.from_dense(dense, k=shape.n2, rank=shape.rank)
        w = dense.weight
        # shape.m1 rows under a vocabulary of more ids: a trimmed table (kronedge.vocab), loaded with its row map
        return KroneckerEmbedding(shape.m1, shape.n1 * shape.n2, shape.n2, shape.rank, dense.padding_idx,
                                  device=w.device, dtype=w.dtype, vocab_size=ids_covered(dense))
    if init == "nearest":
        return KroneckerLinear.from_dense(dense, shape)
    w = dense.weight
    return KroneckerLinear(shape, bias=dense.bias is not None, device=w.device, dtype=w.dtype)


def _weighted_fit(dense: nn.Linear, shape: KronShape, stats: InputStats) -> nn.Module:
    """The data-aware nearest Kronecker product (``kronedge.fitting``), in the layer's dtype."""
    a, b = WeightedProblem(dense.weight, stats).fit(shape)
    w = dense.weight
    with torch.no_grad():
        new = KroneckerLinear(shape, bias=dense.bias is not None, device=w.device, dtype=w.dtype)
        new.a.copy_(a)
        new.b.copy_(b)
        if dense.bias is not None:
            new.bias.copy_(dense.bias)
    return new


def kronize_(model: nn.Module, config: KronConfig, filter_fn: FilterFn | None = None,
             init: Literal["nearest", "random"] = "nearest", seq_len: int = 128,
             stats: dict[str, InputStats] | None = None, progress=None) -> Plan:
    """Replace the selected Linear/Embedding layers of ``model`` by Kronecker layers, in place.

    Args:
        model: a transformers BERT model (BertModel, BertForSequenceClassification, ...).
        config: what to compress and how hard (``KronConfig.kb21()``, ``KronConfig(compression=5)``); with
            ``ffn="neurons"`` each FFN first keeps its best neurons (``kronedge.neurons.narrower``).
        filter_fn: ``(module, fqn) -> bool`` choosing layers; the default is the paper's selection
            (word embeddings, Q/K/V/O, FFN up/down) and never touches the pooler or a task head.
        init: "nearest" initialises each factor pair from the dense weight by the nearest Kronecker
            product (SVD); "random" only allocates (used when loading saved weights).
        seq_len: sequence length for the plan's FLOP counts.
        stats: calibration statistics per layer (``kronedge.calibration.collect_input_stats``):
            the factors then minimise the error on the layers' real inputs, not ``||W - W_hat||``,
            and ``config.structure == "search"`` ranks its candidates the same way.
        progress: called with each layer name as the structure search finishes it.

    Returns:
        The :class:`Plan` that was applied.

    Example:
        >>> model = BertForSequenceClassification(BertConfig())
        >>> plan = kronize_(model, KronConfig.kb21())
        >>> round(plan.compression)
        21
    """
    before = counted_params(model), model_flops(model, seq_len)
    narrowing = narrower(model, config, stats)  # --ffn neurons: keep the FFNs' best neurons first
    config, stats = narrowing.config, narrowing.stats
    plan = plan_model(model, config, filter_fn, seq_len=seq_len, stats=stats, progress=progress, report_errors=False,
                      budgets=narrowing.budgets)
    plan.params_full, plan.flops_full = before
    modules = dict(model.named_modules())
    for layer in plan.layers:
        parent_name, _, attr = layer.name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        dense = getattr(parent, attr)
        setattr(parent, attr, _build(dense, layer.kron, init, (stats or {}).get(layer.name)))

    if hasattr(model, "config"):
        setattr(model.config, CONFIG_KEY, {l.name: {"kind": l.kind, "factors": l.kron.as_list()} for l in plan.layers})
    return plan


def layout_config(model_config) -> KronConfig | None:
    """The KronConfig recorded in a transformers config by :func:`kronize_`, or None if dense."""
    layout = getattr(model_config, CONFIG_KEY, None)
    if not layout:
        return None
    return KronConfig(layer_shapes={name: KronShape.from_list(entry["factors"]) for name, entry in layout.items()})


def keep_layers_(model: nn.Module, layers: int) -> list[int]:
    """Keep ``layers`` of the encoder's layers, uniformly spaced, in place; returns the teacher indices kept.

    Student layer j is the teacher's layer ``(j + 1) * L // layers - 1`` (the last of each group, as
    TinyBERT maps layers), the same map ``DistillConfig(layer_map="uniform")`` distils against, so
    every kept layer starts as the very teacher layer it is later taught to imitate.

    Example:
        >>> keep_layers_(model, 3)   # 6-layer MiniLM -> teacher layers [1, 3, 5]
    """
    from .distill import bert_of, layer_mapping

    encoder = bert_of(model).encoder
    total = len(encoder.layer)
    if not 1 <= layers <= total:
        raise PlanError(f"--layers must be between 1 and the teacher's {total} layers, got {layers}")
    kept = layer_mapping(layers, total, "uniform")
    encoder.layer = nn.ModuleList(encoder.layer[i] for i in kept)
    if hasattr(model, "config"):
        model.config.num_hidden_layers = layers
    return kept
