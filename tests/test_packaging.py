"""The installed package works without the source tree: what the library reads at run time is in the wheel.

The wheel is built from a copy of the package sources (so the checkout gets no build/ or egg-info of this
test's making) with the installed setuptools (no download), and only listed, never installed.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("kronedge", "runtime", "exporters")
# Files the library opens through importlib.resources / its package directory; each must ship.
PACKAGE_DATA = ("kronedge/plugins/insncount.c", "kronedge/data/wikitext-2/wiki.valid.tokens")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-cache-dir", "--disable-pip-version-check", "-q", str(src), "-w", str(out)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("kronedge-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


@pytest.mark.parametrize("path", PACKAGE_DATA)
def test_the_wheel_ships_the_package_data(wheel_names, path):
    assert path in wheel_names


def test_the_wheel_ships_the_error_bases(wheel_names):
    assert {"runtime/errors.py", "kronedge/errors.py"} <= wheel_names


def test_the_library_reaches_no_file_outside_its_packages():
    """No module finds a file by walking up from its own path into the checkout, or points to notes outside it."""
    offenders = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            for needle in ("parents[", 'rsplit("/kronedge/")', "../shared", '"device_tests"', "device_tests/plugin"):
                if needle in text:
                    offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert not offenders, offenders
