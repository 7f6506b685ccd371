"""The runtime image, built from the real Dockerfile and run as its header documents.

The image is built with podman (no Docker engine here) on a stand-in for python:3.11-slim-bookworm that
``tests/container/setup.sh`` builds from Debian packages; see ../shared/notes/containers.md. The container
runs the way the Dockerfile's header says, ``run --rm -p PORT:8080 -v EXPORT_DIR:/model:ro
-e KRONEDGE_API_TOKEN=... IMAGE``, plus what podman needs on these hosts (runc, explicit ulimits).
The model is a fresh int8 ``kronedge export`` of the suite's informative model, written under umask 022
like a user's, and never chmod-ed here: the container's non-root user must be able to read it as written.

Without podman or the stand-in base these tests skip locally, but fail under CI=true: the image must be
built and run in CI, not silently left out. Deselect with ``-m "not container"``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[1]
SETUP = "tests/container/setup.sh"
BASE_IMAGE = os.environ.get("KRONEDGE_CONTAINER_BASE", "localhost/python:3.11-slim-bookworm")
IMAGE = "localhost/kronedge-serve:test"
PODMAN = ["podman", "--runtime", "runc"]  # crun refuses these hosts' hybrid cgroups
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]  # podman's defaults exceed the hard limits
IMAGE_UID = 10001  # the Dockerfile's ARG UID
START_TIMEOUT_S = 120
ARM64 = os.environ.get("KRONEDGE_CONTAINER_ARM64") == "1"  # opt-in: the arm64 image under QEMU takes minutes
ARM64_CPU = "cortex-a72"  # Raspberry Pi 4; never QEMU's default "max" (features no Pi has)


def _podman(*args: str, timeout: float = 120, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


def _unavailable() -> str | None:
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if _podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        return f"the stand-in base image {BASE_IMAGE} does not exist"
    return None


def _require_podman() -> None:
    """Skip without podman or the stand-in base; under CI=true fail instead."""
    reason = _unavailable()
    if reason:
        message = f"container tests cannot run: {reason}; run `bash {SETUP}` as root"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: the image must be built in CI, not skipped)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def image() -> str:
    """The runtime image, built from the working tree's Dockerfile by ``setup.sh --image`` (cached layers make
    a rebuild quick)."""
    _require_podman()
    start = time.monotonic()
    build = subprocess.run(["bash", SETUP, "--image"], cwd=REPO, capture_output=True, text=True, timeout=900,
                           env={**os.environ, "KRONEDGE_CONTAINER_BASE": BASE_IMAGE, "KRONEDGE_CONTAINER_IMAGE": IMAGE})
    assert build.returncode == 0, f"{SETUP} --image failed:\n{build.stdout[-2000:]}{build.stderr[-3000:]}"
    size = json.loads(_podman("image", "inspect", IMAGE).stdout)[0]["Size"]
    print(f"image {IMAGE} built in {time.monotonic() - start:.0f} s, {size / 1e6:.0f} MB")
    return IMAGE


@pytest.fixture(scope="module")
def model_dir(informative_artifact, tmp_path_factory) -> Path:
    """A fresh int8 export by the `kronedge export` CLI, written under the common umask 022."""
    from typer.testing import CliRunner

    from kronedge.cli import app

    out = tmp_path_factory.mktemp("container") / "kb-int8"
    umask = os.umask(0o022)
    try:
        result = CliRunner().invoke(app, ["export", str(informative_artifact), "--out", str(out),
                                          "--target", "x86_64", "--quantize", "int8", "--max-length", "32"])
    finally:
        os.umask(umask)
    assert result.exit_code == 0, result.output[-3000:]
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, token: str | None = None, body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Server:
    """One container of the image, started as the Dockerfile's header documents (detached, and without
    ``--rm`` so that its log survives a failure: :meth:`close` removes it)."""

    def __init__(self):
        self.token = secrets.token_urlsafe(32)
        self.port = _free_port()
        self.name = f"kronedge-test-{secrets.token_hex(4)}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.cold_start_s = None

    def start(self, image: str, model_dir: Path, extra: tuple[str, ...] = (), timeout: float = START_TIMEOUT_S) -> None:
        start = time.monotonic()
        _podman("run", "-d", "--name", self.name, *LIMITS, *extra, "-p", f"127.0.0.1:{self.port}:8080",
                "-v", f"{model_dir}:/model:ro", "-e", "KRONEDGE_API_TOKEN", image,
                env={"KRONEDGE_API_TOKEN": self.token})
        self.cold_start_s = self._wait_healthy(start, timeout)

    def _wait_healthy(self, start: float, timeout: float) -> float:
        while time.monotonic() - start < timeout:
            try:
                status, _ = _get(f"{self.url}/healthz", timeout=2)
                if status == 200:
                    return time.monotonic() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            state = _podman("inspect", "--format", "{{.State.Running}}", self.name, check=False).stdout.strip()
            if state != "true":
                raise AssertionError(f"the container exited before answering /healthz: {self.logs()}")
            time.sleep(0.2)
        raise AssertionError(f"no /healthz answer within {timeout} s: {self.logs()}")

    def logs(self) -> str:
        proc = _podman("logs", self.name, check=False)
        return (proc.stdout + proc.stderr)[-3000:]

    def exec(self, *cmd: str) -> subprocess.CompletedProcess:
        return _podman("exec", self.name, *cmd, check=False, timeout=60)

    def close(self) -> None:
        _podman("rm", "-f", "-t", "2", self.name, check=False)


@pytest.fixture(scope="module")
def server(image, model_dir):
    srv = Server()
    try:
        srv.start(image, model_dir)
        print(f"cold start (podman run to the first /healthz 200): {srv.cold_start_s:.1f} s")
        yield srv
    finally:
        srv.close()


@pytest.mark.parametrize("ci", ["true", ""])
def test_without_podman_ci_fails_and_a_local_run_skips(monkeypatch, ci):
    monkeypatch.setattr(sys.modules[__name__], "_unavailable", lambda: "podman is not installed")
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="podman is not installed"):
        _require_podman()


def test_header_documents_the_run_tested_here():
    header = [line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("#")]
    run = next(line for line in header if "docker run" in line)
    assert ":/model:ro" in run and "-e KRONEDGE_API_TOKEN" in run and "-p 8080:8080" in run, run


def test_image_is_the_runtime_only(image):
    inspected = json.loads(_podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == str(IMAGE_UID)
    assert config["Entrypoint"] == ["python", "-m", "runtime.serve"]
    assert "/healthz" in " ".join(inspected["Healthcheck"]["Test"])  # podman lists it beside Config
    code = ("import importlib.util as u, json; "
            "print(json.dumps([bool(u.find_spec(m)) for m in ('torch', 'transformers', 'onnxruntime', 'fastapi')]))")
    listing = _podman("run", "--rm", *LIMITS, "--entrypoint", "python", image, "-c", code)
    assert json.loads(listing.stdout) == [False, False, True, True], "no torch/transformers; ORT and fastapi present"


def test_healthz_and_healthcheck_answer(server):
    status, body = _get(f"{server.url}/healthz")
    assert (status, body) == (200, {"status": "ok"})
    # The image's own HEALTHCHECK command, run inside the container.
    check = _podman("healthcheck", "run", server.name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_classify_equals_host_predictor(server, model_dir, probe_texts):
    from runtime.predictor import Predictor

    status, body = _get(f"{server.url}/v1/classify", server.token, {"texts": probe_texts})
    assert status == 200, body
    host = Predictor(model_dir, threads=1).predict(probe_texts)
    got = body["results"]
    assert len(got) == len(probe_texts)
    assert [r["label"] for r in got] == [r["label"] for r in host], "labels per text"
    assert len({r["label"] for r in got}) > 1, "the probe texts cover every label: a constant answer fails"
    labels = list(host[0]["scores"])
    np.testing.assert_allclose([[r["scores"][k] for k in labels] for r in got],
                               [[r["scores"][k] for k in labels] for r in host], atol=1e-5, rtol=0)
    # One text at a time as well: the answer for a text does not depend on what it was batched with.
    for text, expected in zip(probe_texts[:3], host[:3]):
        status, single = _get(f"{server.url}/v1/classify", server.token, {"texts": [text]})
        assert status == 200 and single["results"][0]["label"] == expected["label"]


def test_classify_needs_the_token(server, probe_texts):
    status, body = _get(f"{server.url}/v1/classify", None, {"texts": probe_texts[:1]})
    assert status == 401, body
    status, body = _get(f"{server.url}/v1/classify", "x" * 43, {"texts": probe_texts[:1]})
    assert status == 401, body


def test_server_process_is_not_root(server):
    # PID 1 of the container is the server itself (ENTRYPOINT in exec form).
    status = server.exec("cat", "/proc/1/status")
    assert status.returncode == 0, status.stderr
    uids = next(line.split()[1:] for line in status.stdout.splitlines() if line.startswith("Uid:"))
    assert uids == [str(IMAGE_UID)] * 4, f"real/effective/saved/fs uid of the server: {uids}"
    cmdline = server.exec("cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    assert "runtime.serve" in cmdline


def test_model_directory_cannot_be_written(server, model_dir):
    before = sorted(p.name for p in model_dir.iterdir())
    for code in ("open('/model/new-file', 'w')", "open('/model/manifest.json', 'a')",
                 "import os; os.remove('/model/model.onnx')"):
        proc = server.exec("python", "-c", code)
        assert proc.returncode != 0, f"{code} succeeded inside the container"
        assert "Read-only file system" in proc.stderr or "Permission denied" in proc.stderr, proc.stderr
    assert sorted(p.name for p in model_dir.iterdir()) == before


def test_refuses_all_interfaces_without_a_token(image, model_dir):
    # The image's default command binds 0.0.0.0; with no token configured the server must not start.
    proc = _podman("run", "--rm", *LIMITS, "-v", f"{model_dir}:/model:ro", image, check=False, timeout=START_TIMEOUT_S)
    assert proc.returncode != 0, "served 0.0.0.0 without a token"
    output = (proc.stdout + proc.stderr).strip()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "token" in errors[0].lower(), output[-2000:]
    assert "Traceback" not in output


@pytest.mark.skipif(not ARM64, reason="the arm64 image under QEMU takes minutes: run `bash tests/container/setup.sh "
                    "--arm64`, then set KRONEDGE_CONTAINER_ARM64=1")
def test_arm64_image_under_qemu_answers_like_the_host(model_dir, probe_texts, tmp_path):
    """The same Dockerfile built for linux/arm64 and run under QEMU user mode (binfmt_misc), as on a Pi 4."""
    from kronedge.qemu import cpuinfo_text
    from runtime.contract import sqnr
    from runtime.predictor import Predictor

    base = f"{BASE_IMAGE}-arm64"
    if _podman("image", "exists", base, check=False).returncode != 0:
        pytest.fail(f"{base} does not exist: run `bash {SETUP} --arm64` as root")
    image = f"{IMAGE}-arm64"
    _podman("build", "--platform", "linux/arm64", "--network", "host", *LIMITS, "--format", "docker",
            "--build-arg", f"PYTHON_IMAGE={base}", "-t", image, "-f", "Dockerfile", str(REPO), timeout=1800)
    assert json.loads(_podman("image", "inspect", image).stdout)[0]["Architecture"] == "arm64"
    # QEMU passes the host's x86 /proc/cpuinfo through and defaults to CPU "max": give it a Pi 4's.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(cpuinfo_text(ARM64_CPU))
    cpuinfo.chmod(0o644)
    srv = Server()
    try:
        srv.start(image, model_dir, ("-v", f"{cpuinfo}:/proc/cpuinfo:ro", "-e", f"QEMU_CPU={ARM64_CPU}"), timeout=600)
        print(f"arm64 under QEMU ({ARM64_CPU}): cold start {srv.cold_start_s:.1f} s (emulated)")
        machine = srv.exec("python", "-c", "import platform; print(platform.machine())")
        assert machine.stdout.strip() == "aarch64", machine.stdout + machine.stderr
        status, body = _get(f"{srv.url}/v1/classify", srv.token, {"texts": probe_texts}, timeout=300)
        assert status == 200, body
        host = Predictor(model_dir, threads=1).predict(probe_texts)
        assert [r["label"] for r in body["results"]] == [r["label"] for r in host]
        labels = list(host[0]["scores"])
        # int8 takes other kernels on ARM: compare log-probabilities (logits up to a per-row shift) by SQNR,
        # with the device tests' floor.
        got = np.log([[r["scores"][k] for k in labels] for r in body["results"]])
        want = np.log([[r["scores"][k] for k in labels] for r in host])
        assert sqnr(want, got) >= 25.0
        uid = srv.exec("sh", "-c", "grep ^Uid: /proc/1/status").stdout.split()[1:]
        assert uid == [str(IMAGE_UID)] * 4
    finally:
        srv.close()
