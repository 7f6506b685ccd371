"""The training loop shared by fine-tuning and both distillation stages, as a small object
(the files it writes: :mod:`.checkpoint`)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..artifact import write_json_atomic
from .batching import Encoded, bucket_batches, collate
from .budget import BudgetPlan, TimeBudget
from .checkpoint import (LOG_FILE, Progress, RunLog, RunningLoss, TrainResult, load_best, load_checkpoint, mark_done,
                         read_progress, save_best, save_checkpoint)
from .config import TrainConfig
from .distributed import agree
from .hardware import allow_tf32, choose_precision, seed_everything
from .optim import LinearSchedule, build_optimizer
from .report import Reporter
from .selection import EarlyStopping

StepFn = Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]
EvalFn = Callable[[nn.Module], dict]


class Trainer:
    """Trains ``model`` on ``data`` with ``step_fn`` under Hugging Face Accelerate.

    Accelerate places the model, accumulates gradients and, under ``accelerate launch``, runs one
    process per device, each taking every n-th batch. After every epoch ``eval_fn`` scores the
    model; the best weights (by ``primary_metric``) are kept and loaded back at the end. What it shows
    and logs is a :class:`~.report.Reporter`, the time budget a :class:`~.budget.TimeBudget`, which epoch
    to keep an :class:`~.selection.EarlyStopping`.

    Args:
        model: the module to train (trained in place).
        data: tokenised training examples.
        step_fn: ``(model, batch) -> (loss, {"part": tensor})``; runs under autocast.
        config: optimisation settings.
        run_dir: where config, logs, checkpoints and best weights go.
        eval_fn: ``model -> metrics``; called in fp32 after each epoch.
        primary_metric: key of the metrics to maximise (and to stop early on).
        extra_modules: more trainable modules (e.g. distillation projections), checkpointed too.
    """

    def __init__(self, model: nn.Module, data: Encoded, step_fn: StepFn, config: TrainConfig,
                 run_dir: str | os.PathLike, eval_fn: EvalFn | None = None, primary_metric: str | None = None,
                 extra_modules: dict[str, nn.Module] | None = None, desc: str = "train"):
        from accelerate import Accelerator

        self.data, self.step_fn, self.config, self.desc = data, step_fn, config, desc
        self.eval_fn, self.selection = eval_fn, EarlyStopping(primary_metric, config.patience, config.cooldown_epochs)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision="no")
        self.device = self.accelerator.device
        allow_tf32(self.device)
        self.precision, self.precision_reason = choose_precision(config.precision, self.device)
        self.main = self.accelerator.is_main_process  # only rank 0 writes files and logs
        self.report = Reporter(desc, self.main, self.accelerator.is_local_main_process)
        self.say = self.report.say
        self.say(f"precision {self.precision} ({self.precision_reason}); device {self.device}; "
                 f"threads {torch.get_num_threads()}")
        self.modules = {"model": model, **(extra_modules or {})}
        for m in self.modules.values():
            m.to(self.device)
            m.train()
        optimizer = build_optimizer(self.modules, config, self.device)
        self.steps_per_epoch = math.ceil(len(self.epoch_batches(0)) / config.grad_accum)
        self.epochs = config.planned_epochs(self.steps_per_epoch)
        self.epochs_planned = self.epochs  # what the time budget or a cool-down keeps of them
        total = min(self.steps_per_epoch * self.epochs, config.max_steps or 10**12)
        self.schedule = LinearSchedule(total, config.warmup_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule)
        # The scheduler stays outside accelerate.prepare: prepared, it steps once per process per
        # optimizer step, which under `accelerate launch` would end the schedule early.
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.modules["model"] = self.model
        self.budget = TimeBudget(config.time_budget_s, self.steps_per_epoch, self.epochs, config.max_steps,
                                 lambda value, op: agree(value, op, self.device))
        self.progress = Progress(total_steps=total)
        self.resumed_from: int | None = None
        self.prior_examples = 0
        self.seen = 0  # examples processed in this session
        self.stopping = self.stopped_at_budget = False

    def run(self, resume: bool = False) -> TrainResult:
        """Train every planned epoch (or up to the budget / early stop); continue a checkpoint if ``resume``."""
        self.start(resume)
        try:
            while not self.stopping and self.progress.epoch < self.epochs:
                self.run_epoch()
                self.end_epoch()
        except KeyboardInterrupt:
            self.checkpoint()
            self.say(f"interrupted at step {self.progress.step}: checkpoint saved in {self.run_dir / 'checkpoint'}; "
                     "rerun with --resume")
            raise
        finally:
            self.report.close()
        return self.finish()

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of ``epoch``: each process takes every n-th one."""
        batches = bucket_batches(self.data.lengths(), self.config.batch_size, seed=self.config.seed * 1000 + epoch)
        return batches[self.accelerator.process_index::self.accelerator.num_processes]

    def start(self, resume: bool) -> None:
        saved = read_progress(self.run_dir) if resume else None
        if saved is not None:
            self.restore(saved)
        else:
            seed_everything(self.config.seed)
            if self.main:
                (self.run_dir / LOG_FILE).unlink(missing_ok=True)
                (self.run_dir / "best.pt").unlink(missing_ok=True)
        if self.main:
            write_json_atomic(self.run_dir / "config.json", {
                "stage": self.desc, **self.config.to_dict(), "precision_used": self.precision,
                "precision_reason": self.precision_reason, "examples": len(self.data),
                "processes": self.accelerator.num_processes, "epochs_planned": self.epochs})
        self.report.open(self.run_dir, self.schedule.total, self.progress.step)
        self.autocast = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                       enabled=self.precision == "bf16")
        self.t0 = self.last_ckpt = time.perf_counter()
        self.stopping = self.progress.step >= self.schedule.total or self.progress.stopped_early
        self.budget.start(self.progress.step, self.t0, self.progress.seconds, resumed=saved is not None)

    def restore(self, saved: dict) -> None:
        """Continue exactly where the checkpoint stopped: weights, optimizer, schedule, RNG, position."""
        unwrapped = {k: self.accelerator.unwrap_model(m) for k, m in self.modules.items()}
        load_checkpoint(self.run_dir, unwrapped, self.optimizer, self.scheduler, self.device)
        self.progress = Progress.from_dict(saved)
        # The schedule's end as the interrupted session planned it (a time budget may have moved it).
        self.schedule.total = self.progress.total_steps or self.schedule.total
        self.prior_examples = self.progress.examples
        self.resumed_from = self.progress.step
        if self.main:
            RunLog.forget_after(self.run_dir, self.progress.step)
        self.say(f"resumed from step {self.progress.step} (epoch {self.progress.epoch}, batch {self.progress.batch})")

    def run_epoch(self) -> None:
        batches = self.epoch_batches(self.progress.epoch)
        self.running = RunningLoss()
        while self.progress.batch < len(batches):
            if self.train_step(batches[self.progress.batch]) and self.after_update():
                break

    def train_step(self, index: list[int]) -> bool:
        """Forward and backward on one batch; True when it completed an optimizer step."""
        accelerator, config = self.accelerator, self.config
        batch = collate(self.data, index, self.device)
        with accelerator.accumulate(self.model):
            with self.autocast:
                loss, parts = self.step_fn(self.model, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm:
                params = [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            self.optimizer.step()
            if accelerator.sync_gradients:
                self.scheduler.step()
            self.optimizer.zero_grad()
        self.progress.batch += 1
        self.seen += len(index)
        self.running.add(loss, parts)
        return accelerator.sync_gradients

    def after_update(self) -> bool:
        """Bookkeeping after an optimizer step; True when the epoch must end now."""
        p = self.progress
        p.step += 1
        self.report.advance()
        now = time.perf_counter()
        plan = self.budget.after_step(p.step, now)
        if plan is not None:
            self.follow_budget(plan, f"time budget {self.config.time_budget_s:.0f} s: "
                               f"{plan.seconds_per_step * 1000:.1f} ms/step, {plan.epochs} of {self.epochs} epoch(s) "
                               f"fit ({plan.total_steps} steps)",
                               time_budget_s=self.config.time_budget_s, seconds_per_step=plan.seconds_per_step)
        if p.step % self.config.log_every == 0 or p.step == self.schedule.total:
            self.log_step(now)
        if p.step >= self.schedule.total:
            self.stopping = True
            return True
        if self.budget.over(p.step, now, self.config.log_every):
            self.say(f"time budget exceeded at step {p.step} of {self.schedule.total}: stopping")
            self.stopped_at_budget = self.stopping = True
            return True
        if now - self.last_ckpt > self.config.checkpoint_seconds:
            self.checkpoint()
        return False

    def log_step(self, now: float) -> None:
        means = self.running.means()
        rate = self.seen / max(1e-9, now - self.t0)
        self.report.write({"step": self.progress.step, "epoch": self.progress.epoch, **means,
                        "lr": self.scheduler.get_last_lr()[0], "examples_per_s": round(rate, 1),
                        "elapsed_s": round(time.perf_counter() - self.t0, 1)})
        self.report.postfix(loss=f"{means['loss']:.4f}", ex_s=f"{rate:.0f}")
        self.running = RunningLoss()

    def end_epoch(self) -> None:
        """Evaluate (keeping the best, maybe stopping early), re-plan the budget, checkpoint."""
        p = self.progress
        if self.eval_fn is not None:
            self.evaluate()
        p.epoch += 1
        p.batch = 0
        if not self.stopping and not p.cooling and p.epoch < self.epochs:  # a cool-down keeps its end
            before = self.schedule.total
            plan = self.budget.replan(p.step, p.epoch, time.perf_counter())
            if plan is not None and plan.total_steps != before:
                self.follow_budget(plan, f"time budget: re-planned to {plan.epochs} epoch(s) after {p.epoch} done",
                                   replanned_after_epoch=p.epoch)
            self.stopping = p.step >= self.schedule.total
        self.checkpoint()

    def evaluate(self) -> None:
        """Score the model; keep it when it is the best so far; stop when patience is spent."""
        p = self.progress
        p.last = self.eval_fn(self.accelerator.unwrap_model(self.model))
        p.history.append({"epoch": p.epoch, "step": p.step, **p.last})
        self.report.write({"eval": p.last, "epoch": p.epoch, "step": p.step})
        self.say(f"epoch {p.epoch}: {json.dumps(p.last)}")
        verdict = self.selection.update(p)
        if verdict == "best" and self.main:
            save_best(self.run_dir, self.accelerator.unwrap_model(self.model), p.best)
        elif verdict == "stop" and not p.cooling and p.step < self.schedule.total:  # else it ends here anyway
            self.stop_early()

    def stop_early(self) -> None:
        """Patience is spent: end the schedule after the cool-down epochs, or at once without them."""
        p, selection = self.progress, self.selection
        primary = selection.primary
        stale = f"no better {primary} in {p.stale_evals} evaluation(s)"
        end = selection.cooldown_end(p, self.steps_per_epoch, self.schedule.total)
        if end is None:
            self.say(f"{stale}: stopping early (best {p.best[primary]:.4f})")
            p.stopped_early = self.stopping = True
            return
        p.cooling = True
        self.end_schedule_at(end, epochs=p.epoch + 1 + selection.cooldown_epochs)
        self.say(f"{stale}: the learning rate now decays to zero over {selection.cooldown_epochs} more epoch(s), "
                 f"then the stage ends (best so far {p.best[primary]:.4f})")
        self.report.write({"cooldown_after_epoch": p.epoch, "epochs_planned": self.epochs_planned, "total_steps": end})

    def follow_budget(self, plan: BudgetPlan, message: str, **record) -> None:
        """The time budget moved the stage's end: follow it, say so and log it."""
        self.end_schedule_at(plan.total_steps, plan.epochs)
        self.say(message)
        self.report.write({**record, "epochs_planned": plan.epochs, "total_steps": plan.total_steps})

    def end_schedule_at(self, total_steps: int, epochs: int) -> None:
        """The learning-rate schedule (and the stage) now ends at ``total_steps``, after ``epochs`` epochs."""
        self.schedule.total = total_steps
        self.epochs_planned = epochs
        self.report.set_total(total_steps)

    def snapshot(self, **changes) -> Progress:
        """The progress record as of now, over every session."""
        return replace(self.progress, total_steps=self.schedule.total,
                       seconds=self.budget.elapsed(time.perf_counter()),
                       examples=self.prior_examples + self.seen, **changes)

    def checkpoint(self) -> None:
        if self.main:
            modules = {k: self.accelerator.unwrap_model(m) for k, m in self.modules.items()}
            save_checkpoint(self.run_dir, modules, self.optimizer, self.scheduler, self.snapshot())
        self.last_ckpt = time.perf_counter()

    def finish(self) -> TrainResult:
        final = self.snapshot(batch=0, done=True)
        model = self.accelerator.unwrap_model(self.model)
        self.accelerator.wait_for_everyone()  # best.pt is written by rank 0
        if final.best is not None and (self.run_dir / "best.pt").exists():
            load_best(self.run_dir, model, self.device)
        result = TrainResult(final.step, final.seconds, final.examples / max(final.seconds, 1e-9), self.precision,
                             self.precision_reason, final.best, final.last, final.history, self.resumed_from,
                             final.total_steps, self.stopped_at_budget, final.stopped_early or final.cooling,
                             self.epochs_planned)
        if self.main:
            mark_done(self.run_dir, final)
            write_json_atomic(self.run_dir / "metrics.json", result.to_dict())
        return result


def train_loop(model: nn.Module, data: Encoded, step_fn: StepFn, config: TrainConfig, run_dir: str | os.PathLike,
               eval_fn: EvalFn | None = None, primary_metric: str | None = None, resume: bool = False,
               extra_modules: dict[str, nn.Module] | None = None, desc: str = "train") -> TrainResult:
    """``Trainer(...).run(resume)`` in one call (see :class:`Trainer`)."""
    trainer = Trainer(model, data, step_fn, config, run_dir, eval_fn, primary_metric, extra_modules, desc)
    return trainer.run(resume)
