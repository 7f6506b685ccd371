"""Library entry points behind the core CLI commands (`kronedge plan`, `kronedge kronize`)."""

from __future__ import annotations

from pathlib import Path

from .planner import KronConfig, Plan


def kron_config(preset: str | None = None, compression: float | None = None, rank: int = 1,
                embedding_k: int | None = None) -> KronConfig:
    """One KronConfig from the CLI's choices: a preset, or a target compression."""
    if (preset is None) == (compression is None):
        raise ValueError("give exactly one of --preset (kb8, kb21) or --compression X")
    if preset is not None:
        config = KronConfig.preset(preset)
        if rank != 1 or embedding_k is not None:
            values = config.to_dict() | {"rank": rank, "embedding_k": embedding_k or config.embedding_k}
            config = KronConfig.from_dict(values)
        return config
    return KronConfig(compression=compression, rank=rank, embedding_k=embedding_k)


def plan_teacher(teacher: str, config: KronConfig, seq_len: int = 128) -> Plan:
    """Plan the compression of a teacher without loading its weights (meta device).

    Example:
        >>> plan_teacher("random:bert-base-uncased", KronConfig.kb21()).params_student
    """
    from .planner import plan_model
    from .teachers import load_teacher

    model = load_teacher(teacher, head="base", meta=True).model
    return plan_model(model, config, seq_len=seq_len)


def kronize_teacher(teacher: str, config: KronConfig, out: str | Path, num_labels: int = 2,
                    head: str = "sequence-classification", seed: int = 0) -> tuple[Path, Plan]:
    """Surgery plus nearest-Kronecker initialisation, no training; saved as an artifact.

    Example:
        >>> kronize_teacher("random:bert-base-uncased", KronConfig.kb21(), "artifacts/kb21")
    """
    from .artifact import save_artifact
    from .surgery import kronize_
    from .teachers import load_teacher

    loaded = load_teacher(teacher, head=head, num_labels=num_labels if head != "base" else None, seed=seed)
    plan = kronize_(loaded.model, config)
    loaded.model.eval()
    recipe = {
        "teacher": teacher,
        "teacher_pretrained": loaded.pretrained,
        "kron_config": config.to_dict(),
        "params_teacher": plan.params_teacher,
        "params_student": plan.params_student,
        "compression": round(plan.compression, 3),
        "flops_teacher": plan.flops_teacher,
        "flops_student": plan.flops_student,
        "training": None,
    }
    path = save_artifact(loaded.model, out, loaded.tokenizer_dir, recipe)
    return path, plan
