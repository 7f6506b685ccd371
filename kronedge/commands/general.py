"""CLI command `kronedge distill-general`: a reusable general student (stage 1 done once)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from ..general import MAX_BUDGET_EPOCHS, GeneralConfig
from ..training.config import TrainConfig
from .options import Cli, Option, config_options, field_docs, field_values, with_options, zero_is_none



def general_options(plan_help: dict, spec_forms: str) -> list[Option]:
    """``kronedge distill-general``'s options from :class:`GeneralConfig`'s fields (a new field is a new
    option). Help: the field's own docstring entry, else the plan's or TrainConfig's help of that name."""
    from .distill import FIELD_CLI

    names = {f.name for f in dataclasses.fields(GeneralConfig)}
    borrowed = field_docs(TrainConfig) | plan_help
    docs = (field_docs(GeneralConfig, grouped=True) | {k: v for k, v in borrowed.items() if k in names}
            | field_docs(GeneralConfig))
    docs["teacher"] += " Specs: " + spec_forms
    docs["epochs"] = docs["epochs"].replace("``MAX_BUDGET_EPOCHS``", str(MAX_BUDGET_EPOCHS))
    cli = {k: v for k, v in FIELD_CLI.items() if k in names} | {
        "compression": Cli(default=None, note=f"(default: {GeneralConfig.compression}, compress's)"),
        "examples": zero_is_none("(0: all)"),
        **{name: zero_is_none() for name in ("epochs", "min_steps")},
    }
    return config_options(GeneralConfig, docs=docs, cli=cli)


def register(app, friendly_errors) -> None:
    """Add `distill-general` to ``app``; wrapped with ``friendly_errors``."""
    from ..cli import PLAN_HELP, SPEC_FORMS, out
    from .distill import AS_JSON, RESUME, THREADS

    config_opts = general_options(PLAN_HELP, SPEC_FORMS)

    @app.command("distill-general")
    @friendly_errors
    @with_options(
        config_opts,
        [Option("out_dir", Optional[Path], None, "Directory of the general student (default: the cache, "
                "$KRONEDGE_CACHE/general/KEY or ~/.cache/kronedge/general/KEY).", flag="--out"),
         Option("cache_dir", Optional[Path], None, "Where general students are cached (default: "
                "$KRONEDGE_CACHE/general or ~/.cache/kronedge/general)."),
         THREADS, RESUME, AS_JSON])
    def distill_general(**values):
        """General KD (stage 1) once per teacher and structure, on every unlabelled text that ships; saved
        and reused (same key: not recomputed). Start a task from it: compress --general-student DIR|auto."""
        from ..general import distill_general as run
        from .distill import show_progress

        config = GeneralConfig(**field_values(config_opts, values))
        show_progress()
        result = run(config, out=values["out_dir"], cache_dir=values["cache_dir"], resume=values["resume"],
                     threads=values["threads"])
        if values["as_json"]:
            print(json.dumps({"path": str(result.path), "key": result.key, "cached": result.cached,
                              **result.info}, indent=2))
            return
        how = "reused (same key)" if result.cached else f"trained {result.info.get('steps')} steps in {result.seconds:.0f} s"
        out.print(f"general student: {result.path} (key {result.key}; {how})")
        out.print(f"start a task from it: kronedge compress --task TASK --general-student {result.path}")
