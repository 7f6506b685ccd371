"""Latency (p50) against file size, one point per model and grid cell, log-log (``kronedge bench --plot``)."""

from __future__ import annotations

import os
from pathlib import Path

from .report import groups


def plot(report: dict, path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emulated = report["machine"]["target"] == "arm64"
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = "osD^v<>px*"
    for gi, (g, rs) in enumerate(groups(report["rows"]).items()):
        ax.scatter([r["file_mb"] for r in rs], [r["p50_ms"] for r in rs], marker=markers[gi % len(markers)], label=g)
        for r in rs:
            ax.annotate(r["model"], (r["file_mb"], r["p50_ms"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model file size (MB)")
    ax.set_ylabel("p50 latency (ms, EMULATED under QEMU)" if emulated else "p50 latency (ms)")
    cpu = report["rows"][0]["cpu"]
    ax.set_title(f"latency vs size · ORT {report['environment']['onnxruntime']} · {cpu}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path
