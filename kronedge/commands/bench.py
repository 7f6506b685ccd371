"""`kronedge bench`: latency/size/memory of exported models side by side, on this machine or an emulated Pi CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{what} takes comma-separated integers, e.g. 32,128 (got {text!r})") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"--{what} takes positive integers (got {text!r})")
    return values


def register(app, friendly_errors) -> None:
    """Add this module's commands to ``app``; wrap each with ``friendly_errors``."""

    @app.command()
    @friendly_errors
    def bench(
        model_dirs: List[Path] = typer.Argument(..., help="Exported model directories (or .onnx files). The first is the baseline for ratios."),
        seq: str = typer.Option("128", help="Sequence lengths, comma-separated, e.g. 32,128."),
        batch: str = typer.Option("1", help="Batch sizes, comma-separated, e.g. 1,8."),
        threads: str = typer.Option("1", help="ORT intra-op threads, comma-separated, e.g. 1,2 (1 is the most stable on a shared box)."),
        warmup: int = typer.Option(3, help="Warm-up runs per model before measuring."),
        iters: int = typer.Option(20, help="Measured runs per model (interleaved across models)."),
        name: Optional[List[str]] = typer.Option(None, "--name", help="Label for each model, in order (repeat the option)."),
        as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON on stdout (tables go to stderr)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report to this file."),
        markdown: Optional[Path] = typer.Option(None, help="Write a Markdown report to this file."),
        plot: Optional[Path] = typer.Option(None, help="Write a PNG plot (latency vs file size) to this file."),
        target: str = typer.Option("host", help="host (this machine) or arm64 (emulated under QEMU user mode; wall times are EMULATED)."),
        cpu: Optional[str] = typer.Option(None, help="With --target arm64: cortex-a53 (Pi 3), cortex-a72 (Pi 4, default) or cortex-a76 (Pi 5)."),
        instructions: bool = typer.Option(False, help="With --target arm64: count guest instructions of one inference per model (TCG plugin; needs qemu-user and gcc)."),
        rss: bool = typer.Option(True, help="Measure peak RSS in a fresh process per model and shape (host only)."),
        disable_optimizer: Optional[List[str]] = typer.Option(None, "--disable-optimizer", help="ORT optimizer to skip, e.g. SkipLayerNormFusion (repeatable)."),
    ):
        """Benchmark exported models: warm-up, interleaved runs, p50/p90/p99, throughput, peak RSS, size, params, FLOPs.

        Example: kronedge bench runs/dense-fp32 runs/kb21-int8 --seq 128 --batch 1 --threads 2 --json
        """
        from rich.console import Console

        from ..benchmark import plot as make_plot
        from ..benchmark import print_table, run_bench, to_markdown

        err = Console(stderr=True)
        if not err.is_terminal:
            err = Console(stderr=True, width=160)
        report = run_bench(
            [str(p) for p in model_dirs], seqs=_ints(seq, "seq"), batches=_ints(batch, "batch"),
            threads=_ints(threads, "threads"), warmup=warmup, iters=iters, target=target, cpu=cpu,
            instructions=instructions, rss=rss and target == "host", names=name or None,
            disabled_optimizers=disable_optimizer or (), log=lambda msg: err.print(f"[dim]{msg}[/]", highlight=False))
        print_table(report, err if as_json else Console(width=None if err.is_terminal else 160))
        text = json.dumps(report, indent=2)
        if output:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text + "\n")
        if markdown:
            markdown.parent.mkdir(parents=True, exist_ok=True)
            markdown.write_text(to_markdown(report) + "\n")
        if plot:
            make_plot(report, plot)
        if as_json:
            print(text)
