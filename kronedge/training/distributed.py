"""Several training processes (`accelerate launch` / torchrun): who writes files, and shared decisions."""

from __future__ import annotations

import torch


def is_main_process() -> bool:
    """True in the process that writes files: rank 0 under `accelerate launch` / torchrun, or when alone."""
    from accelerate import PartialState

    return PartialState().is_main_process


def wait_for_everyone() -> None:
    """Barrier across training processes (no-op when alone): others wait for rank 0's files."""
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def agree(value: int, op: str, device) -> int:
    """The same decision on every process (min or max over ranks); the value itself when alone."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    t = torch.tensor([value], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN if op == "min" else torch.distributed.ReduceOp.MAX)
    return int(t.item())
