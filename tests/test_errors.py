"""Named errors, caught narrowly: a user's error is one line, a bug keeps its traceback, --debug shows both.

The commands are driven through ``kronedge bench ... --seq TEXT``: its option parser runs before any model
is loaded, so the tests need no torch, no model and no export. Raising from that parser stands in for any
error a library function raises inside a command.
"""

import importlib
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from kronedge.cli import app
from kronedge.errors import KronedgeError
from runtime.errors import KronedgeError as RuntimeKronedgeError

runner = CliRunner()
BAD_SEQ = ["bench", "no-such-model", "--seq", "abc"]

# (module, class, the builtin its callers catch): every user-facing error is a KronedgeError and keeps it.
ERRORS = [
    ("kronedge.errors", "UsageError", ValueError),
    ("kronedge.planner", "PlanError", ValueError),
    ("kronedge.planner", "NoMatchingLayersError", ValueError),
    ("kronedge.data.spec", "DataError", ValueError),
    ("kronedge.data.spec", "DataFileError", ValueError),
    ("kronedge.artifact", "ArtifactError", ValueError),
    ("kronedge.general", "GeneralStudentError", ValueError),
    ("kronedge.teachers", "TeacherError", ValueError),
    ("kronedge.training.config", "TrainingError", ValueError),
    ("kronedge.evaluation", "TeacherNearChanceError", ValueError),
    ("kronedge.benchmark.config", "BenchError", ValueError),
    ("kronedge.benchmark.drivers", "BenchProcessError", RuntimeError),
    ("kronedge.qemu", "QemuError", RuntimeError),
    ("exporters.config", "ExportError", ValueError),
    ("exporters.validate", "ValidationError", ValueError),
    ("runtime.contract", "ModelDirError", ValueError),
    ("runtime.predictor", "PredictorOptionError", ValueError),
    ("runtime.serve.config", "ServeConfigError", ValueError),
]


def _raise_from_the_parser(monkeypatch, exc: BaseException) -> None:
    def parse(text, what):
        raise exc

    monkeypatch.setattr(importlib.import_module("kronedge.commands.bench"), "_ints", parse)


def test_one_base_shared_by_the_runtime_and_the_toolchain():
    assert KronedgeError is RuntimeKronedgeError


@pytest.mark.parametrize("module, name, builtin", ERRORS, ids=[e[1] for e in ERRORS])
def test_every_user_facing_error_is_a_kronedge_error(module, name, builtin):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, KronedgeError) and issubclass(cls, builtin)


def test_a_user_error_is_one_line():
    result = runner.invoke(app, BAD_SEQ, env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    expected = "error: --seq takes comma-separated integers, e.g. 32,128 (got 'abc')"
    assert result.output.strip().splitlines() == [expected]


@pytest.mark.parametrize("module, name", [("kronedge.qemu", "QemuError"), ("runtime.contract", "ModelDirError"),
                                          ("kronedge.planner", "PlanError"),
                                          ("runtime.serve.config", "ServeConfigError")])
def test_named_errors_raised_inside_a_command_are_one_line(monkeypatch, module, name):
    _raise_from_the_parser(monkeypatch, getattr(importlib.import_module(module), name)("fix this: do that"))
    result = runner.invoke(app, BAD_SEQ)
    assert result.exit_code == 1 and result.output.strip() == "error: fix this: do that"


def test_a_missing_file_is_one_line(monkeypatch):
    _raise_from_the_parser(monkeypatch, FileNotFoundError(2, "No such file or directory", "nope.json"))
    result = runner.invoke(app, BAD_SEQ)
    assert result.exit_code == 1 and "nope.json" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("exc", [ValueError("a bug, not the user's"), RuntimeError("a bug"), KeyError("bug")])
def test_an_unexpected_exception_is_not_hidden(monkeypatch, exc):
    """A plain ValueError is a bug (or an error nobody named yet): it must reach the traceback printer."""
    _raise_from_the_parser(monkeypatch, exc)
    result = runner.invoke(app, BAD_SEQ)
    assert result.exception is exc and "error:" not in result.output


def test_debug_lets_a_user_error_through():
    result = runner.invoke(app, ["--debug", *BAD_SEQ])
    assert type(result.exception).__name__ == "BenchError" and "error:" not in result.output


def test_debug_prints_the_traceback():
    """The real entry point: without --debug one line, with it Python's traceback naming the raise site."""
    cmd = [sys.executable, "-m", "kronedge.cli"]
    plain = subprocess.run(cmd + BAD_SEQ, check=False, capture_output=True, text=True, timeout=120)
    debug = subprocess.run(cmd + ["--debug", *BAD_SEQ], check=False, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and plain.stderr.startswith("error: ")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "BenchError: --seq" in debug.stderr


def test_python_m_runtime_serve_says_one_line(capsys, tmp_path):
    from runtime.serve.__main__ import main

    assert main([str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'nope'} is not a directory"


def test_the_bases_import_without_torch():
    code = ("import sys; import runtime.errors, kronedge.errors; "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_eval_of_an_artifact_with_a_corrupt_recipe_is_one_line(tmp_path):
    """JSON a user can break is read through the stage's reader, so a corrupt file is its named error."""
    (tmp_path / "kronedge.json").write_text("{not json")
    result = runner.invoke(app, ["eval", str(tmp_path)], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: {tmp_path / 'kronedge.json'} is corrupt")
    assert len(result.output.strip().splitlines()) == 1


def test_bench_of_a_directory_with_a_corrupt_manifest_is_one_line(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    (tmp_path / "model.onnx").write_bytes(b"")
    result = runner.invoke(app, ["bench", str(tmp_path)], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: {tmp_path / 'manifest.json'} is not valid JSON")


@pytest.mark.parametrize("broken", ["config.json", "kronedge.json"])
def test_finetune_of_a_teacher_with_a_corrupt_json_is_one_line(tmp_path, broken):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / broken).write_text("{not json")
    result = runner.invoke(app, ["finetune", str(tmp_path), "--task", "sst2"], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and str(tmp_path / broken) in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("broken", ["config.json", "kronedge.json"])
def test_the_head_check_names_a_corrupt_json(tmp_path, broken):
    """compress asks this before anything loads the teacher, so it must not raise a bare JSONDecodeError."""
    from kronedge.finetune import teacher_has_head

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / broken).write_text("{not json")
    with pytest.raises(KronedgeError, match="kronedge.json is corrupt|config.json is not valid JSON"):
        teacher_has_head(str(tmp_path), "sst2")
