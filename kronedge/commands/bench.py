"""`kronedge bench`: latency/size/memory/compute floor of exported models side by side, on this machine or an
emulated Pi CPU. Defaults and help come from :class:`kronedge.benchmark.config.BenchConfig`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from ..benchmark.config import BenchError, default_of, help_of


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--{what} takes comma-separated integers, e.g. 32,128 (got {text!r})") from None
    if not values or any(v < 1 for v in values):
        raise BenchError(f"--{what} takes positive integers (got {text!r})")
    return values


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


def _write(path: Path, text: str) -> None:
    """Write atomically: a reader never sees half a report, and a failed write leaves no temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_writable(path: Optional[Path]) -> None:
    """Before measuring: an output that cannot be written is one error now, not after the whole bench."""
    if path is None:
        return
    from ..artifact import file_in_the_way

    if path.is_dir():
        raise BenchError(f"{path} is a directory: give the report a file name")
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise BenchError(f"cannot write {path}: {blocking} is a file, not a directory")
    probe = path.with_name(path.name + ".probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror or exc}") from None


def register(app, friendly_errors) -> None:
    """Add this module's commands to ``app``; wrap each with ``friendly_errors``."""

    @app.command()
    @friendly_errors
    def bench(
        model_dirs: List[Path] = typer.Argument(..., help="Exported model directories (or .onnx files). The first is "
                                                          "the baseline for ratios."),
        seq: str = typer.Option(_csv(default_of("seqs")), help=help_of("seqs")),
        batch: str = typer.Option(_csv(default_of("batches")), help=help_of("batches")),
        threads: str = typer.Option(_csv(default_of("threads")), help=help_of("threads")),
        warmup: int = typer.Option(default_of("warmup"), help=help_of("warmup")),
        iters: int = typer.Option(default_of("iters"), help=help_of("iters")),
        name: Optional[List[str]] = typer.Option(None, "--name", help="Label for each model, in order (repeat the "
                                                                      "option)."),
        as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON on stdout (tables go to "
                                                           "stderr)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report to this file."),
        markdown: Optional[Path] = typer.Option(None, help="Write a Markdown report to this file."),
        plot: Optional[Path] = typer.Option(None, help="Write a PNG plot (latency vs file size) to this file."),
        target: str = typer.Option(default_of("target"), help=help_of("target")),
        cpu: Optional[str] = typer.Option(default_of("cpu"), help=help_of("cpu")),
        instructions: bool = typer.Option(default_of("instructions"), help=help_of("instructions")),
        rss: bool = typer.Option(default_of("rss"), help=help_of("rss")),
        disable_optimizer: Optional[List[str]] = typer.Option(None, "--disable-optimizer",
                                                              help=help_of("disabled_optimizers")),
        floor: bool = typer.Option(default_of("floor"), help=help_of("floor")),
        probe_size: int = typer.Option(default_of("probe_size"), help=help_of("probe_size")),
        profile: bool = typer.Option(default_of("profile"), help=help_of("profile")),
        profile_runs: int = typer.Option(default_of("profile_runs"), help=help_of("profile_runs")),
    ):
        """Benchmark exported models: warm-up, interleaved runs, p50/p90/p99, throughput, peak RSS, size, params,
        GEMM FLOPs, compute floor; --profile adds ORT's per-op-type breakdown.

        Example: kronedge bench runs/dense-fp32 runs/kb21-int8 --seq 32,128 --threads 1 --profile --json
        """
        from rich.console import Console

        from ..benchmark import plot as make_plot
        from ..benchmark import print_table, run_bench, to_markdown
        from .distill import show_progress

        for path in (output, markdown, plot):
            _check_writable(path)
        show_progress()  # the bench's progress lines are INFO records of kronedge.benchmark
        err = Console(stderr=True)
        if not err.is_terminal:
            err = Console(stderr=True, width=160)
        report = run_bench(
            [str(p) for p in model_dirs], seqs=_ints(seq, "seq"), batches=_ints(batch, "batch"),
            threads=_ints(threads, "threads"), warmup=warmup, iters=iters, target=target, cpu=cpu,
            instructions=instructions, rss=rss and target == "host", names=name or None,
            disabled_optimizers=tuple(disable_optimizer or ()), floor=floor and target == "host",
            probe_size=probe_size, profile=profile, profile_runs=profile_runs)
        print_table(report, err if as_json else Console(width=None if err.is_terminal else 160))
        text = json.dumps(report, indent=2)
        if output:
            _write(output, text + "\n")
        if markdown:
            _write(markdown, to_markdown(report) + "\n")
        if plot:
            make_plot(report, plot)
        if as_json:
            print(text)
