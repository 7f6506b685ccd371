"""CLI commands of the distillation part: `compress`, `finetune`, `eval`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ..recipe import DEFAULT_COMPRESSION, CompressConfig, default_teacher_config
from ..training.config import TrainingError

# The defaults every option shows come from the config classes, written once there.
D = CompressConfig
T = default_teacher_config()
DEFAULT_LOSS_WEIGHTS = ",".join(f"{k}={v:g}" for k, v in CompressConfig.__dataclass_fields__["loss_weights"]
                                .default_factory().items())
TEACHER_HELP = ("Teacher spec: builtin:minilm (packaged all-MiniLM-L6-v2), a local model or artifact directory, "
                "random:NAME|PATH.json, or a hub id. Fine-tuned first when it has no head for the task.")


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


def _source(task: str | None, data_dir, default_task: str | None = None, **files):
    """The one TaskSource of a command's ``--task``/``--data-dir`` or data-file options."""
    from ..data import TaskSource

    if files["train"] is None and files["validation"] is None:
        task = task or default_task
    return TaskSource.from_options(task=task, data_dir=data_dir, **files)


def _given(ctx, name: str):
    """The option's value when the user typed it, None when it is the default (so a defaulted --task
    does not clash with --train)."""
    source = ctx.get_parameter_source(name)  # by name: typer may carry its own copy of click's enum
    return None if getattr(source, "name", None) in ("DEFAULT", "DEFAULT_MAP") else ctx.params[name]


def register(app, friendly_errors) -> None:
    """Add this module's commands to ``app``; wrap each with ``friendly_errors``."""
    from ..cli import COMPRESSION_HELP, PRESET_HELP, out
    from ..data.files import DataFiles

    H = DataFiles.help  # the data-file options' help, written once on DataFiles

    @app.command()
    @friendly_errors
    def compress(
        ctx: typer.Context,
        teacher: str = typer.Option(D.teacher, help=TEACHER_HELP),
        task: str = typer.Option(D.task, help="GLUE task: cola sst2 mrpc stsb qqp mnli mnli-mm qnli rte wnli "
                                 "(not with --train/--validation, your own files)."),
        train: Optional[Path] = typer.Option(None, "--train", help=H("train")),
        validation: Optional[Path] = typer.Option(None, "--validation", help=H("validation")),
        file_format: Optional[str] = typer.Option(None, "--format", help=H("format")),
        text_column: Optional[str] = typer.Option(None, help=H("text_column")),
        text_pair_column: Optional[str] = typer.Option(None, help=H("text_pair_column")),
        label_column: Optional[str] = typer.Option(None, help=H("label_column")),
        problem_type: Optional[str] = typer.Option(None, help=H("problem_type")),
        name: Optional[str] = typer.Option(None, help=H("name")),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Artifact directory (default: artifacts/kronedge-TASK)."),
        run_dir: Optional[Path] = typer.Option(None, help="Run directory (logs, checkpoints) (default: runs/compress-TASK)."),
        compression: Optional[float] = typer.Option(None, help=COMPRESSION_HELP + f" (default: {DEFAULT_COMPRESSION}, i.e. >= 5x)"),
        preset: Optional[str] = typer.Option(None, help=PRESET_HELP),
        rank: int = typer.Option(D.rank, help="Kronecker sums per layer."),
        embedding_k: Optional[int] = typer.Option(None, help="Width k of the shared embedding factor."),
        method: str = typer.Option(D.method, help="kronecker | svd (truncated SVD, equal params) | dense-small."),
        structure: str = typer.Option(D.structure, help="paper | svd | search: the member of the Kronecker family "
                                      "each layer gets (see `kronedge plan --help`)."),
        allocation: str = typer.Option(D.allocation, help="With --structure search: global | uniform."),
        calibration: bool = typer.Option(D.calibration, "--calibration/--no-calibration",
                                         help="Fit the factors to the teacher's activations on the training text, "
                                         "not to the bare weights."),
        layers: Optional[int] = typer.Option(D.layers, help="Keep this many encoder layers (uniformly spaced teacher "
                                             "layers, uniform KD map); compression counts against the full teacher."),
        stage1: bool = typer.Option(D.stage1, "--stage1/--no-stage1", help="General KD on unlabelled text."),
        kd: bool = typer.Option(D.stage2_kd, "--kd/--no-kd", help="Stage 2 with every KD loss; --no-kd: labels only."),
        corpus: Optional[str] = typer.Option(None, help="Text file for stage 1, or wikitext-2 (shipped validation "
                                             "split, the default) or wikitext-2-all (validation + test)."),
        stage1_examples: Optional[int] = typer.Option(D.stage1_examples, help="Text chunks for stage 1 (0 = all)."),
        stage1_epochs: int = typer.Option(D.stage1_epochs, help="Epochs of stage 1 (at least)."),
        stage1_lr: float = typer.Option(D.stage1_lr, help="Peak learning rate of stage 1."),
        stage2_examples: Optional[int] = typer.Option(D.stage2_examples, help="Training examples for stage 2 (0 = all)."),
        stage2_epochs: int = typer.Option(D.stage2_epochs, help="Epochs of stage 2 (at least)."),
        stage2_lr: float = typer.Option(D.stage2_lr, help="Peak learning rate of stage 2."),
        teacher_train_limit: Optional[int] = typer.Option(None, help="Examples for the teacher fine-tune (default all)."),
        batch_size: int = typer.Option(D.batch_size, help="Batch size."),
        max_length: int = typer.Option(D.max_length, help="Tokens per example in stage 2 and evaluation."),
        temperature: float = typer.Option(D.temperature, help="Logit-KD temperature."),
        layer_map: str = typer.Option(D.layer_map, help="one-to-one | uniform (shallower student)."),
        loss_weights: str = typer.Option(DEFAULT_LOSS_WEIGHTS, help="KD loss weights, e.g. attention=0.1,hidden=1 "
                                         "(embedding, attention, hidden, logits, supervised; unnamed ones are 1)."),
        seed: int = typer.Option(D.seed, help="Seed."),
        precision: str = typer.Option(D.precision, help="auto (bf16 where the hardware has it) | bf16 | fp32."),
        time_budget: Optional[float] = typer.Option(None, help="Minutes for the training: epochs are trimmed to what "
                                                    "fits (a teacher fine-tune gets at most a third, stage 1 at most "
                                                    "a third of the rest)."),
        min_steps: int = typer.Option(D.min_steps, help=f"Small data trains more epochs (at most {D.max_epochs}) until the teacher fine-tune "
                                      "and stage 2 reach this many optimizer steps (0 = off)."),
        patience: int = typer.Option(D.patience, help="Stop the teacher fine-tune and stage 2 after this many epochs without a "
                                     "better dev score (0 = never)."),
        stage1_min_steps: int = typer.Option(D.stage1_min_steps or 0, help="The same floor for stage 1, whose data (the corpus) does not "
                                             "depend on the task (0 = off: --stage1-epochs)."),
        teacher_check: bool = typer.Option(D.check_teacher, "--teacher-check/--no-teacher-check",
                                           help="Stop when the teacher scores near chance on dev."),
        min_retention: float = typer.Option(D.min_retention, help="Warn when the student keeps less than this share of the "
                                            "teacher's dev score."),
        augment: int = typer.Option(D.augment, help="Stage 2 adds this many teacher-labelled inputs per training row, "
                                    "made from the task's own text (masking, replacement, span deletion, re-pairing); "
                                    "0 = off."),
        unlabelled: Optional[Path] = typer.Option(None, help="In-domain texts without labels, one a line (pair tasks: "
                                                  "FIRST<TAB>SECOND), labelled by the teacher in stage 2."),
        data_dir: Optional[Path] = typer.Option(None, help="GLUE root for tasks that do not ship (holds MRPC/, ...)."),
        threads: Optional[int] = typer.Option(None, help="torch threads (default: torch's choice)."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its checkpoints."),
        checkpoint_every: float = typer.Option(D.checkpoint_seconds, help="Seconds between resumable checkpoints within an epoch "
                                               "(0: after every optimizer step); one is also written at every "
                                               "epoch end."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    ):
        """Teacher -> fine-tune if needed -> kronize -> general KD -> task KD -> evaluate -> artifact.

        With no arguments: SST-2, builtin:minilm, ~5x, offline, about 20 minutes on a 2-core CPU.
        """
        from ..compress import compress as run

        source = _source(_given(ctx, "task"), data_dir, task, train=train, validation=validation, format=file_format,
                         text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
                         problem_type=problem_type, name=name)
        task, files = source.name, source.files is not None
        config = CompressConfig(
            teacher=teacher, task=task, source=source.to_dict() if files else None,
            compression=(compression if compression is not None or preset else DEFAULT_COMPRESSION),
            preset=preset, rank=rank, embedding_k=embedding_k, method=method, stage1=stage1, stage2_kd=kd,
            corpus=corpus, stage1_examples=stage1_examples or None, stage1_epochs=stage1_epochs, stage1_lr=stage1_lr,
            stage2_examples=stage2_examples or None, stage2_epochs=stage2_epochs, stage2_lr=stage2_lr,
            teacher_train_limit=teacher_train_limit, batch_size=batch_size, max_length=max_length,
            temperature=temperature, layer_map=layer_map, loss_weights=_weights(loss_weights), seed=seed, precision=precision,
            time_budget_s=time_budget * 60 if time_budget else None, data_dir=str(data_dir) if data_dir else None,
            min_steps=min_steps or None, stage1_min_steps=stage1_min_steps or None, patience=patience or None,
            check_teacher=teacher_check, min_retention=min_retention, checkpoint_seconds=checkpoint_every,
            augment=augment, unlabelled=str(unlabelled) if unlabelled else None,
            structure=structure, allocation=allocation, calibration=calibration, layers=layers)
        show_progress()
        if method == "svd" and out_dir is None:
            artifact = None
        else:
            artifact = out_dir or Path("artifacts") / f"kronedge-{task}"  # nothing written before the check
        result = run(config, out=artifact, run_dir=run_dir or Path("runs") / f"compress-{task}", resume=resume,
                     threads=threads)
        if as_json:
            print(json.dumps(result.to_dict(), indent=2))
            return
        p = result.primary_metric
        out.print(f"teacher {task} dev {p}: [bold]{result.teacher_metrics[p]:.4f}[/]")
        out.print(f"student {task} dev {p}: [bold]{result.student_metrics[p]:.4f}[/] "
                  f"({100 * result.student_metrics[p] / result.teacher_metrics[p]:.1f}% of the teacher) with "
                  f"{result.params_student / 1e6:.2f}M instead of {result.params_teacher / 1e6:.2f}M embedding+encoder "
                  f"params ({result.compression:.2f}x fewer)")
        out.print("time: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.seconds.items()))
        for warning in result.warnings:
            out.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
        if result.artifact:
            again = f"--validation {source.files.validation}" if files else f"--task {task}"
            out.print(f"artifact: {result.artifact}  (score it: kronedge eval {result.artifact} {again})")

    @app.command()
    @friendly_errors
    def finetune(
        ctx: typer.Context,
        teacher: str = typer.Argument(D.teacher, help=TEACHER_HELP),
        task: str = typer.Option(D.task, help="GLUE task (not with --train/--validation, your own files)."),
        train: Optional[Path] = typer.Option(None, "--train", help=H("train")),
        validation: Optional[Path] = typer.Option(None, "--validation", help=H("validation")),
        file_format: Optional[str] = typer.Option(None, "--format", help=H("format")),
        text_column: Optional[str] = typer.Option(None, help=H("text_column")),
        text_pair_column: Optional[str] = typer.Option(None, help=H("text_pair_column")),
        label_column: Optional[str] = typer.Option(None, help=H("label_column")),
        problem_type: Optional[str] = typer.Option(None, help=H("problem_type")),
        name: Optional[str] = typer.Option(None, help=H("name")),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Output directory (default: runs/teachers/TASK-HASH, reused when finished)."),
        epochs: int = typer.Option(T.epochs, help="Epochs (at least; see --min-steps)."),
        min_steps: int = typer.Option(T.min_steps, help=f"Small data trains more epochs (at most {T.max_epochs}) until this many optimizer "
                                      "steps (0 = off)."),
        patience: int = typer.Option(T.patience, help="Stop after this many epochs without a better dev score (0 = never)."),
        lr: float = typer.Option(T.lr, help="Peak learning rate."),
        batch_size: int = typer.Option(T.batch_size, help="Batch size."),
        max_length: int = typer.Option(T.max_length, help="Tokens per example."),
        train_limit: Optional[int] = typer.Option(None, help="Use a seeded subset of this many training examples."),
        seed: int = typer.Option(T.seed, help="Seed."),
        precision: str = typer.Option(T.precision, help="auto | bf16 | fp32."),
        data_dir: Optional[Path] = typer.Option(None, help="GLUE root for tasks that do not ship."),
        threads: Optional[int] = typer.Option(None, help="torch threads."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ):
        """Fine-tune a teacher with a new classification head on a GLUE task or your own files (cached)."""
        from ..finetune import finetune as run

        source = _source(_given(ctx, "task"), data_dir, task, train=train, validation=validation, format=file_format,
                         text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
                         problem_type=problem_type, name=name)
        config = default_teacher_config(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed,
                                        precision=precision, min_steps=min_steps or None, patience=patience or None)
        show_progress()
        result = run(teacher, source, out=out_dir, train_limit=train_limit, config=config,
                     resume=resume, threads=threads)
        info = {"path": str(result.path), "metrics": result.metrics, "seconds": round(result.seconds, 1),
                "cached": result.cached, "train_examples": result.train_examples, "precision": result.precision}
        if as_json:
            print(json.dumps(info, indent=2))
        else:
            out.print(f"fine-tuned teacher: {result.path} ({'cached' if result.cached else f'{result.seconds:.0f} s'}); "
                      f"dev metrics {result.metrics}")

    @app.command("eval")
    @friendly_errors
    def eval_(
        model_dir: Path = typer.Argument(..., help="A kronedge artifact, a saved BERT classifier, or an exported ONNX dir."),
        task: Optional[str] = typer.Option(None, help="GLUE task (default: the artifact's own)."),
        data_dir: Optional[Path] = typer.Option(None, help="GLUE root for tasks that do not ship."),
        validation: Optional[Path] = typer.Option(None, "--validation", help="Score on this labelled file (.csv, .tsv, "
                                                  ".jsonl) instead; its labels are matched by name to the model's."),
        file_format: Optional[str] = typer.Option(None, "--format", help=H("format")),
        text_column: Optional[str] = typer.Option(None, help=H("text_column")),
        text_pair_column: Optional[str] = typer.Option(None, help=H("text_pair_column")),
        label_column: Optional[str] = typer.Option(None, help=H("label_column")),
        limit: Optional[int] = typer.Option(None, help="Score only the first N dev examples."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ):
        """Score a model on a GLUE dev set or your own labelled file (torch for artifacts, ONNX Runtime for
        exported models)."""
        files = {"train": None, "validation": validation, "format": file_format, "text_column": text_column,
                 "text_pair_column": text_pair_column, "label_column": label_column, "problem_type": None,
                 "name": None}
        source = _source(task, data_dir, None, **files) if validation is not None or task else None
        if validation is None and any(v is not None for v in files.values()):
            _source(None, None, None, **files)  # the data-file options without a file: one clear error
        if (model_dir / "manifest.json").is_file():
            from exporters.evaluate import evaluate_exported
            from runtime.contract import Manifest

            manifest = Manifest.load(model_dir / "manifest.json")
            data = None
            if source is not None and source.files is not None:
                spec = source.model_spec(list(manifest.labels or ()), manifest.is_regression, manifest.task)
                data, task = source.load("dev", spec), spec
            task = task or manifest.task
            if not task:
                raise UsageError(f"{model_dir}/manifest.json names no task: pass --task or --validation FILE")
            result = evaluate_exported(model_dir, task, data_dir=data_dir, limit=limit, data=data)
        else:
            from ..evaluation import evaluate_artifact

            result = evaluate_artifact(model_dir, task, data_dir=data_dir, limit=limit, source=source)
        if as_json:
            print(json.dumps(result, indent=2))
        else:
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.items()
                                if isinstance(v, float) and k not in ("seconds",))
            where = validation if validation is not None else f"{result.get('task', task)} dev"
            out.print(f"{model_dir} on {where} ({result.get('examples', '?')} examples): {metrics}")
