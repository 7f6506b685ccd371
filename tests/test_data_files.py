"""A user's own CSV/TSV/JSON Lines files as a task (kronedge.data.files), errors, metrics, memory."""

import csv
import io
import json
import math
import tracemalloc

import numpy as np
import pytest

from kronedge.data import (MOVIE_REVIEWS, TASKS, DataError, DataFileError, DataFiles, TaskSource, TaskSpec,
                           UnknownLabelsError, check_labels, compute_metrics, get_task, load_task)
from kronedge.data.metrics import f1_macro, pearson, spearman

REVIEWS = [("a charming film", "positive"), ("dull, and far too long", "negative"),
           ('the "twist" works', "positive"), ("I left early", "negative")]
PAIRS = [("A man plays.", "A man is playing.", "entailment"), ("A cat sat.", "No cat.", "contradiction"),
         ("It rains.", "It may rain.", "neutral")]


def write(tmp_path, name, rows, header=None):
    """rows: dicts (JSONL) or tuples (CSV/TSV with ``header``)."""
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t" if name.endswith(".tsv") else ",", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def write_table(tmp_path, stem, fmt, header, rows):
    if fmt == "jsonl":
        return write(tmp_path, f"{stem}.jsonl", [dict(zip(header, r)) for r in rows])
    return write(tmp_path, f"{stem}.{fmt}", rows, header)


# -- reading: formats x single/pair x label kinds --------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_single_text_string_labels(tmp_path, fmt):
    train = write_table(tmp_path, "reviews-train", fmt, ["id", "text", "label"],
                        [(i, t, y) for i, (t, y) in enumerate(REVIEWS)])
    dev = write_table(tmp_path, "reviews-dev", fmt, ["label", "text"], [(y, t) for t, y in REVIEWS[:2]])
    data = DataFiles(train=train, validation=dev)
    ds = data.load("train")
    spec = ds.spec
    assert spec.name == "reviews" and spec.data_file == train.name
    assert spec.label_names == ("negative", "positive") and spec.num_labels == 2  # sorted, not file order
    assert not spec.is_pair and not spec.is_regression and spec.problem_type == "single_label_classification"
    assert ds.texts == [t for t, _ in REVIEWS] and ds.labels == [1, 0, 1, 0]
    val = data.load("validation", spec)
    assert val.texts == ["a charming film", "dull, and far too long"] and val.labels == [1, 0]
    assert data.load("dev").labels == val.labels  # the spec comes from the training file by default
    assert set(compute_metrics(spec, [1, 1], val.labels)) == {"accuracy", "f1_macro"}


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_pair_task_from_default_columns(tmp_path, fmt):
    path = write_table(tmp_path, "nli", fmt, ["sentence1", "sentence2", "label"], PAIRS)
    ds = DataFiles(train=path).load()
    assert ds.spec.is_pair and ds.spec.text_columns == ("sentence1", "sentence2")
    assert ds.texts[0] == ("A man plays.", "A man is playing.")
    assert ds.spec.label_names == ("contradiction", "entailment", "neutral") and ds.labels == [1, 0, 2]


@pytest.mark.parametrize("columns", [["sentence", "question", "label"], ["Question", "Sentence", "idx", "label"]])
def test_qnli_layout_is_a_pair_even_though_sentence_is_a_text_default(tmp_path, columns):
    # QNLI's columns: "sentence" alone would be a single-text default and silently drop the question
    rows = [("Who wrote it?", "It was written by Ann.", "entailment"), ("When?", "The sky is blue.", "not_entailment")]
    rows = [dict(zip(("question", "sentence", "label"), r)) for r in rows]
    table = [[r[c.lower()] if c.lower() in r else str(i) for c in columns] for i, r in enumerate(rows)]
    ds = DataFiles(train=write(tmp_path, "qnli.csv", table, columns)).load()
    question, sentence = (next(c for c in columns if c.lower() == name) for name in ("question", "sentence"))
    assert ds.spec.is_pair and ds.spec.text_columns == (question, sentence)
    assert ds.texts[0] == ("Who wrote it?", "It was written by Ann.")


def test_explicit_pair_columns_and_problem_type(tmp_path):
    path = write(tmp_path, "qa.csv", [("Why?", "Because.", "1"), ("Who?", "Bob.", "0")],
                 ["question", "answer", "relevant"])
    data = DataFiles(train=path, text_column="question", text_pair_column="answer", label_column="relevant")
    ds = data.load()
    assert ds.texts == [("Why?", "Because."), ("Who?", "Bob.")] and ds.spec.label_names == ("0", "1")
    assert ds.labels == [1, 0]


def test_integer_labels_sort_numerically(tmp_path):
    rows = [("a b", "10"), ("c d", "2"), ("e f", "1"), ("g h", "02")]
    data = DataFiles(train=write(tmp_path, "stars.csv", rows, ["text", "label"]))
    ds = data.load()
    assert ds.spec.label_names == ("1", "2", "10")  # numerically, and "02" is the class "2"
    assert ds.labels == [2, 1, 0, 1]
    # JSON integers are the same classes as CSV integers.
    dev = write(tmp_path, "stars-dev.jsonl", [{"text": "x", "label": 10}, {"text": "y", "label": 2}])
    assert DataFiles(validation=dev).load("validation", ds.spec).labels == [2, 1]


def test_fixed_width_codes_keep_their_spelling(tmp_path, caplog):
    """Codes of one width (001..012) are names: the model answers "012", not "12", and a validation file may write
    the same value another way; mixed widths are numbers, and spellings read as one class are named in a warning."""
    rows = [(f"text {i}", f"{i % 12 + 1:03d}") for i in range(24)] + [("float", "1.0")]
    codes = DataFiles(train=write(tmp_path, "codes.csv", rows, ["text", "label"])).load()
    assert codes.spec.label_names == tuple(f"{i:03d}" for i in range(1, 13)) and codes.labels[-1] == 0
    dev = write(tmp_path, "codes-dev.jsonl", [{"text": "a", "label": 12}, {"text": "b", "label": "01"}])
    assert DataFiles(validation=dev).load("validation", codes.spec).labels == [11, 0]
    with caplog.at_level("WARNING", logger="kronedge.data.examples"):
        mixed = DataFiles(train=write(tmp_path, "mixed.csv", [("a", "7"), ("b", "07"), ("c", "10"), ("d", "7.0")],
                                      ["text", "label"])).load()
    assert mixed.spec.label_names == ("7", "10") and mixed.labels == [0, 0, 1, 0]
    assert "'7', '07', '7.0' are one class, '7'" in caplog.text
    # Beside names, numbers are names too, as written and sorted as strings (as before codes were kept).
    named = [("a", "1"), ("b", "1.0"), ("c", "other"), ("d", "10"), ("e", "9")]
    assert DataFiles(train=write(tmp_path, "named.csv", named, ["text", "label"])).load().spec.label_names == \
        ("1", "1.0", "10", "9", "other")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_labels_that_differ_only_by_surrounding_spaces_are_one_class_named_in_a_warning(tmp_path, caplog, fmt):
    rows = [("a", "pos"), ("b", " pos"), ("c", "neg"), ("d", "pos "), ("e", " neg "), ("f", " neg "), ("g", " x")]
    path = write(tmp_path, f"spaces.{fmt}", rows if fmt == "csv" else [{"text": t, "label": y} for t, y in rows],
                 ["text", "label"] if fmt == "csv" else None)
    for read in (lambda: DataFiles(train=path).load(), lambda: DataFiles(train=path).spec()):
        caplog.clear()
        with caplog.at_level("WARNING", logger="kronedge.data.examples"):
            read()
        warned = [r.getMessage() for r in caplog.records]
        assert len(warned) == 2, warned  # 'x' is always written one way: nothing to say about it
        assert "2 of the 3 rows of the class 'pos' write it with surrounding spaces (' pos', 'pos ')" in warned[1]
        assert "2 of the 3 rows of the class 'neg'" in warned[0]
    data = DataFiles(train=path).load()
    assert data.spec.label_names == ("neg", "pos", "x") and data.labels == [1, 1, 0, 1, 0, 0, 2]


def test_one_fractional_label_among_class_ids_is_asked_about(tmp_path):
    """A single 7.5 in a file of class ids is a typo more often than a regression target: ask, naming its line."""
    rows = [(f"text {i}", str(i % 20)) for i in range(60)] + [("typo", "7.5")]
    path = write(tmp_path, "ids.csv", rows, ["text", "label"])
    with pytest.raises(DataFileError, match=rf"^{path}:62: '7.5' is one of 1 fractional labels among 61 "):
        DataFiles(train=path).load()
    assert DataFiles(train=path, problem_type="regression").load().spec.is_regression


def test_boolean_labels_match_across_formats(tmp_path):
    """JSON Lines writes true/false, a pandas CSV True/False: the same classes, unless both spellings are classes."""
    train = write(tmp_path, "b.jsonl", [{"text": "a", "label": True}, {"text": "b", "label": False}])
    spec = DataFiles(train=train).spec()
    dev = write(tmp_path, "b-dev.csv", [("a", "True"), ("b", "FALSE")], ["text", "label"])
    assert DataFiles(validation=dev).load("validation", spec).labels == [spec.label_names.index("true"),
                                                                        spec.label_names.index("false")]
    # In one training file, JSON's true and a string "True" are one class too (not two that split its probability).
    mixed = write(tmp_path, "m.jsonl", [{"text": "a", "label": True}, {"text": "b", "label": "True"},
                                        {"text": "c", "label": False}, {"text": "d", "label": "FALSE"}])
    folded = DataFiles(train=mixed).load()
    assert folded.spec.label_names == ("false", "true") and folded.labels == [1, 1, 0, 0]
    alone = DataFiles(train=write(tmp_path, "c.csv", [("a", "True"), ("b", "False")], ["text", "label"])).spec()
    assert alone.label_names == ("False", "True")  # one spelling each: kept as written


def test_metric_picks_the_primary_metric_of_a_classifier(tmp_path):
    train = write(tmp_path, "t.csv", [("a", "x"), ("b", "y"), ("c", "y")], ["text", "label"])
    assert DataFiles(train=train).spec().primary_metric == "accuracy"
    assert "metric" not in DataFiles(train=train).to_dict()  # unset: the fingerprints of earlier data stay
    for data in (DataFiles(train=train, metric="f1_macro"),) * 2:
        assert data.spec().primary_metric == "f1_macro"  # through spec()...
    assert DataFiles(train=train, metric="f1_macro").load().spec.primary_metric == "f1_macro"  # ...and load()
    assert DataFiles(train=train, metric="f1_macro").fingerprint() != DataFiles(train=train).fingerprint()
    assert DataFiles(train=train, metric="accuracy").fingerprint() == DataFiles(train=train).fingerprint()
    with pytest.raises(DataFileError, match="--metric must be one of accuracy, f1_macro"):
        DataFiles(train=train, metric="matthews")
    with pytest.raises(DataFileError, match="a regression is picked by pearson"):
        DataFiles(train=train, metric="f1_macro", problem_type="regression")
    scores = write(tmp_path, "s.csv", [("a", "0.5"), ("b", "1.5"), ("c", "2.25")], ["text", "label"])
    with pytest.raises(DataError, match="a regression is scored by pearson or spearman, not 'f1_macro'"):
        DataFiles(train=scores, metric="f1_macro").spec()


def test_a_glue_model_scored_on_a_file_reports_by_the_files_metric(tmp_path):
    """CoLA's matthews or MRPC's f1 is not a file spec's metric: scoring a GLUE model on your own file uses the
    default (it used to stop with an error)."""
    dev = write(tmp_path, "mine.csv", [("a", "acceptable"), ("b", "unacceptable")], ["text", "label"])
    source = TaskSource.from_options(validation=dev)
    for task in ("cola", "mrpc"):
        spec = source.model_spec(list(get_task(task).label_names), False, task, get_task(task).primary_metric)
        assert spec.primary_metric == "accuracy"
    assert source.model_spec(["x", "y"], False, "mine", "f1_macro").primary_metric == "f1_macro"


def test_every_unknown_label_is_named_at_once(tmp_path):
    train = write(tmp_path, "t.csv", [("a", "x"), ("b", "y")], ["text", "label"])
    dev = write(tmp_path, "v.csv", [("a", "x"), ("b", "z"), ("c", "w"), ("d", "z")], ["text", "label"])
    spec = DataFiles(train=train).spec()
    with pytest.raises(DataFileError, match=r"v\.csv:3: unknown label 'z' for t: 3 row\(s\) hold 2 label\(s\) that t "
                                            r"lacks \('z' \(2\), 'w' \(1\)\); t's labels: x, y"):
        DataFiles(validation=dev).load("validation", spec)
    # A later row that is wrong in itself does not hide them: its own error comes once they are fixed.
    broken = _bad(tmp_path, "u.csv", b"text,label\na,x\nb,z\n,y\nc,w\n")
    with pytest.raises(DataFileError, match=r"u\.csv:3: unknown label 'z' for t: 1 row\(s\)"):
        DataFiles(validation=broken).load("validation", spec)


def test_rows_with_unknown_labels_can_be_left_out_and_counted(tmp_path, caplog):
    """skip_unknown (`eval --skip-unknown-labels`) keeps the rows the model can score, mapped as before, and counts
    the others per label; a file with no known label at all is still an error."""
    train = write(tmp_path, "t.csv", [("a", "x"), ("b", "y")], ["text", "label"])
    dev = write(tmp_path, "v.csv", [("a", "y"), ("b", "z"), ("c", "x"), ("d", "z"), ("e", "w")], ["text", "label"])
    spec = DataFiles(train=train).spec()
    with pytest.raises(UnknownLabelsError, match=r"v\.csv:3: unknown label 'z'"):
        DataFiles(validation=dev).load("validation", spec)
    with caplog.at_level("WARNING"):
        data = DataFiles(validation=dev).load("validation", spec, skip_unknown=True)
    assert data.texts == ["a", "c"] and data.labels == [1, 0]
    assert data.skipped == {"z": 2, "w": 1}
    assert data.skipped_report() == {"skipped_rows": 3, "skipped_labels": {"z": 2, "w": 1}}
    assert "left out 3 row(s) whose label the model lacks: 'z' (2), 'w' (1)" in caplog.text
    assert data.subset(1).skipped == data.skipped
    none_known = write(tmp_path, "n.csv", [("a", "z"), ("b", "w")], ["text", "label"])
    with pytest.raises(DataFileError, match=r"n\.csv: no examples with a label of t \(all 2 rows were left out\)"):
        DataFiles(validation=none_known).load("validation", spec, skip_unknown=True)
    clean = DataFiles(validation=write(tmp_path, "c.csv", [("a", "x")], ["text", "label"])).load("validation", spec, True)
    assert clean.skipped == {} and clean.skipped_report() == {}


def test_regression_detected_from_float_labels(tmp_path):
    rows = [{"text": "a", "score": 0.5}, {"text": "b", "score": 4}, {"text": "c", "score": 2.25}]
    ds = DataFiles(train=write(tmp_path, "sts.jsonl", rows)).load()
    spec = ds.spec
    assert spec.is_regression and spec.problem_type == "regression" and spec.num_labels == 1
    assert spec.label_names == () and spec.primary_metric == "pearson"
    assert ds.labels == [0.5, 4.0, 2.25]
    m = compute_metrics(spec, [0.0, 3.0, 2.0], ds.labels)
    assert set(m) == {"pearson", "spearman"} and m["spearman"] == pytest.approx(1.0)


def test_regression_forced_on_integer_labels(tmp_path):
    path = write(tmp_path, "stars.csv", [("a", "1"), ("b", "5"), ("c", "3")], ["text", "label"])
    assert not DataFiles(train=path).load().spec.is_regression  # integers alone are classes
    ds = DataFiles(train=path, problem_type="regression").load()
    assert ds.spec.is_regression and ds.labels == [1.0, 5.0, 3.0]


def test_integral_floats_are_classes(tmp_path):
    # pandas writes an integer column holding a gap as 0.0/1.0: still two classes, not a regression.
    path = write(tmp_path, "f.csv", [("a", "1.0"), ("b", "0.0"), ("c", "1.0")], ["text", "label"])
    ds = DataFiles(train=path).load()
    assert not ds.spec.is_regression and ds.spec.label_names == ("0", "1") and ds.labels == [1, 0, 1]
    dev = write(tmp_path, "f-dev.jsonl", [{"text": "x", "label": 1}, {"text": "y", "label": 0.0}])
    assert DataFiles(validation=dev).load("validation", ds.spec).labels == [1, 0]


def test_excel_style_csv(tmp_path):
    # A UTF-8 BOM, CRLF line ends and capitalised headers, as a spreadsheet saves them.
    path = _bad(tmp_path, "x.csv", "\ufeffText,Label\r\ncafé,Yes\r\n\"a, b\",No\r\n".encode())
    ds = DataFiles(train=path).load()
    assert ds.texts == ["café", "a, b"] and ds.spec.label_names == ("No", "Yes")
    assert ds.spec.text_columns == ("Text",) and ds.spec.label_column == "Label"


def test_regression_label_not_a_number(tmp_path):
    path = write(tmp_path, "stars.csv", [("a", "1"), ("b", "high"), ("c", "3")], ["text", "label"])
    with pytest.raises(DataFileError, match=rf"^{path}:3: label 'high' is not a number"):
        DataFiles(train=path, problem_type="regression").load()


def test_spec_pass_and_chunks_match_load(tmp_path):
    rows = [(f"text {i}", ["b", "a", "c"][i % 3]) for i in range(25)]
    data = DataFiles(train=write(tmp_path, "t.csv", rows, ["text", "label"]))
    spec = data.spec()
    full = DataFiles(train=data.train).load()
    assert spec == full.spec
    chunks = list(data.iter_chunks("train", chunk_size=10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert sum((c.labels for c in chunks), []) == full.labels and sum((c.texts for c in chunks), []) == full.texts


def test_name_defaults(tmp_path):
    (tmp_path / "tickets").mkdir()
    rows = [("a", "x"), ("b", "y")]
    assert DataFiles(train=write(tmp_path, "tickets_train.csv", rows, ["text", "label"])).task_name == "tickets"
    assert DataFiles(train=write(tmp_path / "tickets", "train.csv", rows, ["text", "label"])).task_name == "tickets"
    assert DataFiles(train="x.csv", name="support").task_name == "support"


# -- column defaults and their errors ---------------------------------------------------------

def test_default_text_column_order(tmp_path):
    path = write(tmp_path, "s.csv", [("x", "a b", "1"), ("y", "c d", "0")], ["sentence", "text", "label"])
    assert DataFiles(train=path).columns("train") == ("text", None, "label")
    assert DataFiles(train=path, text_column="sentence").load().texts == ["x", "y"]


@pytest.mark.parametrize("header, text, label", [
    (["id", "Review", "Sentiment"], "Review", "Sentiment"),           # a review site's export
    (["utterance", "intent"], "utterance", "intent"),                  # chat intents
    (["question", "category"], "question", "category"),                # one question column is no QNLI pair
    (["title", "body", "label"], "body", "label"),                     # the longer text before its title
    (["text", "sentiment", "label"], "text", "label"),                 # GLUE's names still come first
])
def test_common_column_names_are_found_without_flags(tmp_path, header, text, label):
    rows = [tuple(f"{name} {i}" if name not in (label, "id") else str(i % 2) for name in header) for i in range(4)]
    path = write(tmp_path, "own.csv", rows, header)
    data = DataFiles(train=path)
    assert data.columns("train") == (text, None, label)
    assert data.load().texts == [f"{text} {i}" for i in range(4)]


def test_explicit_text_column_turns_off_pair_default(tmp_path):
    path = write_table(tmp_path, "nli", "csv", ["sentence1", "sentence2", "label"], PAIRS)
    assert not DataFiles(train=path, text_column="sentence1").load().spec.is_pair


def test_missing_default_column_lists_columns(tmp_path):
    path = write(tmp_path, "t.csv", [("hello", "spam")], ["payload", "label"])
    with pytest.raises(DataFileError) as err:
        DataFiles(train=path).load()
    msg = str(err.value)
    assert msg.startswith(f"{path}:1: no text column") and "['payload', 'label']" in msg and "--text-column" in msg
    path = write(tmp_path, "u.csv", [("hello", "spam")], ["text", "kind"])
    with pytest.raises(DataFileError, match=r"u\.csv:1: no label column.*\['text', 'kind'\].*--label-column"):
        DataFiles(train=path).load()


def test_missing_explicit_column_lists_columns(tmp_path):
    path = write(tmp_path, "t.csv", [("hello", "spam")], ["text", "label"])
    with pytest.raises(DataFileError, match=r"t\.csv:1: no column 'queue'; the file's columns are \['text', 'label'\]"):
        DataFiles(train=path, label_column="queue").load()


def test_duplicate_default_column(tmp_path):
    path = write(tmp_path, "d.csv", [("a", "b", "x")], ["text", "Text", "label"])
    with pytest.raises(DataFileError, match=r"d\.csv:1: column 'text' appears 2 times; pass --text-column"):
        DataFiles(train=path).load()


def test_every_field_has_help():
    from dataclasses import fields

    assert all(DataFiles.help(f.name) for f in fields(DataFiles))


def test_validation_must_match_pairness(tmp_path):
    train = write_table(tmp_path, "nli", "csv", ["sentence1", "sentence2", "label"], PAIRS)
    dev = write(tmp_path, "nli-dev.csv", [("A b.", "neutral")], ["sentence1", "label"])
    with pytest.raises(DataFileError, match=r"nli-dev\.csv:1: nli is a sentence-pair task"):
        DataFiles(train=train, validation=dev).load("validation")


def test_validation_without_train_needs_a_spec(tmp_path):
    dev = write(tmp_path, "d.csv", [("a", "x")], ["text", "label"])
    with pytest.raises(DataFileError, match="label set comes from the training file"):
        DataFiles(validation=dev).load("validation")
    spec = DataFiles(train=write(tmp_path, "t.csv", [("a", "x"), ("b", "y")], ["text", "label"])).spec()
    assert DataFiles(validation=dev).load("validation", TaskSpec.from_dict(spec.to_dict())).labels == [0]


# -- malformed files: one line naming the file and the line -----------------------------------

def _bad(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


MALFORMED = [
    # (name, file bytes, split, line, message part)
    ("empty.csv", b"", "train", 1, "empty file"),
    ("ragged.csv", b"text,label\na,x\nb,y,extra\n", "train", 3, "expected 2 comma-separated columns, got 3"),
    ("ragged.tsv", b"text\tlabel\na\tx\nb\n", "train", 3, "expected 2 tab-separated columns, got 1"),
    ("utf.csv", b"text,label\na,x\ncaf\xe9,y\n", "train", 3, "not valid UTF-8"),
    ("utf16.csv", "text,label\na,x\n".encode("utf-16"), "train", 1, "UTF-16 text"),
    ("empty-text.csv", b"text,label\na,x\n  ,y\n", "train", 3, "empty text field 'text'"),
    ("empty-label.csv", b"text,label\na,x\nb,\n", "train", 3, "empty label"),
    ("quote.csv", b'text,label\na,x\n"b,y\nc,x\n', "train", 3, "malformed CSV"),
    ("bad.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", "label": }\n', "train", 2, "not valid JSON"),
    ("list.jsonl", b'{"text": "a", "label": "x"}\n["b", "y"]\n', "train", 2, "expected a JSON object"),
    ("nokey.jsonl", b'{"text": "a", "label": "x"}\n\n{"text": "b"}\n', "train", 3, "no 'label' field"),
    ("number.jsonl", b'{"text": "a", "label": "x"}\n{"text": 5, "label": "y"}\n', "train", 2, "expected text"),
    ("null.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n', "train", 2, "empty label"),
    ("quote.tsv", b'text\tlabel\na\tx\n"Great" film\ty\n', "train", 3, "--format tsv-raw"),
    ("mac.csv", b"text,label\ra,x\rb,y\r", "train", 1, "bare carriage return"),
    ("nan-label.csv", b"text,label\na,x\nb,NaN\nc,y\n", "train", 3, "'NaN', a missing value"),
    ("nan-score.jsonl", b'{"text": "a", "label": 0.5}\n{"text": "b", "label": NaN}\n', "train", 2, "missing value"),
    ("na-label.csv", b"text,label\na,x\nb,#N/A\n", "validation", 3, "missing value"),
    ("unknown.csv", b"text,label\na,x\nb,z\n", "validation", 3, "unknown label 'z'"),
]


@pytest.mark.parametrize("name,content,split,line,part", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_names_file_and_line(tmp_path, name, content, split, line, part):
    path = _bad(tmp_path, name, content)
    train = path if split == "train" else _bad(tmp_path, "good.csv", b"text,label\na,x\nb,y\n")
    with pytest.raises(DataFileError) as err:
        DataFiles(train=train, validation=path).load(split)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: ") and part in msg and "\n" not in msg


def test_header_only_and_single_class(tmp_path):
    path = _bad(tmp_path, "h.csv", b"text,label\n\n")
    with pytest.raises(DataFileError, match=rf"^{path}: no examples"):
        DataFiles(train=path).spec()
    path = _bad(tmp_path, "one.csv", b"text,label\na,x\nb,x\n")
    with pytest.raises(DataFileError, match="every label is 'x'; a classifier needs at least two classes$"):
        DataFiles(train=path).load()  # no regression hint for a name
    path = _bad(tmp_path, "one-number.csv", b"text,label\na,3\nb,3\n")
    with pytest.raises(DataFileError, match="every label is '3'.*--problem-type regression"):
        DataFiles(train=path).load()


def test_multiline_quoted_field_keeps_line_numbers(tmp_path):
    path = _bad(tmp_path, "m.csv", b'text,label\n"two\nlines",x\nb,y\n,x\n')
    ds_err = pytest.raises(DataFileError, match=r"m\.csv:5: empty text")
    with ds_err:
        DataFiles(train=path).load()
    path = _bad(tmp_path, "n.csv", b'text,label\n"two\nlines",x\nb,y\n')
    assert DataFiles(train=path).load().texts == ["two\nlines", "b"]


def test_format_from_extension_or_option(tmp_path):
    path = write(tmp_path, "data.txt", [("a", "x"), ("b", "y")], ["text", "label"])
    with pytest.raises(DataFileError, match=r"data\.txt: cannot tell the format.*--format csv\|tsv\|tsv-raw\|jsonl"):
        DataFiles(train=path).load()
    assert DataFiles(train=path, format="csv").load().texts == ["a", "b"]
    with pytest.raises(DataFileError, match="unknown data format 'xml'"):
        DataFiles(train=path, format="xml")
    with pytest.raises(DataFileError, match=r"nope\.csv not found"):
        DataFiles(train=tmp_path / "nope.csv").load()


def test_config_checks_itself_and_round_trips(tmp_path):
    with pytest.raises(DataFileError, match="give a training file"):
        DataFiles()
    with pytest.raises(DataFileError, match="unknown problem type 'multi_label'"):
        DataFiles(train="a.csv", problem_type="multi_label")
    data = DataFiles(train=tmp_path / "a.csv", problem_type="classification", format="JSONL")
    assert data.problem_type == "single_label_classification" and data.format == "jsonl"
    assert DataFiles.from_dict(json.loads(json.dumps(data.to_dict()))) == data


def test_spec_round_trips_through_json(tmp_path):
    spec = DataFiles(train=write_table(tmp_path, "nli", "jsonl", ["sentence1", "sentence2", "label"], PAIRS)).spec()
    back = TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and get_task(back) is back
    for name in TASKS:  # GLUE presets round-trip too
        assert TaskSpec.from_dict(json.loads(json.dumps(TASKS[name].to_dict()))) == TASKS[name]


def test_spec_rebuilt_from_manifest_fields(tmp_path):
    # An exported model's manifest keeps task, labels, problem_type and pair_input: enough to score it.
    manifest = {"task": "reviews", "labels": ["negative", "positive"], "problem_type": "single_label_classification",
                "pair_input": False}
    spec = TaskSpec.custom(manifest["task"], manifest["labels"], manifest["problem_type"], manifest["pair_input"])
    dev = write(tmp_path, "dev.csv", [("good", "positive"), ("bad", "negative")], ["text", "label"])
    ds = DataFiles(validation=dev).load("validation", spec)
    assert ds.labels == [1, 0] and compute_metrics(spec, [1, 1], ds.labels) == {"accuracy": 0.5, "f1_macro": 1 / 3}
    assert TaskSpec.custom("sts", problem_type="regression", is_pair=True).metrics == ("pearson", "spearman")
    with pytest.raises(DataError, match="at least two labels"):
        TaskSpec.custom("x", ["only"])
    with pytest.raises(DataError, match="label names repeat"):
        TaskSpec.custom("x", ["a", "a"])


def test_fingerprint_follows_content(tmp_path):
    path = write(tmp_path, "t.csv", [("a", "x"), ("b", "y")], ["text", "label"])
    data = DataFiles(train=path)
    before = data.fingerprint()
    assert DataFiles(train=path).fingerprint() == before
    assert DataFiles(train=path, label_column="label").fingerprint() != before
    # The same file reached by another path, or a copy in another folder: the same key (no second teacher).
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "t.csv").write_bytes(path.read_bytes())
    assert DataFiles(train=tmp_path / "copy" / ".." / "t.csv").fingerprint() == before
    assert DataFiles(train=tmp_path / "copy" / "t.csv").fingerprint() == before
    write(tmp_path, "t.csv", [("a", "x"), ("c", "y")], ["text", "label"])
    assert data.fingerprint() != before
    # The same bytes split differently between the two files are other data.
    for name, (train, dev) in {"one": (b"text,label\nab,x\n", b"c,y\n"), "two": (b"text,label\na", b"b,x\nc,y\n")}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "t.csv").write_bytes(train)
        (tmp_path / name / "v.csv").write_bytes(dev)
    assert DataFiles(train=tmp_path / "one" / "t.csv", validation=tmp_path / "one" / "v.csv").fingerprint() != \
        DataFiles(train=tmp_path / "two" / "t.csv", validation=tmp_path / "two" / "v.csv").fingerprint()


def test_check_labels():
    spec = get_task("sst2")
    check_labels(spec, ["negative", "positive"])
    with pytest.raises(DataFileError, match=r"orders its labels \['positive', 'negative'\]"):
        check_labels(spec, ["positive", "negative"], "the teacher")
    with pytest.raises(DataFileError, match=r"only in the data \['negative'\], only in the teacher \['neg'\]"):
        check_labels(spec, ["neg", "positive"], "the teacher")


def test_cli_turns_a_bad_file_into_one_error(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from kronedge.cli import friendly_errors

    app = typer.Typer()

    @app.command()
    @friendly_errors
    def load(train: str):
        DataFiles(train=train).load()

    monkeypatch.chdir(tmp_path)
    _bad(tmp_path, "r.csv", b"text,label\na,x\nb,y,z\n")
    result = CliRunner().invoke(app, ["r.csv"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    # The message is one line; the CLI's console may still fold it at the terminal width (issue #14 item 4).
    assert "error: r.csv:3: expected 2 comma-separated columns, got 3" in " ".join(result.output.split())


# -- TaskSource: what a command builds from --task or --train/--validation ------------------------

def test_task_source_glue_preset_is_load_task():
    source = TaskSource.from_options(task="SST-2")
    assert source.spec is TASKS["sst2"] and source.cache_key() == "sst2" and source.name == "sst2"
    dev = source.load("validation")
    assert dev.texts == load_task("sst2", "dev").texts and dev.labels == load_task("sst2", "dev").labels


def test_task_source_files(tmp_path):
    train = write(tmp_path, "tickets.csv", [("refund please", "billing"), ("app crashes", "bug")], ["text", "label"])
    dev = write(tmp_path, "tickets-dev.csv", [("crash on start", "bug")], ["text", "label"])
    source = TaskSource.from_options(train=train, validation=dev)
    assert source.spec.label_names == ("billing", "bug") and source.load("dev").labels == [1]
    assert source.name == "tickets" and source.cache_key().startswith("tickets-")
    back = TaskSource.from_dict(json.loads(json.dumps(source.to_dict())))
    assert back == source and back.cache_key() == source.cache_key()
    key = source.cache_key()
    write(tmp_path, "tickets.csv", [("refund please", "billing"), ("app hangs", "bug")], ["text", "label"])
    assert TaskSource.from_options(train=train, validation=dev).cache_key() != key


def test_check_reads_every_file_up_front(tmp_path):
    train = write(tmp_path, "t.csv", [("a", "x"), ("b", "y")], ["text", "label"])
    dev = _bad(tmp_path, "v.csv", b"text,label\na,x\nb,z\n")
    source = TaskSource.from_options(train=train, validation=dev)
    source.check(splits=("train",))  # the validation file is not read
    with pytest.raises(DataFileError, match=r"v\.csv:3: unknown label 'z'"):
        source.check()
    # Without a training file or a spec, columns and texts are still checked.
    blank = _bad(tmp_path, "w.csv", b"text,label\na,x\n ,y\n")
    with pytest.raises(DataFileError, match=r"w\.csv:3: empty text"):
        TaskSource.from_options(validation=blank).check(splits=("dev",))
    TaskSource.from_options(task="rte").check()
    with pytest.raises(DataError, match="does not ship"):
        TaskSource.from_options(task="mrpc").check(splits=("dev",))


@pytest.mark.parametrize("options,message", [
    ({"task": "sst2", "train": "t.csv"}, "give --task sst2 or --train FILE, not both"),
    ({"task": "sst2", "validation": "v.csv"}, "give --task sst2 or --validation FILE, not both"),  # as eval has it
    ({}, "give a GLUE task"),
    ({"task": "imdb"}, "unknown task 'imdb'"),
    ({"label_column": "queue"}, "--label-column applies to data files"),
    ({"train": "t.csv", "data_dir": "glue"}, "--data-dir is for GLUE tasks"),
])
def test_task_source_option_errors(options, message):
    with pytest.raises(DataError, match=message):
        TaskSource.from_options(**options)


# -- metrics ----------------------------------------------------------------------------------

def test_f1_macro_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for n_classes in (2, 3, 7):
        labels, pred = rng.integers(0, n_classes, 50), rng.integers(0, n_classes, 50)
        pred[pred == n_classes - 1] = 0  # a class never predicted
        assert f1_macro(pred, labels) == pytest.approx(metrics.f1_score(labels, pred, average="macro"))
    assert f1_macro([0, 0, 0, 0], [0, 1, 0, 1]) == pytest.approx(metrics.f1_score([0, 1, 0, 1], [0, 0, 0, 0],
                                                                                 average="macro", zero_division=0))


def test_class_report_matches_sklearn_and_names_the_weakest(tmp_path):
    from kronedge.commands.distill import weakest_classes
    from kronedge.data import class_report

    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    names = [f"c{i}" for i in range(8)]
    spec = TaskSpec.custom("eight", tuple(names), "single_label_classification", False, ("text",), "label", "t.csv")
    labels, pred = rng.integers(0, 6, 80), rng.integers(0, 7, 80)  # c6 never gold, c0 never predicted, c7 absent
    pred[pred == 0] = 1
    report = class_report(spec, pred, labels)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(labels, pred, labels=range(7),
                                                                             zero_division=0)
    assert list(report) == names
    for i, name in enumerate(names[:7]):
        row = report[name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[i], recall[i], f1[i]))
        assert row["support"] == support[i] and row["predicted"] == int((pred == i).sum())
    assert report["c7"] == {"precision": None, "recall": None, "f1": None, "support": 0, "predicted": 0}
    weakest = weakest_classes(report, shown=8)
    assert weakest.startswith("c0 0.00 (") and "c7" not in weakest  # neither in the file nor predicted: no score
    assert f"c6 0.00 (0 examples, {(pred == 6).sum()} predicted)" in weakest  # predicted, never gold: a weak class
    assert weakest_classes(class_report("sst2", [1, 0], [1, 1])) == ""  # two classes: the metrics say it all
    assert weakest_classes(class_report(spec, [0, 1, 2], [0, 1, 2])) == ""  # all perfect: nothing to point at


def test_confusions_are_the_nonzero_off_diagonal_cells_most_frequent_first():
    from kronedge.commands.distill import most_confused
    from kronedge.data import classification_report, confusions

    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    names = [f"c{i}" for i in range(6)]
    spec = TaskSpec.custom("six", tuple(names), "single_label_classification", False, ("text",), "label", "t.csv")
    labels = rng.integers(0, 6, 120)
    pred = np.where(rng.random(120) < 0.5, labels, rng.integers(0, 6, 120))
    pred[(labels == 2) & (rng.random(120) < 0.8)] = 4  # one pair mixed up far more than the rest
    found = confusions(spec, pred, labels)
    matrix = metrics.confusion_matrix(labels, pred, labels=range(6))
    expected = {(names[g], names[p]): int(matrix[g, p]) for g in range(6) for p in range(6) if g != p and matrix[g, p]}
    assert {(c["gold"], c["predicted"]): c["count"] for c in found} == expected and len(found) == len(expected)
    counts = [c["count"] for c in found]
    assert counts == sorted(counts, reverse=True) and (found[0]["gold"], found[0]["predicted"]) == ("c2", "c4")
    assert sum(counts) == int((pred != labels).sum())
    assert confusions(spec, labels, labels) == []  # no errors, no pairs
    assert classification_report(spec, pred, labels)["confusions"] == found
    one_hot = np.eye(6)[pred]  # logits are read by argmax, as class_report reads them
    assert confusions(spec, one_hot, labels) == found
    shown = most_confused(found, 6)
    assert shown.startswith(f"c2 -> c4 {found[0]['count']}, ") and shown.count(" -> ") == 3
    assert most_confused(confusions("sst2", [1, 0], [0, 1]), 2) == ""  # two classes: per-class scores say it


def test_correlations():
    x, y = [0.5, 1.0, 4.0, 2.0], [0.0, 1.0, 5.0, 1.5]  # same order, not linear
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert spearman(x, y) == pytest.approx(1.0) and pearson(x, y) < 0.99
    assert pearson([1, 1, 1], [0, 1, 2]) == 0.0 and not math.isnan(spearman([2, 2, 2], [0, 1, 2]))


def test_glue_presets_keep_their_metrics():
    assert {n: TASKS[n].metrics for n in ("sst2", "mrpc", "qqp", "cola", "stsb")} == {
        "sst2": ("accuracy",), "mrpc": ("accuracy", "f1"), "qqp": ("accuracy", "f1"),
        "cola": ("accuracy", "matthews"), "stsb": ("pearson", "spearman")}
    assert compute_metrics("sst2", [1, 0], [1, 1]) == {"accuracy": 0.5}
    assert compute_metrics(get_task("sst2"), [1, 0], [1, 1]) == {"accuracy": 0.5}
    with pytest.raises(DataError, match="unknown task"):
        compute_metrics("movie-reviews", [1], [1])


# -- the shipped example and memory -----------------------------------------------------------

def test_shipped_movie_reviews_match_sst2():
    data = DataFiles(train=MOVIE_REVIEWS / "train.csv", validation=MOVIE_REVIEWS / "validation.csv")
    train, dev = data.load("train"), data.load("validation")
    assert train.spec.name == "movie-reviews" and train.spec.label_names == ("negative", "positive")
    assert (len(train), len(dev)) == (4000, 872)
    sst2 = load_task("sst2", "dev")  # the validation file is SST-2 dev with its labels named
    assert dev.texts == sst2.texts and dev.labels == sst2.labels


def _big_csv(tmp_path, rows=12_000):
    # A wide file: the text is a small share of each row, as with a real export that carries metadata.
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "notes", "text", "label"])
        for i in range(rows):
            w.writerow([i, f"note {i} " + "x" * 600, f"review number {i} is fine", ["neg", "pos", "mid"][i % 3]])
    return path


def test_large_file_streams(tmp_path):
    path = _big_csv(tmp_path)
    size = path.stat().st_size
    assert size > 7_000_000
    data = DataFiles(train=path)

    tracemalloc.start()
    try:
        ds = data.load("train")
        _, load_peak = tracemalloc.get_traced_memory()
        kept = sum(len(t) for t in ds.texts)
        del ds
        tracemalloc.reset_peak()
        count = sum(len(chunk) for chunk in data.iter_chunks("train", chunk_size=500))
        _, chunk_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 12_000
    # Reading the file whole (bytes + decoded text) would alone take 2x its size; streaming keeps
    # about the text column (~0.3 MB of characters, ~1 MB as str objects) plus one row at a time.
    assert load_peak < size / 4, (load_peak, size, kept)
    assert chunk_peak < 1_000_000, chunk_peak


def test_a_pair_layout_found_only_in_validation_says_it_was_detected(tmp_path):
    train = _bad(tmp_path, "train.csv", b"text,label\na,x\nb,y\n")
    dev = _bad(tmp_path, "dev.csv", b"sentence1,sentence2,label\na,b,x\nc,d,y\n")
    with pytest.raises(DataFileError, match="'sentence1' and 'sentence2' were read as a sentence pair; pass --text-column"):
        DataFiles(train=train, validation=dev).load("validation")


@pytest.mark.parametrize("name", ["tickets/v2", "..", "a\\b"])
def test_a_task_name_cannot_leave_its_directory(tmp_path, name):
    train = _bad(tmp_path, "train.csv", b"text,label\na,x\nb,y\n")
    with pytest.raises(DataFileError, match="becomes a file name"):
        DataFiles(train=train, name=name)


def test_tsv_raw_reads_quotes_as_plain_characters(tmp_path):
    path = _bad(tmp_path, "raw.tsv", b'text\tlabel\n"Great" film\tx\nok "so"\ty\n')
    data = DataFiles(train=path, format="tsv-raw").load()
    assert data.texts == ['"Great" film', 'ok "so"']


def test_class_ids_match_an_unnamed_head_by_position(tmp_path):
    from kronedge.data import TaskSpec

    dev = _bad(tmp_path, "dev.csv", b"text,label\na,1\nb,0\nc,1.0\n")
    spec = TaskSpec.custom("dense", ["LABEL_0", "LABEL_1"], data_file="dev.csv")
    assert DataFiles(validation=dev).load("validation", spec).labels == [1, 0, 1]
    named = TaskSpec.custom("named", ["negative", "positive"], data_file="dev.csv")
    with pytest.raises(DataFileError, match="unknown label '1'"):  # named labels are still matched by name
        DataFiles(validation=dev).load("validation", named)


# -- a training file alone: the validation set held out of it ------------------------------------------------

def test_a_training_file_alone_holds_out_every_tenth_row_of_each_label(tmp_path):
    rows = [(f"text {i}", "rare" if i % 7 == 0 else "common") for i in range(140)]  # 20 rare rows, 120 common
    path = write(tmp_path, "own.csv", rows, ["Review", "Sentiment"])
    split = DataFiles(train=path).held_out(tmp_path / "data")
    assert split.task_name == "own" and split.columns("validation") == ("Review", None, "Sentiment")
    expected = [text for label in ("common", "rare") for text in [t for t, l in rows if l == label][9::10]]
    dev, train = split.load("validation"), split.load("train")
    assert sorted(dev.texts) == sorted(expected)  # the 10th, 20th ... row of each label, both labels scored
    assert sorted(train.texts + dev.texts) == sorted(t for t, _ in rows)
    assert split.spec().label_names == ("common", "rare")
    assert [dev.spec.label_names[y] for y in dev.labels] == [dict(rows)[t] for t in dev.texts]
    DataFiles(train=path).held_out(tmp_path / "again")  # the same file, the same split, byte for byte
    for part in ("train", "validation"):
        assert (tmp_path / "again" / f"own-{part}.jsonl").read_bytes() == (tmp_path / "data" / f"own-{part}.jsonl").read_bytes()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["own-train.jsonl", "own-validation.jsonl"]


def test_held_out_validation_keeps_pairs_number_labels_and_regression(tmp_path):
    pairs = write(tmp_path, "nli.jsonl", [{"premise": f"p {i}", "hypothesis": f"h {i}", "y": i % 2} for i in range(40)])
    split = DataFiles(train=pairs, label_column="y").held_out(tmp_path / "nli")
    assert split.columns("train") == ("premise", "hypothesis", "y") and split.spec().is_pair
    assert split.spec().label_names == DataFiles(train=pairs, label_column="y").spec().label_names == ("0", "1")
    assert len(split.load("validation").texts) == 4
    scores = write(tmp_path, "scores.csv", [(f"t {i}", f"{i / 8:.3f}") for i in range(30)], ["text", "score"])
    split = DataFiles(train=scores).held_out(tmp_path / "scores")
    dev = split.load("validation")
    assert split.spec().is_regression and dev.texts == ["t 9", "t 19", "t 29"]  # every 10th row of all
    assert dev.labels == pytest.approx([9 / 8, 19 / 8, 29 / 8], abs=1e-3)


def test_held_out_validation_stays_near_its_row_cap_and_refuses_too_few_rows(tmp_path, monkeypatch):
    import kronedge.data.files as files

    path = write(tmp_path, "own.csv", [(f"text {i}", i % 2) for i in range(140)], ["text", "label"])
    monkeypatch.setattr(files, "HOLDOUT_ROWS", 5)  # 140 rows: every 28th row of each label, not every 10th
    assert len(DataFiles(train=path).held_out(tmp_path / "capped").load("validation").texts) == 2 * (70 // 28)
    few = write(tmp_path, "few.csv", [(f"text {i}", i % 3) for i in range(27)], ["text", "label"])
    with pytest.raises(DataFileError, match=r"few\.csv: no label has the 10 rows .* pass --validation FILE"):
        DataFiles(train=few).held_out(tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_held_out_validation_keeps_a_repeated_text_on_one_side(tmp_path):
    rows = [(f"text {i % 25}", i % 2) for i in range(100)]  # every text four times, under both labels
    path = write(tmp_path, "dup.csv", rows, ["text", "label"])
    split = DataFiles(train=path).held_out(tmp_path / "data")
    train, dev = split.load("train"), split.load("validation")
    assert dev.texts and not set(dev.texts) & set(train.texts)
    assert len(train.texts) + len(dev.texts) == 100
    same = write(tmp_path, "same.csv", [("one text", i % 2) for i in range(40)], ["text", "label"])
    with pytest.raises(DataFileError, match="repeat too few texts"):
        DataFiles(train=same).held_out(tmp_path / "same")
    assert not list((tmp_path / "same").glob("*.jsonl")) and not list((tmp_path / "same").glob(".*"))


def test_a_semicolon_separated_csv_is_read_by_its_header(tmp_path, caplog):
    """Spreadsheets where the comma is the decimal mark save a .csv with semicolons; a header with a comma keeps
    the comma, also when its semicolons sit inside quotes."""
    path = _bad(tmp_path, "semi.csv", "\ufefftext;label\r\n\"a; b, c\";pos\r\nbad;neg\r\n".encode())
    with caplog.at_level("INFO", logger="kronedge.data.files"):
        DataFiles(train=path).spec()
    ds = DataFiles(train=path).load()
    assert ds.texts == ["a; b, c", "bad"] and ds.spec.label_names == ("neg", "pos")
    assert "(semicolon-separated)" in caplog.text
    commas = _bad(tmp_path, "commas.csv", b'"text;x",label\n"a;b",pos\nc,neg\n')
    assert DataFiles(train=commas, text_column="text;x").load().texts == ["a;b", "c"]
    ragged = _bad(tmp_path, "ragged.csv", b"text;label\na;pos\nb;neg;extra\n")
    with pytest.raises(DataFileError, match="ragged.csv:3: expected 2 semicolon-separated columns, got 3"):
        DataFiles(train=ragged).load()


def test_labels_that_differ_only_in_case_stay_apart_named_in_a_warning(tmp_path, caplog):
    rows = [("a", "pos"), ("b", "POS"), ("c", "neg"), ("d", "neg")]
    with caplog.at_level("WARNING", logger="kronedge.data.examples"):
        ds = DataFiles(train=write(tmp_path, "case.csv", rows, ["text", "label"])).load()
    assert ds.spec.label_names == ("POS", "neg", "pos")
    assert "the labels 'POS', 'pos' differ only in case and are 2 classes" in caplog.text
    assert "'neg'" not in caplog.text
