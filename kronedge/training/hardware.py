"""What the machine offers: native bf16, the precision to train in, TF32, seeding, library versions."""

from __future__ import annotations

import torch

from runtime.hostinfo import has_cpu_flag, versions as hostinfo_versions


TRAINING_DISTS = ("kronedge", "torch", "transformers", "accelerate")


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads (``--threads``); None leaves torch's own choice."""
    from .config import TrainingError

    if threads is None:
        return
    if threads < 1:
        raise TrainingError(f"--threads must be >= 1, got {threads}; leave it out for torch's own choice")
    torch.set_num_threads(threads)


def cpu_has_bf16() -> bool:
    """True when the CPU executes bf16 natively (avx512_bf16 or AMX); emulated bf16 is slower than fp32."""
    return has_cpu_flag("avx512_bf16", "amx_bf16")


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


def allow_tf32(device: torch.device) -> None:
    """On a GPU, fp32 matmuls at tensor-core speed: TF32's rounding is far inside the accuracy that matters here."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    from accelerate.utils import set_seed

    set_seed(seed)


def versions() -> dict:
    """The versions that decide a training result, recorded next to every trained model."""
    return hostinfo_versions(TRAINING_DISTS)
