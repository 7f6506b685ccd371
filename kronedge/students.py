"""Students: how a compressed model is made from its teacher, one builder per kind of student.

Each kind is a small config class; :func:`build_student` looks its builder up by the config's type
in a registered table (as torchao's ``quantize_`` looks up its handlers), so a new kind of student
is a new config class and one ``@register_student`` builder, not another branch somewhere.

    >>> student, plan = build_student(teacher, KroneckerStudent(KronConfig(compression=5)))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

from .planner import KronConfig
from .training import TrainingError
from .vocab import KeptVocabulary, row_map_entries


@dataclass(frozen=True)
class KroneckerStudent:
    """The paper's student: Q/K/V/O, both FFN maps and the word embeddings as Kronecker products
    (``kronize_``), initialised by the nearest Kronecker product of the teacher's weights.

    ``stats``: calibration statistics (``kronedge.calibration``) for the data-aware fit and the
    structure search; ``layers``: keep this many encoder layers first (``keep_layers_``);
    ``vocabulary``: the word embedding keeps only these tokens' rows (``kronedge.vocab``)."""

    kron: KronConfig
    stats: dict | None = field(default=None, compare=False, repr=False)
    layers: int | None = None
    vocabulary: KeptVocabulary | None = field(default=None, compare=False, repr=False)
    method = "kronecker"


@dataclass(frozen=True)
class GeneralStartStudent:
    """The Kronecker student of a general student (``kronedge distill-general``): its layout, embeddings and
    encoder from ``path``; pooler and task head from the (fine-tuned) teacher it is built on."""

    path: str
    method = "kronecker"


@dataclass(frozen=True)
class SvdStudent:
    """Baseline: truncated SVD of the same matrices at equal parameters (``lowrank_``)."""

    kron: KronConfig
    method = "svd"


@dataclass(frozen=True)
class DenseSmallStudent:
    """Baseline: a narrower, shallower dense BERT with the Kronecker student's parameter count,
    sliced from the teacher. ``layers``: its depth (default half the teacher's)."""

    kron: KronConfig
    layers: int | None = None
    method = "dense-small"


_BUILDERS: dict[type, Callable] = {}


def register_student(config_type: type):
    """Decorator: ``builder(teacher, config) -> (student, plan)`` builds students of ``config_type``."""

    def register(builder):
        _BUILDERS[config_type] = builder
        return builder

    return register


def build_student(teacher, config):
    """(student, plan) for any registered student config; the teacher is left untouched.

    Example:
        >>> student, plan = build_student(teacher, SvdStudent(KronConfig(compression=5)))
    """
    builder = _BUILDERS.get(type(config))
    if builder is None:
        known = ", ".join(t.__name__ for t in _BUILDERS)
        raise TrainingError(f"no student builder for {type(config).__name__}; registered: {known}")
    return builder(teacher, config)


# The names the CLI and saved recipes use for each kind.
METHODS: dict[str, type] = {cls.method: cls for cls in (KroneckerStudent, SvdStudent, DenseSmallStudent)}


def student_config(method: str, kron: KronConfig, stats: dict | None = None, layers: int | None = None,
                   vocabulary: KeptVocabulary | None = None):
    """The student config for a method name (``kronecker``, ``svd``, ``dense-small``)."""
    if method not in METHODS:
        raise TrainingError(f"unknown method {method!r}; choose one of {tuple(METHODS)}")
    if method == "kronecker":
        return KroneckerStudent(kron, stats=stats, layers=layers, vocabulary=vocabulary)
    if vocabulary is not None:
        raise TrainingError(f"a task vocabulary trims the Kronecker student's embedding; method {method} has none")
    return METHODS[method](kron)


@register_student(KroneckerStudent)
def _kronecker(teacher, config: KroneckerStudent):
    from .surgery import kronize_

    from .calibration import for_kept_layers
    from .distill import bert_of, layer_mapping
    from .pipeline import shallower

    student = copy.deepcopy(teacher)
    stats = config.stats
    if config.layers is not None:  # the teacher's statistics: each kept layer takes those of the layer it was
        stats = for_kept_layers(stats, layer_mapping(config.layers, len(bert_of(teacher).encoder.layer), "uniform"))
    kron = shallower(student, config.kron, config.layers)
    if config.vocabulary is not None:
        config.vocabulary.trim_(student)
    return student, kronize_(student, kron, stats=stats)


@register_student(GeneralStartStudent)
def _from_general(teacher, config: GeneralStartStudent):
    from .artifact import load_artifact
    from .distill import bert_of
    from .surgery import keep_layers_, kronize_, layout_config

    general = load_artifact(config.path)  # a kronized BertModel
    student = copy.deepcopy(teacher)
    bert = bert_of(student)
    prefix = next(name + "." for name, module in student.named_modules() if module is bert) if bert is not student else ""
    if general.config.num_hidden_layers != bert.config.num_hidden_layers:
        keep_layers_(student, general.config.num_hidden_layers)
    shapes = {prefix + name: shape for name, shape in layout_config(general.config).layer_shapes.items()}
    plan = kronize_(student, KronConfig(layer_shapes=shapes), filter_fn=lambda module, fqn: fqn in shapes,
                    init="random")
    for part in ("embeddings", "encoder"):
        getattr(bert, part).load_state_dict(getattr(general, part).state_dict(), strict=True)
    return student, plan


@register_student(SvdStudent)
def _svd(teacher, config: SvdStudent):
    from .lowrank import lowrank_

    student = copy.deepcopy(teacher)
    return student, lowrank_(student, config.kron)


@register_student(DenseSmallStudent)
def _dense_small(teacher, config: DenseSmallStudent):
    from .planner import plan_model

    plan = plan_model(teacher, config.kron)
    kron, _ = _kronecker(teacher, KroneckerStudent(config.kron))
    return dense_small_student(teacher, core_params(kron), config.layers), plan


def core_params(model) -> int:
    """Parameters of the embeddings and the encoder (the paper's count; no pooler, no head), with the entries of a
    trimmed vocabulary's id -> row map (``kronedge.vocab``)."""
    from .distill import bert_of

    bert = bert_of(model)
    maps = sum(row_map_entries(m) for m in bert.embeddings.modules())
    return sum(p.numel() for m in (bert.embeddings, bert.encoder) for p in m.parameters()) + maps


def dense_small_config(teacher_config, target_core_params: int, layers: int | None = None):
    """A narrower, shallower BertConfig with at most ``target_core_params`` embedding+encoder params.

    The head count stays the teacher's (so attention scores compare head by head); the width is
    the largest multiple of it that fits, with the FFN at 4x the width as in BERT.
    """
    heads = teacher_config.num_attention_heads
    layers = layers or max(1, teacher_config.num_hidden_layers // 2)

    def count(h: int) -> int:
        v, p, t = teacher_config.vocab_size, teacher_config.max_position_embeddings, teacher_config.type_vocab_size
        emb = (v + p + t) * h + 2 * h
        layer = 4 * (h * h + h) + 2 * (h * 4 * h) + 4 * h + h + 4 * 2 * h
        return emb + layers * layer

    width = heads
    while count(width + heads) <= target_core_params:
        width += heads
    config = copy.deepcopy(teacher_config)
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = width, 4 * width, layers
    config.num_attention_heads = heads
    return config


def dense_small_student(teacher, target_core_params: int, layers: int | None = None):
    """A dense student at the given size, initialised by slicing the teacher.

    Layers are taken uniformly from the teacher; every matrix keeps its leading rows/columns,
    head by head for Q/K/V (each head keeps its first d_head_small dimensions), so the student
    starts from the teacher's function restricted to a subspace rather than from noise.
    """
    import torch
    from transformers import BertForSequenceClassification

    from .distill import layer_mapping

    config = dense_small_config(teacher.config, target_core_params, layers)
    student = BertForSequenceClassification(config)
    t_state = teacher.state_dict()
    mapping = layer_mapping(config.num_hidden_layers, teacher.config.num_hidden_layers, "uniform")
    heads, dt = config.num_attention_heads, teacher.config.hidden_size // config.num_attention_heads
    ds = config.hidden_size // heads
    head_rows = torch.cat([torch.arange(h * dt, h * dt + ds) for h in range(heads)])
    with torch.no_grad():
        for name, p in student.state_dict().items():
            src = name
            if ".encoder.layer." in name:
                prefix, rest = name.split(".encoder.layer.")
                idx, tail = rest.split(".", 1)
                src = f"{prefix}.encoder.layer.{mapping[int(idx)]}.{tail}"
            t = t_state[src]
            if any(k in name for k in ("attention.self.query", "attention.self.key", "attention.self.value")):
                t = t[head_rows] if t.ndim == 1 else t[head_rows][:, :p.shape[1]]
            elif "attention.output.dense.weight" in name:
                t = t[:p.shape[0]][:, head_rows]
            else:
                t = t[tuple(slice(0, s) for s in p.shape)]
            p.copy_(t)
    return student
