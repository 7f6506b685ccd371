"""Labels and identity all the way to the device (issue 14, deliverable 3).

An artifact whose head was trained on a user's three labels ("billing", "bug", "praise") is exported with
``--name``; the manifest, the ``Predictor``, ``GET /v1/model`` and every ``POST /v1/classify`` answer must
carry the label names, the task (and its data file) and NAME@VERSION. A regression model has no labels and
says so; a manifest written before these fields still loads and still names its model.
"""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import helpers
from preloaded import KRONEDGE_CLI, Child
from exporters.identity import generic_labels, resolve_task
from runtime.contract import MANIFEST_FILE, Manifest, ModelDirError, default_version
from runtime.predictor import Predictor
from runtime.serve import ServeConfig, create_app

TICKET_LABELS = ["billing", "bug", "praise"]
TICKET_SPEC = {"version": 1, "name": "tickets", "num_labels": 3, "label_names": TICKET_LABELS, "is_pair": False,
               "is_regression": False, "problem_type": "single_label_classification",
               "data_file": "support-tickets.csv"}
TICKETS = ["i was charged twice this month", "the app crashes when i open settings", "great support, thank you!",
           "refund please", "login button does nothing", "love the new update"]
MAX_LEN = 32


def _save(model, path, recipe):
    from kronedge.artifact import save_artifact

    return save_artifact(model, path, helpers.tokenizer_dir(), {"teacher": "tests/test_identity.py", **recipe})


@pytest.fixture(scope="module")
def tickets_artifact(tmp_path_factory):
    """A tiny three-label BERT whose config names nothing (LABEL_0..2); the recipe has the user's labels."""
    model = helpers.tiny_bert(num_labels=3, id2label=None, label2id=None)
    assert list(model.config.id2label.values()) == list(generic_labels(3))
    return _save(model, tmp_path_factory.mktemp("identity") / "tickets-kb", {
        "task": "tickets", "labels": TICKET_LABELS, "task_spec": TICKET_SPEC})


@pytest.fixture(scope="module")
def tickets_cli(tickets_artifact, tmp_path_factory):
    """`kronedge export --quantize int8 --name tickets-kb21@1.2.0` in a real process: (dir, stdout, stderr).

    A child process, not CliRunner: under pytest the root logger has pytest's handlers, so a warning that
    would reach a user's terminal through logging's last-resort/basicConfig path is only visible here.
    """
    out = tmp_path_factory.mktemp("identity") / "tickets-int8"
    child = Child(KRONEDGE_CLI, "export", str(tickets_artifact), "--out", str(out), "--target", "arm64",
                  "--quantize", "int8", "--max-length", str(MAX_LEN), "--name", "tickets-kb21@1.2.0",
                  logs=out.with_name("logs"), env={"COLUMNS": "40"})  # narrow: any wrapping would show
    assert child.wait(timeout=600) == 0, child.stderr()
    return out, child.stdout(), child.stderr()


@pytest.fixture(scope="module")
def tickets_client(tickets_cli):
    config = ServeConfig(str(tickets_cli[0]), max_batch_texts=8, timeout_s=60)
    with TestClient(create_app(config)) as client:
        yield client


def test_artifact_config_names_the_labels(tickets_artifact, tmp_path):
    """save_artifact gives an unnamed head (LABEL_i) the recipe's names; real names in the config stay."""
    config = json.loads((tickets_artifact / "config.json").read_text())
    assert config["id2label"] == {"0": "billing", "1": "bug", "2": "praise"}
    named = _save(helpers.tiny_bert(), tmp_path / "named", {"task": "x", "labels": ["neg", "pos"]})
    assert json.loads((named / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}


# ---- the exported directory -----------------------------------------------------------------------------
def test_manifest_carries_labels_task_and_identity(tickets_cli):
    out, _, _ = tickets_cli
    raw = json.loads((out / MANIFEST_FILE).read_text())
    assert raw["labels"] == TICKET_LABELS and raw["problem_type"] == "single_label_classification"
    assert raw["task"] == "tickets" and raw["data_file"] == "support-tickets.csv"
    assert raw["name"] == "tickets-kb21" and raw["model_version"] == "1.2.0"
    assert raw["source"]["labels_from"] == "kronedge.json task_spec"
    config = json.loads((out / "config.json").read_text())  # what optimum / a transformers pipeline read
    assert config["id2label"] == {"0": "billing", "1": "bug", "2": "praise"}
    assert config["label2id"] == {"billing": 0, "bug": 1, "praise": 2}


def test_cli_prints_plain_lines_and_no_quantizer_hint(tickets_cli):
    _, stdout, stderr = tickets_cli
    assert "pre-processing" not in stderr and "WARNING" not in stderr, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("wrote ") and "int8 SQNR >= " in lines[0], stdout  # one line, not wrapped at 40
    assert "  model tickets-kb21@1.2.0" in lines
    assert "  task  tickets (from support-tickets.csv)" in lines
    assert "  input single texts, labels billing, bug, praise" in lines
    assert not any(ch in stdout for ch in "{}[]"), "raw Python containers in the CLI output: " + stdout


def test_summary_line_keeps_many_or_odd_labels_readable():
    from kronedge.data.spec import describe_labels

    assert describe_labels(("billing", "bug")) == "billing, bug"
    assert describe_labels(tuple(f"c{i}" for i in range(100))).endswith("c11, … (100 in all)")
    assert describe_labels(("a,b", "c")) == "'a,b', c"  # a comma inside a label is not a separator
    assert len(describe_labels(("x" * 300,))) == 40


def test_predictor_carries_labels_task_and_identity(tickets_cli):
    predictor = Predictor(tickets_cli[0], threads=1)
    assert predictor.labels == TICKET_LABELS and predictor.task == "tickets"
    assert predictor.model_id == "tickets-kb21@1.2.0"
    summary = predictor.summary()
    assert (summary["model"], summary["name"], summary["version"]) == ("tickets-kb21@1.2.0", "tickets-kb21", "1.2.0")
    assert summary["task"] == "tickets" and summary["data_file"] == "support-tickets.csv"
    results = predictor.predict(TICKETS)
    assert all(set(r["scores"]) == set(TICKET_LABELS) and r["label"] in TICKET_LABELS for r in results)
    # each label is the argmax of the logits in manifest order (a relabelled or shuffled column would fail)
    logits = predictor.logits(TICKETS)
    assert [r["label"] for r in results] == [TICKET_LABELS[i] for i in logits.argmax(axis=1)]


def test_server_model_endpoint(tickets_client):
    info = tickets_client.get("/v1/model").json()
    assert info["model"] == "tickets-kb21@1.2.0" and info["name"] == "tickets-kb21" and info["version"] == "1.2.0"
    assert info["labels"] == TICKET_LABELS and info["task"] == "tickets"
    assert info["data_file"] == "support-tickets.csv" and info["problem_type"] == "single_label_classification"


def test_every_classify_answer_names_model_task_and_labels(tickets_client, tickets_cli):
    alone = Predictor(tickets_cli[0], threads=1)
    for texts in (TICKETS[:1], TICKETS[1:4], TICKETS):
        response = tickets_client.post("/v1/classify", json={"texts": texts})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "tickets-kb21@1.2.0" and body["task"] == "tickets"
        assert [r["label"] for r in body["results"]] == [r["label"] for r in alone.predict(texts)]
        assert all(list(r["scores"]) == TICKET_LABELS for r in body["results"])
    assert 'model="tickets-kb21@1.2.0"' in tickets_client.get("/metrics").text


def test_openapi_documents_the_fields(tickets_client):
    schema = tickets_client.get("/openapi.json").json()["components"]["schemas"]["ClassifyResponse"]
    assert {"model", "task"} <= set(schema["properties"])


# ---- defaults, regression, old manifests ----------------------------------------------------------------
def test_default_identity_is_artifact_name_and_model_hash(informative_export_fp32):
    manifest = Manifest.load(informative_export_fp32 / MANIFEST_FILE)
    assert manifest.name == "artifact"  # the fixture's artifact directory, not the export's
    assert manifest.model_version == manifest.files["model.onnx"]["sha256"][:12]
    assert Predictor(informative_export_fp32, threads=1).model_id == f"artifact@{manifest.model_version}"
    assert manifest.labels == ["negative", "positive"]  # the config's names: nothing else says otherwise


@pytest.fixture(scope="module")
def regression_export(tmp_path_factory):
    from exporters.export import export_model

    base = tmp_path_factory.mktemp("identity")
    model = helpers.tiny_bert(num_labels=1, id2label=None, label2id=None)
    artifact = _save(model, base / "scorer", {"task": "stsb", "labels": []})
    return export_model(artifact, base / "scorer-fp32", max_length=MAX_LEN, ort_format=False)


def test_regression_model_has_no_labels_and_says_so(regression_export):
    manifest = Manifest.load(regression_export / MANIFEST_FILE)
    assert manifest.labels == [] and manifest.problem_type == "regression" and manifest.task == "stsb"
    assert manifest.pair_input  # STS-B is a pair task: the GLUE preset says so when the recipe names it
    assert json.loads((regression_export / "config.json").read_text())["problem_type"] == "regression"
    predictor = Predictor(regression_export, threads=1)
    pairs = [("a man plays a guitar", "someone plays music"), ("it rains", "the sun is out")]
    results = predictor.predict(pairs)
    assert all(r["label"] is None and list(r["scores"]) == ["value"] for r in results)
    with TestClient(create_app(ServeConfig(str(regression_export), timeout_s=60))) as client:
        info = client.get("/v1/model").json()
        assert info["labels"] == [] and info["problem_type"] == "regression" and info["model"].startswith("scorer@")
        body = client.post("/v1/classify", json={"pairs": [list(p) for p in pairs]}).json()
        assert body["model"] == info["model"] and body["task"] == "stsb"
        assert [r["label"] for r in body["results"]] == [None, None]


def test_old_manifest_without_the_fields_still_loads_and_names_its_model(informative_export_fp32, tmp_path):
    old = Path(shutil.copytree(informative_export_fp32, tmp_path / "sst2-old"))
    raw = json.loads((old / MANIFEST_FILE).read_text())
    for key in ("name", "model_version", "data_file"):
        raw.pop(key)
    raw["task"] = None
    (old / MANIFEST_FILE).write_text(json.dumps(raw))
    manifest = Manifest.load(old / MANIFEST_FILE)
    assert manifest.name is None and manifest.model_version is None and manifest.data_file is None
    assert manifest.identity("sst2-old") == ("sst2-old", raw["files"]["model.onnx"]["sha256"][:12])
    predictor = Predictor(old, threads=1)
    assert predictor.model_id == f"sst2-old@{raw['files']['model.onnx']['sha256'][:12]}"
    with TestClient(create_app(ServeConfig(str(old), timeout_s=60))) as client:
        body = client.post("/v1/classify", json={"texts": ["a fine film"]}).json()
        assert body["model"] == predictor.model_id and body["task"] is None


@pytest.mark.parametrize("field, value", [("name", "has space"), ("name", "@x"), ("model_version", ""),
                                          ("model_version", "1/2"), ("data_file", 3)])
def test_manifest_refuses_bad_identity(field, value):
    raw = Manifest(labels=["a", "b"], max_length=8).to_dict() | {field: value}
    with pytest.raises(ModelDirError, match=field.split("_")[-1]):
        Manifest.from_dict(raw)


def test_default_version_prefers_model_onnx():
    files = {"model.ort": {"sha256": "b" * 64}, "model.onnx": {"sha256": "a" * 64}}
    assert default_version(files) == "a" * 12
    assert default_version({"model.ort": {"sha256": "b" * 64}}) == "b" * 12
    assert default_version({}) is None


# ---- where label names come from ------------------------------------------------------------------------
def _config(n=2, names=None, problem_type=None):
    return helpers.tiny_bert_config(num_labels=n, id2label=dict(enumerate(names)) if names else None,
                                    label2id=None, problem_type=problem_type)


def test_generic_config_names_do_not_hide_the_recipe():
    info = resolve_task(_config(2), {"task": "sst2", "labels": ["negative", "positive"]})
    assert info.labels == ("negative", "positive") and info.task == "sst2" and info.origin == "kronedge.json"


def test_generic_recipe_names_do_not_hide_the_config():
    info = resolve_task(_config(2, ["spam", "ham"]), {"task": "mail", "labels": ["LABEL_0", "LABEL_1"]})
    assert info.labels == ("spam", "ham") and info.task == "mail" and info.origin == "config.json"


def test_nothing_names_the_labels():
    info = resolve_task(_config(3), {})
    assert info.labels == ("LABEL_0", "LABEL_1", "LABEL_2") and info.origin == "generic" and info.task is None


def test_task_spec_wins_and_gives_data_file_and_pairs():
    spec = TICKET_SPEC | {"is_pair": True, "data_file": "/home/me/data/support-tickets.csv"}
    info = resolve_task(_config(3), {"task": "tickets", "labels": TICKET_LABELS, "task_spec": spec})
    assert info.labels == tuple(TICKET_LABELS) and info.pair_input
    assert info.data_file == "support-tickets.csv"  # the file's name, never the exporting machine's path


def test_conflicting_real_names_are_one_clear_error():
    with pytest.raises(ValueError, match=r"kronedge.json \['neg', 'pos'\] differ .* config.json \['spam', 'ham'\]"):
        resolve_task(_config(2, ["spam", "ham"]), {"task": "x", "labels": ["neg", "pos"]})


def test_labels_that_do_not_fit_the_head_are_an_error():
    with pytest.raises(ValueError, match="names 3 labels .* head has 2 outputs"):
        resolve_task(_config(2), {"task": "tickets", "labels": TICKET_LABELS})
    with pytest.raises(ValueError, match="regression but the model's head has 2 outputs"):
        resolve_task(_config(2), {"task_spec": {"name": "s", "is_regression": True}})


@pytest.mark.parametrize("name, lines, labels, pair, regression", [
    ("tickets.csv", ["text,label", "refund please,billing", "app crashes,bug", "love it,praise", "charged twice,billing"],
     ("billing", "bug", "praise"), False, False),
    ("nli.jsonl", ['{"premise": "a man sings", "hypothesis": "someone sings", "label": "yes"}',
                   '{"premise": "it rains", "hypothesis": "it is dry", "label": "no"}'],
     ("no", "yes"), True, False),
    ("scores.csv", ["sentence,score", "fine,0.5", "great,4.25", "bad,1.0"], (), False, True),
])
def test_recipe_from_the_data_layers_spec(tmp_path, name, lines, labels, pair, regression):
    """What `kronedge compress --train FILE` records (``TaskSpec.to_dict()`` of the data layer, built here from
    a file) is what the export reads: names in the data layer's order, pair input, regression, the file name."""
    from kronedge.data import DataFiles

    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    spec = DataFiles(train=str(path)).spec()
    recipe = {"task": spec.name, "labels": list(spec.label_names), "task_spec": spec.to_dict()}
    info = resolve_task(_config(1 if regression else len(labels)), recipe)
    assert info.labels == labels and info.pair_input == pair and info.is_regression == regression
    assert info.task == spec.name and info.data_file == name


def test_glue_task_at_export_names_the_labels():
    from kronedge.data import get_task

    info = resolve_task(_config(2), {}, get_task("rte"))
    assert info.labels == ("entailment", "not_entailment") and info.pair_input and info.origin == "--task"


# ---- the command line -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, message", [("has space", "model name 'has space'"),
                                           ("tickets@", "ends with '@'"),
                                           ("tickets@1 2", "model version '1 2'")])
def test_bad_name_is_one_line_and_writes_nothing(tickets_artifact, tmp_path, name, message):
    from typer.testing import CliRunner

    from kronedge.cli import app

    result = CliRunner().invoke(app, ["export", str(tickets_artifact), "--out", str(tmp_path / "x"), "--name", name])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_quantizer_hint_is_dropped_only_while_quantizing(caplog, tmp_path):
    """The filter is scoped: the same message logged outside `quantize` still reaches the root logger."""
    import onnx
    from onnx import TensorProto, helper

    from exporters.quantize import QuantPreset, quantize

    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.arange(16, dtype=np.float32).tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    handlers = list(logging.getLogger().handlers)
    with caplog.at_level(logging.WARNING):
        quantize(tmp_path / "m.onnx", tmp_path / "q.onnx", QuantPreset.arm64())
        assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
        logging.warning("Please consider to run pre-processing before quantization (outside quantize)")
    assert [r for r in caplog.records if "pre-processing" in r.getMessage()]
    assert logging.getLogger().handlers == handlers and not logging.getLogger().filters
