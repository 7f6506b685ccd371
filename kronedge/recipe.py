"""The recipe of `kronedge compress` (:class:`CompressConfig`, persisted with a version) and its result."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .training.config import TrainConfig, TrainingError, free_field, result_settings

DEFAULT_TEACHER = "builtin:minilm"
DEFAULT_TASK = "sst2"
DEFAULT_COMPRESSION = 5.5  # the planner lands on ~5.1x for MiniLM: >= 5x fewer parameters
LOSSES = ("embedding", "attention", "hidden", "logits", "supervised")
VOCABULARIES = ("task",)
AUTO = "auto"  # vocabulary, ffn and ffn_to_embedding: decided by levers_apply()
# ffn_to_embedding's "auto": this share of the kept FFN's budget goes to the word embedding from this compression up,
# with the task vocabulary (benchmarks/results/role_split.md: at 20x gains on SST-2 and the topic questions, ties on
# CoLA and the movie reviews; at 10x a gain on SST-2, a tie on the movie reviews and a small loss on CoLA, whose
# dense kept neurons it turned into factored ones; a tie at 5.7x).
AUTO_FFN_TO_EMBEDDING = 0.5
AUTO_FFN_TO_EMBEDDING_FROM = 20.0


def structure_kron_config(config):
    """The KronConfig of a config that carries the structure fields (CompressConfig, GeneralConfig): preset or
    compression and whichever other KronConfig fields it carries. A bad one is a TrainingError."""
    from .kron_config import KronConfig
    from .pipeline import kron_config

    carried = {f.name: getattr(config, f.name) for f in fields(KronConfig) if hasattr(config, f.name)}
    try:
        return kron_config(config.preset, **carried)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None


def default_teacher_config(**changes) -> TrainConfig:
    """The teacher recipe: one epoch of big data; small data gets up to 10 epochs until 600 optimizer
    steps, stopping after 2 evaluations without a better dev score."""
    return TrainConfig(**{"epochs": 1, "lr": 5e-5, "batch_size": 32, "max_length": 128, "min_steps": 600,
                          "patience": 2, **changes})


@dataclass
class CompressConfig:
    """Everything `kronedge compress` does, in one place (saved with a ``version`` as the artifact's recipe).

    Args:
        teacher: teacher spec; fine-tuned first when it has no head for ``task``.
        task: GLUE task.
        compression / preset / rank / embedding_k: the Kronecker plan (see KronConfig).
        method: "kronecker" (the paper), "svd" (truncated SVD at equal params) or "dense-small".
        stage1: run general KD on the corpus (embedding, attention, hidden losses).
        stage2_kd: stage 2 with every KD loss; False trains on labels only (the no-KD ablation).
        corpus: unlabelled text for stage 1: a text file, wikitext-2 (the shipped validation split, the
            default) or wikitext-2-all (validation and test, 12,949 chunks).
        stage1_examples / stage2_examples: seeded subsets (None: everything).
        stage1_epochs / stage2_epochs: the least epochs of each stage (``stage1_min_steps`` /
            ``stage2_min_steps`` may add more).
        teacher_train_limit: training examples for the teacher fine-tune (None: all).
        temperature: logit-KD temperature. layer_map: "one-to-one" or "uniform".
        time_budget_s: wall-clock seconds for the training: a teacher fine-tune gets at most a third,
            stage 1 at most a third of the rest, stage 2 the remainder (at least a fifth of the
            whole); each keeps the whole epochs that fit. None: run every planned epoch.
        loss_weights: overrides of DistillConfig weights, e.g. ``{"attention": 0.1}`` (default: the
            paper's unweighted sum); stage 1 always drops the logit and supervised terms.
        min_steps: the teacher fine-tune gets more epochs (at most ``max_epochs``) until it reaches
            this many optimizer steps, so a task of a few thousand examples trains for several epochs
            while a large one keeps its epochs. stage1_min_steps: the same for stage 1.
        stage2_min_steps: the same for stage 2, higher than the fine-tune's: a compressed student
            learns a small task far more slowly than its teacher did (benchmarks/results/small_tasks.md).
        patience: the teacher fine-tune and stage 2 stop after this many epochs without a better
            dev score (the best epoch is kept). None: never stop early.
        cooldown_epochs: when stage 2's patience is spent, it trains this many more epochs with the
            learning rate decaying to zero before it ends, instead of stopping at once: on a few thousand
            examples stage 2 plans many epochs, and patience would otherwise stop it while the rate is
            still high. The best epoch is still the one kept. None: stop at once.
        check_teacher: stop before distilling when the teacher scores near chance on dev.
        min_retention: warn (in the output and the model card) when the student keeps less than
            this share of the teacher's primary metric.
        checkpoint_seconds: every training stage writes a resumable checkpoint at least this often
            (and at every epoch end); 0 writes one after every optimizer step.
        augment: stage 2 adds this many teacher-labelled inputs per training row, made from the
            task's own text (masking, replacement, span deletion, word dropout, re-pairing; see
            :mod:`kronedge.augment`); 0 = off. They train through the KD losses only.
        unlabelled: a file of in-domain texts without labels (one a line; pair tasks FIRST<TAB>SECOND),
            added to stage 2 the same way (dev texts among them are dropped).
        structure: "paper" | "svd" | "search" (see KronConfig): which member of the Kronecker family
            each layer gets. allocation: for "search", "global", "across-roles" or "uniform".
        embedding_share: for "svd" and "search", the word embedding's share of the factorised parameters
            (the encoder's matrices split the rest); None: every matrix shrinks alike. A small share (e.g. 0.2)
            leaves the encoder more rank, for tasks that turn on syntax more than on which words occur.
        calibration: fit the linears' factors to the teacher's activations on the task's training text
            (data-aware nearest Kronecker product) instead of to the bare weights; the word embeddings
            are fitted to their weights either way.
        layers: keep this many encoder layers (teacher layers uniformly spaced; the KD layer map
            becomes "uniform"); the compression still counts against the full teacher.
        source: a user's own data files as ``TaskSource.to_dict()`` (``--train``/``--validation``);
            None: the GLUE ``task`` (with ``data_dir``). With files, ``task`` is the data set's name.
        vocabulary: "task" keeps only the word-embedding rows of the tokens in the training text (and
            ``unlabelled``). With ``compression`` (the budget counted against the full teacher) the rows left out
            become rank for the factorised matrices; a preset's fixed shapes simply compress further. Any other token
            reads the row of the kept token nearest to it in the teacher's embedding, also in stage 1's general text.
            "full": every token keeps its row. "auto" (the default): "task" for a Kronecker student made at a
            ``compression`` target, "full" with a preset, ``structure`` "paper", another ``method``, a
            ``general_student``, no ``calibration`` or an ``embedding_share``.
        ffn: "neurons" keeps, per FFN, the teacher's neurons that carry most of its output on the calibration text,
            as many as the factored FFN's parameters pay for, as plain dense maps (``kronedge.neurons``), so its GELU
            runs on that many values per token instead of the teacher's intermediate size (what it scores:
            benchmarks/results/ffn_neurons.md). "factored": the FFN maps get ``structure``. "auto" (the default):
            "neurons" where ``vocabulary``'s "auto" means "task", else "factored".
        ffn_width: with ``ffn`` "neurons", keep this many neurons per FFN and factor its maps with ``structure`` at
            the factored FFN's budget (``kronedge.neurons``). "dense": as many as that budget holds densely, without
            a search. None: the width whose FFNs start closest to the teacher's on held-out calibration text
            (benchmarks/results/ffn_width.md), which is the dense count unless a wider one starts 3% lower.
        ffn_to_embedding: with ``ffn`` "neurons": this share of the factored FFN's budget goes to the word
            embedding instead, the attention keeping its own (``KronConfig.ffn_to_embedding``). None (or 0): the FFN
            spends all of it. "auto" (the default): 0.5 with the task vocabulary and kept neurons at a
            ``compression`` of 20 or more, else None (benchmarks/results/role_split.md).
        general_student: start from a general student (``kronedge distill-general``) instead of running
            stage 1: its directory, or ``auto`` for the cached one of this teacher and structure (stage 1
            runs when there is none). It must come from the same base teacher and structure.

    Example:
        >>> CompressConfig(task="sst2", compression=5.5, stage1_examples=4000)
    """

    # 2: min_steps, stage1_min_steps, max_epochs, patience, check_teacher, min_retention; 3: stage2_min_steps;
    # 4: cooldown_epochs; 5: vocabulary; 6: ffn; 7: vocabulary and ffn default to "auto"; 8: ffn_width, and kept
    # FFN neurons' width is searched (svd, search); 9: ffn_to_embedding, "auto" by default
    VERSION = 9

    teacher: str = DEFAULT_TEACHER
    task: str = DEFAULT_TASK
    compression: float | None = DEFAULT_COMPRESSION
    preset: str | None = None
    rank: int = 1
    embedding_k: int | None = None
    method: str = "kronecker"
    stage1: bool = True
    stage2_kd: bool = True
    corpus: str | None = None
    stage1_examples: int | None = 2000
    stage1_epochs: int = 1
    stage1_lr: float = 5e-4
    stage1_max_length: int = 64
    stage2_examples: int | None = 20000
    stage2_epochs: int = 1
    stage2_lr: float = 5e-4
    batch_size: int = 32
    max_length: int = 128
    teacher_train_limit: int | None = None
    temperature: float = 1.0
    layer_map: str = "one-to-one"
    # Attention-score MSE down-weighted: it scored better on SST-2 (benchmarks/results/accuracy.md, --loss-weights).
    loss_weights: dict = field(default_factory=lambda: {"attention": 0.1})
    seed: int = 0
    precision: str = "auto"
    time_budget_s: float | None = None
    data_dir: str | None = None
    min_steps: int | None = 600
    stage1_min_steps: int | None = None
    stage2_min_steps: int | None = 1800
    max_epochs: int = 10
    patience: int | None = 2
    cooldown_epochs: int | None = 1
    check_teacher: bool = True
    min_retention: float = 0.9
    checkpoint_seconds: float = free_field(default=300.0)
    augment: int = 0
    unlabelled: str | None = None
    # The SVD corner of the Kronecker family fitted to the teacher's activations: best measured start and
    # result at ~5x on MiniLM (benchmarks/results/structure_search.md, structure_accuracy.md).
    structure: str = "svd"
    allocation: str = "global"
    embedding_share: float | None = None
    calibration: bool = True
    layers: int | None = None
    source: dict | None = None
    general_student: str | None = None
    # "auto": the task vocabulary and kept FFN neurons together never lost to the factored student with the full
    # vocabulary on the tasks measured, at 5.7x and at 20x (benchmarks/results/ffn_neurons.md).
    vocabulary: str | None = AUTO
    ffn: str | None = AUTO
    ffn_width: int | str | None = None
    ffn_to_embedding: float | str | None = AUTO

    def __post_init__(self):
        from .students import METHODS

        if self.method not in METHODS:
            raise TrainingError(f"method must be one of {tuple(METHODS)}, not {self.method!r}")
        # Resolved first, so that the recipe (and every key made from it) records what runs; the opt-outs are None,
        # so the keys of runs that never had the levers stay what they were.
        if self.vocabulary == AUTO:
            self.vocabulary = "task" if self.levers_apply() else None
        if self.ffn == AUTO:
            self.ffn = "neurons" if self.levers_apply() else None
        if self.ffn_to_embedding == AUTO:
            far = self.compression is not None and self.compression >= AUTO_FFN_TO_EMBEDDING_FROM
            self.ffn_to_embedding = (AUTO_FFN_TO_EMBEDDING if far and self.levers_apply() and self.ffn == "neurons"
                                     and self.vocabulary == "task" else None)
        elif self.ffn_to_embedding == 0:
            self.ffn_to_embedding = None  # the default of explicit levers, spelled out
        if (self.compression is None) == (self.preset is None):
            raise TrainingError("give exactly one of compression (e.g. 5.5) or preset (kb8, kb21)")
        for name in ("stage1_examples", "stage2_examples", "teacher_train_limit", "min_steps", "stage1_min_steps",
                     "stage2_min_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainingError(f"{name} must be a positive count or None, got {value}")
        from .distill import DistillConfig

        unknown = set(self.loss_weights) - set(LOSSES)
        if unknown:
            raise TrainingError(f"unknown loss weights {sorted(unknown)}; use {', '.join(LOSSES)}")
        # checks the weights, the temperature and the layer map now, not after the teacher's fine-tune
        DistillConfig(**self.loss_weights, temperature=self.temperature,
                      layer_map="uniform" if self.layers is not None or self.method == "dense-small" else self.layer_map)
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise TrainingError(f"time_budget_s must be > 0 seconds, got {self.time_budget_s}")
        if (self.augment or self.unlabelled) and not self.stage2_kd:
            raise TrainingError("augment/unlabelled inputs are labelled by the teacher, so they need the KD losses: "
                                "drop --no-kd or set --augment 0")
        self.augment_config()  # augment >= 0 checked now
        if not 0 <= self.min_retention <= 1:
            raise TrainingError(f"min_retention is a share of the teacher in [0, 1], got {self.min_retention}")
        for stage in (1, 2):
            self.train_config(stage)  # epochs, max_epochs, patience, lr: checked now, not after the teacher
        if self.method == "dense-small" and self.layer_map == "one-to-one":
            self.layer_map = "uniform"  # the dense-small student is shallower
        if self.layers is not None:
            if self.method != "kronecker":
                raise TrainingError("layers applies to the kronecker method (dense-small has its own depth)")
            self.layer_map = "uniform"
        self.kron_config()  # structure and allocation are checked now
        if self.general_student is not None and self.method != "kronecker":
            raise TrainingError(f"a general student is a Kronecker student: --general-student needs --method "
                                f"kronecker, not {self.method}")
        if self.vocabulary == "full":
            self.vocabulary = None  # the default, spelled out
        if self.vocabulary not in (None, *VOCABULARIES):
            raise TrainingError(f"vocabulary must be full or one of {VOCABULARIES}, not {self.vocabulary!r}")
        if self.vocabulary == "task" and (self.method != "kronecker" or self.general_student is not None):
            raise TrainingError("--vocabulary task trims the word embedding of a student made from its teacher: it "
                                "needs --method kronecker and no --general-student (whose embedding is already made)")
        if self.ffn == "factored":
            self.ffn = None  # the default, spelled out (kron_config() above has checked the value)
        if self.ffn == "neurons" and not self.calibration:
            raise TrainingError("--ffn neurons picks the neurons by their activations on the training text: drop "
                                "--no-calibration")
        if self.ffn == "neurons" and (self.method != "kronecker" or self.general_student is not None):
            raise TrainingError("--ffn neurons keeps the FFN neurons of a student made from its teacher: it needs "
                                "--method kronecker and no --general-student (whose FFN is already made)")

    def levers_apply(self) -> bool:
        """Whether "auto" means the task vocabulary and kept FFN neurons: a Kronecker student made from its teacher at
        a target compression (not a preset's or the paper's fixed shapes, nor a general student's made layers), with
        calibration statistics to pick the neurons and no ``embedding_share`` (which splits the FFN's budget)."""
        return (self.method == "kronecker" and self.general_student is None and self.preset is None
                and self.structure != "paper" and self.calibration and self.embedding_share is None)

    def task_source(self):
        """The :class:`~kronedge.data.TaskSource` the examples come from (files when ``source`` is set)."""
        from .data import TaskSource

        if self.source is not None:
            return TaskSource.from_dict(self.source)
        return TaskSource(task=self.task, data_dir=self.data_dir)

    def kron_config(self):
        return structure_kron_config(self)

    def student_config(self, stats: dict | None = None, vocabulary=None):
        from .students import student_config

        return student_config(self.method, self.kron_config(), stats=stats, layers=self.layers, vocabulary=vocabulary)

    def augment_config(self, mask_token: str = "[MASK]"):
        from .augment import AugmentConfig

        return AugmentConfig(copies=self.augment, mask_token=mask_token, seed=self.seed)

    def teacher_config(self, time_budget_s: float | None = None) -> TrainConfig:
        return default_teacher_config(max_length=self.max_length, precision=self.precision, seed=self.seed,
                                      min_steps=self.min_steps, max_epochs=self.max_epochs, patience=self.patience,
                                      time_budget_s=time_budget_s, checkpoint_seconds=self.checkpoint_seconds)

    def train_config(self, stage: int, time_budget_s: float | None = None) -> TrainConfig:
        """The TrainConfig of KD stage 1 or 2 (stage 1 has no task score to stop early on)."""
        one = stage == 1
        return TrainConfig(epochs=self.stage1_epochs if one else self.stage2_epochs,
                           lr=self.stage1_lr if one else self.stage2_lr, batch_size=self.batch_size,
                           max_length=self.stage1_max_length if one else self.max_length, seed=self.seed,
                           precision=self.precision, warmup_ratio=0.1, time_budget_s=time_budget_s,
                           min_steps=self.stage1_min_steps if one else self.stage2_min_steps, max_epochs=self.max_epochs,
                           patience=None if one else self.patience,
                           cooldown_epochs=None if one else self.cooldown_epochs, checkpoint_seconds=self.checkpoint_seconds)

    def to_dict(self) -> dict:
        return {"version": self.VERSION, **asdict(self)}

    def recipe_changes(self, saved: dict) -> dict[str, tuple]:
        """{field: (saved value, this value)} where a saved ``to_dict()`` computes something else (checkpoint
        cadence aside); empty for the same recipe."""
        mine = json.loads(json.dumps(result_settings(self)))
        free = {f.name for f in fields(self) if not f.metadata.get("affects_result", True)}
        theirs = {k: v for k, v in saved.items() if k not in free and k != "version" and v is not None}
        return _changes(theirs, mine)

    def same_recipe(self, saved: dict) -> bool:
        """True when a saved ``to_dict()`` describes the same computation (checkpoint cadence aside)."""
        return not self.recipe_changes(saved)


def _changes(theirs: dict, mine: dict, prefix: str = "") -> dict[str, tuple]:
    """{dotted key: (theirs, mine)} of what differs, nested dicts by their own keys (``source.files.metric``)."""
    out = {}
    for k in sorted(theirs.keys() | mine.keys()):
        a, b = theirs.get(k), mine.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_changes(a, b, f"{prefix}{k}."))
        elif a != b:
            out[prefix + k] = (a, b)
    return out


def retained_share(student: float, teacher: float) -> float:
    """The share of the teacher's score the student keeps; nan when the teacher scores <= 0 (an MCC or a
    Pearson can), where a share means nothing."""
    return student / teacher if teacher > 0 else float("nan")


def share_text(student: float, teacher: float) -> str:
    """``"97.4% of the teacher"``, or why there is no share."""
    share = retained_share(student, teacher)
    return "no share: the teacher scores <= 0" if math.isnan(share) else f"{100 * share:.1f}% of the teacher"


@dataclass
class CompressResult:
    artifact: Path | None
    teacher_path: Path
    teacher_metrics: dict
    student_metrics: dict
    init_metrics: dict
    primary_metric: str
    params_teacher: int
    params_student: int
    compression: float
    seconds: dict = field(default_factory=dict)
    precision: str | None = None
    warnings: list = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        return round(sum(v for k, v in self.seconds.items() if k in ("stage1", "stage2")), 1)

    @property
    def retained(self) -> float:
        """Share of the teacher's primary metric that the student keeps."""
        return retained_share(self.student_metrics[self.primary_metric], self.teacher_metrics[self.primary_metric])

    def retention_warning(self, min_retention: float) -> str | None:
        """The warning for a student that keeps less than ``min_retention`` of its teacher (None when it keeps enough)."""
        p = self.primary_metric
        if math.isnan(self.retained):
            return (f"the teacher's own dev {p} is {self.teacher_metrics[p]:.4f}, no better than a guess, so the "
                    f"student's {self.student_metrics[p]:.4f} cannot be judged against it: check the labels, or give "
                    "the teacher fine-tune more data or time")
        if self.retained >= min_retention:
            return None
        return (f"the student keeps only {100 * self.retained:.1f}% of the teacher's {p} "
                f"({self.student_metrics[p]:.4f} vs {self.teacher_metrics[p]:.4f}), below the "
                f"{100 * min_retention:.0f}% this recipe aims for: check it on your data before use; more stage-2 steps "
                "(--stage2-min-steps, --stage2-epochs) or a lower --compression usually help")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["artifact"] = str(self.artifact) if self.artifact else None
        d["teacher_path"] = str(self.teacher_path)
        d["train_seconds"] = self.train_seconds
        return d
