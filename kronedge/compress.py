"""`kronedge compress` as a library function: the pipeline from a teacher to a distilled artifact.

teacher -> (fine-tune when it has no head for the task, cached; refused when near chance) ->
student (:mod:`.students`) -> stage 1 (general KD on unlabelled text) -> stage 2 (task KD) ->
evaluate -> artifact with a model card (:mod:`.model_card`). With a general student
(:mod:`.general`, ``--general-student``) the student starts from it and stage 1 is skipped.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import Counter
from pathlib import Path

from .artifact import write_json_atomic
from .compress_checks import check_options
from .finetune import finetune
from .recipe import CompressConfig, CompressResult, share_text

logger = logging.getLogger(__name__)


def compress(config: CompressConfig | None = None, out: str | os.PathLike | None = "artifacts/kronedge-sst2",
             run_dir: str | os.PathLike = "runs/compress", resume: bool = False,
             threads: int | None = None) -> CompressResult:
    """Teacher -> fine-tune if needed -> student -> stage 1 -> stage 2 -> evaluate -> artifact.

    Args:
        config: the recipe (default: SST-2, builtin:minilm, ~5x, both KD stages).
        out: artifact directory (replaced atomically); None saves nothing (benchmark baselines).
        run_dir: where each stage keeps config, JSONL logs, metrics and resumable checkpoints.
        resume: continue an interrupted run (finished stages are reloaded, not retrained).
        threads: torch threads (None: torch's default).

    Example:
        >>> result = compress(CompressConfig(task="sst2", compression=5.5), out="artifacts/sst2-5x")
        >>> result.student_metrics["accuracy"], result.compression
    """
    return CompressRun(config or CompressConfig(), out, run_dir, resume, threads).run()


# The share of validation texts cut at --max-length from which compress says so.
CUT_TEXTS_WARNING = 0.05
# A class with a smaller share of the training rows than this, and than this fraction of an even share (1/classes: a
# balanced 20-class task's 5% is not rare), is named when accuracy picks the epochs.
RARE_CLASS_WARNING = 0.05
RARE_OF_EVEN_SHARE = 0.5


class CompressRun:
    """One run of the pipeline: each step is a method and what it makes is kept in attributes."""

    def __init__(self, config: CompressConfig, out, run_dir, resume: bool = False, threads: int | None = None):
        from .training import set_threads

        set_threads(threads)
        self.config, self.out, self.resume = config, Path(out) if out is not None else None, resume
        self.run_dir = Path(run_dir)
        self.source = config.task_source()
        self.spec, self.teacher_head = None, False  # set by run() once the data files are checked
        self.general: Path | None = None  # the general student this run starts from (set by run())
        self.seconds: dict[str, float] = {}
        self.warnings: list[str] = []
        self.precision: str | None = None

    def run(self) -> CompressResult:
        from .training import is_main_process, wait_for_everyone

        from .general import resolve_general

        self.spec, self.teacher_head = check_options(self.config, self.out, self.run_dir, self.resume, self.source)
        self.general = resolve_general(self.config)  # a general student that does not fit: one error, now
        self.primary = self.spec.primary_metric
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if is_main_process():
            write_json_atomic(self.run_dir / "compress_config.json", self.config.to_dict())
        t0 = time.perf_counter()
        self.prepare_teacher()
        self.build_student()
        if self.general is not None:
            logger.info(f"[compress] stage 1 skipped: the student starts from the general student {self.general}")
        elif self.config.stage1:
            self.stage1()
        self.stage2()
        result = self.evaluate(t0)
        if self.out is not None:
            self.save(result)
        if is_main_process():
            write_json_atomic(self.run_dir / "result.json", result.to_dict())
        wait_for_everyone()
        return result

    def budget(self, part: str) -> float | None:
        """Seconds for ``part`` ("teacher", "stage1", "stage2") of the time budget (None: no budget)."""
        total = self.config.time_budget_s
        if not total:
            return None
        if part == "teacher":
            return total / 3
        kd = max(total - self.seconds.get("teacher_finetune", 0.0), total / 5)
        if part == "stage1":
            return kd / 3
        # Stage 2 always gets at least a fifth, even when the earlier parts overran their shares.
        return max(kd - self.seconds.get("stage1", 0.0), total / 5)

    def prepare_teacher(self) -> None:
        """A teacher with a head for the task (fine-tuned and cached when it has none), scored on dev."""
        from .evaluation import TeacherNearChanceError, check_not_chance, evaluate_model
        from .teachers import load_teacher
        from .training import check_max_length, encode, load_tokenizer

        c, task = self.config, self.spec.name
        if self.teacher_head:
            self.teacher_path = Path(c.teacher)
        else:
            logger.info(f"[compress] {c.teacher} has no {task} head: it gets one fine-tuned first (or cached from an earlier run)")
            ft = finetune(c.teacher, self.source, train_limit=c.teacher_train_limit,
                          config=c.teacher_config(self.budget("teacher")), resume=self.resume)
            self.teacher_path = ft.path
            self.seconds["teacher_finetune"] = 0.0 if ft.cached else round(ft.seconds, 1)
        self.loaded = load_teacher(str(self.teacher_path), head="sequence-classification",
                                   num_labels=self.spec.num_labels)
        self.teacher = self.loaded.model.eval()
        self.tokenizer = load_tokenizer(self.loaded.tokenizer_dir)
        self.dev = self.source.load("dev", self.spec)
        if self.source.files is not None:
            self.warn_of_seen_dev_texts()
            self.warn_of_rare_classes()
        self.dev_enc = encode(self.tokenizer, self.dev.texts, self.dev.labels, c.max_length)
        check_max_length(self.teacher.config, self.dev_enc)
        self.warn_of_cut_dev_texts()
        self.teacher_metrics = evaluate_model(self.teacher, self.spec, self.dev_enc)
        logger.info(f"[compress] teacher {task} dev {self.primary} = {self.teacher_metrics[self.primary]:.4f}")
        if not c.check_teacher:
            return
        try:
            check_not_chance(self.spec, self.teacher_metrics, self.dev.labels)
        except TeacherNearChanceError as exc:
            if c.time_budget_s and "teacher_finetune" in self.seconds:
                raise TeacherNearChanceError(
                    f"{exc}. Its fine-tune had a third of --time-budget: give more time, or fine-tune it once with "
                    "`kronedge finetune` and pass that directory as --teacher") from None
            raise

    def warn_of_seen_dev_texts(self) -> None:
        seen = self.dev.seen_in(self.train)
        if seen:
            self.warn(f"{seen} of the {len(self.dev)} validation texts ({seen / len(self.dev):.0%}) are training texts "
                      "too: every dev score (the teacher check, the best epoch, the student's) counts them as unseen "
                      "text; drop them from the validation file for a score of text the model never saw")

    def warn_of_rare_classes(self) -> None:
        """Accuracy barely sees a class of a few percent of the rows: say so where the epochs are picked by it."""
        spec = self.spec
        if spec.is_regression or spec.primary_metric != "accuracy" or not len(self.train):
            return
        counts = Counter(self.train.labels)
        rarest = min(range(spec.num_labels), key=lambda i: counts[i])
        share = counts[rarest] / len(self.train)
        if share < min(RARE_CLASS_WARNING, RARE_OF_EVEN_SHARE / spec.num_labels):
            self.warn(f"the rarest class, {spec.label_names[rarest]!r}, has {share:.1%} of the training rows "
                      f"({counts[rarest]} of {len(self.train)}): accuracy, which picks the best epoch, barely sees "
                      "it; --metric f1_macro counts every class alike")

    def warn_of_cut_dev_texts(self) -> None:
        """Texts longer than --max-length lose their ends in training, scoring and the export alike: worth knowing when
        many do (reviews, tickets, documents), since the ends may hold the label's evidence."""
        c = self.config
        cut = sum(n >= c.max_length for n in self.dev_enc.lengths())  # at the cap: almost always cut there
        if cut >= CUT_TEXTS_WARNING * len(self.dev):
            positions = getattr(self.teacher.config, "max_position_embeddings", c.max_length)
            more = (f"; --max-length up to {positions} keeps more of them, at a cost in speed"
                    if positions > c.max_length else "")
            self.warn(f"{cut} of the {len(self.dev)} validation texts ({cut / len(self.dev):.0%}) are cut at "
                      f"--max-length {c.max_length} tokens: the model never reads their ends{more}")

    def warn(self, warning: str) -> None:
        self.warnings.append(warning)
        logger.warning(f"[compress] WARNING: {warning}")

    def calibration_stats(self) -> dict | None:
        """The teacher's input statistics on a strided sample of the task's training text, when the
        recipe fits to data (``calibration``) or searches the structure."""
        c = self.config
        if not (c.calibration or c.structure == "search") or c.method != "kronecker" or self.general is not None:
            return None
        from .calibration import collect_input_stats, holdout_for, strided_sample

        sample = strided_sample(self.train.texts)
        t = time.perf_counter()
        stats = collect_input_stats(self.teacher, self.tokenizer, sample, max_length=c.max_length,
                                    holdout_every=holdout_for(c.structure, c.ffn, c.ffn_width))
        self.seconds["calibration"] = round(time.perf_counter() - t, 1)
        return stats

    @functools.cached_property
    def train(self):
        """The task's training split, read once for calibration, the kept vocabulary and stage 2."""
        return self.source.load("train", self.spec)

    def kept_vocabulary(self):
        """With ``vocabulary="task"``, the tokens of the training text (and of ``unlabelled``): the rows the
        student's word embedding keeps. Dev text is left out, as a user's test text would be."""
        c = self.config
        if c.vocabulary != "task":
            return None
        from .augment import read_unlabelled
        from .vocab import KeptVocabulary

        texts = list(self.train.texts)
        if c.unlabelled:  # without the lines that repeat dev texts, as stage 2 drops them
            dev = set(self.dev.texts)
            texts += [t for t in read_unlabelled(c.unlabelled, self.spec.is_pair) if t not in dev]
        vocabulary = KeptVocabulary.of_texts(self.tokenizer, texts, c.max_length)
        logger.info(f"[compress] task vocabulary: {len(vocabulary.keep_ids)} of {self.tokenizer.vocab_size} tokens "
                    f"in {len(texts)} texts keep their embedding rows; the rest read their nearest kept token's")
        return vocabulary

    def build_student(self) -> None:
        """Surgery on a copy of the teacher (nearest-Kronecker / truncated-SVD / sliced init), or the
        general student's embeddings and encoder under the teacher's pooler and head."""
        from .evaluation import evaluate_model
        from .students import GeneralStartStudent, build_student, core_params
        from .training import seed_everything

        seed_everything(self.config.seed)
        t = time.perf_counter()
        self.vocabulary = self.kept_vocabulary()
        kind = (GeneralStartStudent(str(self.general)) if self.general is not None
                else self.config.student_config(self.calibration_stats(), self.vocabulary))
        self.student, self.plan = build_student(self.teacher, kind)
        self.params_teacher, self.params_student = core_params(self.teacher), core_params(self.student)
        self.seconds["surgery"] = round(time.perf_counter() - t, 1)
        self.init_metrics = evaluate_model(self.student, self.spec, self.dev_enc)
        if self.general is None and self.config.ffn_to_embedding:
            logger.info(f"[compress] {self.config.ffn_to_embedding:.0%} of each kept FFN's parameter budget went to the "
                        "word embedding (--ffn-to-embedding; 0 keeps it in the FFN)")
        logger.info(f"[compress] {self.config.method} student: {self.params_teacher / 1e6:.2f}M -> "
                    f"{self.params_student / 1e6:.2f}M embedding+encoder params "
                    f"({self.params_teacher / self.params_student:.2f}x); before training {self.primary} = "
                    f"{self.init_metrics[self.primary]:.4f}")

    def stage1(self) -> None:
        """General KD on unlabelled text, intermediate losses only."""
        from .data import load_corpus
        from .distill import DistillConfig
        from .training import encode

        c = self.config
        chunks = load_corpus(c.corpus, limit=c.stage1_examples, seed=c.seed)
        enc = encode(self.tokenizer, chunks, None, c.stage1_max_length)
        losses = DistillConfig.general(**{**c.loss_weights, "logits": 0.0, "supervised": 0.0}, layer_map=c.layer_map)
        self._stage("stage1", enc, losses, c.train_config(1, self.budget("stage1")), primary=None)

    def stage2(self) -> None:
        """Task KD (or labels only for the no-KD ablation), keeping the best epoch on dev."""
        from .distill import DistillConfig
        from .training import encode

        c = self.config
        train = self.train.subset(c.stage2_examples, seed=c.seed)
        enc = encode(self.tokenizer, *self.stage2_texts(train), c.max_length)
        losses = (DistillConfig.task(**c.loss_weights, temperature=c.temperature, layer_map=c.layer_map)
                  if c.stage2_kd else DistillConfig.no_kd(layer_map=c.layer_map))
        self._stage("stage2", enc, losses, c.train_config(2, self.budget("stage2")), primary=self.primary)

    def stage2_texts(self, train) -> tuple[list, list]:
        """Stage 2's texts and labels: the training rows plus, with ``augment``/``unlabelled``, inputs
        that only the teacher labels (rebuilt from the seed, so a resumed run gets the same set)."""
        from .augment import read_unlabelled, stage2_examples

        c = self.config
        if not (c.augment or c.unlabelled):
            return train.texts, train.labels
        extra = read_unlabelled(c.unlabelled, self.spec.is_pair) if c.unlabelled else None
        augment = c.augment_config(getattr(self.tokenizer, "mask_token", None) or "[MASK]")
        return stage2_examples(train, augment, dev_texts=self.dev.texts, unlabelled=extra)

    def _stage(self, name: str, enc, losses, train_config, primary: str | None) -> None:
        from .distill import Distiller
        from .evaluation import evaluate_model
        from .training import check_max_length, train_loop

        check_max_length(self.teacher.config, enc)
        distiller = Distiller(self.teacher, self.student, losses)
        extra = {"projection": distiller.project} if any(True for _ in distiller.project.parameters()) else None
        logger.info(f"[{name}] {len(enc)} examples, losses {losses.to_dict()}")
        result = train_loop(self.student, enc, distiller, train_config, self.run_dir / name,
                            eval_fn=lambda m: evaluate_model(m, self.spec, self.dev_enc),
                            primary_metric=primary, resume=self.resume, extra_modules=extra, desc=name)
        self.seconds[name] = round(result.seconds, 1)
        self.precision = result.precision

    def evaluate(self, t0: float) -> CompressResult:
        """Score the student (fp32) and warn when it keeps too little of the teacher."""
        from .evaluation import evaluate_model

        c, p = self.config, self.primary
        self.student.eval()
        student_metrics = evaluate_model(self.student, self.spec, self.dev_enc)
        self.seconds["total"] = round(time.perf_counter() - t0, 1)
        result = CompressResult(None, self.teacher_path, self.teacher_metrics, student_metrics, self.init_metrics, p,
                                self.params_teacher, self.params_student,
                                round(self.params_teacher / self.params_student, 3), self.seconds, self.precision)
        logger.info(f"[compress] student {self.spec.name} dev {p} = {student_metrics[p]:.4f} (teacher "
                    f"{self.teacher_metrics[p]:.4f}; {share_text(student_metrics[p], self.teacher_metrics[p])}) at "
                    f"{result.compression:.2f}x fewer embedding+encoder params")
        warning = result.retention_warning(c.min_retention)
        if warning:
            self.warn(warning)
        result.warnings = list(self.warnings)
        return result

    def save(self, result: CompressResult) -> None:
        from .artifact import save_artifact
        from .general_store import general_record
        from .neurons import narrowed
        from .model_card import model_card
        from .training import is_main_process, versions

        c, kronecker = self.config, self.config.method == "kronecker"
        recipe = {
            "teacher": c.teacher, "teacher_finetuned": str(self.teacher_path), "task": self.spec.name,
            "labels": list(self.spec.label_names), "task_spec": self.spec.to_dict(), "kron_config": self.plan.config.to_dict() if kronecker else None,
            "compress_config": c.to_dict(), "params_teacher": self.params_teacher,
            "params_student": self.params_student, "compression": result.compression,
            "params_note": "embedding + encoder parameters (no pooler, no head)",
            "flops_teacher": self.plan.flops_teacher, "flops_student": self.plan.flops_student if kronecker else None,
            "metrics": {"teacher": result.teacher_metrics, "student": result.student_metrics,
                        "student_before_training": result.init_metrics, "primary": self.primary, "split": "dev",
                        "examples": len(self.dev)},
            "training": {"seconds": self.seconds, "precision": self.precision, "run_dir": str(self.run_dir)},
            "warnings": result.warnings, "versions": versions(),
            "general_student": general_record(self.general, c.general_student) if self.general else None,
            "vocabulary": ({"kept": len(self.vocabulary.keep_ids), "of": self.tokenizer.vocab_size}
                           if self.vocabulary is not None else None),
            "ffn_neurons": narrowed(self.student),
        }
        result.artifact = self.out
        if is_main_process():
            result.artifact = save_artifact(self.student, self.out, self.loaded.tokenizer_dir, recipe,
                                            model_card=model_card(recipe))
            logger.info(f"[compress] wrote {result.artifact}")
