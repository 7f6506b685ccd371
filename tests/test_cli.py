"""Every command's --help, the core commands end to end, and clear errors instead of tracebacks."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from kronedge.cli import app

runner = CliRunner()
COMMANDS = [name for name in (c.name or c.callback.__name__ for c in app.registered_commands)]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "kronedge" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_core_commands_are_registered():
    assert {"plan", "kronize"} <= set(COMMANDS)


def test_plan_json_for_bert_base_kb21():
    result = runner.invoke(app, ["plan", "random:bert-base-uncased", "--preset", "kb21", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert abs(data["params_student"] - 5.2e6) / 5.2e6 < 0.02
    assert len(data["layers"]) == 73


def test_plan_table():
    result = runner.invoke(app, ["plan", "random:minilm", "--compression", "5"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "params 22.71M -> " in result.stdout and "5.intermediate.dense" in result.stdout


def test_kronize_writes_a_loadable_artifact(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 4, "intermediate_size": 64}))
    out = tmp_path / "art"
    result = runner.invoke(app, ["kronize", f"random:{config}", "--compression", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    from kronedge.artifact import load_artifact

    assert load_artifact(out).config.kronecker_layout


@pytest.mark.parametrize("args, message", [
    (["plan", "random:minilm", "--preset", "kb99"], "unknown preset"),
    (["plan", "random:minilm", "--preset", "kb21", "--compression", "5"], "exactly one of"),
    (["plan", "random:minilm", "--compression", "900"], "most this selection allows"),
    (["plan", "random:nope", "--preset", "kb21"], "unknown random config"),
    (["plan", "builtin:other", "--preset", "kb21"], "unknown builtin"),
    (["plan", "random:minilm", "--compression", "5", "--seq-len", "-5"], "--seq-len must be >= 1"),
])
def test_errors_are_one_line_not_a_traceback(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name,content,message", [
    ("nomodel", None, "a directory without a config.json"),
    ("list.json", "[1, 2]", "holds a JSON list, not an object"),
    ("odd.json", '{"hidden_size": 65, "num_attention_heads": 4, "num_hidden_layers": 1, "intermediate_size": 8}',
     "is not a multiple of the number of attention heads"),
    ("words.json", '{"num_hidden_layers": "two"}', "does not make a BertModel"),
    # BertConfig would take these, ignore what they say and build BERT_BASE's 12 layers of width 768
    ("distil.json", '{"model_type": "distilbert", "n_layers": 2, "dim": 64}', "a model of type 'distilbert'"),
    ("typo.json", '{"num_hidden_layer": 2, "hidden_size": 64}', "no field 'num_hidden_layer'; did you mean "
                                                                 "'num_hidden_layers'?"),
])
def test_a_bad_model_spec_is_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    result = runner.invoke(app, ["plan", str(path) if content is None else f"random:{path}", "--compression", "5"])
    assert result.exit_code == 1 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_a_saved_bert_config_with_legacy_keys_plans_as_written(tmp_path):
    path = tmp_path / "old.json"  # configs saved by older transformers carry keys today's BertConfig lacks
    path.write_text('{"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, '
                    '"intermediate_size": 128, "vocab_size": 1000, "gradient_checkpointing": false}')
    result = runner.invoke(app, ["plan", f"random:{path}", "--compression", "2", "--json"])
    assert result.exit_code == 0, result.output
    layers = json.loads(result.stdout)["layers"]
    assert len(layers) == 1 + 2 * 6 and layers[0]["dense_shape"] == [1000, 64]


def test_help_does_not_import_torch():
    code = "import sys; from kronedge.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_plan_of_the_papers_shapes_says_how_to_preview_what_compress_builds(tmp_path):
    from helpers import tiny_spec

    spec = tiny_spec(tmp_path)
    hint = "compress --compression 4 builds another student"
    shown = runner.invoke(app, ["plan", spec, "--compression", "4"])
    assert shown.exit_code == 0 and hint in " ".join(shown.output.split())
    assert f"kronedge plan {spec} --compression 4 --structure svd --ffn neurons --vocabulary task --calibration" in \
        " ".join(shown.output.split())
    far = runner.invoke(app, ["plan", spec, "--compression", "20"])  # compress moves FFN budget from 20x up
    assert far.exit_code == 0, far.output
    assert "--vocabulary task --ffn-to-embedding 0.5 --calibration" in " ".join(far.output.split())
    for other in (["--structure", "svd"], ["--layers", "1"], ["--json"]):
        result = runner.invoke(app, ["plan", spec, "--compression", "4", *other])  # the user's own choice, or JSON
        assert result.exit_code == 0 and "builds another student" not in result.output, (other, result.output)
