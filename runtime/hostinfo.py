"""Where a result was measured: CPU model, CPU flags and library versions. Standard library only.

One definition for the runtime, the exporter's manifest, the benches and the training records, so every
results row and every manifest names its machine the same way. Runs inside the emulated arm64 userland too.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags that decide which int8/bf16 kernels ONNX Runtime and torch pick on x86.
KERNEL_FLAG_PREFIXES = ("avx", "amx", "fma", "sse4")
# The distributions whose versions a manifest or results row records (absent ones are None).
RUNTIME_DISTS = ("kronedge", "onnxruntime", "tokenizers", "numpy")
EXPORT_DISTS = RUNTIME_DISTS + ("torch", "transformers", "onnx", "onnxscript")


def _cpuinfo_lines(cpuinfo: Path = CPUINFO) -> list[str]:
    try:
        return cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        return []


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's marketing name (x86 "model name"), else the ARM part number line, else the architecture."""
    lines = _cpuinfo_lines(cpuinfo)
    for key in ("model name", "cpu part", "hardware"):
        for line in lines:
            if line.lower().startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags(prefixes: tuple[str, ...] | None = None, cpuinfo: Path = CPUINFO) -> list[str]:
    """Sorted CPU feature flags of the first core (x86 "flags", ARM "Features"); only those starting with
    one of ``prefixes`` when given (e.g. ``KERNEL_FLAG_PREFIXES``). Empty when /proc/cpuinfo is absent."""
    for line in _cpuinfo_lines(cpuinfo):
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features") and ":" in line:
            flags = line.split(":", 1)[1].split()
            return sorted(f for f in set(flags) if prefixes is None or f.startswith(prefixes))
    return []


def has_cpu_flag(*names: str, cpuinfo: Path = CPUINFO) -> bool:
    """True when the CPU lists any of ``names`` (e.g. ``has_cpu_flag("avx512_bf16", "amx_bf16")``)."""
    flags = set(cpu_flags(cpuinfo=cpuinfo))
    return any(name in flags for name in names)


# Any of these gives ONNX Runtime an x86 int8 GEMM that accumulates u8 x s8 products in int32 directly; without them
# it adds pairs of products into int16 first (VPMADDUBSW), which saturates.
EXACT_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def host_saturates_s8_weights(cpuinfo: Path = CPUINFO) -> bool:
    """True on an x86 host without VNNI, where ORT's int8 GEMM saturates on s8 weights (ARM has no such step)."""
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86") and \
        not has_cpu_flag(*EXACT_INT8_FLAGS, cpuinfo=cpuinfo)


def clips_s8_weights(quantization: dict | None) -> bool:
    """True when a model quantized so (a manifest's ``quantization`` dict or a preset's ``to_dict()``) has s8 weights
    and this host's int8 GEMM saturates on them."""
    return (quantization or {}).get("weight_type") == "int8" and host_saturates_s8_weights()


def versions(dists: tuple[str, ...] = RUNTIME_DISTS) -> dict[str, str | None]:
    """``{"python", "machine", <dist>: version or None}`` for the installed distributions ``dists``."""
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version(), "machine": platform.machine()}
    for dist in dists:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def machine() -> dict:
    """The machine a measurement ran on: architecture, CPU model, logical CPUs and the kernel flags."""
    return {"machine": platform.machine(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "flags": cpu_flags(KERNEL_FLAG_PREFIXES)}


def provenance(argv: list[str], dists: tuple[str, ...]) -> list[str]:
    """The lines a measurement script prints before its figures: its command (``sys.argv``), the machine, the
    versions of ``dists``."""
    return [f"command: python {' '.join(argv)}", f"host: {machine()}", f"versions: {versions(dists)}"]


def default_threads(graph: dict | None) -> int | None:
    """The intra-op thread count a Predictor uses when none is given, from the manifest's ``graph`` section:
    1 for a Kronecker export (one whose graph passes rewrote Kronecker factors), else None (ONNX Runtime's
    default, one per physical core). A Kronecker model's many small GEMMs and elementwise ops each pay the
    thread pool's hand-off: a second thread gains when a core is free (1.7x on kb21 once no axis swap is left,
    benchmarks/results/factor_order.md) but loses much when it is not, which on shared virtual machines is often;
    the server measures instead (``--threads auto``, runtime/threads.py)."""
    passes = (graph or {}).get("passes") or {}
    kronecker = any(count for name, count in passes.items() if name.startswith("Kron"))
    return 1 if kronecker else None
