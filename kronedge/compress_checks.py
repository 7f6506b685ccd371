"""What `kronedge compress` refuses before any training starts: option combinations that cannot work, a
resume with another recipe, bad data files and an impossible compression (each one clear error)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .finetune import require_both_files, teacher_head_spec
from .recipe import CompressConfig
from .training import TrainingError


def check_options(config: CompressConfig, out, run_dir: Path, resume: bool, source=None):
    """Refuse option combinations that cannot work before any training starts.

    Returns:
        (spec, head): the task's TaskSpec and whether the teacher's own head is used as is (then the
        spec is in the teacher's label order). Data files are read through once here, so a bad row is
        one error before anything is written.
    """
    if out is not None and config.method == "svd":
        raise TrainingError("the svd baseline has no artifact format: run it without --out (library: out=None)")
    saved = run_dir / "compress_config.json"
    if resume and saved.is_file() and not config.same_recipe(json.loads(saved.read_text())):
        raise TrainingError(f"--resume: {run_dir} was started with a different recipe ({saved}); "
                            "rerun with the same options or use another --run-dir")
    source = source or config.task_source()
    require_both_files(source, "compress")
    source.check()  # an unknown task or a bad data file fails here, not after the teacher
    spec = source.spec
    if config.unlabelled:
        from .augment import read_unlabelled

        read_unlabelled(config.unlabelled, spec.is_pair)  # a missing or malformed file too
    head_spec = teacher_head_spec(config.teacher, spec)  # a user's head with other labels: one error
    if head_spec is None:
        from .pipeline import plan_teacher

        # Plans on the meta device (no weights): an impossible compression fails before the fine-tune. A
        # search needs the weights, so its budget is checked through the SVD corner at the same size.
        kron = config.kron_config()
        if kron.structure == "search":
            kron = replace(kron, structure="svd")
        plan_teacher(config.teacher, kron, layers=config.layers)
    return head_spec or spec, head_spec is not None
