"""Device tests: the runtime's Predictor on emulated Raspberry Pi CPUs (QEMU user mode, arm64 Debian userland).

Skipped only where the recipe cannot work (not an x86-64 Linux host), and then only outside CI: under
CI=true such a host fails the tests, so a CI job on the wrong machine is red rather than green with nothing
run. On an x86-64 host a missing QEMU is an error that says to run ``device_tests/ci_setup.sh`` (or set
KRONEDGE_SKIP_DEVICE_TESTS=1 to skip on purpose). The guest must import exactly the host's onnxruntime,
numpy and tokenizers, or every device test fails: the golden outputs come from the host's runtime.
CPU models: KRONEDGE_DEVICE_CPUS (comma-separated; default all three Pi models: cortex-a72 first).
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kronedge import qemu  # noqa: E402  (stdlib only)

# Pi 4 always; Pi 3 and Pi 5 as well by default (the whole suite stays well under a few minutes).
CPUS = [c.strip() for c in os.environ.get("KRONEDGE_DEVICE_CPUS", "cortex-a72,cortex-a53,cortex-a76").split(",") if c.strip()]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _skip_reason():
    if os.environ.get("KRONEDGE_SKIP_DEVICE_TESTS") == "1":
        return "KRONEDGE_SKIP_DEVICE_TESTS=1"
    ok, reason = qemu.host_supported()
    if not ok:
        return reason
    return None


def _skip_or_fail() -> None:
    reason = _skip_reason()
    if reason is None:
        return
    if _in_ci() and os.environ.get("KRONEDGE_SKIP_DEVICE_TESTS") != "1":
        pytest.fail(f"device tests cannot run: {reason} (CI=true: run CI on an x86-64 Linux host, "
                    "or set KRONEDGE_SKIP_DEVICE_TESTS=1 to leave them out on purpose)")
    pytest.skip(f"device tests skipped: {reason}")


@pytest.fixture(scope="session")
def qemu_env():
    _skip_or_fail()
    if not (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")):
        pytest.fail("qemu-aarch64(-static) not found: run `bash device_tests/ci_setup.sh` as root "
                    "(apt-get install qemu-user-static ...), or set KRONEDGE_SKIP_DEVICE_TESTS=1 to skip")
    try:
        env = qemu.ensure(plugin=False)
        qemu.check_guest_matches_host(env)
    except qemu.QemuError as exc:
        pytest.fail(str(exc))
    return env


@pytest.fixture(scope="session")
def qemu_env_plugin(qemu_env):
    if not (shutil.which("qemu-aarch64") and shutil.which("gcc")):
        pytest.fail("instruction counts need bookworm's qemu-user and gcc: run `bash device_tests/ci_setup.sh`")
    return qemu.ensure(plugin=True)
