"""Library entry points behind the core CLI commands (`kronedge plan`, `kronedge kronize`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .planner import KronConfig, Plan, PlanError, model_flops
from .structure import ALLOCATIONS
from .vocab import counted_params

DEFAULT_FLOP_LENGTH = 128


def kron_config(preset: str | None = None, **fields) -> KronConfig:
    """One KronConfig from the CLI's choices: a preset, or a target ``compression``, and any other
    :class:`KronConfig` fields (those left at KronConfig's defaults keep a preset's own values)."""
    if (preset is None) == (fields.get("compression") is None):
        raise PlanError("give exactly one of --preset (kb8, kb21) or --compression X")
    structure = fields.get("structure", "paper")
    if fields.get("allocation", "global") not in ALLOCATIONS:  # a bad value first, before what it would steer
        raise PlanError(f"--allocation must be one of {', '.join(ALLOCATIONS)}, got {fields['allocation']!r}")
    if fields.get("embedding_k") is not None and structure != "paper":
        raise PlanError(f"--embedding-k sets the embedding factor of --structure paper; --structure "
                        f"{structure} chooses its own, so leave --embedding-k out")
    searched_only = [flag for flag, given in (("--allocation", fields.get("allocation", "global") != "global"),
                                              ("--max-flops-per-token", fields.get("max_flops_per_token") is not None))
                     if given]
    if searched_only and structure != "search":
        raise PlanError(f"{' and '.join(searched_only)} {'steer' if len(searched_only) > 1 else 'steers'} "
                        f"--structure search; with --structure {structure} it would do nothing")
    if preset is None:
        return KronConfig(**fields)
    config = KronConfig.preset(preset)
    defaults = {f.name: f.default for f in dataclasses.fields(KronConfig)}
    changes = {k: v for k, v in fields.items() if k != "compression" and v != defaults[k]}
    return KronConfig.from_dict(config.to_dict() | changes) if changes else config


def shallower(model, config: KronConfig, layers: int | None) -> KronConfig:
    """Keep ``layers`` encoder layers of ``model`` (in place) and re-aim ``config`` so that the
    compression stays measured against the full teacher, as a user comparing sizes expects."""
    if layers is None:
        return config
    from dataclasses import replace

    from .surgery import keep_layers_

    original = sum(p.numel() for p in model.parameters())
    keep_layers_(model, layers)
    reduced = sum(p.numel() for p in model.parameters())
    remaining = config.compression * reduced / original
    if config.role_shapes and config.structure == "paper":
        # A preset's shapes are fixed and simply compress the shallower model further; its compression is the
        # target only where those shapes do not fit this teacher, and then it too counts against the full one.
        return replace(config, compression=remaining) if remaining > 1.05 else config
    if remaining <= 1.05:
        raise PlanError(f"{layers} layers alone give {original / reduced:.1f}x; ask for a compression above that, "
                         "or keep more layers")
    return replace(config, compression=remaining)


def check_vocabulary(vocabulary: str, calibration: str | None) -> None:
    """``plan`` and ``kronize``'s ``--vocabulary``: "full", or "task" with the ``--calibration`` text to keep."""
    from .recipe import VOCABULARIES

    if vocabulary not in ("full", *VOCABULARIES):
        raise PlanError(f"--vocabulary must be full or one of {', '.join(VOCABULARIES)}, not {vocabulary!r}")
    if vocabulary == "task" and calibration is None:
        raise PlanError("--vocabulary task keeps the tokens of the --calibration text: give one (a GLUE task, "
                        "your training file, wikitext-2 or a text file)")


def trim_to_calibration_(model, tokenizer_dir, calibration: str | None, vocabulary: str) -> dict | None:
    """With ``vocabulary`` "task", give ``model`` the word embedding of the tokens in the ``calibration`` text (all of
    it, as ``compress`` keeps its training text's), in place, and return the rows kept as ``compress`` records them;
    "full" leaves it as it is (None)."""
    check_vocabulary(vocabulary, calibration)
    if vocabulary == "full":
        return None
    from transformers import AutoTokenizer

    from .calibration import calibration_texts
    from .recipe import CompressConfig
    from .vocab import KeptVocabulary

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = calibration_texts(calibration, limit=None)
    trimmed = KeptVocabulary.of_texts(tokenizer, texts, CompressConfig.max_length).trim_(model)
    return {"kept": trimmed.num_embeddings, "of": trimmed.vocab_size}


def needs_weights(config: KronConfig, calibration: str | None) -> bool:
    """Whether planning must load the teacher's weights (a search, or errors on calibration text)."""
    return config.structure == "search" or calibration is not None


def teacher_stats(model, tokenizer_dir, calibration: str | None, limit: int | None = None,
                  structure: str = "paper", ffn: str | None = None, ffn_width: int | str | None = None) -> dict | None:
    """Calibration statistics of ``model`` on ``calibration`` text (a GLUE task, a corpus or a file), or None;
    for a ``structure`` search or an ``ffn`` width search with a held-out share (``calibration.holdout_for``)."""
    if calibration is None:
        return None
    from transformers import AutoTokenizer

    from .calibration import DEFAULT_CALIBRATION_TEXTS, calibration_texts, collect_input_stats, holdout_for

    texts = calibration_texts(calibration, limit=limit or DEFAULT_CALIBRATION_TEXTS)
    return collect_input_stats(model, AutoTokenizer.from_pretrained(tokenizer_dir), texts,
                               holdout_every=holdout_for(structure, ffn, ffn_width))


def flop_length(model, teacher: str, seq_len: int | None = None) -> int:
    """The sequence length of a plan's FLOP counts: ``seq_len``, or 128 tokens, or the teacher's positions where
    it has fewer (a count at a length the model cannot embed describes no real input)."""
    positions = getattr(model.config, "max_position_embeddings", DEFAULT_FLOP_LENGTH)
    if seq_len is not None and seq_len > positions:
        raise PlanError(f"--seq-len {seq_len} is longer than the {positions} positions {teacher} can embed")
    return seq_len or min(DEFAULT_FLOP_LENGTH, positions)


def plan_teacher(teacher: str, config: KronConfig, seq_len: int | None = None, calibration: str | None = None,
                 progress=None, layers: int | None = None, vocabulary: str = "full") -> Plan:
    """Plan the compression of a teacher; weights are loaded only when the plan needs them.

    Args:
        seq_len: the sequence length of the FLOP counts (default: 128, or the teacher's positions where fewer).
        calibration: text whose activations weight the errors (a GLUE task name, ``wikitext-2`` or
            a file); with it every layer reports its starting error on those inputs.
        layers: keep this many encoder layers (uniformly spaced); the compression still counts
            against the full teacher.
        vocabulary: "task": the word embedding keeps only the rows of the ``calibration`` text's tokens, as
            ``compress`` keeps its training text's (``trim_to_calibration_``); "full": every row.

    Example:
        >>> plan_teacher("random:bert-base-uncased", KronConfig.kb21()).params_student
        >>> plan_teacher("builtin:minilm", KronConfig(compression=5, structure="search"), calibration="sst2")
    """
    from .neurons import narrower
    from .planner import plan_model
    from .teachers import load_teacher

    if seq_len is not None and seq_len < 1:
        raise PlanError(f"--seq-len must be >= 1 token, got {seq_len}")
    check_vocabulary(vocabulary, calibration)
    loaded = load_teacher(teacher, head="base", meta=not needs_weights(config, calibration))
    seq_len = flop_length(loaded.model, teacher, seq_len)
    full = counted_params(loaded.model), model_flops(loaded.model, seq_len)
    config = shallower(loaded.model, config, layers)
    stats = teacher_stats(loaded.model, loaded.tokenizer_dir, calibration, structure=config.structure,
                          ffn=config.ffn, ffn_width=config.ffn_width)
    trim_to_calibration_(loaded.model, loaded.tokenizer_dir, calibration, vocabulary)
    narrowing = narrower(loaded.model, config, stats)
    plan = plan_model(loaded.model, narrowing.config, seq_len=seq_len, stats=narrowing.stats, progress=progress,
                      budgets=narrowing.budgets)
    plan.params_full, plan.flops_full = full
    return plan


def kronize_teacher(teacher: str, config: KronConfig, out: str | Path, num_labels: int | None = None,
                    head: str = "sequence-classification", seed: int = 0,
                    calibration: str | None = None, progress=None, layers: int | None = None,
                    vocabulary: str = "full") -> tuple[Path, Plan]:
    """Surgery plus nearest-Kronecker initialisation, no training; saved as an artifact.

    Example:
        >>> kronize_teacher("random:bert-base-uncased", KronConfig.kb21(), "artifacts/kb21")
    """
    from .artifact import save_artifact
    from .surgery import kronize_
    from .teachers import load_teacher, saved_num_labels

    if num_labels is None:  # the teacher's own head, else a 2-label one
        num_labels = saved_num_labels(teacher) or 2
    if head != "base" and num_labels < 1:
        raise PlanError(f"--num-labels must be >= 1 (1: a regression head), got {num_labels}")
    check_vocabulary(vocabulary, calibration)
    loaded = load_teacher(teacher, head=head, num_labels=num_labels if head != "base" else None, seed=seed)
    seq_len = flop_length(loaded.model, teacher)
    full = counted_params(loaded.model), model_flops(loaded.model, seq_len)
    config = shallower(loaded.model, config, layers)
    stats = teacher_stats(loaded.model, loaded.tokenizer_dir, calibration, structure=config.structure,
                          ffn=config.ffn, ffn_width=config.ffn_width)
    kept = trim_to_calibration_(loaded.model, loaded.tokenizer_dir, calibration, vocabulary)
    plan = kronize_(loaded.model, config, seq_len=seq_len, stats=stats, progress=progress)
    plan.params_full, plan.flops_full = full
    loaded.model.eval()
    recipe = {
        "teacher": teacher,
        "teacher_pretrained": loaded.pretrained,
        "kron_config": config.to_dict(),
        "calibration": calibration,
        "vocabulary": kept,
        "params_teacher": plan.params_teacher,
        "params_student": plan.params_student,
        "compression": round(plan.compression_full, 3),
        "layers_kept": layers,
        "flops_teacher": plan.flops_teacher,
        "flops_student": plan.flops_student,
        "training": None,
    }
    path = save_artifact(loaded.model, out, loaded.tokenizer_dir, recipe)
    return path, plan
