"""What the machine offers: native bf16, the precision to train in, seeding, library versions."""

from __future__ import annotations

from pathlib import Path

import torch


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


def versions() -> dict:
    """The versions that decide a training result, recorded next to every trained model."""
    import platform

    import transformers

    from .. import __version__

    return {"kronedge": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}
