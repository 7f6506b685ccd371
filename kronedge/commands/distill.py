"""CLI commands of the distillation part: `compress`, `finetune`, `eval`."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ..recipe import AUTO, LOSSES, CompressConfig, default_teacher_config, share_text
from ..training.config import TrainConfig, TrainingError
from .options import FFN_WIDTH_CLI, Cli, Option, config_options, field_docs, field_values, with_options, zero_is_none


def _weights(text: str | None) -> dict:
    """'attention=0.1,hidden=1' -> {'attention': 0.1, 'hidden': 1.0}."""
    out = {}
    for item in filter(None, (text or "").split(",")):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise TrainingError(f"--loss-weights: {item!r} is not NAME=NUMBER") from None
        if not sep:
            raise TrainingError(f"--loss-weights: {item!r} is not NAME=NUMBER")
    return out


def _ffn_share(text: str | None) -> float | str | None:
    """``--ffn-to-embedding`` as written (a share, or "auto") -> ``CompressConfig.ffn_to_embedding``."""
    if text is None or text == AUTO:
        return text
    try:
        return float(text)
    except ValueError:
        raise TrainingError(f"--ffn-to-embedding is a share of the FFN's budget in [0, 1) or {AUTO!r}, "
                            f"got {text!r}") from None


class _Stderr(logging.Handler):
    """Progress lines to whatever ``sys.stderr`` is now (so ``--json`` keeps stdout one JSON object)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def show_progress() -> None:
    """Send kronedge's INFO log lines to stderr, once, unless a handler is already attached."""
    root = logging.getLogger("kronedge")
    if not root.handlers:
        root.addHandler(_Stderr())
    root.setLevel(logging.INFO)


def _weights_text(weights: dict) -> str:
    """{'attention': 0.1} -> 'attention=0.1' (what --loss-weights takes)."""
    return ",".join(f"{k}={v:g}" for k, v in weights.items())


def _minutes(value: float | None) -> float | None:
    return value * 60 if value else None


# What the command line does differently from the config fields (defaults and help stay on the fields).
FIELD_CLI = {
    "stage2_kd": Cli(flag="--kd/--no-kd"),
    "check_teacher": Cli(flag="--teacher-check/--no-teacher-check"),
    "time_budget_s": Cli(flag="--time-budget", type=float, to_field=_minutes,
                         note="On the command line: minutes (0: None)."),
    "checkpoint_seconds": Cli(flag="--checkpoint-every"),
    "loss_weights": Cli(type=str, from_field=_weights_text, to_field=_weights,
                        note=f"Written NAME=WEIGHT,... with NAME one of {', '.join(LOSSES)}; unnamed ones are 1."),
    "unlabelled": Cli(type=Path, to_field=lambda p: str(p) if p else None),
    "ffn_width": FFN_WIDTH_CLI,
    "ffn_to_embedding": Cli(type=str, to_field=_ffn_share),
    **{name: zero_is_none() for name in ("stage1_examples", "stage2_examples", "min_steps", "stage1_min_steps",
                                         "stage2_min_steps", "patience", "cooldown_epochs")},
}
# Filled from the data-source options (--task, --data-dir, the data files), not one option each.
SOURCE_FIELDS = ("task", "data_dir", "source")


def _stage_docs(names, own: dict, shared: dict, train: dict) -> dict:
    """CompressConfig's help per field: its own Args entry; for ``stage<N>_<x>`` "Stage N: " and the
    shared entry or TrainConfig's help of ``x``; else a shared entry or TrainConfig's help."""
    docs = {}
    for name in names:
        stage = re.fullmatch(r"stage(\d)_(\w+)", name)
        if name in own:
            docs[name] = own[name]
        elif stage and (shared.get(name) or train.get(stage[2])):
            text = shared.get(name) or train[stage[2]]
            docs[name] = f"Stage {stage[1]}: {text[:1].lower()}{text[1:]}"
        elif shared.get(name) or train.get(name):
            docs[name] = shared.get(name) or train[name]
    return docs


def compress_options(plan_help: dict, spec_forms: str) -> list[Option]:
    """``kronedge compress``'s options from :class:`CompressConfig`'s fields (a new field is a new option)."""
    names = [f.name for f in dataclasses.fields(CompressConfig)]
    docs = _stage_docs(names, field_docs(CompressConfig), field_docs(CompressConfig, grouped=True),
                       field_docs(TrainConfig))
    docs.update({k: v for k, v in plan_help.items() if k in ("preset", "compression", "rank", "embedding_k")})
    docs["teacher"] += " Specs: " + spec_forms
    cli = {**FIELD_CLI, "compression": Cli(default=None, note=f"(default: {CompressConfig.compression})")}
    return config_options(CompressConfig, docs=docs, cli=cli, exclude=SOURCE_FIELDS)


def finetune_options() -> list[Option]:
    """``kronedge finetune``'s options from :class:`TrainConfig`, with the teacher recipe's defaults."""
    return config_options(TrainConfig, defaults=default_teacher_config(), cli=FIELD_CLI)


def data_file_options(*names: str) -> list[Option]:
    """The data-file options (``--train --validation --format ...``), defined once on :class:`DataFiles`."""
    from ..data.files import DataFiles

    cli = {"train": Cli(type=Path), "validation": Cli(type=Path), "format": Cli(flag="--format")}
    options = config_options(DataFiles, cli=cli, exclude=tuple(f.name for f in dataclasses.fields(DataFiles)
                                                               if names and f.name not in names))
    # --format fills the field format; its parameter keeps the name file_format (format is a builtin)
    return [dataclasses.replace(o, name="file_format") if o.field == "format" else o for o in options]


def task_option(help: str, default: str | None = CompressConfig.task) -> Option:
    return Option("task", Optional[str] if default is None else str, default, help)


GLUE_TASK_HELP = ("GLUE task: cola sst2 mrpc stsb qqp mnli mnli-mm qnli rte wnli (not with --train/--validation, "
                  "your own files).")
DATA_DIR = Option("data_dir", Optional[Path], None, "GLUE root for tasks that do not ship (holds MRPC/, ...).")
THREADS = Option("threads", Optional[int], None, "torch threads (default: torch's choice).")
RESUME = Option("resume", bool, False, "Continue an interrupted run from its checkpoints.", flag="--resume")
EVAL_VALIDATION = Option("validation", Optional[Path], None, "Score on this labelled file (.csv, .tsv, .jsonl) "
                         "instead; its labels are matched by name to the model's.", field="validation")
AS_JSON = Option("as_json", bool, False, "Print the result as one JSON object.", flag="--json")
SKIP_UNKNOWN = Option("skip_unknown_labels", bool, False, "With --validation: leave out the rows whose label the model "
                      "lacks (counted per label in the result) instead of stopping at them.",
                      flag="--skip-unknown-labels")


def _source(values: dict, task: str | None, data_files: list[Option]):
    """The one TaskSource of a command's ``--task``/``--data-dir`` or data-file options."""
    from ..data import TaskSource

    files = field_values(data_files, values)
    if files.get("train") is None and files.get("validation") is None:
        task = task or values.get("task")
    files = {"train": None, "problem_type": None, "name": None, "metric": None, **files}
    return TaskSource.from_options(task=task, data_dir=values.get("data_dir"), **files)


def _given(ctx, name: str):
    """The option's value when the user typed it, None when it is the default (so a defaulted --task
    does not clash with --train)."""
    source = ctx.get_parameter_source(name)  # by name: typer may carry its own copy of click's enum
    return None if getattr(source, "name", None) in ("DEFAULT", "DEFAULT_MAP") else ctx.params[name]


def register(app, friendly_errors) -> None:
    """Add this module's commands to ``app``; wrap each with ``friendly_errors``."""
    from ..cli import PLAN_HELP, SPEC_FORMS, out

    files = data_file_options()
    config_opts = compress_options(PLAN_HELP, SPEC_FORMS)
    _add_compress(app, friendly_errors, out, config_opts, files)
    teacher = next(o for o in config_opts if o.field == "teacher")
    _add_finetune(app, friendly_errors, out, Option("teacher", str, teacher.default, teacher.help, argument=True), files)
    _add_eval(app, friendly_errors, out)


def _add_compress(app, friendly_errors, out, config_opts: list[Option], files: list[Option]) -> None:
    teacher, recipe = config_opts[0], config_opts[1:]
    assert teacher.field == "teacher", "CompressConfig's first field is the teacher"

    @app.command()
    @friendly_errors
    @with_options(
        [teacher], [task_option(GLUE_TASK_HELP)], files,
        [Option("out_dir", Optional[Path], None, "Artifact directory (default: artifacts/kronedge-TASK).", flag="--out"),
         Option("run_dir", Optional[Path], None, "Run directory (logs, checkpoints) (default: runs/compress-TASK).")],
        recipe, [DATA_DIR, THREADS, RESUME, AS_JSON], context=True)
    def compress(ctx: typer.Context, **values):
        """Teacher -> fine-tune if needed -> kronize -> general KD -> task KD -> evaluate -> artifact.

        With no arguments: SST-2, builtin:minilm, ~5x, offline, about 20 minutes on a 2-core CPU.
        """
        from ..compress import compress as run

        show_progress()
        source = _source(values, _given(ctx, "task"), files)
        task, from_files = source.name, source.files is not None
        run_dir = values["run_dir"] or Path("runs") / f"compress-{task}"
        source = source.with_validation(run_dir / "data")  # one labelled file: its validation set held out of it
        fields = field_values(config_opts, values)
        if fields["compression"] is None and fields["preset"] is None:
            fields["compression"] = CompressConfig.compression
        data_dir = values["data_dir"]
        config = CompressConfig(**fields, task=task, source=source.to_dict() if from_files else None,
                                data_dir=str(data_dir) if data_dir else None)
        out_dir = values["out_dir"]
        if config.method == "svd" and out_dir is None:
            artifact = None
        else:
            artifact = out_dir or Path("artifacts") / f"kronedge-{task}"  # nothing written before the check
        result = run(config, out=artifact, run_dir=run_dir, resume=values["resume"], threads=values["threads"])
        if values["as_json"]:
            print(json.dumps(result.to_dict(), indent=2))
            return
        _print_compress(out, result, task, f"--validation {source.files.validation}" if from_files else f"--task {task}")


def _add_finetune(app, friendly_errors, out, teacher: Option, files: list[Option]) -> None:
    train_opts = finetune_options()

    @app.command()
    @friendly_errors
    @with_options(
        [teacher, task_option(GLUE_TASK_HELP)], files,
        [Option("out_dir", Optional[Path], None, "Output directory (default: runs/teachers/TASK-HASH, reused when "
                "finished).", flag="--out")],
        train_opts,
        [Option("train_limit", Optional[int], None, "Use a seeded subset of this many training examples."),
         DATA_DIR, THREADS, RESUME, AS_JSON], context=True)
    def finetune(ctx: typer.Context, **values):
        """Fine-tune a teacher with a new classification head on a GLUE task or your own files (cached)."""
        from ..finetune import finetune as run

        show_progress()
        source = _source(values, _given(ctx, "task"), files)
        source = source.with_validation(Path("runs") / "data" / source.name)
        config = default_teacher_config(**field_values(train_opts, values))
        result = run(values["teacher"], source, out=values["out_dir"], train_limit=values["train_limit"],
                     config=config, resume=values["resume"], threads=values["threads"])
        info = {"path": str(result.path), "metrics": result.metrics, "seconds": round(result.seconds, 1),
                "cached": result.cached, "train_examples": result.train_examples, "precision": result.precision}
        if values["as_json"]:
            print(json.dumps(info, indent=2))
        else:
            out.print(f"fine-tuned teacher: {result.path} ({'cached' if result.cached else f'{result.seconds:.0f} s'}); "
                      f"dev metrics {result.metrics}")


def _add_eval(app, friendly_errors, out) -> None:
    eval_files = data_file_options("format", "text_column", "text_pair_column", "label_column")

    @app.command("eval")
    @friendly_errors
    @with_options(
        [Option("model_dir", Path, ..., "A kronedge artifact, a saved BERT classifier, or an exported ONNX dir.",
                argument=True),
         task_option("GLUE task (default: the artifact's own).", default=None), DATA_DIR,
         EVAL_VALIDATION],
        eval_files,
        [Option("limit", Optional[int], None, "Score only the first N dev examples."), SKIP_UNKNOWN, AS_JSON])
    def eval_(**values):
        """Score a model on a GLUE dev set or your own labelled file (torch for artifacts, ONNX Runtime for
        exported models)."""
        _evaluate(out, values, eval_files)


def _print_compress(out, result, task: str, again: str) -> None:
    """What `kronedge compress` prints: the two scores, the sizes, the stage times, warnings, the artifact."""
    p = result.primary_metric
    out.print(f"teacher {task} dev {p}: [bold]{result.teacher_metrics[p]:.4f}[/]")
    out.print(f"student {task} dev {p}: [bold]{result.student_metrics[p]:.4f}[/] "
              f"({share_text(result.student_metrics[p], result.teacher_metrics[p])}) with "
              f"{result.params_student / 1e6:.2f}M instead of {result.params_teacher / 1e6:.2f}M embedding+encoder "
              f"params ({result.compression:.2f}x fewer)")
    out.print("time: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.seconds.items()))
    for warning in result.warnings:
        out.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    if result.artifact:
        out.print(f"artifact: {result.artifact}  (score it: kronedge eval {result.artifact} {again})")


def _recorded_columns(model_dir: Path, validation: Path) -> dict:
    """The column names the model was trained with (the task spec in its kronedge.json or finetune.json, or in an
    export's manifest source) that ``validation`` has too: a file laid out like the training file needs no column
    options."""
    from ..data import DataError, Table

    spec = None
    for name, part in (("kronedge.json", None), ("finetune.json", None), ("manifest.json", "source")):
        try:
            data = json.loads((model_dir / name).read_text())
        except (OSError, ValueError):
            continue
        record = data.get(part) or {} if part else data
        spec = record.get("task_spec") or (record.get("finetune") or {}).get("task_spec")  # a kronized teacher's
        if spec:
            break
    if not spec:
        return {}
    try:
        columns = Table(validation).columns
    except DataError:
        return {}  # the file's own error comes from reading it for real
    texts = list(spec.get("text_columns") or ())
    recorded = {"text_column": texts[0] if texts else None, "label_column": spec.get("label_column"),
                "text_pair_column": texts[1] if len(texts) == 2 else None}
    return {k: v for k, v in recorded.items() if isinstance(v, str) and v in columns}


def _recorded_validation(model_dir: Path) -> Path | None:
    """The validation file ``compress`` scored the model on (an artifact's recipe, or an export's artifact's), when
    it is still where the run left it: the held-out part of a training file given alone, or the user's own."""
    from runtime.contract import Manifest

    from ..artifact import RECIPE_FILE, read_recipe

    artifact = model_dir
    if not (artifact / RECIPE_FILE).is_file() and (model_dir / "manifest.json").is_file():  # an export
        artifact = Path(Manifest.load(model_dir / "manifest.json").source.get("path") or model_dir)
    if not (artifact / RECIPE_FILE).is_file():
        return None
    source = (read_recipe(artifact).get("compress_config") or {}).get("source") or {}
    path = (source.get("files") or {}).get("validation")
    return Path(path) if path and Path(path).is_file() else None


def _evaluate(out, values: dict, eval_files: list[Option]) -> None:
    """`kronedge eval`: an exported directory through ONNX Runtime, anything else through torch."""
    from ..data import UnknownLabelsError

    model_dir, task, validation = values["model_dir"], values["task"], values["validation"]
    if values["limit"] is not None and values["limit"] < 1:
        raise UsageError(f"--limit must be >= 1 example, got {values['limit']}; leave it out to score them all")
    columns_given = any(values[o.name] is not None for o in eval_files)
    if validation is None and task is None and not columns_given:
        validation = _recorded_validation(model_dir)
        if validation is not None:  # trained on the user's own files: score it where compress did
            if not values["as_json"]:
                out.print(f"scoring on {validation}, the validation file compress used", highlight=False)
            values = {**values, "validation": validation}
    if validation is not None and not columns_given:
        values = {**values, **_recorded_columns(model_dir, validation)}
    file_options = [o for o in eval_files if values[o.name] is not None]
    source = _source(values, task, [EVAL_VALIDATION, *eval_files]) if validation is not None or task else None
    if validation is None and file_options:
        _source(values, None, eval_files)  # the data-file options without a file: one clear error
    skip_unknown = values["skip_unknown_labels"]
    if skip_unknown and validation is None:
        raise UsageError("--skip-unknown-labels leaves rows of your --validation FILE out; a GLUE dev set has only "
                         "its task's labels")
    try:
        result = _score(model_dir, values, source, task, skip_unknown)
    except UnknownLabelsError as exc:
        raise UnknownLabelsError(f"{exc}; pass --skip-unknown-labels to score the other rows") from None
    _print_eval(out, result, model_dir, values["as_json"], validation if validation is not None else
                f"{result.get('task', task)} dev")


def _score(model_dir: Path, values: dict, source, task: str | None, skip_unknown: bool) -> dict:
    data_dir, limit = values["data_dir"], values["limit"]
    if (model_dir / "manifest.json").is_file():
        from exporters.evaluate import evaluate_exported
        from runtime.contract import Manifest

        manifest = Manifest.load(model_dir / "manifest.json")
        data = None
        if source is not None and source.files is not None:
            recorded = (manifest.source or {}).get("task_spec") or {}
            spec = source.model_spec(list(manifest.labels or ()), manifest.is_regression, manifest.task,
                                     recorded.get("primary_metric"))
            data, task = source.load("dev", spec, skip_unknown), spec
        own_file = ((manifest.source or {}).get("task_spec") or {}).get("data_file")
        if source is None and own_file:
            raise UsageError(f"{model_dir} was trained on your own file {own_file}: score it with --validation FILE")
        task = task or manifest.task
        if not task:
            raise UsageError(f"{model_dir}/manifest.json names no task: pass --task or --validation FILE")
        return evaluate_exported(model_dir, task, data_dir=data_dir, limit=limit, data=data)
    from ..evaluation import evaluate_artifact

    return evaluate_artifact(model_dir, task, data_dir=data_dir, limit=limit, source=source,
                             skip_unknown_labels=skip_unknown)


def _print_eval(out, result: dict, model_dir: Path, as_json: bool, where) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float) and k not in ("seconds",))
        out.print(f"{model_dir} on {where} ({result.get('examples', '?')} examples): {metrics}")
        skipped = result.get("skipped_labels")
        if skipped:
            from ..data.examples import describe_skipped

            out.print(f"  left out {describe_skipped(Counter(skipped))}", highlight=False)
        weakest = weakest_classes(result.get("per_class") or {})
        if weakest:
            out.print(f"  weakest classes by F1: {weakest} (--json lists every class)", highlight=False)
        mixed = most_confused(result.get("confusions") or [], len(result.get("per_class") or ()))
        if mixed:
            out.print(f"  most confused (gold -> predicted): {mixed} (--json lists every pair)", highlight=False)


def most_confused(confusions: list[dict], classes: int, shown: int = 3) -> str:
    """The ``shown`` most frequent (gold, predicted) mix-ups when there are more than two classes (with two, the
    per-class line already says which way the errors go)."""
    def name(label: str) -> str:
        return repr(label) if "," in label or "->" in label else label

    return "" if classes <= 2 else ", ".join(f"{name(c['gold'])} -> {name(c['predicted'])} {c['count']}"
                                             for c in confusions[:shown])


def weakest_classes(per_class: dict, shown: int = 3) -> str:
    """The ``shown`` classes with the lowest F1 (those in the file or predicted), and how many score 0, when there
    are more than two classes and not every one is perfect."""
    scored = sorted((row["f1"], name, row) for name, row in per_class.items() if row["f1"] is not None)
    if len(per_class) <= 2 or not scored or scored[0][0] == 1.0:
        return ""
    text = ", ".join(f"{repr(name) if ',' in name else name} {f1:.2f} ({row['support']} examples"
                     f"{'' if row['support'] else ', ' + str(row['predicted']) + ' predicted'})"
                     for f1, name, row in scored[:shown])
    zeros = sum(f1 == 0.0 for f1, _, _ in scored)
    return text + (f"; {zeros} of {len(scored)} classes at 0.00" if zeros > shown else "")
