"""The training loop shared by fine-tuning and both distillation stages.

What makes CPU training affordable (measured in ../shared/notes/training-on-cpu.md): batches of
similar length (SST-2 sentences average 13 tokens, so padding to a fixed 128 wastes ~90% of the
compute) and bf16 autocast where the CPU has native bf16 (avx512_bf16 / AMX).

A run directory holds:
  config.json        the configuration used
  log.jsonl          one JSON object per logged step and per evaluation
  metrics.json       final metrics (written when the run completes)
  checkpoint/        the latest resumable state (model, optimizer, scheduler, RNG, position), atomic
  best.pt            weights of the best evaluation so far
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .artifact import atomic_directory, write_json_atomic


@dataclass
class TrainConfig:
    """Optimisation settings of one training stage.

    Args:
        epochs: passes over the training examples.
        batch_size: examples per optimizer step (per device, before accumulation).
        lr: peak learning rate (AdamW), reached after warm-up, then linear decay to 0.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorms).
        warmup_ratio: fraction of the steps spent warming up.
        grad_accum: micro-batches accumulated per optimizer step.
        max_length: tokens per sequence (longer inputs are truncated).
        seed: seeds Python, numpy and torch, and the batch order.
        precision: "auto" (bf16 autocast where the hardware has it, else fp32), "bf16" or "fp32".
        max_grad_norm: gradient clipping (0 disables).
        checkpoint_seconds: write a resumable checkpoint at least this often (and every epoch end).
        log_every: optimizer steps between log lines.
        max_steps: stop after this many optimizer steps (for smoke tests); None runs all epochs.
        time_budget_s: wall-clock seconds this stage may take. After a short calibration the loop
            keeps only as many whole epochs as fit (at least one) and rescales the learning-rate
            schedule to them; past the budget (+10%) it stops, evaluates and keeps the best. The
            epochs actually planned are logged and recorded, so a rerun with ``epochs`` set to
            that number reproduces the schedule. None: no limit.

    Example:
        >>> TrainConfig(epochs=1, lr=5e-5, batch_size=32)
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_accum: int = 1
    max_length: int = 128
    seed: int = 0
    precision: str = "auto"
    max_grad_norm: float = 1.0
    checkpoint_seconds: float = 300.0
    log_every: int = 20
    max_steps: int | None = None
    time_budget_s: float | None = None

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}; skip the stage instead of training 0 epochs")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be positive integers")
        if not (0 < self.lr < 1):
            raise ValueError(f"lr {self.lr} is outside (0, 1); typical values are 5e-5 to 1e-3")
        if not (0 <= self.warmup_ratio < 1):
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.max_length < 8:
            raise ValueError(f"max_length {self.max_length} is too short; use 64 or 128")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0 seconds, got {self.time_budget_s}")


# ---------------------------------------------------------------------------------------------
# Hardware


def cpu_has_bf16() -> bool:
    """True when the CPU executes bf16 natively (avx512_bf16 or AMX); emulated bf16 is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def choose_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(precision, reason): what the loop will use and why."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        why = "GPU supports bf16" if ok else "GPU lacks bf16"
    else:
        ok = cpu_has_bf16()
        why = "CPU has avx512_bf16/AMX" if ok else "CPU lacks native bf16 (no avx512_bf16/amx_bf16 flag)"
    if requested == "fp32":
        return "fp32", "fp32 requested"
    if requested == "bf16":
        return "bf16", "bf16 requested" + ("" if ok else f" ({why}: it will be slow)")
    return ("bf16" if ok else "fp32"), why


def seed_everything(seed: int) -> None:
    from accelerate.utils import set_seed

    set_seed(seed)


# ---------------------------------------------------------------------------------------------
# Tokenised data and length-bucketed batches


@dataclass
class Encoded:
    """Tokenised examples (unpadded), with optional labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def load_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=True)


def encode(tokenizer, texts: list, labels: list | None = None, max_length: int = 128) -> Encoded:
    """Tokenise single sentences or (a, b) pairs without padding (batches pad themselves)."""
    if texts and isinstance(texts[0], tuple):
        a, b = [t[0] for t in texts], [t[1] for t in texts]
        enc = tokenizer(a, b, truncation=True, max_length=max_length)
    else:
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    token_types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return Encoded(enc["input_ids"], token_types, list(labels) if labels is not None else None)


def bucket_batches(lengths: list[int], batch_size: int, seed: int, shuffle: bool = True) -> list[list[int]]:
    """Batches of similar length in a seeded random order.

    Examples are shuffled, cut into pools of 50 batches, each pool sorted by length and cut into
    batches, then the batch order is shuffled: padding nearly vanishes while every epoch still
    sees a different mix.
    """
    order = list(range(len(lengths)))
    if not shuffle:
        order.sort(key=lambda i: lengths[i])
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(data: Encoded, index: list[int], device, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad one batch to its longest member."""
    width = max(len(data.input_ids[i]) for i in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(index), width), dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    for row, i in enumerate(index):
        n = len(data.input_ids[i])
        ids[row, :n] = torch.tensor(data.input_ids[i])
        types[row, :n] = torch.tensor(data.token_type_ids[i])
        mask[row, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if data.labels is not None:
        dtype = torch.float if isinstance(data.labels[0], float) else torch.long
        batch["labels"] = torch.tensor([data.labels[i] for i in index], dtype=dtype)
    return {k: _to_device(v, device) for k, v in batch.items()}


def _to_device(t: torch.Tensor, device) -> torch.Tensor:
    # A copy from pageable memory makes the host wait until the GPU has finished all queued work;
    # from pinned memory it is queued like a kernel, so the next batch is prepared while the GPU runs.
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@torch.no_grad()
def predict_logits(model: nn.Module, data: Encoded, batch_size: int = 64, device=None) -> torch.Tensor:
    """Logits (N, C) in the original example order; fp32, eval mode, batches sorted by length."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [None] * len(data)
    for index in bucket_batches(data.lengths(), batch_size, seed=0, shuffle=False):
        batch = collate(data, index, device)
        batch.pop("labels", None)
        logits = model(**batch).logits.float().cpu()
        for row, i in enumerate(index):
            out[i] = logits[row]
    model.train(was_training)
    return torch.stack(out)


def evaluate_model(model: nn.Module, task: str, data: Encoded, batch_size: int = 64) -> dict[str, float]:
    """GLUE metrics of a sequence-classification model on tokenised labelled data."""
    from .data import compute_metrics, get_task

    logits = predict_logits(model, data, batch_size)
    spec = get_task(task)
    preds = logits[:, 0].numpy() if spec.is_regression else logits.argmax(-1).numpy()
    return compute_metrics(task, preds, data.labels)


# ---------------------------------------------------------------------------------------------
# The loop


StepFn = Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]
EvalFn = Callable[[nn.Module], dict]


@dataclass
class TrainResult:
    steps: int
    seconds: float
    examples_per_s: float
    precision: str
    precision_reason: str
    best_metrics: dict | None
    last_metrics: dict | None
    history: list = field(default_factory=list)
    resumed_from: int | None = None
    planned_steps: int | None = None
    stopped_at_budget: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _optimizer(modules: dict[str, nn.Module], config: TrainConfig, device=None) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for module in modules.values():
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            # Biases and LayerNorm weights are not decayed (BERT's recipe).
            (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # On a GPU the fused kernel replaces hundreds of tiny per-tensor launches per step.
    fused = device is not None and torch.device(device).type == "cuda"
    return torch.optim.AdamW(groups, lr=config.lr, **({"fused": True} if fused else {}))


def _scheduler(optimizer, total_steps: list[int], config: TrainConfig):
    """Linear warm-up then linear decay to 0 at ``total_steps[0]`` (a list: a time budget may shorten it)."""

    def factor(step: int) -> float:
        total = total_steps[0]
        warmup = int(total * config.warmup_ratio)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _rng_state() -> dict:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    # map_location may have put the saved generator states on the GPU; the setters want CPU bytes.
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _save_checkpoint(run_dir: Path, modules, optimizer, scheduler, progress: dict) -> None:
    with atomic_directory(run_dir / "checkpoint") as tmp:
        torch.save({"modules": {k: m.state_dict() for k, m in modules.items()},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": _rng_state()}, tmp / "state.pt")
        write_json_atomic(tmp / "progress.json", progress)


def _save_best(run_dir: Path, model: nn.Module, metrics: dict) -> None:
    tmp = run_dir / ".best.pt.tmp"
    torch.save({"model": model.state_dict(), "metrics": metrics}, tmp)
    os.replace(tmp, run_dir / "best.pt")


def read_progress(run_dir: str | os.PathLike) -> dict | None:
    """The progress record of a run's checkpoint, or None if there is none."""
    path = Path(run_dir) / "checkpoint" / "progress.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train_loop(model: nn.Module, data: Encoded, step_fn: StepFn, config: TrainConfig, run_dir: str | os.PathLike,
               eval_fn: EvalFn | None = None, primary_metric: str | None = None, resume: bool = False,
               extra_modules: dict[str, nn.Module] | None = None, desc: str = "train",
               log: Callable[[str], None] = print) -> TrainResult:
    """Train ``model`` on ``data`` with ``step_fn`` (which returns the loss and its named parts).

    Runs under Hugging Face Accelerate (device placement, gradient accumulation, several
    processes under ``accelerate launch``). Evaluates after every epoch when ``eval_fn`` is given and
    keeps the best weights (by ``primary_metric``), which are loaded back into ``model`` at the end.

    Args:
        model: the module to train (trained in place).
        data: tokenised training examples.
        step_fn: ``(model, batch) -> (loss, {"part": float})``; runs under autocast.
        config: optimisation settings.
        run_dir: where config, logs, checkpoints and best weights go.
        eval_fn: ``model -> metrics``; called in fp32 after each epoch.
        primary_metric: key of the metrics to maximise.
        resume: continue from ``run_dir/checkpoint`` if there is one.
        extra_modules: more trainable modules (e.g. distillation projections), checkpointed too.

    Example:
        >>> train_loop(model, encoded, lambda m, b: (m(**b).loss, {}), TrainConfig(), "runs/ft")
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision="no")
    device = accelerator.device
    if device.type == "cuda":
        # TF32 matmuls: fp32 training at tensor-core speed, far inside the accuracy that matters here.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    precision, reason = choose_precision(config.precision, device)
    log(f"[{desc}] precision {precision} ({reason}); device {device}; threads {torch.get_num_threads()}")

    modules = {"model": model, **(extra_modules or {})}
    for m in modules.values():
        m.to(device)
        m.train()
    optimizer = _optimizer(modules, config, device)

    # Each process takes every n-th batch, so `accelerate launch` splits an epoch across workers.
    def epoch_batches(epoch: int) -> list[list[int]]:
        batches = bucket_batches(data.lengths(), config.batch_size, seed=config.seed * 1000 + epoch)
        return batches[accelerator.process_index::accelerator.num_processes]

    per_epoch = math.ceil(len(epoch_batches(0)) / config.grad_accum)
    total_steps = per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    schedule_total = [total_steps]
    scheduler = _scheduler(optimizer, schedule_total, config)
    # The scheduler stays outside accelerate.prepare: prepared, it steps once per process per
    # optimizer step, which under `accelerate launch` would end the schedule early.
    model, optimizer = accelerator.prepare(model, optimizer)
    modules["model"] = model
    main = accelerator.is_main_process  # only rank 0 writes files; every rank trains and evaluates
    if not main:
        log = lambda line: None  # noqa: E731  (one copy of every message)

    step, epoch, batch_pos, resumed_from, prior_seconds, prior_seen = 0, 0, 0, None, 0.0, 0
    best, last, history = None, None, []
    progress = read_progress(run_dir) if resume else None
    if progress is not None:
        state = torch.load(run_dir / "checkpoint" / "state.pt", map_location=_load_location(device), weights_only=False)
        for k, m in modules.items():
            accelerator.unwrap_model(m).load_state_dict(state["modules"][k])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step, epoch, batch_pos = progress["step"], progress["epoch"], progress["batch"]
        if config.time_budget_s and progress.get("total_steps"):
            # Keep the schedule the budget chose in the interrupted session.
            total_steps = schedule_total[0] = progress["total_steps"]
        best, last, history = progress.get("best"), progress.get("last"), progress.get("history", [])
        prior_seconds, prior_seen = progress.get("seconds", 0.0), progress.get("examples", 0)
        resumed_from = step
        log(f"[{desc}] resumed from step {step} (epoch {epoch}, batch {batch_pos})")
    else:
        seed_everything(config.seed)
        if main:
            (run_dir / "log.jsonl").unlink(missing_ok=True)
            (run_dir / "best.pt").unlink(missing_ok=True)
    if main:
        write_json_atomic(run_dir / "config.json", {"stage": desc, **asdict(config), "precision_used": precision,
                                                     "precision_reason": reason, "examples": len(data),
                                                     "processes": accelerator.num_processes})

    def checkpoint():
        if main:
            _save_checkpoint(run_dir, {k: accelerator.unwrap_model(m) for k, m in modules.items()}, optimizer,
                             scheduler,
                             {"step": step, "epoch": epoch, "batch": batch_pos, "total_steps": total_steps,
                              "best": best, "last": last, "history": history, "done": False,
                              "seconds": prior_seconds + time.perf_counter() - start, "examples": prior_seen + seen})

    def agree(value: int, op: str) -> int:
        """The same decision on every process (min or max over ranks); the value itself when alone."""
        if accelerator.num_processes == 1:
            return value
        t = torch.tensor([value], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN if op == "min" else torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def fit_to_budget(seconds_per_step: float, now: float, keep: float, at_least: int) -> int:
        """Whole epochs that fit in what is left of the budget (the same on every process); moves the
        schedule's end there, never before the current step."""
        nonlocal total_steps
        left = config.time_budget_s - (prior_seconds + now - start)
        fit = int((step + keep * left / seconds_per_step) // per_epoch)
        epochs_fit = agree(max(at_least, min(config.epochs, fit)), "min")
        total_steps = schedule_total[0] = max(min(per_epoch * epochs_fit, config.max_steps or 10**12), step)
        bar.total = total_steps
        return epochs_fit

    logf = open(run_dir / "log.jsonl", "a") if main else open(os.devnull, "w")
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    start = time.perf_counter()
    seen = 0  # examples processed in this session (for throughput)
    last_ckpt = time.perf_counter()
    bar = tqdm(total=total_steps, initial=step, desc=desc, mininterval=2.0, dynamic_ncols=True,
               disable=not accelerator.is_local_main_process)

    def say(message: str) -> None:
        """A log line of its own, not glued to the end of the progress bar."""
        bar.clear()
        log(message)
        bar.refresh()

    done = step >= total_steps
    # Time budget: time steps [cal_from, cal_to) of this session, then keep the whole epochs that fit.
    cal_from, cal_to = step + 5, step + 5 + min(50, max(5, per_epoch // 4))
    step_at_start = step
    calibrated = not config.time_budget_s or resumed_from is not None
    stopped_at_budget = False
    t_cal = None
    try:
        while not done and epoch < config.epochs:
            batches = epoch_batches(epoch)
            running, parts_sum, n_running = 0.0, {}, 0
            while batch_pos < len(batches):
                index = batches[batch_pos]
                batch = collate(data, index, device)
                with accelerator.accumulate(model):
                    with autocast:
                        loss, parts = step_fn(model, batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm:
                        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
                        accelerator.clip_grad_norm_(params, config.max_grad_norm)
                    optimizer.step()
                    if accelerator.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad()
                batch_pos += 1
                seen += len(index)
                # Losses stay on the device until a log line needs them: a float() per step would
                # make the host wait for the GPU every step.
                running = running + loss.detach()
                n_running += 1
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v)
                if not accelerator.sync_gradients:
                    continue
                step += 1
                bar.update(1)
                now = time.perf_counter()
                rate = seen / max(1e-9, now - start)
                if not calibrated:
                    if step == cal_from:
                        t_cal = now
                    elif step == cal_to:
                        per_step = (now - t_cal) / (cal_to - cal_from)
                        # 8% kept back for the evaluations, which the calibration steps do not include.
                        epochs_fit = fit_to_budget(per_step, now, keep=0.92, at_least=1)
                        calibrated = True
                        say(f"[{desc}] time budget {config.time_budget_s:.0f} s: {per_step * 1000:.1f} ms/step, "
                            f"{epochs_fit} of {config.epochs} epoch(s) fit ({total_steps} steps)")
                        logf.write(json.dumps({"stage": desc, "time_budget_s": config.time_budget_s,
                                               "seconds_per_step": per_step, "epochs_planned": epochs_fit,
                                               "total_steps": total_steps}) + "\n")
                if step % config.log_every == 0 or step == total_steps:
                    running = float(running)
                    row = {"stage": desc, "step": step, "epoch": epoch, "loss": running / n_running,
                           **{k: float(v) / n_running for k, v in parts_sum.items()},
                           "lr": scheduler.get_last_lr()[0], "examples_per_s": round(rate, 1),
                           "elapsed_s": round(time.perf_counter() - start, 1)}
                    logf.write(json.dumps(row) + "\n")
                    logf.flush()
                    bar.set_postfix(loss=f"{running / n_running:.4f}", ex_s=f"{rate:.0f}")
                    running, parts_sum, n_running = 0.0, {}, 0
                if step >= total_steps:
                    done = True
                    break
                # Checked on logging steps only, which every process reaches together.
                over = (calibrated and config.time_budget_s and step % config.log_every == 0 and
                        agree(int(prior_seconds + now - start > 1.1 * config.time_budget_s), "max"))
                if over:
                    say(f"[{desc}] time budget exceeded at step {step} of {total_steps}: stopping")
                    stopped_at_budget = done = True
                    break
                if time.perf_counter() - last_ckpt > config.checkpoint_seconds:
                    checkpoint()
                    last_ckpt = time.perf_counter()
            if eval_fn is not None:
                last = eval_fn(accelerator.unwrap_model(model))
                history.append({"epoch": epoch, "step": step, **last})
                logf.write(json.dumps({"stage": desc, "eval": last, "epoch": epoch, "step": step}) + "\n")
                logf.flush()
                say(f"[{desc}] epoch {epoch}: {json.dumps(last)}")
                if primary_metric and (best is None or last[primary_metric] > best[primary_metric]):
                    best = dict(last)
                    if main:
                        _save_best(run_dir, accelerator.unwrap_model(model), best)
            epoch += 1
            batch_pos = 0
            if config.time_budget_s and calibrated and not done and epoch < config.epochs:
                # Re-plan with what a whole epoch (evaluation included) really took: a machine that got
                # busier or freer since the calibration moves the end, in whole epochs.
                now = time.perf_counter()
                before = total_steps
                epochs_fit = fit_to_budget((now - start) / max(1, step - step_at_start), now, keep=0.95, at_least=epoch)
                if total_steps != before:
                    say(f"[{desc}] time budget: re-planned to {epochs_fit} epoch(s) after {epoch} done")
                    logf.write(json.dumps({"stage": desc, "replanned_after_epoch": epoch, "epochs_planned": epochs_fit,
                                           "total_steps": total_steps}) + "\n")
                done = step >= total_steps
            checkpoint()
            last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        checkpoint()
        say(f"[{desc}] interrupted at step {step}: checkpoint saved in {run_dir / 'checkpoint'}; rerun with --resume")
        raise
    finally:
        bar.close()
        logf.close()

    # Time and throughput over the whole run, across resumed sessions.
    seconds = prior_seconds + time.perf_counter() - start
    seen += prior_seen
    model = accelerator.unwrap_model(model)
    accelerator.wait_for_everyone()  # best.pt is written by rank 0
    if best is not None and (run_dir / "best.pt").exists():
        model.load_state_dict(torch.load(run_dir / "best.pt", map_location=_load_location(device), weights_only=False)["model"])
    result = TrainResult(step, seconds, seen / max(seconds, 1e-9), precision, reason, best, last, history, resumed_from,
                         total_steps, stopped_at_budget)
    progress = {"step": step, "epoch": epoch, "batch": 0, "total_steps": total_steps, "best": best, "last": last,
                "history": history, "done": True, "seconds": seconds, "examples": seen}
    if main:
        if (run_dir / "checkpoint").exists():
            write_json_atomic(run_dir / "checkpoint" / "progress.json", progress)
        write_json_atomic(run_dir / "metrics.json", result.to_dict())
    return result


def _load_location(device: torch.device):
    # Multi-process CPU runs name their device "cpu:0", which torch.load cannot map to.
    return "cpu" if device.type == "cpu" else device


def is_main_process() -> bool:
    """True in the process that writes files: rank 0 under `accelerate launch` / torchrun, or when alone."""
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    """Barrier across training processes (no-op when alone): others wait for rank 0's files."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
