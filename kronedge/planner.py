"""Plan the compression of a BERT model: which layers, which Kronecker factor shapes, params and FLOPs.

The planner works on module names and dense shapes only, so it runs on a model built on the
``meta`` device (no weights, no memory): planning BERT_LARGE takes well under a second. The parts:
``kron_config`` (what to ask for), ``layer_roles`` (which layers), ``shape_choice`` (the paper's
shapes), ``structure`` (the SVD corner and the search); this module puts them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .kron_config import KronConfig, NoMatchingLayersError, PlanError
from .layer_roles import (FilterFn, attention_core_macs, default_filter, dense_shape, layer_role, roles_of, targets,
                          tokens_per_sequence)
from .kron_shape import KronShape
from .neurons import narrowed
from .vocab import counted_params, ids_covered
from .shape_choice import (choose_embedding_k, choose_linear_shape, linear_candidates, rank_capacity,
                           shapes_for_compression, shapes_from_roles, uniform_budgets)

__all__ = ["FilterFn", "KronConfig", "LayerPlan", "NoMatchingLayersError", "Plan", "PlanError", "choose_embedding_k",
           "choose_linear_shape", "default_filter", "layer_role", "linear_candidates", "plan_model", "rank_capacity"]


@dataclass
class LayerPlan:
    name: str
    role: str
    kind: str  # "linear" | "embedding"
    dense_shape: tuple[int, int]  # (out, in) for a linear, (vocab, dim) for an embedding
    kron: KronShape
    tokens: int  # vectors this layer sees per sequence (for FLOPs)
    errors: dict | None = None  # starting errors of the fitted factors, when the weights were at hand
    # An embedding that keeps fewer rows than its vocabulary (kronedge.vocab): the ids its row map covers.
    # The teacher's whole table counts before, the map's entries after.
    row_map: int = 0

    @property
    def params_before(self) -> int:
        return (self.row_map or self.dense_shape[0]) * self.dense_shape[1]

    @property
    def params_after(self) -> int:
        return self.kron.params + self.row_map

    @property
    def macs_before(self) -> int:
        return 0 if self.kind == "embedding" else self.params_before * self.tokens

    @property
    def macs_after(self) -> int:
        # An embedding row costs one (d/k x r) @ (r x k) product per token.
        per_token = self.kron.n1 * self.kron.n2 * self.kron.rank if self.kind == "embedding" else self.kron.macs
        return per_token * self.tokens

    def to_dict(self) -> dict:
        return {
            "name": self.name, "role": self.role, "kind": self.kind,
            "dense_shape": list(self.dense_shape), "factors": self.kron.as_list(),
            "a_shape": [self.kron.m1, self.kron.n1], "b_shape": [self.kron.m2, self.kron.n2], "rank": self.kron.rank,
            "params_before": self.params_before, "params_after": self.params_after,
            "flops_before": 2 * self.macs_before, "flops_after": 2 * self.macs_after,
            "structure": "svd" if (self.kron.n1, self.kron.m2) == (1, 1) else "kronecker",
            **({"row_map": self.row_map} if self.row_map else {}),
            **({"errors": self.errors} if self.errors is not None else {}),
        }


@dataclass
class Plan:
    """Every layer to replace, with its factor shapes, and the model-level totals."""

    layers: list[LayerPlan]
    params_teacher: int
    flops_teacher: int
    flops_dense_rest: int  # FLOPs of everything not replaced (attention core, pooler, ...)
    seq_len: int
    config: KronConfig
    notes: list[str] = field(default_factory=list)
    # the teacher's params and FLOPs before --layers or --ffn neurons dropped some (the *_teacher fields count what
    # was left)
    params_full: int | None = None
    flops_full: int | None = None

    @property
    def params_student(self) -> int:
        return self.params_teacher - sum(l.params_before - l.params_after for l in self.layers)

    @property
    def compression(self) -> float:
        return self.params_teacher / self.params_student

    @property
    def compression_full(self) -> float:
        """Against the whole teacher: the figure a user compares."""
        return (self.params_full or self.params_teacher) / self.params_student

    @property
    def target_full(self) -> float | None:
        """The target against the whole teacher: the one the user gave (a narrower or shallower teacher's config
        is re-aimed at the params it kept)."""
        if self.config.compression is None:
            return None
        return self.config.compression * (self.params_full or self.params_teacher) / self.params_teacher

    @property
    def flops_student(self) -> int:
        return self.flops_dense_rest + sum(2 * l.macs_after for l in self.layers)

    @property
    def layer_shapes(self) -> dict[str, KronShape]:
        return {l.name: l.kron for l in self.layers}

    def to_dict(self) -> dict:
        return {
            "preset": self.config.name,
            "structure": self.config.structure,
            "target_compression": self.config.compression,
            "params_teacher": self.params_teacher,
            "params_student": self.params_student,
            "compression": round(self.compression, 3),
            "params_full_teacher": self.params_full or self.params_teacher,
            "target_compression_full_teacher": self.target_full and round(self.target_full, 3),
            "compression_full_teacher": round(self.compression_full, 3),
            "flops_full_teacher": self.flops_full or self.flops_teacher,
            "flops_teacher": self.flops_teacher,
            "flops_student": self.flops_student,
            "flops_reduction": round(self.flops_teacher / self.flops_student, 3),
            "seq_len": self.seq_len,
            "flops_note": "2 x multiply-adds per sequence: all linear maps, the attention core "
                          "(QK^T and softmax.V) and the Kronecker embedding product",
            "notes": self.notes,
            "layers": [l.to_dict() for l in self.layers],
        }


def model_flops(model: nn.Module, seq_len: int) -> int:
    """FLOPs of one sequence through ``model``: 2 x the multiply-adds of every linear map and the attention core."""
    linear_macs = sum(m.in_features * m.out_features * tokens_per_sequence(n, seq_len)
                      for n, m in model.named_modules() if isinstance(m, nn.Linear))
    return 2 * (linear_macs + attention_core_macs(model, seq_len))


def plan_model(model: nn.Module, config: KronConfig, filter_fn: FilterFn | None = None,
               seq_len: int = 128, stats: dict | None = None, progress=None, report_errors: bool = True,
               budgets: dict[str, int] | None = None) -> Plan:
    """Factor shapes for every selected layer of ``model`` (which may live on the meta device).

    Args:
        model: a transformers BERT model (any head) or any module with Linear/Embedding layers.
        config: preset or target compression (see :class:`KronConfig`).
        filter_fn: ``(module, fqn) -> bool``; defaults to the paper's selection.
        seq_len: sequence length for the FLOP counts.
        stats: calibration statistics (``kronedge.calibration.collect_input_stats``): the
            search and the reported errors are then weighted by the layers' real inputs.
        progress: called with each layer name as the structure search finishes it.
        report_errors: fit every layer once more to report its starting errors (when the weights
            are at hand); ``kronize_`` turns it off, since it fits the layers itself.
        budgets: each layer's parameter budget for "svd" and "search", in place of one shrink for all
            (``kronedge.neurons.narrower`` gives them for an FFN kept wider than its dense budget).

    Raises:
        NoMatchingLayersError: the filter selected nothing.
        PlanError: the request cannot be met (the message says what can).
    """
    roles = roles_of(_selected(model, config, filter_fn))
    params_teacher = counted_params(model)  # a trimmed word embedding still counts the teacher's whole table
    flops_teacher = model_flops(model, seq_len)

    notes: list[str] = []
    if config.ffn == "neurons":
        if not config.layer_shapes and not narrowed(model):
            raise PlanError("ffn='neurons' plans a model whose FFNs keep their neurons already: kronize_ and "
                            "plan_teacher narrow it first (kronedge.neurons.narrower)")
        sizes = ", ".join(str(s) for s in sorted({m.out_features for n, m in model.named_modules()
                                                  if layer_role(n) == "ffn_up"}))
        notes.append(f"FFN: kept neurons per layer {sizes}, factored at the factored FFN's budget (--ffn-width)"
                     if config.wide_ffn else f"FFN: kept neurons per layer {sizes}, dense (--ffn neurons)")
    if config.layer_shapes:
        shapes = dict(config.layer_shapes)
    elif config.structure != "paper":
        shapes = _structured_shapes(roles, config, params_teacher, stats, progress, budgets)
    else:
        shapes = shapes_from_roles(roles, config, notes)
        if shapes is None:
            shapes = shapes_for_compression(roles, config, params_teacher, notes)

    with_errors = report_errors and (stats is not None or config.structure == "search")
    layers = [_layer_plan(name, module, role, shapes[name], seq_len, stats if with_errors else None, with_errors)
              for name, module, role in roles]
    flops_rest = flops_teacher - sum(2 * l.macs_before for l in layers)
    return Plan(layers, params_teacher, flops_teacher, flops_rest, seq_len, config, notes)


def layer_budgets(model: nn.Module, config: KronConfig, filter_fn: FilterFn | None = None) -> dict[str, int]:
    """Each selected layer's parameter budget before any rounding: what "svd" and "search" spend per layer (a
    structure's ranks round it down), and what a preset's fixed shapes spend."""
    if config.structure == "paper":
        return {l.name: l.params_after for l in plan_model(model, config, filter_fn, report_errors=False).layers}
    roles = roles_of(_selected(model, config, filter_fn))
    return uniform_budgets(roles, config, counted_params(model))


def _selected(model: nn.Module, config: KronConfig, filter_fn: FilterFn | None) -> list[tuple[str, nn.Module]]:
    found = targets(model, filter_fn)
    if not found:
        raise NoMatchingLayersError(
            "the filter matched no nn.Linear or nn.Embedding; default_filter selects "
            "embeddings.word_embeddings and encoder.layer.*.{attention,intermediate,output} linears"
        )
    if config.layer_shapes:
        missing = sorted(set(config.layer_shapes) - {n for n, _ in found})
        if missing:
            raise PlanError(f"layer_shapes names layers the model does not have or the filter skipped: {missing[:5]}")
        found = [(n, m) for n, m in found if n in config.layer_shapes]
    if config.ffn == "neurons" and not config.wide_ffn:  # kept neurons (kronedge.neurons) stay dense
        found = [(n, m) for n, m in found if layer_role(n) not in ("ffn_up", "ffn_down")]
    return found


def _layer_plan(name: str, module: nn.Module, role: str, shape: KronShape, seq_len: int, stats,
                with_errors: bool) -> LayerPlan:
    """One layer's plan, its shape checked against the dense layer, with its starting errors if asked."""
    kind = "embedding" if isinstance(module, nn.Embedding) else "linear"
    dense = dense_shape(module)
    if kind == "linear" and (shape.out_features, shape.in_features) != dense:
        raise PlanError(f"{name}: {shape} implies a {shape.out_features}x{shape.in_features} weight, "
                        f"but the layer is {dense[0]}x{dense[1]}")
    row_map = 0
    if kind == "embedding":
        # Rows: the table's, or fewer when a trimmed layout (kronedge.vocab) is loaded into the full-vocabulary
        # model; surgery's nearest fit refuses fewer rows than its source has.
        if (shape.n1 * shape.n2, shape.m2) != (dense[1], 1) or shape.m1 > dense[0]:
            raise PlanError(f"{name}: embedding factors must be A (at most {dense[0]} rows)x(d/k) ⊗ B 1xk, got {shape}")
        vocab = ids_covered(module)
        row_map = vocab if shape.m1 < vocab else 0
    errors = None
    if with_errors:
        from .structure import fit_report
        errors = fit_report(name, module.weight, shape, stats).to_dict()
    return LayerPlan(name, role, kind, dense, shape, tokens_per_sequence(name, seq_len), errors, row_map)


def _structured_shapes(roles, config: KronConfig, params_teacher: int, stats, progress,
                       budgets: dict[str, int] | None = None) -> dict[str, KronShape]:
    """Shapes for the "svd" and "search" structures at the same total budget as the target compression (or at
    the ``budgets`` given per layer)."""
    from .structure import equal_param_rank, search_structure, svd_corner

    if budgets is None:
        budgets = uniform_budgets(roles, config, params_teacher)
    else:
        missing = sorted({name for name, _, _ in roles} - set(budgets))
        if missing:
            raise PlanError(f"no budget given for {missing[:5]}")
    if config.structure == "svd":
        return {name: svd_corner(*dense_shape(m), equal_param_rank(budgets[name], *dense_shape(m)))
                for name, m, _ in roles}
    if any(m.weight.is_meta for _, m, _ in roles):
        raise PlanError("structure 'search' scores each layer's candidates against its weights; load the teacher's "
                        "weights (not the meta device) to search")
    layers = [(name, "embedding" if isinstance(m, nn.Embedding) else "linear", m.weight) for name, m, _ in roles]
    max_macs = None if config.max_flops_per_token is None else config.max_flops_per_token // 2
    try:
        return search_structure(layers, budgets, config.allocation, stats, max_macs, progress,
                                roles={name: role for name, _, role in roles})
    except ValueError as exc:
        raise PlanError(str(exc)) from None
