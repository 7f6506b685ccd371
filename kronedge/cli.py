"""The `kronedge` command line. Each command parses its options and calls one library function.

Heavy libraries (torch, transformers, onnxruntime) are imported inside the commands so that
`kronedge --help` and `kronedge serve` start fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from . import __version__
from .commands.options import FFN_WIDTH_CLI, Cli, Option, config_options, field_docs, field_values, with_options
from .errors import KronedgeError

app = typer.Typer(
    name="kronedge",
    help="Compress BERT with Kronecker products (KroneckerBERT), distil it, export it to ONNX and run it on edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
# soft_wrap: a sentence read in a pipe or a log stays on one line instead of being cut at 80 columns
out = Console(soft_wrap=True)

SPEC_FORMS = ("builtin:minilm (packaged all-MiniLM-L6-v2), random:bert-base-uncased | random:bert-large-uncased | "
              "random:minilm | random:PATH.json (random weights), a local model or artifact directory, or a Hugging Face "
              "hub id.")
TEACHER_HELP = "Model spec: " + SPEC_FORMS
# The Kronecker plan's help as the command line says it (KronConfig's docstring speaks of fields, not flags);
# shared by plan, kronize and compress.
PLAN_HELP = {
    "preset": "Paper preset: kb8 (KroneckerBERT8, 14.3M params on BERT_BASE) or kb21 (KroneckerBERT21, 5.2M).",
    "compression": "Target compression (teacher params / student params), e.g. 5. Alternative to --preset.",
    "rank": "Kronecker sums per layer (more sums: more params, better fit).",
    "embedding_k": "Width k of the shared embedding factor (divides hidden size).",
    "structure": ("paper: the planner's fixed Kronecker shapes; svd: the rank-r SVD corner of the Kronecker family; "
                  "search: per layer the split and number of terms with the least error (loads the weights)."),
    "allocation": ("With --structure search: global moves parameters between the layers of a role (embedding, attention, "
                   "ffn_up, ffn_down) to those whose error falls most; across-roles between any layers; uniform keeps one shrink."),
    "max_flops_per_token": ("With --structure search: ceiling on one layer's FLOPs per token "
                            "(default: no more than the SVD corner of the same size)."),
    "embedding_share": ("With --structure svd or search: the word embedding's share of the factorised parameters "
                        "(e.g. 0.2); the encoder's matrices split the rest. Default: every matrix shrinks alike."),
    "ffn": ("factored: the FFN maps get the structure; neurons: each FFN keeps the teacher's neurons that carry most "
            "of its output (as many as the factored FFN's parameters pay for) as plain dense maps, so its GELU runs on "
            "a few dozen values per token at ~20x. The neurons are scored on the --calibration text (compress: the training "
            "text), else by their weights."),
    "ffn_width": ("With --ffn neurons: keep this many neurons per FFN (at least as many as its budget holds densely) and "
                  "factor the two maps with --structure at the factored FFN's budget: more neurons, each approximated. "
                  "'dense': the dense count, no search. Default (svd, search): the width whose FFNs best rebuild the "
                  "teacher's FFN outputs on held-out calibration text, the dense count unless a wider one starts 3% "
                  "lower; the dense count without calibration."),
    "layers": ("Keep this many encoder layers (teacher layers uniformly spaced, distilled with the uniform layer map); "
               "fewer layers cut latency more than fewer parameters do. Compression still counts against the full teacher."),
    "calibration": ("Text whose teacher activations weight the fit and the errors: a GLUE task (sst2, cola, rte), "
                    "a data file (.csv, .tsv, .jsonl: its text column, as compress --train reads it), wikitext-2, or "
                    "a text file. Makes the factors minimise the error on real inputs."),
    "vocabulary": ("full: every token keeps its word-embedding row. task: only the tokens of the --calibration text "
                   "(all of it) keep theirs, as compress keeps its training text's by default at a --compression "
                   "target; the rows left out become rank for every factorised matrix, and a token left out reads "
                   "its nearest kept token's row. To preview compress's default student: --structure svd --ffn "
                   "neurons --vocabulary task --calibration YOUR_TASK (and --ffn-to-embedding 0.5 from 20x up)."),
}


def friendly_errors(fn):
    """Turn the errors a user can fix (:class:`KronedgeError`, and ``OSError``: a missing file, no permission)
    into one red line and exit code 1; anything else is a bug and keeps its traceback, and ``--debug``
    shows the traceback for these too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (KronedgeError, OSError) as exc:
            if options.debug:
                raise
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)  # one line in a pipe or log
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


@dataclasses.dataclass
class CliOptions:
    """The options given before the command (``kronedge --debug plan ...``); the app callback sets them on
    every invocation, before the command runs."""

    debug: bool = False


options = CliOptions()


def _version(value: bool):
    if value:
        out.print(f"kronedge {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error, also of one a user can fix."),
):
    """KroneckerBERT from teacher to device: plan, kronize, compress, export, bench, serve."""
    options.debug = debug


def _print_plan(plan) -> None:
    from rich.table import Table

    table = Table(title=f"Kronecker plan ({plan.config.name or f'{plan.target_full:.3g}x target'})")
    table.add_column("layer", no_wrap=True)
    table.add_column("factors", no_wrap=True)
    with_errors = any(layer.errors for layer in plan.layers)
    for col in ("params", "MFLOPs") + (("error", "on inputs") if with_errors else ()):
        table.add_column(col, justify="right", no_wrap=True)
    for layer in plan.layers:
        # "bert.encoder.layer.3.attention.self.query" -> "3.attention.self.query": keeps rows narrow
        name = layer.name.split("encoder.layer.")[-1]
        errors = layer.errors or {}
        weighted = errors.get("error_weighted")
        table.add_row(name, f"{'x'.join(map(str, layer.dense_shape))} -> {layer.kron}",
                      f"{layer.params_before:,} -> {layer.params_after:,}",
                      f"{2 * layer.macs_before / 1e6:.1f} -> {2 * layer.macs_after / 1e6:.2f}",
                      *((f"{errors.get('error_plain', 0):.3f}", "-" if weighted is None else f"{weighted:.3f}")
                        if with_errors else ()))
    # In a pipe or a log there is no terminal width to respect: print whole layer names, not "encoder.layer.5.int…"
    (out if out.is_terminal else Console(width=max(out.width, 160), soft_wrap=True)).print(table)
    for note in plan.notes:
        out.print(f"[yellow]note:[/] {note}")
    kept = ("" if plan.params_full in (None, plan.params_teacher) else
            f" against the full teacher; {plan.compression:.2f}x against the {plan.params_teacher / 1e6:.2f}M params kept")
    flops_full = plan.flops_full or plan.flops_teacher
    out.print(
        f"params {(plan.params_full or plan.params_teacher) / 1e6:.2f}M -> {plan.params_student / 1e6:.2f}M "
        f"([bold]{plan.compression_full:.2f}x[/]{kept}); GFLOPs at seq {plan.seq_len}: "
        f"{flops_full / 1e9:.2f} -> {plan.flops_student / 1e9:.2f} ({flops_full / plan.flops_student:.1f}x fewer)"
    )


@contextlib.contextmanager
def _layer_progress(what: str):
    """A spinner on stderr that names the layer the structure search has just finished."""
    with console.status(f"{what}...") as status:
        yield lambda name: status.update(f"{what}: {name}")


def structure_options() -> list[Option]:
    """The structure options of plan and kronize: --preset, KronConfig's own fields (their defaults are
    KronConfig's), --calibration and --layers."""
    from .kron_config import KronConfig
    from .recipe import CompressConfig

    fields = config_options(KronConfig, docs=field_docs(KronConfig) | PLAN_HELP,
                            cli={"compression": Cli(note=f"(default without --preset: {CompressConfig.compression}, "
                                                         "as compress)"), "ffn_width": FFN_WIDTH_CLI},
                            exclude=("role_shapes", "layer_shapes", "name"))
    return [Option("preset", Optional[str], None, PLAN_HELP["preset"]), *fields,
            Option("calibration", Optional[str], None, PLAN_HELP["calibration"]),
            Option("vocabulary", str, "full", PLAN_HELP["vocabulary"]),
            Option("layers", Optional[int], None, PLAN_HELP["layers"])]


STRUCTURE_OPTIONS = structure_options()


def _kron_config(values: dict):
    from .pipeline import kron_config
    from .recipe import CompressConfig

    fields = field_values(STRUCTURE_OPTIONS, values)
    if values["preset"] is None and fields["compression"] is None:
        fields["compression"] = CompressConfig.compression  # what `kronedge compress` plans by default
    return kron_config(values["preset"], **fields)


@app.command()
@friendly_errors
@with_options([Option("teacher", str, "builtin:minilm", TEACHER_HELP, argument=True)], STRUCTURE_OPTIONS,
              [Option("seq_len", Optional[int], None, "Sequence length for FLOP counts (default: 128, or the teacher's "
                      "positions where it has fewer)."),
               Option("as_json", bool, False, "Print one JSON object instead of a table.", flag="--json")])
def plan(**values):
    """Dry run: every layer's factor shapes, params and FLOPs before/after (and, with weights, the
    starting errors: relative ||W - W_hat||^2 and the same on the calibration inputs). Loads no weights
    unless --structure search or --calibration needs them."""
    from .pipeline import plan_teacher

    config = _kron_config(values)
    searching = values["structure"] == "search"
    with _layer_progress("searching structures" if searching else "planning") as progress:
        result = plan_teacher(values["teacher"], config, seq_len=values["seq_len"], calibration=values["calibration"],
                              progress=progress, layers=values["layers"], vocabulary=values["vocabulary"])
    if values["as_json"]:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_plan(result)
        paper = config.name is None and config.structure == "paper" and config.ffn is None
        if paper and values["vocabulary"] == "full" and values["layers"] is None:
            # plan's defaults, the paper's shapes: not what compress builds at this target, which a user expects
            from .recipe import CompressConfig

            share = CompressConfig(compression=config.compression).ffn_to_embedding
            moved = f" --ffn-to-embedding {share:g}" if share else ""
            out.print(f"compress --compression {config.compression:g} builds another student from this teacher (SVD "
                      "corners, kept FFN neurons, the task's vocabulary); preview it with: kronedge plan "
                      f"{values['teacher']} --compression {config.compression:g} --structure svd --ffn neurons "
                      f"--vocabulary task{moved} --calibration YOUR_TASK_OR_TRAIN_FILE", highlight=False)


@app.command()
@friendly_errors
@with_options([Option("teacher", str, ..., TEACHER_HELP, argument=True),
               Option("out_dir", Path, ..., "Artifact directory to write (replaced atomically).", flag="--out")],
              STRUCTURE_OPTIONS,
              [Option("num_labels", Optional[int], None, "Labels of the classification head (default: those of "
                      "the teacher's head, else 2; another count replaces its head by a new one)."),
               Option("seed", int, 0, "Seed for random weights and new heads.")])
def kronize(**values):
    """Surgery + nearest-Kronecker (SVD) initialisation, no training; saves an artifact."""
    from .pipeline import kronize_teacher

    with _layer_progress("kronizing (SVD of every layer)") as progress:
        path, result = kronize_teacher(values["teacher"], _kron_config(values), values["out_dir"],
                                       num_labels=values["num_labels"], seed=values["seed"],
                                       calibration=values["calibration"], progress=progress, layers=values["layers"],
                                       vocabulary=values["vocabulary"])
    out.print(f"wrote {path}: {(result.params_full or result.params_teacher) / 1e6:.2f}M -> "
              f"{result.params_student / 1e6:.2f}M params ({result.compression_full:.2f}x)")
    for note in result.notes:
        out.print(note)


# Commands owned by the other parts of the toolchain, each in kronedge/commands/<name>.py.
for _module in ("distill", "export", "runtime", "bench", "general"):
    importlib.import_module(f"kronedge.commands.{_module}").register(app, friendly_errors)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
