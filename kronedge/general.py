"""A reusable general student: stage 1 (general KD on unlabelled text) done once per teacher and structure.

The general stage of distillation depends only on the pre-trained teacher and the student's structure,
not on the task, so, as TinyBERT's general model, it is run once, long, on every unlabelled text that
ships, saved as an artifact keyed by what changes it, and reused by every `kronedge compress
--general-student DIR|auto`, which then starts stage 2 from it instead of redoing stage 1. Where they are kept,
their key and the checks that one fits a compress run are in :mod:`kronedge.general_store`.

    teacher (base, pre-trained) --calibration on the corpus--> student by surgery (the compress structure)
        --general KD (embedding, attention, hidden MSE)--> artifact in $KRONEDGE_CACHE/general/<key>

Example:
    >>> general = distill_general(GeneralConfig(teacher="builtin:minilm"), time_budget_s=None)
    >>> general.path, general.cached
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .general_store import (AUTO, GENERAL_VERSION, RECIPE_KEY, SHAPE_FIELDS, STRUCTURE_FIELDS,  # noqa: F401 (re-exported)
                            GeneralStudentError, base_teacher, cache_root, check_general, find_general, general_key,
                            read_general, resolve_general, teacher_fingerprint, teacher_shape)
from .recipe import DEFAULT_COMPRESSION, DEFAULT_TEACHER, structure_kron_config
from .training.config import TrainConfig, TrainingError, free_field

logger = logging.getLogger(__name__)

MAX_BUDGET_EPOCHS = 10  # epochs planned under a time budget when none are given (the budget trims them)


@dataclass
class GeneralConfig:
    """Everything `kronedge distill-general` does (saved in the general student's ``kronedge.json``).

    Args:
        teacher: the pre-trained teacher spec (a fine-tuned teacher directory is mapped to its base).
        compression / preset / rank / embedding_k / structure / allocation / embedding_share / layers: the student's
            structure, as in CompressConfig (its defaults, so a plain `compress` finds the student).
        calibration: fit the factors to the base teacher's activations on the corpus (data-aware fit).
        corpus: unlabelled text: a corpus name (general, wikitext-2, wikitext-2-all) or a text file; None:
            general, everything that ships (both WikiText-2 splits and the shipped GLUE tasks' training
            texts without labels).
        examples: a seeded subset of this many texts (None: all).
        max_length: tokens per text.
        epochs: passes over the texts (``min_steps`` may add more); None: 1, or with a time budget as
            many whole epochs as fit, at most ``MAX_BUDGET_EPOCHS``.
        min_steps: more epochs until this many optimizer steps (None: off).
        lr / batch_size / seed / precision: the optimisation (see TrainConfig).
        loss_weights: DistillConfig weights of the intermediate losses (default: compress's stage 1).
        time_budget_s: wall-clock seconds for the training (None: every planned epoch).
        checkpoint_seconds: a resumable checkpoint at least this often.

    Example:
        >>> GeneralConfig(teacher="builtin:minilm", compression=5.5, time_budget_s=2400)
    """

    teacher: str = DEFAULT_TEACHER
    compression: float | None = DEFAULT_COMPRESSION
    preset: str | None = None
    rank: int = 1
    embedding_k: int | None = None
    structure: str = "svd"
    allocation: str = "global"
    embedding_share: float | None = None
    layers: int | None = None
    calibration: bool = True
    corpus: str | None = None
    examples: int | None = None
    max_length: int = 64
    epochs: int | None = None
    lr: float = 5e-4
    batch_size: int = 32
    seed: int = 0
    precision: str = "auto"
    min_steps: int | None = None
    loss_weights: dict = field(default_factory=lambda: {"attention": 0.1})
    time_budget_s: float | None = None
    checkpoint_seconds: float = free_field(default=300.0)

    def __post_init__(self):
        from .recipe import LOSSES

        if self.compression is not None and self.preset is not None:
            raise TrainingError("give exactly one of compression (e.g. 5.5) or preset (kb8, kb21)")
        if self.compression is None and self.preset is None:
            self.compression = DEFAULT_COMPRESSION
        if self.examples is not None and self.examples < 1:
            raise TrainingError(f"examples must be a positive count or None, got {self.examples}")
        unknown = set(self.loss_weights) - set(LOSSES)
        if unknown:
            raise TrainingError(f"unknown loss weights {sorted(unknown)}; use {', '.join(LOSSES)}")
        self.distill_config()
        self.kron_config()
        self.train_config()

    @classmethod
    def for_compress(cls, config, teacher: str | None = None) -> "GeneralConfig":
        """The general config whose student a :class:`~kronedge.recipe.CompressConfig` can start from."""
        values = {name: getattr(config, name) for name in STRUCTURE_FIELDS + ("calibration", "seed", "precision")}
        return cls(teacher=teacher or base_teacher(config.teacher), **values)

    def structure_dict(self) -> dict:
        return {name: getattr(self, name) for name in STRUCTURE_FIELDS}

    def kron_config(self):
        return structure_kron_config(self)

    def distill_config(self):
        from .distill import DistillConfig

        weights = {**self.loss_weights, "logits": 0.0, "supervised": 0.0}
        return DistillConfig.general(**weights, layer_map="uniform" if self.layers is not None else "one-to-one")

    def train_config(self) -> TrainConfig:
        epochs = self.epochs or (MAX_BUDGET_EPOCHS if self.time_budget_s else 1)
        return TrainConfig(epochs=epochs, max_epochs=max(epochs, TrainConfig.max_epochs), lr=self.lr, batch_size=self.batch_size, max_length=self.max_length,
                           seed=self.seed, precision=self.precision, warmup_ratio=0.1,
                           time_budget_s=self.time_budget_s, min_steps=self.min_steps,
                           checkpoint_seconds=self.checkpoint_seconds)

    def to_dict(self) -> dict:
        return {"version": GENERAL_VERSION, **asdict(self)}


@dataclass
class GeneralStudent:
    """A finished general student: its directory, its key and whether this call reused it."""

    path: Path
    key: str
    cached: bool
    info: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.info.get("seconds", 0.0)


def corpus_texts(config: GeneralConfig) -> list[str]:
    from .data.corpus import general_texts, load_corpus

    if config.corpus is None:
        texts = general_texts()
    else:
        texts = load_corpus(config.corpus)
    if config.examples is not None and config.examples < len(texts):
        import random

        texts = random.Random(config.seed).sample(texts, config.examples)
    return texts


def distill_general(config: GeneralConfig | None = None, out: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None, resume: bool = False,
                    threads: int | None = None) -> GeneralStudent:
    """Stage 1 once: a general student for a teacher and a structure, reused when it exists.

    Args:
        config: teacher, structure, corpus and optimisation (default: compress's default teacher and structure).
        out: the student's directory (default: ``cache_dir/<key>``); a finished one with the same key is reused.
        cache_dir: where general students are kept (default: :func:`cache_root`).
        resume: continue an interrupted run from its checkpoint (``<out>.run``).
        threads: torch threads (None: torch's default).

    Example:
        >>> student = distill_general(GeneralConfig(time_budget_s=40 * 60))
        >>> compress(CompressConfig(task="cola", general_student=str(student.path)))
    """
    config = config or GeneralConfig()
    if out is not None:
        from .artifact import RECIPE_FILE, check_replaceable

        check_replaceable(Path(out), RECIPE_FILE)  # a file or a user's folder: refused now, not after the training
    teacher = base_teacher(config.teacher)
    if teacher != config.teacher:
        logger.info(f"[general] {config.teacher} was fine-tuned from {teacher}: distilling from {teacher}")
    texts = corpus_texts(config)
    from .data.corpus import corpus_fingerprint

    fingerprint, corpus = teacher_fingerprint(teacher), corpus_fingerprint(texts)
    key = general_key(config, fingerprint, corpus)
    path = Path(out) if out is not None else Path(cache_dir or cache_root()) / key
    done = read_general(path)
    if done is not None and done.get("key") == key:
        logger.info(f"[general] reusing general student {path} (key {key}, trained {done.get('seconds', 0):.0f} s)")
        return GeneralStudent(path, key, True, done)
    return GeneralRun(config, teacher, texts, fingerprint, corpus, key, path, resume, threads).run()


class GeneralRun:
    """One general distillation: teacher -> calibration -> student -> general KD -> artifact."""

    def __init__(self, config: GeneralConfig, teacher: str, texts: list[str], fingerprint: str, corpus: str,
                 key: str, path: Path, resume: bool = False, threads: int | None = None):
        from .training import set_threads

        set_threads(threads)
        self.config, self.teacher_spec, self.texts = config, teacher, texts
        self.fingerprint, self.corpus, self.key, self.path, self.resume = fingerprint, corpus, key, path, resume
        self.run_dir = Path(str(path) + ".run")
        self.seconds: dict[str, float] = {}

    def run(self) -> GeneralStudent:
        from .training import seed_everything

        logger.info(f"[general] {self.teacher_spec}: {len(self.texts)} texts -> {self.path} (key {self.key})")
        seed_everything(self.config.seed)
        self.load_teacher()
        self.build_student()
        result = self.train()
        return self.save(result)

    def load_teacher(self) -> None:
        from .teachers import load_teacher
        from .training import load_tokenizer

        self.loaded = load_teacher(self.teacher_spec, head="base")
        self.teacher = self.loaded.model.eval()
        self.tokenizer = load_tokenizer(self.loaded.tokenizer_dir)

    def build_student(self) -> None:
        """Surgery on a copy of the base teacher, fitted to its activations on the corpus."""
        from .calibration import collect_input_stats, holdout_for, strided_sample
        from .students import KroneckerStudent, build_student, core_params

        c, stats = self.config, None
        if c.calibration or c.structure == "search":
            t = time.perf_counter()
            stats = collect_input_stats(self.teacher, self.tokenizer, strided_sample(self.texts), max_length=c.max_length,
                                        holdout_every=holdout_for(c.structure))
            self.seconds["calibration"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        self.student, self.plan = build_student(self.teacher, KroneckerStudent(c.kron_config(), stats=stats,
                                                                                layers=c.layers))
        self.seconds["surgery"] = round(time.perf_counter() - t, 1)
        self.params_teacher, self.params_student = core_params(self.teacher), core_params(self.student)
        logger.info(f"[general] student {self.params_teacher / 1e6:.2f}M -> {self.params_student / 1e6:.2f}M "
                    f"embedding+encoder params ({self.params_teacher / self.params_student:.2f}x)")

    def train(self):
        from .distill import Distiller
        from .training import encode, train_loop

        c = self.config
        enc = encode(self.tokenizer, self.texts, None, c.max_length)
        distiller = Distiller(self.teacher, self.student, c.distill_config())
        extra = {"projection": distiller.project} if any(True for _ in distiller.project.parameters()) else None
        result = train_loop(self.student, enc, distiller, c.train_config(), self.run_dir, resume=self.resume,
                            extra_modules=extra, desc="general")
        self.seconds["general"] = round(result.seconds, 1)
        return result

    def save(self, result) -> GeneralStudent:
        from .artifact import save_artifact
        from .training import is_main_process, versions, wait_for_everyone

        c = self.config
        info = {"key": self.key, "version": GENERAL_VERSION, "teacher": self.teacher_spec,
                "teacher_fingerprint": self.fingerprint, "teacher_shape": {n: getattr(self.teacher.config, n)
                                                                          for n in SHAPE_FIELDS},
                "structure": c.structure_dict(), "config": c.to_dict(), "corpus": c.corpus or "general",
                "corpus_fingerprint": self.corpus, "texts": len(self.texts), "steps": result.steps,
                "epochs_planned": result.epochs_planned, "stopped_at_budget": result.stopped_at_budget,
                "seconds": round(sum(self.seconds.values()), 1), "stage_seconds": self.seconds,
                "examples_per_s": round(result.examples_per_s, 1), "precision": result.precision,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        recipe = {"teacher": self.teacher_spec, "kron_config": self.plan.config.to_dict(),
                  "params_teacher": self.params_teacher, "params_student": self.params_student,
                  "compression": round(self.params_teacher / self.params_student, 3),
                  "flops_teacher": self.plan.flops_teacher, "flops_student": self.plan.flops_student,
                  RECIPE_KEY: info, "training": {"run_dir": str(self.run_dir)}, "versions": versions()}
        if is_main_process():
            self.student.eval()
            save_artifact(self.student, self.path, self.loaded.tokenizer_dir, recipe, model_card=_card(recipe))
            logger.info(f"[general] wrote general student {self.path} ({result.steps} steps, "
                        f"{info['seconds']:.0f} s)")
        wait_for_everyone()
        return GeneralStudent(self.path, self.key, False, info)


def _card(recipe: dict) -> str:
    info = recipe[RECIPE_KEY]
    return f"""# General KroneckerBERT student of `{info['teacher']}` ({recipe['compression']:.2f}x)

Stage 1 of kronedge's distillation (embedding, attention-score and hidden-state MSE against the
pre-trained teacher) on {info['texts']:,} unlabelled texts ({info['corpus']}), {info['steps']} steps in
{info['seconds']:.0f} s. Not a task model: start a task from it with
`kronedge compress --general-student DIR` (same teacher and structure), which skips stage 1.

- structure: {info['structure']}
- key: `{info['key']}` (teacher {info['teacher_fingerprint']}, corpus {info['corpus_fingerprint']})
- versions: {recipe['versions']}
"""
