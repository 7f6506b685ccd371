"""Run :mod:`kronedge.bench_core` out of process: a fresh host process (for peak RSS) or the emulated arm64
userland under QEMU (:mod:`kronedge.qemu`). Both exchange one JSON spec in and one result line out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from .. import bench_core
from ..errors import KronedgeError

RESULT_PREFIX = "KRONEDGE_RESULT "


class BenchProcessError(KronedgeError, RuntimeError):
    """A benchmark process (host or emulated) failed; the message carries the tail of its stderr."""


def guest_result(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise BenchProcessError(f"no result from the benchmark process:\n{stdout[-2000:]}")


def run_host(spec: dict, timeout: Optional[float] = None) -> dict:
    """bench_core in a fresh host process (its peak RSS is the model's, not this process's)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        env = dict(os.environ, ORT_DISABLE_TELEMETRY="1")
        proc = subprocess.run([sys.executable, bench_core.__file__, f.name], capture_output=True, text=True,
                              timeout=timeout, env=env)
        if proc.returncode != 0:
            raise BenchProcessError(f"benchmark process failed:\n{proc.stderr[-3000:]}")
        return guest_result(proc.stdout)
    finally:
        os.unlink(f.name)


def run_guest(qenv, cpu: str, spec: dict, count: bool = False, timeout: Optional[float] = None):
    """bench_core under ``qemu-aarch64 -cpu CPU``; (result, qemu.GuestResult)."""
    from .. import qemu

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=qenv.cache) as f:
        json.dump(spec, f)
    try:
        res = qemu.run_python(qenv, cpu, Path(bench_core.__file__), [f.name], count=count,
                              pythonpath=[qemu.guest_pythonpath(qenv)], timeout=timeout)
    finally:
        os.unlink(f.name)
    if res.returncode != 0:
        raise BenchProcessError(f"emulated benchmark failed under {cpu} (rc {res.returncode}):\n{res.stderr[-3000:]}")
    return guest_result(res.stdout), res
