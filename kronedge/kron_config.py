"""What to compress and how hard: :class:`KronConfig` (presets, target compression, structure) and the plan errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import KronedgeError
from .kron_shape import KronShape

DENSE_WIDTH = "dense"  # ffn_width: the k neurons the FFN's budget holds densely, without a width search


class PlanError(KronedgeError, ValueError):
    """A compression request that cannot be met; the message says what to ask for instead."""


def ffn_width_value(text: str | None) -> int | str | None:
    """``--ffn-width`` as written (a count of neurons or "dense") -> ``KronConfig.ffn_width``."""
    if text is None or text == DENSE_WIDTH:
        return text
    try:
        return int(text)
    except ValueError:
        raise PlanError(f"--ffn-width is a number of neurons or {DENSE_WIDTH!r}, got {text!r}") from None


class NoMatchingLayersError(PlanError):
    """The filter selected no compressible layer."""


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
        allocation: for "search": "global" moves parameters to the layers of a role (embedding,
            attention, ffn_up, ffn_down) whose error falls most, never starting a role worse than SVD;
            "across-roles" moves them between any layers; "uniform" gives every layer the same shrink.
        max_flops_per_token: for "search": ceiling on one layer's FLOPs per token.
        embedding_share: for "svd" and "search": the word embedding's share of the factorised
            parameters; the other matrices split the rest with one shrink. None: every matrix shrinks
            alike. A smaller share leaves the encoder more rank at the same size.
        ffn: None or "factored" (the FFN maps get the structure above), or "neurons" (each FFN keeps the
            teacher's neurons that carry most of its output, as many as the factored FFN's parameters pay for, as
            plain dense maps: ``kronedge.neurons``; the choice of neurons needs the weights, a plan on the meta
            device keeps the first k).
        ffn_width: with ffn="neurons", keep this many neurons per FFN (at least the k its factored budget holds
            densely) and factor its two maps with the structure at the factored FFN's budgets. "dense": k, dense,
            without a search. None: for structure "svd" or "search" with held-out calibration statistics the width
            that starts best (``kronedge.neurons.searched_width``), else k, dense.
        ffn_to_embedding: with ffn="neurons" and structure "svd" or "search": this share of the factored FFN's
            budget goes to the word embedding; the kept neurons (their count k, their width search) spend the rest.
            The attention keeps its budget. None: the FFN spends all of it.

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
    embedding_share: float | None = None
    ffn: str | None = None
    ffn_width: int | str | None = None
    ffn_to_embedding: float | None = None

    @property
    def wide_ffn(self) -> bool:
        """Kept FFN neurons (ffn="neurons") as many as ``ffn_width`` counts, their maps factored; False for the
        dense FFN of kept neurons ("dense", or None before ``kronedge.neurons.narrower`` has searched)."""
        return self.ffn == "neurons" and isinstance(self.ffn_width, int)

    def __post_init__(self):
        from .neurons import FFN_FORMS
        from .structure import ALLOCATIONS, STRUCTURES

        if self.ffn not in (None, *FFN_FORMS):
            raise PlanError(f"ffn must be one of {', '.join(FFN_FORMS)}, got {self.ffn!r}")
        if self.ffn == "factored":
            object.__setattr__(self, "ffn", None)  # the default, spelled out: None keeps earlier recipes' keys
        if self.ffn == "neurons" and self.embedding_share is not None:
            raise PlanError("embedding_share splits the factorised parameters between the embedding and every factored "
                             "matrix, FFN included; with ffn='neurons' that split would change: use one or the other")

        if self.ffn_width is not None:
            if self.ffn != "neurons":
                raise PlanError("ffn_width is the number of neurons ffn='neurons' keeps: give --ffn neurons with it")
            if self.ffn_width != DENSE_WIDTH and (not isinstance(self.ffn_width, int) or self.ffn_width < 1):
                raise PlanError(f"ffn_width must be a whole number of neurons >= 1 or {DENSE_WIDTH!r}, "
                                f"got {self.ffn_width!r}")
            if self.structure == "paper" and self.ffn_width != DENSE_WIDTH:
                raise PlanError("ffn_width factors the kept neurons at the factored FFN's budget, which --structure "
                                "svd or search sets; the paper's shapes are fixed to the full FFN")
        if self.ffn_to_embedding is not None:
            if not (isinstance(self.ffn_to_embedding, (int, float)) and 0 < self.ffn_to_embedding < 1):
                raise PlanError(f"ffn_to_embedding is a share of the FFN's budget in (0, 1), got {self.ffn_to_embedding!r}")
            if self.ffn != "neurons" or self.structure == "paper":
                raise PlanError("ffn_to_embedding moves budget from kept FFN neurons to the word embedding: it needs "
                                "--ffn neurons and --structure svd or search")
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
        if self.embedding_share is not None:
            if not (isinstance(self.embedding_share, (int, float)) and 0 < self.embedding_share < 1):
                raise PlanError(f"embedding_share is a share of the parameters in (0, 1), got {self.embedding_share!r}")
            if self.structure == "paper":
                raise PlanError("embedding_share sets the budgets of --structure svd or search; the paper's shapes are fixed")
        if self.rank < 1:
            raise PlanError(f"rank must be >= 1, got {self.rank}")
        if self.embedding_k is not None and self.embedding_k < 1:
            raise PlanError(f"embedding_k must be >= 1, got {self.embedding_k}")
        unknown = set(self.role_shapes) - {"attention", "ffn_up", "ffn_down"}
        if unknown:
            raise PlanError(f"unknown roles {sorted(unknown)}; use attention, ffn_up, ffn_down")

    @classmethod
    def kb8(cls) -> "KronConfig":
        """KroneckerBERT8 (paper Table 1): 14.3M params on BERT_BASE, embedding k=8.

        The attention factors have Table 1's sizes with the small one first (A 2x2 ⊗ B 384x384, where the
        table lists A 384x384 / B 2x2), as in the FFN: every linear then exports without an axis swap, and
        the nearest-Kronecker fit of real attention weights is no worse (benchmarks/results/factor_order.md).
        """
        return cls(
            compression=7.7, embedding_k=8, name="kb8",
            role_shapes={
                "attention": KronShape(2, 2, 384, 384),
                # Table 1 lists the FFN as A 8x2 / B 384x384 in (in, out) order; down is its transpose.
                "ffn_up": KronShape(8, 2, 384, 384),
                "ffn_down": KronShape(2, 8, 384, 384),
            },
        )

    @classmethod
    def kb21(cls) -> "KronConfig":
        """KroneckerBERT21 (paper Table 1): 5.2M params on BERT_BASE, embedding k=16.

        Attention A 16x2 ⊗ B 48x384: Table 1's A 384x48 / B 2x16 with the small factor first, as kb8's.
        """
        return cls(
            compression=21.0, embedding_k=16, name="kb21",
            role_shapes={
                "attention": KronShape(16, 2, 48, 384),
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
