"""Bring your own data (issue 14, items 1-2): a user's CSV / JSON Lines files through compress, export, eval,
the Predictor and the server, with the user's own label names; bad files are one line and write nothing.

Every file is written here in code; the teacher is the suite's tiny BERT (``helpers.tiny_spec``), so a whole
compress -> export chain takes seconds.
"""

import csv
import json

import helpers
import pytest
from typer.testing import CliRunner

TICKETS = {"billing": ["i was charged twice", "refund please", "the invoice is wrong", "my payment failed"],
           "bug": ["the app crashes on start", "the save button is broken", "login fails every time", "error 500"],
           "praise": ["love the new update", "great support, thank you", "works great", "best app ever"]}
NLI = [("a man plays guitar", "someone makes music", "yes"), ("it rains", "the street is dry", "no"),
       ("the cat sleeps", "an animal rests", "yes"), ("she is running", "she sits still", "no")]
RATINGS = [("terrible", 0.0), ("bad", 1.25), ("fine", 2.5), ("good", 3.75), ("excellent", 5.0)]
COMMON = ["--compression", "4", "--no-stage1", "--stage2-examples", "12", "--max-length", "32", "--min-steps", "0", "--stage2-min-steps", "0",
          "--patience", "0", "--precision", "fp32", "--no-teacher-check", "--threads", "1"]


def _csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path.name


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path.name


def tickets(directory, n_train=18, n_dev=9):
    """Single-sentence CSV with string labels; every label in both files."""
    rows = [(f"{TICKETS[label][i % 4]} #{i}", label) for i in range(max(n_train, n_dev))
            for label in [("billing", "bug", "praise")[i % 3]]]
    return (_csv(directory / "tickets-train.csv", ["text", "label"], rows[:n_train]),
            _csv(directory / "tickets-dev.csv", ["text", "label"], rows[:n_dev]), [])


def nli(directory):
    """Sentence-pair JSON Lines with its own column names and string labels."""
    records = [{"premise": a, "hypothesis": b, "answer": y} for a, b, y in NLI * 3]
    return (_jsonl(directory / "nli-train.jsonl", records), _jsonl(directory / "nli-dev.jsonl", records[:6]),
            ["--text-column", "premise", "--text-pair-column", "hypothesis", "--label-column", "answer"])


def ratings(directory):
    """Regression CSV (fractional scores in a ``score`` column: regression inferred)."""
    rows = [(f"{text} movie {i}", score) for i in range(3) for text, score in RATINGS]
    return (_csv(directory / "ratings-train.csv", ["text", "score"], rows),
            _csv(directory / "ratings-dev.csv", ["text", "score"], rows[:5]), [])


# name, file builder, task name, labels, pair input, problem type
CASES = [
    ("tickets", tickets, ["billing", "bug", "praise"], False, "single_label_classification"),
    ("nli", nli, ["no", "yes"], True, "single_label_classification"),
    ("ratings", ratings, [], False, "regression"),
]


def _texts(path):
    """The text (or text pair) of every row of a file this module wrote."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [tuple(v for k, v in r.items() if k in ("premise", "hypothesis")) or r["text"] for r in rows]
    with open(path, newline="", encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f)]


def _invoke(args):
    from kronedge.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
@pytest.mark.parametrize("task,build,labels,pair,problem", CASES, ids=[c[0] for c in CASES])
def test_own_files_compress_export_predict_serve(tmp_path, monkeypatch, task, build, labels, pair, problem):
    from fastapi.testclient import TestClient

    from runtime.predictor import Predictor
    from runtime.serve import ServeConfig, create_app

    monkeypatch.chdir(tmp_path)
    train, dev, options = build(tmp_path)
    metric = ["--metric", "f1_macro"] if task == "tickets" else []  # recorded, and eval reports by it
    result = _invoke(["compress", "--teacher", helpers.tiny_spec(tmp_path), "--train", train, "--validation", dev,
                      *options, *metric, *COMMON, "--json"])
    assert result.exit_code == 0, result.output
    compressed = json.loads(result.stdout[result.stdout.index("{\n"):])
    assert compressed["primary_metric"] == (metric[1] if metric else "pearson" if not labels else "accuracy")
    seen = [w for w in compressed["warnings"] if "validation texts" in w]  # these dev files repeat training rows
    rows = len(_texts(tmp_path / dev))
    assert len(seen) == 1 and seen[0].startswith(f"{rows} of the {rows} validation texts (100%)"), compressed["warnings"]
    artifact = tmp_path / "artifacts" / f"kronedge-{task}"
    assert compressed["artifact"] == str(artifact.relative_to(tmp_path))
    recipe = json.loads((artifact / "kronedge.json").read_text())
    assert recipe["task"] == task and recipe["labels"] == labels
    assert recipe["task_spec"]["name"] == task and recipe["task_spec"]["data_file"] == train
    assert recipe["task_spec"]["is_pair"] == pair and recipe["compress_config"]["source"]["files"]["train"] == train
    primary = compressed["primary_metric"]

    # kronedge eval on the artifact (torch) reproduces the student's dev score, tokenised at compress's length
    import kronedge.training as training

    encode, lengths = training.encode, []
    monkeypatch.setattr(training, "encode", lambda *args, **kw: lengths.append(kw.get("max_length")) or encode(*args, **kw))
    scored = _invoke(["eval", artifact, "--validation", dev, *options, "--json"])
    assert scored.exit_code == 0, scored.output
    assert lengths == [int(COMMON[COMMON.index("--max-length") + 1])]
    monkeypatch.setattr(training, "encode", encode)
    assert json.loads(scored.stdout)[primary] == pytest.approx(compressed["student_metrics"][primary], abs=1e-6)

    export = tmp_path / "export"
    exported = _invoke(["export", artifact, "--out", export, "--max-length", "32"])
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["labels"] == labels and manifest["task"] == task and manifest["data_file"] == train
    assert manifest["problem_type"] == problem and manifest["pair_input"] == pair
    on_export = _invoke(["eval", export, "--validation", dev, *options, "--json"])
    assert on_export.exit_code == 0, on_export.output
    assert json.loads(on_export.stdout)[primary] == pytest.approx(compressed["student_metrics"][primary], abs=1e-3)
    # a file laid out like the training file needs no column options: the model records them
    for model in (artifact, export):
        plain = _invoke(["eval", model, "--validation", dev, "--json"])
        assert plain.exit_code == 0, plain.output
        assert json.loads(plain.stdout)[primary] == pytest.approx(compressed["student_metrics"][primary], abs=1e-3)
        scored = json.loads(plain.stdout)  # torch and ONNX Runtime report the same classes; a regression none
        assert scored["primary_metric"] == primary
        assert scored["backend"] == ("onnxruntime" if model == export else "torch")
        if labels:
            assert list(scored["per_class"]) == list(labels)
            assert sum(row["support"] for row in scored["per_class"].values()) == scored["examples"]
            hits = sum(round(row["recall"] * row["support"]) for row in scored["per_class"].values() if row["support"])
            assert sum(c["count"] for c in scored["confusions"]) == scored["examples"] - hits
            assert all(c["gold"] != c["predicted"] and {c["gold"], c["predicted"]} <= set(labels)
                       for c in scored["confusions"])
            if len(labels) > 2:  # the text output names the most frequent mix-up
                text = _invoke(["eval", model, "--validation", dev]).output
                assert ("most confused (gold -> predicted): " in text) == bool(scored["confusions"])
                top = (scored["confusions"] or [None])[0]
                assert top is None or f"{top['gold']} -> {top['predicted']} {top['count']}" in text
        else:
            assert "per_class" not in scored and "confusions" not in scored

    if task == "tickets":  # a file with labels the model lacks: one error saying how to score the other rows
        with open(tmp_path / dev, newline="") as f:
            rows = list(csv.reader(f))[1:]
        extra = [("buy now", "spam"), ("hi there", "other"), ("cheap pills", "spam")]
        mixed = _csv(tmp_path / "mixed.csv", ["text", "label"], rows[:4] + extra + rows[4:])
        for model in (artifact, export):
            refused = _invoke(["eval", model, "--validation", mixed])
            assert refused.exit_code == 1 and "--skip-unknown-labels" in refused.output, refused.output
            kept = _invoke(["eval", model, "--validation", mixed, "--skip-unknown-labels", "--json"])
            assert kept.exit_code == 0, kept.output
            scored, plain = json.loads(kept.stdout), json.loads(_invoke(["eval", model, "--validation", dev, "--json"]).stdout)
            assert scored["examples"] == plain["examples"] == len(rows)
            assert scored["skipped_rows"] == 3 and scored["skipped_labels"] == {"spam": 2, "other": 1}
            assert scored[primary] == pytest.approx(plain[primary], abs=1e-6) and "skipped_rows" not in plain
            text = _invoke(["eval", model, "--validation", mixed, "--skip-unknown-labels"]).output
            assert "left out 3 row(s) whose label the model lacks: 'spam' (2), 'other' (1)" in text

    for model in (artifact, export):  # its task is the user's file: scored on the validation file compress used
        bare = _invoke(["eval", model, "--json"])
        assert bare.exit_code == 0, bare.output
        assert json.loads(bare.stdout)[primary] == pytest.approx(compressed["student_metrics"][primary], abs=1e-5)
    (tmp_path / dev).rename(tmp_path / "moved.csv")
    for model in (artifact, export):  # and with that file gone, not a GLUE set: say how to score it
        bare = _invoke(["eval", model])
        assert bare.exit_code == 1 and "trained on your own file" in bare.output and "--validation FILE" in bare.output
    (tmp_path / "moved.csv").rename(tmp_path / dev)

    predictor = Predictor(export, threads=1)
    assert predictor.labels == labels and predictor.task == task
    texts = [tuple(r[:2]) for r in NLI] if pair else ["refund please", "the app crashes", "great support"]
    if labels:
        logits = predictor.logits(texts)
        assert [r["label"] for r in predictor.predict(texts)] == [labels[i] for i in logits.argmax(axis=1)]
    with TestClient(create_app(ServeConfig(str(export), timeout_s=60))) as client:
        info = client.get("/v1/model").json()
        assert info["labels"] == labels and info["task"] == task and info["data_file"] == train
        if not pair:  # the pair request shape is the server's own test's business
            body = client.post("/v1/classify", json={"texts": texts})
            assert body.status_code == 200, body.text
            assert body.json()["task"] == task
            if labels:
                assert all(list(r["scores"]) == labels for r in body.json()["results"])
            else:  # a regression answers a value: its label is null, not left out
                assert all(r["label"] is None and list(r["scores"]) == ["value"] for r in body.json()["results"])


def _teacher(directory, id2label):
    """A tiny BERT with a three-way head named ``id2label`` (index order), saved with the tokenizer."""
    from kronedge.artifact import copy_tokenizer

    path = directory / "my-teacher"
    names = dict(enumerate(id2label))
    helpers.tiny_bert(num_labels=3, id2label=names, label2id={n: i for i, n in names.items()}).save_pretrained(path)
    copy_tokenizer(helpers.tokenizer_dir(), path)
    return path


@pytest.mark.slow
def test_own_teacher_head_is_used_as_is_in_its_label_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, dev, _ = tickets(tmp_path)
    order = ["praise", "billing", "bug"]  # not the data's sorted order: the teacher's order must win
    result = _invoke(["compress", "--teacher", _teacher(tmp_path, order), "--train", train, "--validation", dev,
                      *COMMON, "--json"])
    assert result.exit_code == 0, result.output
    compressed = json.loads(result.stdout[result.stdout.index("{\n"):])
    assert "teacher_finetune" not in compressed["seconds"] and not (tmp_path / "runs" / "teachers").exists()
    recipe = json.loads((tmp_path / "artifacts" / "kronedge-tickets" / "kronedge.json").read_text())
    assert recipe["labels"] == order and recipe["task_spec"]["label_names"] == order
    config = json.loads((tmp_path / "artifacts" / "kronedge-tickets" / "config.json").read_text())
    assert list(config["id2label"].values()) == order


def test_teacher_fine_tuned_on_codes_before_they_kept_their_spelling_still_fits(tmp_path):
    """A teacher whose head says 3, 1, 2 (how codes were named before) fits data labelled 001..003 by value: its
    order and names are kept, and the files' spellings still map to them."""
    from kronedge.data import DataFiles
    from kronedge.finetune import teacher_head_spec

    train = _csv(tmp_path / "codes.csv", ["text", "label"], [(f"t {i}", f"00{i % 3 + 1}") for i in range(6)])
    data = DataFiles(train=tmp_path / train)
    spec = teacher_head_spec(str(_teacher(tmp_path, ["3", "1", "2"])), data.spec())
    assert spec.label_names == ("3", "1", "2") and spec.raw_labels == ("003", "001", "002")
    assert data.load("train", spec).labels == [1, 2, 0, 1, 2, 0]


def test_own_teacher_with_other_labels_is_one_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, dev, _ = tickets(tmp_path)
    result = _invoke(["compress", "--teacher", _teacher(tmp_path, ["billing", "bug", "spam"]), "--train", train,
                      "--validation", dev, *COMMON])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "only in the data ['praise']" in errors[0] and "['spam']" in errors[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "artifacts").exists()


def _missing_column(d):
    return tickets(d)[:2] + (["--label-column", "queue"],), "tickets-train.csv:1:"


def _unknown_label(d):
    train, _, _ = tickets(d)
    dev = _csv(d / "dev.csv", ["text", "label"], [("refund please", "billing"), ("buy now", "spam")])
    return (train, dev, []), "dev.csv:3:"


def _bad_utf8(d):
    _, dev, _ = tickets(d)
    (d / "train.jsonl").write_bytes(b'{"text": "fine", "label": "bug"}\n{"text": "bad \xff", "label": "bug"}\n')
    return ("train.jsonl", dev, []), "train.jsonl:2:"


def _ragged(d):
    train, _, _ = tickets(d)
    (d / "dev.csv").write_text("text,label\nrefund please,billing\nit crashed,bug,extra\n")
    return (train, "dev.csv", []), "dev.csv:3:"


def _empty(d):
    _, dev, _ = tickets(d)
    (d / "empty.csv").write_text("")
    return ("empty.csv", dev, []), "empty.csv:1:"


@pytest.mark.parametrize("make", [_missing_column, _unknown_label, _bad_utf8, _ragged, _empty],
                         ids=["missing-column", "unknown-label", "bad-utf8", "ragged-row", "empty-file"])
def test_malformed_file_is_one_line_and_writes_nothing(tmp_path, monkeypatch, make):
    monkeypatch.chdir(tmp_path)
    (train, dev, options), where = make(tmp_path)
    result = _invoke(["compress", "--teacher", helpers.tiny_spec(tmp_path), "--train", train, "--validation", dev,
                      *options, *COMMON])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and where in errors[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "artifacts").exists()


def test_task_and_files_together_and_a_missing_validation_file_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, _, _ = tickets(tmp_path)
    both = _invoke(["compress", "--task", "sst2", "--train", train])
    assert both.exit_code == 1 and "not both" in both.output
    alone = _invoke(["compress", "--teacher", helpers.tiny_spec(tmp_path), "--train", train, *COMMON])
    assert alone.exit_code == 1 and "too" not in alone.output and "no label has the 10 rows" in alone.output
    assert "--validation FILE" in alone.output  # 18 rows hold no validation set of their own
    tuned = _invoke(["finetune", helpers.tiny_spec(tmp_path), "--train", train, "--min-steps", "0", "--threads", "1"])
    assert tuned.exit_code == 1 and "no label has the 10 rows" in tuned.output
    stray = _invoke(["eval", tmp_path, "--text-column", "text"])
    assert stray.exit_code == 1 and "--validation" in stray.output
    skip = _invoke(["eval", tmp_path, "--task", "sst2", "--skip-unknown-labels"])
    assert skip.exit_code == 1 and "--validation FILE" in skip.output and "error:" in skip.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "artifacts").exists()


@pytest.mark.slow
def test_a_training_file_alone_is_compressed_with_a_validation_set_held_out_of_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, _, _ = tickets(tmp_path, n_train=60)  # 20 rows per label: the 10th and 20th of each are held out
    result = _invoke(["compress", "--teacher", helpers.tiny_spec(tmp_path), "--train", train, *COMMON, "--json"])
    assert result.exit_code == 0, result.output
    data = tmp_path / "runs" / "compress-tickets" / "data"
    held = [json.loads(line) for line in (data / "tickets-validation.jsonl").read_text().splitlines()]
    assert [r["label"] for r in held] == ["billing", "bug", "praise"] * 2
    recipe = json.loads((tmp_path / "artifacts" / "kronedge-tickets" / "kronedge.json").read_text())
    files = recipe["compress_config"]["source"]["files"]
    data = data.relative_to(tmp_path)  # recorded as the run directory was given: relative, like --train
    assert (files["train"], files["validation"]) == (str(data / "tickets-train.jsonl"), str(data / "tickets-validation.jsonl"))
    assert recipe["task"] == "tickets" and recipe["labels"] == ["billing", "bug", "praise"]
    compressed = json.loads(result.stdout[result.stdout.index("{\n"):])
    assert not [w for w in compressed["warnings"] if "validation texts" in w]  # held out: no row in both parts
    scored = _invoke(["eval", tmp_path / "artifacts" / "kronedge-tickets", "--validation", files["validation"], "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["accuracy"] == pytest.approx(compressed["student_metrics"]["accuracy"], abs=1e-6)
    # with no data named, eval scores the artifact and its export on the validation file compress used
    plain = _invoke(["eval", tmp_path / "artifacts" / "kronedge-tickets"])
    assert plain.exit_code == 0 and f"on {files['validation']} (6 examples)" in plain.output, plain.output
    exported = _invoke(["export", tmp_path / "artifacts" / "kronedge-tickets", "--out", "export", "--max-length", "32"])
    assert exported.exit_code == 0, exported.output
    scored = _invoke(["eval", "export", "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["examples"] == 6


@pytest.mark.slow
def test_finetune_on_files_then_that_teacher_is_used_as_is(tmp_path, monkeypatch):
    """`kronedge finetune --train/--validation` names its head after the data; compress then keeps that head,
    and `eval --validation` maps a file's labels by name (a label the model lacks: one line)."""
    monkeypatch.chdir(tmp_path)
    train, dev, _ = tickets(tmp_path)
    tuned = _invoke(["finetune", helpers.tiny_spec(tmp_path), "--train", train, "--validation", dev, "--out", "teacher",
                     "--min-steps", "0", "--patience", "0", "--precision", "fp32", "--threads", "1", "--json"])
    assert tuned.exit_code == 0, tuned.output
    config = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert list(config["id2label"].values()) == ["billing", "bug", "praise"]
    result = _invoke(["compress", "--teacher", "teacher", "--train", train, "--validation", dev, *COMMON, "--json"])
    assert result.exit_code == 0, result.output
    assert "teacher_finetune" not in json.loads(result.stdout[result.stdout.index("{\n"):])["seconds"]
    scored = _invoke(["eval", "teacher", "--validation", dev, "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["task"] == "tickets" and json.loads(scored.stdout)["examples"] == 9
    other = _csv(tmp_path / "other.csv", ["text", "label"], [("refund please", "billing"), ("buy now", "spam")])
    refused = _invoke(["eval", "teacher", "--validation", other])
    errors = [line for line in refused.output.splitlines() if line.startswith("error:")]
    assert refused.exit_code == 1 and len(errors) == 1 and "other.csv:3:" in errors[0], refused.output


@pytest.mark.slow
def test_finetune_out_reuses_only_its_own_settings_and_exports_its_task(tmp_path, monkeypatch):
    """`finetune --out DIR` again with other data trains again (it used to return the old teacher and its old
    scores); with the same data it reuses DIR. Exporting that teacher keeps its pair task and labels."""
    monkeypatch.chdir(tmp_path)
    train, dev, columns = nli(tmp_path)
    args = ["finetune", helpers.tiny_spec(tmp_path), "--train", train, "--validation", dev, *columns, "--out", "teacher",
            "--min-steps", "0", "--epochs", "1", "--patience", "0", "--precision", "fp32", "--threads", "1"]
    assert _invoke(args).exit_code == 0
    assert "reusing fine-tuned teacher" in _invoke(args).output
    records = list(map(json.loads, (tmp_path / train).read_text().splitlines()))
    swapped = [{**r, "answer": {"yes": "no", "no": "yes"}[r["answer"]]} for r in records]  # the same labels
    _jsonl(tmp_path / train, swapped)
    again = _invoke(args)
    assert again.exit_code == 0, again.output
    assert "(the data changed): training again" in again.output and "reusing" not in again.output
    relabelled = [{**r, "answer": {"yes": "entailment", "no": "contradiction"}[r["answer"]]} for r in records]
    _jsonl(tmp_path / train, relabelled)
    _jsonl(tmp_path / dev, relabelled[:6])
    again = _invoke(args)
    assert again.exit_code == 0, again.output
    assert ("other labels (labels only it has: no, yes; only the data has: contradiction, entailment): training "
            "again") in again.output
    # eval of the teacher names its task (not the scored file's) and, without a file, says how to score it.
    (tmp_path / "held-out.jsonl").write_text((tmp_path / dev).read_text())
    scored = _invoke(["eval", "teacher", "--validation", "held-out.jsonl", "--json"])
    assert scored.exit_code == 0 and json.loads(scored.stdout)["task"] == "nli", scored.output
    assert "trained on your own file nli-train.jsonl" in _invoke(["eval", "teacher"]).output
    # A record from before the settings were kept: reused when what it records agrees, with a warning.
    record = tmp_path / "teacher" / "finetune.json"
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "settings"}))
    old = _invoke(args)
    assert "written by an older kronedge that did not record" in old.output and "reusing" in old.output
    assert "training again" in _invoke([*args, "--lr", "1e-3"]).output
    config = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert list(config["id2label"].values()) == ["contradiction", "entailment"]

    exported = _invoke(["export", "teacher", "--out", "export", "--max-length", "32"])
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["task"] == "nli" and manifest["pair_input"] is True
    assert manifest["labels"] == ["contradiction", "entailment"] and manifest["data_file"] == train
    # A record that is not JSON: export and eval say so in one line, naming the file.
    (tmp_path / "teacher" / "finetune.json").write_text("{not json")
    for command in (["export", "teacher", "--out", "export2"], ["eval", "teacher", "--validation", dev]):
        broken = _invoke(command)
        assert broken.exit_code == 1 and "finetune.json is not valid JSON" in broken.output, broken.output


@pytest.mark.slow
def test_export_of_a_kronized_teacher_fine_tuned_on_files_keeps_its_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, dev, columns = nli(tmp_path)
    kronized = _invoke(["kronize", helpers.tiny_spec(tmp_path), "--compression", "4", "--out", "kron"])
    assert kronized.exit_code == 0, kronized.output
    tuned = _invoke(["finetune", "kron", "--train", train, "--validation", dev, *columns, "--out", "teacher",
                     "--min-steps", "0", "--epochs", "1", "--patience", "0", "--precision", "fp32", "--threads", "1"])
    assert tuned.exit_code == 0, tuned.output
    exported = _invoke(["export", "teacher", "--out", "export", "--max-length", "32"])
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["task"] == "nli" and manifest["pair_input"] is True and manifest["labels"] == ["no", "yes"]


@pytest.mark.parametrize("lengths, warned", [([32, 12, 40, 7], "2 of the 4 validation texts (50%) are cut at "
                                              "--max-length 32 tokens"), ([31, 12, 30, 7], None)])
def test_compress_says_when_validation_texts_are_cut_at_max_length(lengths, warned):
    from types import SimpleNamespace

    from kronedge.compress import CompressRun
    from kronedge.recipe import CompressConfig
    from kronedge.training.batching import Encoded

    run = CompressRun.__new__(CompressRun)  # the check alone: no teacher, no data files
    run.config, run.warnings = CompressConfig(max_length=32), []
    run.dev = ["text"] * len(lengths)
    run.dev_enc = Encoded([[1] * n for n in lengths], [[0] * n for n in lengths], [0] * len(lengths))
    run.teacher = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=512))
    run.warn_of_cut_dev_texts()
    assert len(run.warnings) == (warned is not None)
    if warned:
        assert run.warnings[0].startswith(warned) and "--max-length up to 512" in run.warnings[0]


@pytest.mark.parametrize("counts, metric, warned", [
    ((97, 3), "accuracy", "the rarest class, 'spam', has 3.0% of the training rows (3 of 100)"),
    ((90, 10), "accuracy", None),
    ((97, 3), "f1_macro", None),  # the metric that already counts every class alike
    ((50,) * 19 + (45,), "accuracy", None),  # 20 even classes: 4.7% is nearly an even share, not rare
    ((50,) * 19 + (20,), "accuracy", "the rarest class, 'c19', has 2.1% of the training rows (20 of 970)"),
])
def test_compress_names_a_rare_class_when_accuracy_picks_the_epochs(counts, metric, warned):
    from kronedge.compress import CompressRun
    from kronedge.data import TaskData, TaskSpec

    names = ["ham", "spam"] if len(counts) == 2 else [f"c{i:02d}" for i in range(len(counts))]
    spec = TaskSpec.custom("mail", names, primary_metric=metric)
    labels = [i for i, n in enumerate(counts) for _ in range(n)]
    run = CompressRun.__new__(CompressRun)  # the check alone: no teacher, no data files
    run.spec, run.warnings = spec, []
    run.__dict__["train"] = TaskData(spec, "train", [f"t {i}" for i in range(len(labels))], labels)
    run.warn_of_rare_classes()
    assert len(run.warnings) == (warned is not None)
    if warned:
        assert run.warnings[0].startswith(warned) and "--metric f1_macro" in run.warnings[0]
