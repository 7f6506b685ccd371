"""The optimizer and learning-rate schedule of every training stage (BERT's recipe)."""

from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig


class LinearSchedule:
    """Linear warm-up, then linear decay to 0 at ``total`` steps (a time budget may move ``total``).

    A callable object rather than a closure: LambdaLR saves its attributes in ``state_dict``, so a
    resumed run gets back the ``total`` its first session planned.
    """

    def __init__(self, total: int, warmup_ratio: float):
        self.total, self.warmup_ratio = total, warmup_ratio

    def __call__(self, step: int) -> float:
        warmup = int(self.total * self.warmup_ratio)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (self.total - step) / max(1, self.total - warmup))


def build_optimizer(modules: dict[str, nn.Module], config: TrainConfig, device=None) -> torch.optim.Optimizer:
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
