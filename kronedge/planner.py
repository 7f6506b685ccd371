"""Choose Kronecker factor shapes for a BERT model: named paper presets or a target compression.

The planner works on module names and dense shapes only, so it runs on a model built on the
``meta`` device (no weights, no memory): planning BERT_LARGE takes well under a second.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Callable

from torch import nn

from .errors import KronedgeError
from .layers import KronShape

FilterFn = Callable[[nn.Module, str], bool]

# Role of each compressible BERT module, recognised by its fully-qualified name. Anything else
# (pooler, classifier, position/token-type embeddings, LayerNorms) stays dense, as in the paper.
_ROLE_PATTERNS = (
    ("embedding", re.compile(r"(^|\.)embeddings\.word_embeddings$")),
    ("attention", re.compile(r"(^|\.)encoder\.layer\.\d+\.attention\.(self\.(query|key|value)|output\.dense)$")),
    ("ffn_up", re.compile(r"(^|\.)encoder\.layer\.\d+\.intermediate\.dense$")),
    ("ffn_down", re.compile(r"(^|\.)encoder\.layer\.\d+\.output\.dense$")),
)

# Modules that see one vector per sequence (the [CLS] token), not one per token.
_PER_SEQUENCE = re.compile(r"(^|\.)(pooler\.dense|classifier)$")


class PlanError(KronedgeError, ValueError):
    """A compression request that cannot be met; the message says what to ask for instead."""


class NoMatchingLayersError(PlanError):
    """The filter selected no compressible layer."""


def layer_role(fqn: str) -> str | None:
    """'embedding', 'attention', 'ffn_up', 'ffn_down', or None for layers the paper keeps dense."""
    for role, pattern in _ROLE_PATTERNS:
        if pattern.search(fqn):
            return role
    return None


def default_filter(module: nn.Module, fqn: str) -> bool:
    """The paper's selection: word embeddings, Q/K/V/O and both FFN maps; never a head or pooler."""
    return isinstance(module, (nn.Linear, nn.Embedding)) and layer_role(fqn) is not None


@dataclass(frozen=True)
class KronConfig:
    """How hard to compress. Build one with a preset factory or a target compression.

    Args:
        compression: target ratio teacher params / student params over the whole model (the
            paper's definition). The planner picks factor shapes that meet it with the fewest FLOPs.
        rank: number of Kronecker sums per layer (the paper's 5.5x variant uses 4).
        embedding_k: width k of the shared embedding factor B (1 x k); chosen by the planner if None.
        role_shapes: explicit factor shapes per role ('attention', 'ffn_up', 'ffn_down'), as the
            paper's presets give them for BERT_BASE; used when they fit the model, else
            ``compression`` decides.
        layer_shapes: explicit shapes per module name; what a saved artifact records.
        name: preset name, for messages and the recipe.
        structure: "paper" (the fixed shapes above), "svd" (the rank-r SVD corner of the Kronecker
            family at each layer's share of the budget) or "search" (per layer the split and number
            of terms with the least reconstruction error, the first two included; needs the weights).
        allocation: for "search": "global" moves parameters to the layers whose error falls most,
            "uniform" gives every layer the same shrink.
        max_flops_per_token: for "search": ceiling on one layer's FLOPs per token.

    Example:
        >>> KronConfig.kb21()            # the paper's KroneckerBERT21 on BERT_BASE
        >>> KronConfig(compression=5)    # any BERT, 5x fewer parameters
    """

    compression: float | None = None
    rank: int = 1
    embedding_k: int | None = None
    role_shapes: dict[str, KronShape] = field(default_factory=dict)
    layer_shapes: dict[str, KronShape] = field(default_factory=dict)
    name: str | None = None
    structure: str = "paper"
    allocation: str = "global"
    max_flops_per_token: int | None = None

    def __post_init__(self):
        from .structure import ALLOCATIONS, STRUCTURES

        if self.structure not in STRUCTURES:
            raise PlanError(f"structure must be one of {', '.join(STRUCTURES)}, got {self.structure!r}")
        if self.allocation not in ALLOCATIONS:
            raise PlanError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")
        if self.structure != "paper" and self.compression is None and not self.layer_shapes:
            raise PlanError(f"structure {self.structure!r} needs a target compression (or a preset that has one)")
        if self.max_flops_per_token is not None and self.max_flops_per_token < 2:
            raise PlanError(f"max_flops_per_token must be >= 2, got {self.max_flops_per_token}")
        if self.compression is None and not self.layer_shapes:
            raise PlanError("KronConfig needs a target: a preset (KronConfig.kb8(), .kb21()), "
                             "compression=X, or explicit layer_shapes")
        if self.compression is not None and not (isinstance(self.compression, (int, float)) and self.compression > 1):
            raise PlanError(f"compression must be a number > 1 (e.g. 5 for 5x fewer parameters), got {self.compression!r}")
        if self.rank < 1:
            raise PlanError(f"rank must be >= 1, got {self.rank}")
        if self.embedding_k is not None and self.embedding_k < 1:
            raise PlanError(f"embedding_k must be >= 1, got {self.embedding_k}")
        unknown = set(self.role_shapes) - {"attention", "ffn_up", "ffn_down"}
        if unknown:
            raise PlanError(f"unknown roles {sorted(unknown)}; use attention, ffn_up, ffn_down")

    @classmethod
    def kb8(cls) -> "KronConfig":
        """KroneckerBERT8 (paper Table 1): 14.3M params on BERT_BASE, embedding k=8."""
        return cls(
            compression=7.7, embedding_k=8, name="kb8",
            role_shapes={
                "attention": KronShape(384, 384, 2, 2),
                # Table 1 lists the FFN as A 8x2 / B 384x384 in (in, out) order; down is its transpose.
                "ffn_up": KronShape(8, 2, 384, 384),
                "ffn_down": KronShape(2, 8, 384, 384),
            },
        )

    @classmethod
    def kb21(cls) -> "KronConfig":
        """KroneckerBERT21 (paper Table 1): 5.2M params on BERT_BASE, embedding k=16."""
        return cls(
            compression=21.0, embedding_k=16, name="kb21",
            role_shapes={
                "attention": KronShape(48, 384, 16, 2),
                "ffn_up": KronShape(16, 2, 192, 384),
                "ffn_down": KronShape(2, 16, 384, 192),
            },
        )

    @classmethod
    def preset(cls, name: str) -> "KronConfig":
        factories = {"kb8": cls.kb8, "kb21": cls.kb21}
        if name not in factories:
            raise PlanError(f"unknown preset {name!r}; choose one of {sorted(factories)} or give --compression")
        return factories[name]()

    def to_dict(self) -> dict:
        out = asdict(self)
        out["role_shapes"] = {k: v.as_list() for k, v in self.role_shapes.items()}
        out["layer_shapes"] = {k: v.as_list() for k, v in self.layer_shapes.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "KronConfig":
        data = dict(data)
        data["role_shapes"] = {k: KronShape.from_list(v) for k, v in data.get("role_shapes", {}).items()}
        data["layer_shapes"] = {k: KronShape.from_list(v) for k, v in data.get("layer_shapes", {}).items()}
        return cls(**data)


@dataclass
class LayerPlan:
    name: str
    role: str
    kind: str  # "linear" | "embedding"
    dense_shape: tuple[int, int]  # (out, in) for a linear, (vocab, dim) for an embedding
    kron: KronShape
    tokens: int  # vectors this layer sees per sequence (for FLOPs)
    errors: dict | None = None  # starting errors of the fitted factors, when the weights were at hand

    @property
    def params_before(self) -> int:
        return self.dense_shape[0] * self.dense_shape[1]

    @property
    def params_after(self) -> int:
        return self.kron.params

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

    @property
    def params_student(self) -> int:
        return self.params_teacher - sum(l.params_before - l.params_after for l in self.layers)

    @property
    def compression(self) -> float:
        return self.params_teacher / self.params_student

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
            "flops_teacher": self.flops_teacher,
            "flops_student": self.flops_student,
            "flops_reduction": round(self.flops_teacher / self.flops_student, 3),
            "seq_len": self.seq_len,
            "flops_note": "2 x multiply-adds per sequence: all linear maps, the attention core "
                          "(QK^T and softmax.V) and the Kronecker embedding product",
            "notes": self.notes,
            "layers": [l.to_dict() for l in self.layers],
        }


# ---------------------------------------------------------------------------------------------
# Factor-shape search


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@functools.lru_cache(maxsize=256)
def linear_candidates(m: int, n: int, rank: int = 1) -> list[KronShape]:
    """Every non-trivial split of an (m x n) weight; (1,1) and (m,n) are just a scaled dense matrix."""
    out = []
    for m1 in _divisors(m):
        for n1 in _divisors(n):
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
    return min((k for k in _divisors(dim) if k > 1), key=lambda k: abs(math.log(k / shrink)))


# ---------------------------------------------------------------------------------------------
# Planning a model


def _targets(model: nn.Module, filter_fn: FilterFn | None) -> list[tuple[str, nn.Module]]:
    filter_fn = filter_fn or default_filter
    found = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and filter_fn(module, name):
            found.append((name, module))
    return found


def _dense_shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return module.num_embeddings, module.embedding_dim


def _tokens(name: str, seq_len: int) -> int:
    return 1 if _PER_SEQUENCE.search(name) else seq_len


def _attention_core_macs(model: nn.Module, seq_len: int) -> int:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_hidden_layers"):
        return 0
    # QK^T and softmax @ V: 2 * T^2 * hidden multiply-adds per layer.
    return config.num_hidden_layers * 2 * seq_len * seq_len * config.hidden_size


def plan_model(model: nn.Module, config: KronConfig, filter_fn: FilterFn | None = None,
               seq_len: int = 128, stats: dict | None = None, progress=None, report_errors: bool = True) -> Plan:
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

    Raises:
        NoMatchingLayersError: the filter selected nothing.
        PlanError: the request cannot be met (the message says what can).
    """
    targets = _targets(model, filter_fn)
    if not targets:
        raise NoMatchingLayersError(
            "the filter matched no nn.Linear or nn.Embedding; default_filter selects "
            "embeddings.word_embeddings and encoder.layer.*.{attention,intermediate,output} linears"
        )
    if config.layer_shapes:
        missing = sorted(set(config.layer_shapes) - {n for n, _ in targets})
        if missing:
            raise PlanError(f"layer_shapes names layers the model does not have or the filter skipped: {missing[:5]}")
        targets = [(n, m) for n, m in targets if n in config.layer_shapes]

    params_teacher = sum(p.numel() for p in model.parameters())
    linear_macs = sum(
        m.in_features * m.out_features * _tokens(n, seq_len)
        for n, m in model.named_modules() if isinstance(m, nn.Linear)
    )
    attention_macs = _attention_core_macs(model, seq_len)
    flops_teacher = 2 * (linear_macs + attention_macs)

    roles = [(name, module, layer_role(name) or ("embedding" if isinstance(module, nn.Embedding) else "linear"))
             for name, module in targets]
    notes: list[str] = []
    if config.layer_shapes:
        shapes = dict(config.layer_shapes)
    elif config.structure != "paper":
        shapes = _structured_shapes(roles, config, params_teacher, stats, progress)
    else:
        shapes = _shapes_from_roles(roles, config, notes)
        if shapes is None:
            shapes = _shapes_for_compression(roles, config, params_teacher, notes)

    layers = []
    for name, module, role in roles:
        kind = "embedding" if isinstance(module, nn.Embedding) else "linear"
        shape = shapes[name]
        dense = _dense_shape(module)
        if kind == "linear" and (shape.out_features, shape.in_features) != dense:
            raise PlanError(f"{name}: {shape} implies a {shape.out_features}x{shape.in_features} weight, "
                            f"but the layer is {dense[0]}x{dense[1]}")
        if kind == "embedding" and (shape.m1, shape.n1 * shape.n2, shape.m2) != (dense[0], dense[1], 1):
            raise PlanError(f"{name}: embedding factors must be A {dense[0]}x(d/k) ⊗ B 1xk, got {shape}")
        errors = None
        if report_errors and (stats is not None or config.structure == "search"):
            from .structure import fit_report
            errors = fit_report(name, kind, module.weight, shape, stats).to_dict()
        layers.append(LayerPlan(name, role, kind, dense, shape, _tokens(name, seq_len), errors))

    flops_rest = flops_teacher - sum(2 * l.macs_before for l in layers)
    return Plan(layers, params_teacher, flops_teacher, flops_rest, seq_len, config, notes)


def _embedding_shape(module: nn.Embedding, k: int, rank: int) -> KronShape:
    v, d = _dense_shape(module)
    if d % k:
        raise PlanError(f"embedding width {d} is not divisible by k={k}; choose k among {_divisors(d)[1:]}")
    return KronShape(v, d // k, 1, k, rank)


def _shapes_from_roles(roles, config: KronConfig, notes: list[str]) -> dict[str, KronShape] | None:
    """Apply a preset's per-role shapes, or return None when they do not fit this model."""
    if not config.role_shapes:
        return None
    shapes = {}
    for name, module, role in roles:
        if role == "embedding":
            shapes[name] = _embedding_shape(module, config.embedding_k or 8, config.rank)
            continue
        shape = config.role_shapes.get(role)
        if shape is None or (shape.out_features, shape.in_features) != _dense_shape(module):
            notes.append(f"preset {config.name}'s factor shapes are for BERT_BASE (hidden 768, FFN 3072) and do not "
                         f"fit {name} {_dense_shape(module)}; planned for its compression {config.compression}x instead")
            return None
        shapes[name] = KronShape(shape.m1, shape.n1, shape.m2, shape.n2, config.rank)
    return shapes


def _shapes_for_compression(roles, config: KronConfig, params_teacher: int, notes: list[str]) -> dict[str, KronShape]:
    """Shrink every selected matrix by one common factor c, searching c to hit the target."""
    target = params_teacher / config.compression
    replaced = sum(math.prod(_dense_shape(m)) for _, m, _ in roles)
    kept = params_teacher - replaced
    if kept >= target:
        raise PlanError(
            f"{config.compression}x needs <= {target / 1e6:.2f}M parameters, but the layers left dense "
            f"(pooler, position embeddings, LayerNorms, biases, head) already hold {kept / 1e6:.2f}M; "
            f"the most this selection allows is about {params_teacher / kept:.1f}x"
        )

    linears = {_dense_shape(m) for _, m, _ in roles if not isinstance(m, nn.Embedding)}
    embeddings = [(n, m) for n, m, _ in roles if isinstance(m, nn.Embedding)]
    widths = {m.embedding_dim for _, m in embeddings}
    if config.embedding_k is not None:
        k_options = [config.embedding_k]
    elif len(widths) == 1:
        k_options = [k for k in _divisors(widths.pop()) if k > 1]
    else:
        k_options = [None]  # no embedding selected (or several widths): k follows the linears' factor

    def linear_shapes_at(c: float) -> dict[tuple[int, int], KronShape]:
        return {d: choose_linear_shape(*d, budget=d[0] * d[1] / c, rank=config.rank) for d in linears}

    def shapes_for(per_dense: dict, c: float, k: int | None) -> dict[str, KronShape]:
        out = {}
        for name, module, _ in roles:
            if isinstance(module, nn.Embedding):
                out[name] = _embedding_shape(module, k or choose_embedding_k(module.embedding_dim, c), config.rank)
            else:
                out[name] = per_dense[_dense_shape(module)]
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


def _uniform_budgets(roles, config: KronConfig, params_teacher: int) -> dict[str, int]:
    """Each selected matrix's parameters when all are shrunk by the one factor that meets the target."""
    target = params_teacher / config.compression
    replaced = sum(math.prod(_dense_shape(m)) for _, m, _ in roles)
    kept = params_teacher - replaced
    if kept >= target:
        raise PlanError(f"{config.compression}x needs <= {target / 1e6:.2f}M parameters, but the layers left dense "
                        f"already hold {kept / 1e6:.2f}M; the most this selection allows is about {params_teacher / kept:.1f}x")
    shrink = replaced / (target - kept)
    return {name: int(math.prod(_dense_shape(m)) / shrink) for name, m, _ in roles}


def _structured_shapes(roles, config: KronConfig, params_teacher: int, stats, progress) -> dict[str, KronShape]:
    """Shapes for the "svd" and "search" structures at the same total budget as the target compression."""
    from .structure import equal_param_rank, search_structure, svd_corner

    budgets = _uniform_budgets(roles, config, params_teacher)
    if config.structure == "svd":
        return {name: svd_corner(*_dense_shape(m), equal_param_rank(budgets[name], *_dense_shape(m)))
                for name, m, _ in roles}
    if any(m.weight.is_meta for _, m, _ in roles):
        raise PlanError("structure 'search' scores each layer's candidates against its weights; load the teacher's "
                        "weights (not the meta device) to search")
    layers = [(name, "embedding" if isinstance(m, nn.Embedding) else "linear", m.weight) for name, m, _ in roles]
    max_macs = None if config.max_flops_per_token is None else config.max_flops_per_token // 2
    try:
        return search_structure(layers, budgets, config.allocation, stats, max_macs, progress)
    except ValueError as exc:
        raise PlanError(str(exc)) from None
