"""What `kronedge compress` refuses before any training starts: option combinations that cannot work, a
resume with another recipe, bad data files and an impossible compression (each one clear error)."""

from __future__ import annotations

import json
import logging
from dataclasses import fields, replace
from pathlib import Path

from .artifact import RECIPE_FILE, check_replaceable
from .finetune import require_both_files, teacher_head_spec
from .recipe import CompressConfig
from .training import TrainingError

logger = logging.getLogger(__name__)


def check_options(config: CompressConfig, out, run_dir: Path, resume: bool, source=None):
    """Refuse option combinations that cannot work before any training starts.

    Returns:
        (spec, head): the task's TaskSpec and whether the teacher's own head is used as is (then the
        spec is in the teacher's label order). Data files are read through once here, so a bad row is
        one error before anything is written.
    """
    if out is not None and config.method == "svd":
        raise TrainingError("the svd baseline has no artifact format: run it without --out (library: out=None)")
    if out is not None:
        check_replaceable(Path(out), RECIPE_FILE)  # a user's folder: refused now, not after training
    saved = run_dir / "compress_config.json"
    if resume and not saved.is_file():
        logger.info(f"[compress] --resume: {run_dir} holds no earlier run; starting from the beginning")
    changes = config.recipe_changes(json.loads(saved.read_text())) if resume and saved.is_file() else {}
    if changes:
        shown = ", ".join(f"{k.replace('_', '-')} {old!r} -> {new!r}" for k, (old, new) in changes.items())
        raise TrainingError(f"--resume: {run_dir} was started with another recipe ({shown}); rerun with its options "
                            "or use another --run-dir")
    source = source or config.task_source()
    require_both_files(source, "compress")
    source.check()  # an unknown task or a bad data file fails here, not after the teacher
    spec = source.spec
    if config.stage1:
        from .data.corpus import check_corpus

        check_corpus(config.corpus)  # a mistyped --corpus: now, not after the teacher's fine-tune
    if config.unlabelled:
        from .augment import read_unlabelled

        read_unlabelled(config.unlabelled, spec.is_pair)  # a missing or malformed file too
    head_spec = teacher_head_spec(config.teacher, spec)  # a user's head with other labels: one error
    from exporters.config import positions_problem

    from .teachers import load_teacher

    teacher_config = load_teacher(config.teacher, meta=True).model.config
    positions = teacher_config.max_position_embeddings
    if spec.is_pair and teacher_config.type_vocab_size < 2:
        raise TrainingError(f"{spec.name} pairs two texts, but {config.teacher} has one token type (type_vocab_size "
                            "1), so it cannot tell them apart: use a teacher with two token types")
    if problem := positions_problem(teacher_config):  # its student could be trained, but not deployed
        raise TrainingError(f"{config.teacher}: {problem}, so its student could not be deployed")
    defaults = {f.name: f.default for f in fields(CompressConfig)}
    for flag, length, default in (("--max-length", config.max_length, defaults["max_length"]),
                                  ("--stage1-max-length", config.stage1_max_length, defaults["stage1_max_length"])):
        # the default is left to a small teacher (64 positions in tests), whose texts are shorter than that
        if length > max(positions, default):
            raise TrainingError(f"{flag} {length} is longer than the {positions} positions {config.teacher} can "
                                "embed; ask for at most that")
    if head_spec is None:
        from .pipeline import plan_teacher

        # Plans on the meta device (no weights): an impossible compression fails before the fine-tune. A
        # search needs the weights, so its budget is checked through the SVD corner at the same size.
        kron = config.kron_config()
        if kron.structure == "search":
            kron = replace(kron, structure="svd")
        plan_teacher(config.teacher, kron, layers=config.layers)
    return head_spec or spec, head_spec is not None
