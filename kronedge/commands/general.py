"""CLI command `kronedge distill-general`: a reusable general student (stage 1 done once)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..general import GeneralConfig

G = GeneralConfig  # the defaults every option shows, written once there
COMPRESSION_HELP = f"Target compression (teacher params / student params), e.g. 5 (default: {G.compression}, compress's)."
PRESET_HELP = "Paper preset instead of --compression: kb8 or kb21."
DEFAULT_LOSS_WEIGHTS = ",".join(f"{k}={v:g}" for k, v in GeneralConfig.__dataclass_fields__["loss_weights"]
                                .default_factory().items())


def register(app, friendly_errors) -> None:
    """Add `distill-general` to ``app``; wrapped with ``friendly_errors``."""
    from ..cli import out

    @app.command("distill-general")
    @friendly_errors
    def distill_general(
        teacher: str = typer.Option(G.teacher, help="Pre-trained teacher spec (builtin:minilm, a local dir, "
                                    "random:NAME|PATH.json, a hub id); a fine-tuned teacher dir maps to its base."),
        compression: Optional[float] = typer.Option(None, help=COMPRESSION_HELP),
        preset: Optional[str] = typer.Option(None, help=PRESET_HELP),
        rank: int = typer.Option(G.rank, help="Kronecker sums per layer."),
        embedding_k: Optional[int] = typer.Option(None, help="Width k of the shared embedding factor."),
        structure: str = typer.Option(G.structure, help="paper | svd | search (as for compress)."),
        allocation: str = typer.Option(G.allocation, help="With --structure search: global | uniform."),
        embedding_share: Optional[float] = typer.Option(None, help="The word embedding's share of the factorised "
                                                        "parameters (as for compress; default: the same shrink as the rest)."),
        calibration: bool = typer.Option(G.calibration, "--calibration/--no-calibration",
                                         help="Fit the factors to the teacher's activations on the corpus."),
        layers: Optional[int] = typer.Option(G.layers, help="Keep this many encoder layers (as for compress)."),
        corpus: Optional[str] = typer.Option(None, help="Unlabelled text: a file, wikitext-2, wikitext-2-all, or "
                                             "general (the default: both WikiText-2 splits and the shipped GLUE "
                                             "tasks' training texts without labels)."),
        examples: Optional[int] = typer.Option(None, help="Use a seeded subset of this many texts (default: all)."),
        max_length: int = typer.Option(G.max_length, help="Tokens per text."),
        epochs: int = typer.Option(0, help="Passes over the texts (0: 1, or with --time-budget as many whole "
                                   "epochs as fit, at most 10)."),
        min_steps: int = typer.Option(0, help="More epochs until this many optimizer steps (0 = off)."),
        lr: float = typer.Option(G.lr, help="Peak learning rate."),
        batch_size: int = typer.Option(G.batch_size, help="Batch size."),
        loss_weights: str = typer.Option(DEFAULT_LOSS_WEIGHTS, help="Intermediate KD loss weights, e.g. "
                                         "attention=0.1,hidden=1 (embedding, attention, hidden)."),
        seed: int = typer.Option(G.seed, help="Seed."),
        precision: str = typer.Option(G.precision, help="auto | bf16 | fp32."),
        time_budget: Optional[float] = typer.Option(None, help="Minutes for the training (whole epochs that fit; "
                                                    "stops past 110%)."),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Directory of the general student (default: "
                                               "the cache, $KRONEDGE_CACHE/general/KEY or ~/.cache/kronedge/general/KEY)."),
        cache_dir: Optional[Path] = typer.Option(None, help="Where general students are cached (default: "
                                                 "$KRONEDGE_CACHE/general or ~/.cache/kronedge/general)."),
        threads: Optional[int] = typer.Option(None, help="torch threads (default: torch's choice)."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its checkpoint."),
        checkpoint_every: float = typer.Option(G.checkpoint_seconds, help="Seconds between resumable checkpoints."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    ):
        """General KD (stage 1) once per teacher and structure, on every unlabelled text that ships; saved
        and reused (same key: not recomputed). Start a task from it: compress --general-student DIR|auto."""
        from ..general import distill_general as run
        from .distill import _weights, show_progress

        config = GeneralConfig(
            teacher=teacher, compression=compression if compression is not None or preset else G.compression,
            preset=preset, rank=rank, embedding_k=embedding_k, structure=structure, allocation=allocation,
            embedding_share=embedding_share, layers=layers, calibration=calibration, corpus=corpus, examples=examples or None, max_length=max_length,
            epochs=epochs or None, lr=lr, batch_size=batch_size, seed=seed, precision=precision, min_steps=min_steps or None,
            loss_weights=_weights(loss_weights), time_budget_s=time_budget * 60 if time_budget else None,
            checkpoint_seconds=checkpoint_every)
        show_progress()
        result = run(config, out=out_dir, cache_dir=cache_dir, resume=resume, threads=threads)
        if as_json:
            print(json.dumps({"path": str(result.path), "key": result.key, "cached": result.cached,
                              **result.info}, indent=2))
            return
        how = "reused (same key)" if result.cached else f"trained {result.info.get('steps')} steps in {result.seconds:.0f} s"
        out.print(f"general student: {result.path} (key {result.key}; {how})")
        out.print(f"start a task from it: kronedge compress --task TASK --general-student {result.path}")
