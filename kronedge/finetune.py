"""Teacher fine-tuning (`kronedge finetune`) and its cache of finished teachers."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .artifact import RECIPE_FILE, check_replaceable, read_recipe, write_json_atomic
from .recipe import DEFAULT_TASK, DEFAULT_TEACHER, default_teacher_config
from .teachers import TeacherError
from .training import TrainConfig, settings_key

logger = logging.getLogger(__name__)

TEACHER_CACHE = Path("runs") / "teachers"
FINETUNE_FILE = "finetune.json"


@dataclass
class FinetuneResult:
    path: Path
    metrics: dict
    seconds: float
    cached: bool
    train_examples: int
    precision: str | None = None


def teacher_has_head(teacher: str, task) -> bool:
    """True when ``teacher`` is a local model whose sequence-classification head serves the task as is
    (``task``: a GLUE name or any TaskSpec; see :func:`teacher_head_spec`)."""
    return teacher_head_spec(teacher, task) is not None


def teacher_head_spec(teacher: str, task):
    """The TaskSpec to distil with when ``teacher``'s own head is used as is; None when it needs a fine-tune.

    A GLUE task (or a head nobody named, ``LABEL_i``) takes a head of the task's size. A user's own
    files take any named head whose labels are the data's: the teacher's ``id2label`` order is kept
    (the returned spec is reordered to it); other names are one :class:`DataFileError` listing which
    differ, never a silent second fine-tune that would throw the user's head away.
    """
    from dataclasses import replace

    from .artifact import generic_labels, head_labels
    from .data import DataFileError, check_labels, get_task
    from .data.examples import whole_number_values
    from .data.spec import reordered

    spec = get_task(task)
    config = _head_config(Path(teacher))
    if config is None:
        return None
    try:
        labels = head_labels(config)
    except ValueError as exc:
        raise TeacherError(f"{Path(teacher) / 'config.json'}: {exc}") from None
    size = len(labels) or config.get("num_labels", 2)
    if spec.folder or not labels or labels == list(generic_labels(len(labels))):  # GLUE, or unnamed: by size
        if spec.folder and reordered(labels, spec.label_names):
            raise DataFileError(f"the teacher {teacher}'s head orders its labels {labels}, {spec.name} orders them "
                                f"{list(spec.label_names)}: its answers would be swapped. Distil it on your own "
                                "files (--train/--validation: labels are matched by name)")
        return spec if size == spec.num_labels else None
    if spec.is_regression:
        raise DataFileError(f"the teacher {teacher} has a classification head ({', '.join(labels)}) but "
                            f"{spec.name} is a regression task: pass a teacher without a head, or a regression one")
    if labels != list(spec.label_names) and sorted(labels) == sorted(spec.label_names):
        raw = dict(zip(spec.label_names, spec.raw_labels))
        return replace(spec, label_names=tuple(labels), raw_labels=tuple(raw[n] for n in labels))
    ours, theirs = whole_number_values(spec.label_names), whole_number_values(labels)
    if ours and theirs and sorted(ours.values()) == sorted(theirs.values()):  # "1".."12" for the codes "001".."012"
        raw = {ours[name]: raw for name, raw in zip(spec.label_names, spec.raw_labels)}
        return replace(spec, label_names=tuple(labels), raw_labels=tuple(raw[theirs[n]] for n in labels))
    check_labels(spec, labels, f"the teacher {teacher}")
    return spec


def require_both_files(source, command: str) -> None:
    """Training needs both a training file (the examples, the label set) and a validation file (the score)."""
    from .data import DataFileError

    files = source.files
    if files is not None and (files.train is None or files.validation is None):
        missing = "--train FILE" if files.train is None else "--validation FILE"
        raise DataFileError(f"{command} on your own data needs {missing} too: training uses --train, every score "
                            "(best epoch, teacher check, the artifact's metrics) the --validation file")


def _head_config(path: Path) -> dict | None:
    """The config.json of a local model with a sequence-classification head (None: not local or no head)."""
    if not path.is_dir() or not (path / "config.json").is_file():
        return None
    if (path / RECIPE_FILE).is_file():
        recipe = read_recipe(path)  # corrupt: a one-line ArtifactError
        if recipe.get("head") != "sequence-classification":
            return None
    try:
        config = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TeacherError(f"{path / 'config.json'} is not valid JSON: {exc}") from None
    archs = config.get("architectures") or []
    if (path / RECIPE_FILE).is_file():
        archs = archs or ["BertForSequenceClassification"]
    return config if any(a.endswith("ForSequenceClassification") for a in archs) else None


def finetune_record(path: Path, recipe: dict | None = None) -> dict:
    """What `kronedge finetune` recorded beside the teacher in ``path`` (task, task_spec, metrics, settings): a
    kronized teacher keeps it in its recipe (``recipe``, its kronedge.json) under "finetune", a dense one in
    finetune.json; {} when neither. A record that is not JSON is one :class:`TeacherError`."""
    if (recipe or {}).get("finetune"):
        return recipe["finetune"]
    try:
        return json.loads((Path(path) / FINETUNE_FILE).read_text())
    except OSError:
        return {}
    except ValueError as exc:
        raise TeacherError(f"{Path(path) / FINETUNE_FILE} is not valid JSON ({exc}); fine-tune again, or delete it "
                           "to use the model without the task it records") from None


def finetune_settings(teacher: str, task: str, train_limit: int | None, config: TrainConfig) -> dict:
    """Everything that changes a fine-tuned teacher (see TrainConfig.result_settings); ``task`` is the data's cache key."""
    return {"teacher": teacher, "task": task, "train_limit": train_limit, **config.result_settings()}


def finetune_cache_dir(teacher: str, task: str, train_limit: int | None, config: TrainConfig,
                       cache_root=TEACHER_CACHE) -> Path:
    """runs/teachers/<task>-<hash of everything that changes the result>."""
    return Path(cache_root) / f"{task}-{settings_key(finetune_settings(teacher, task, train_limit, config))}"


def _reusable(out: Path, settings: dict, spec, keyed: bool) -> dict | None:
    """The record of the finished teacher in ``out`` when it answers this task with these settings, else None.

    ``keyed``: ``out`` is the cache directory named by the hash of ``settings``. A record from before the
    settings were recorded (an older kronedge) is trusted there; elsewhere it is reused, with a warning, when
    the teacher, task and settings it does record agree. The label order must agree in every case: it decides
    which logit is which class.
    """
    from .data.spec import describe_labels

    try:
        info = json.loads((out / FINETUNE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning(f"[finetune] {out / FINETUNE_FILE} is unreadable ({exc}): training again")
        return None
    label_names = tuple(spec.label_names)
    recorded_labels = tuple((info.get("task_spec") or {}).get("label_names") or ())
    if recorded_labels and recorded_labels != label_names:
        gone, new = [n for n in recorded_labels if n not in label_names], [n for n in label_names if n not in recorded_labels]
        how = (f"labels only it has: {describe_labels(gone) or 'none'}; only the data has: {describe_labels(new) or 'none'}"
               if gone or new else "the same labels in another order")
        logger.info(f"[finetune] {out} holds a teacher with other labels ({how}): training again")
        return None
    recorded = info.get("settings")
    if recorded is None:
        old = {"teacher": info.get("teacher"), **{k: (info.get("config") or {}).get(k) for k in settings
                                                    if k not in ("teacher", "task", "train_limit")}}
        same_task = info.get("task") == spec.name
        if keyed or (same_task and old == {k: v for k, v in settings.items() if k not in ("task", "train_limit")}):
            if not keyed:
                logger.warning(f"[finetune] reusing {out}, written by an older kronedge that did not record which "
                               "data it was trained on; delete it to train again on these files")
            return info
        changed = "written by an older kronedge"
    elif recorded == settings:
        return info
    else:
        keys = sorted(k for k in settings.keys() | recorded.keys() if recorded.get(k) != settings.get(k))
        changed = "the data changed" if keys == ["task"] else "other settings: " + ", ".join(keys)
    logger.info(f"[finetune] {out} holds a teacher fine-tuned otherwise ({changed}): training again")
    return None


def finetune(teacher: str = DEFAULT_TEACHER, task=DEFAULT_TASK, out: str | os.PathLike | None = None,
             data_dir=None, train_limit: int | None = None, config: TrainConfig | None = None, resume: bool = False,
             threads: int | None = None, eval_limit: int | None = None) -> FinetuneResult:
    """Fine-tune a teacher with a new classification head on a GLUE task or a user's files (cached).

    Args:
        teacher: any teacher spec (``builtin:minilm``, a local dir, ``random:...``).
        task: GLUE task name, or a :class:`~kronedge.data.TaskSource` (a user's ``--train``/``--validation``).
        out: output directory; default ``runs/teachers/<task>-<hash>``. A finished directory is reused
            when it was trained with the same settings and data (how ``compress`` and the benchmark share
            one fine-tuned teacher), and trained again (replaced) otherwise.
        data_dir: GLUE root for tasks that do not ship.
        train_limit: use a seeded random subset of this many training examples.
        config: :class:`~kronedge.training.TrainConfig` (default: :func:`default_teacher_config`).
        resume: continue an interrupted run.

    Example:
        >>> finetune("builtin:minilm", "sst2").metrics["accuracy"]
    """
    from .data import TaskSource
    from .evaluation import evaluate_model
    from .teachers import load_teacher
    from .training import (TrainingError, check_max_length, encode, load_tokenizer, set_threads, train_loop, versions,
                           wait_for_everyone)

    set_threads(threads)
    if train_limit is not None and train_limit < 1:
        raise TrainingError(f"--train-limit must be a positive count of examples or left out (all), got {train_limit}")
    config = config or default_teacher_config()
    source = task if isinstance(task, TaskSource) else TaskSource(task=task, data_dir=data_dir)
    require_both_files(source, "finetune")
    spec, task = source.spec, source.name
    data_key = source.cache_key()  # for files: one pass over their bytes
    settings = finetune_settings(teacher, data_key, train_limit, config)
    cache_dir = finetune_cache_dir(teacher, data_key, train_limit, config)
    out = Path(out) if out is not None else cache_dir
    info = _reusable(out, settings, spec, keyed=out == cache_dir)
    if info is not None:
        logger.info(f"[finetune] reusing fine-tuned teacher {out} "
                    f"({spec.primary_metric} {info['metrics'][spec.primary_metric]:.4f})")
        return FinetuneResult(out, info["metrics"], info["seconds"], True, info["train_examples"], info.get("precision"))

    check_replaceable(out, FINETUNE_FILE)  # a user's folder: refused now, not after training
    # The data first: a bad row fails before the teacher loads and before anything is written.
    train = source.load("train", spec).subset(train_limit, seed=config.seed)
    dev = source.load("dev", spec).subset(eval_limit, seed=0)
    loaded = load_teacher(teacher, head="sequence-classification", num_labels=spec.num_labels)
    model = loaded.model
    model.config.problem_type = spec.problem_type
    if not spec.is_regression:
        model.config.id2label = dict(enumerate(spec.label_names))
        model.config.label2id = {n: i for i, n in enumerate(spec.label_names)}
    tokenizer = load_tokenizer(loaded.tokenizer_dir)
    train_enc = encode(tokenizer, train.texts, train.labels, config.max_length)
    dev_enc = encode(tokenizer, dev.texts, dev.labels, config.max_length)
    check_max_length(model.config, train_enc, dev_enc)
    logger.info(f"[finetune] {teacher} on {task}: {len(train)} train / {len(dev)} dev examples -> {out}")

    result = train_loop(model, train_enc, lambda m, batch: (m(**batch).loss, {}), config, Path(str(out) + ".run"),
                        eval_fn=lambda m: evaluate_model(m, spec, dev_enc), primary_metric=spec.primary_metric,
                        resume=resume, desc="finetune")
    metrics = result.best_metrics or evaluate_model(model, spec, dev_enc)
    info = {"teacher": teacher, "task": task, "task_spec": spec.to_dict(), "metrics": metrics,
            "seconds": round(result.seconds, 1), "train_examples": len(train), "dev_examples": len(dev), "precision": result.precision,
            "examples_per_s": round(result.examples_per_s, 1), "steps": result.steps,
            "epochs_planned": result.epochs_planned, "stopped_early": result.stopped_early,
            "config": config.to_dict(), "settings": settings, "versions": versions()}
    model.eval()
    _save_teacher(model, out, loaded, teacher, info)
    wait_for_everyone()
    logger.info(f"[finetune] teacher {task} {spec.primary_metric} = {metrics[spec.primary_metric]:.4f} "
                f"({result.steps} steps, {result.seconds:.0f} s, {result.examples_per_s:.0f} ex/s, {result.precision})")
    return FinetuneResult(out, metrics, result.seconds, False, len(train), result.precision)


def _save_teacher(model, out: Path, loaded, teacher: str, info: dict) -> None:
    """Rank 0 writes the teacher (an artifact when it is kronized); the others wait for it."""
    from .artifact import atomic_directory, copy_tokenizer, save_artifact
    from .surgery import layout_config
    from .training import is_main_process

    if not is_main_process():
        return
    if layout_config(model.config) is not None:
        save_artifact(model, out, loaded.tokenizer_dir, {"teacher": teacher, "finetune": info})
        write_json_atomic(out / FINETUNE_FILE, info)
        return
    with atomic_directory(out, FINETUNE_FILE) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        copy_tokenizer(loaded.tokenizer_dir, tmp)
        write_json_atomic(tmp / FINETUNE_FILE, info)
