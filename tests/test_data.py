"""GLUE loaders (every layout, strict errors) and metrics."""

import math

import pytest

from kronedge.data import TASKS, DataError, compute_metrics, get_task, load_corpus, load_task, read_tsv
from kronedge.data.metrics import matthews, spearman

T = "\t"
# One tiny sample per GLUE layout: (task, file stem, lines, expected first text, expected labels).
SAMPLES = [
    ("cola", "train", ["gj04\t1\t\tThe sailors rode the breeze.", "gj04\t0\t*\tThe more does Bill smoke."],
     "The sailors rode the breeze.", [1, 0]),
    ("sst2", "dev", ["sentence\tlabel", "a charming journey . \t1", "bleak \t0"], "a charming journey .", [1, 0]),
    ("mrpc", "dev", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t1\t2\tHe said .\tHe stated .",
                     "0\t3\t4\tA cat .\tA dog ."], ("He said .", "He stated ."), [1, 0]),
    ("stsb", "dev", ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
                     "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man plays.\tA man is playing.\t5.000"],
     ("A man plays.", "A man is playing."), [5.0]),
    ("qqp", "dev", ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "1\t2\t3\tWhy \"x\"?\tWhy x?\t1"],
     ('Why "x"?', "Why x?"), [1]),
    ("mnli", "dev_matched", ["index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                             "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
                             "0\t1\t2\tgov\t(a)\t(b)\t(A)\t(B)\tThe cat sat.\tA cat sat.\tentailment\tentailment",
                             "1\t1\t2\tgov\t(a)\t(b)\t(A)\t(B)\tThe cat sat.\tNo cat.\tcontradiction\tcontradiction"],
     ("The cat sat.", "A cat sat."), [0, 2]),
    ("mnli-mm", "dev_mismatched", ["index\tsentence1\tsentence2\tgold_label", "0\tA b.\tC d.\tneutral"],
     ("A b.", "C d."), [1]),
    ("qnli", "dev", ["index\tquestion\tsentence\tlabel", '0\tWhat "is" it?\tIt is.\tentailment'],
     ('What "is" it?', "It is."), [0]),
    ("rte", "dev", ["index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tnot_entailment"], ("A.", "B."), [1]),
    ("wnli", "train", ["index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\t1"], ("A.", "B."), [1]),
]


def _write(tmp_path, task, stem, lines, encoding="utf-8"):
    folder = tmp_path / get_task(task).folder
    folder.mkdir(exist_ok=True)
    path = folder / f"{stem}.tsv"
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def test_every_task_has_a_sample():
    assert {s[0] for s in SAMPLES} == set(TASKS)


@pytest.mark.parametrize("task,stem,lines,first,labels", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_layouts_parse(tmp_path, task, stem, lines, first, labels):
    _write(tmp_path, task, stem, lines)
    split = "train" if stem == "train" else "dev"
    ds = load_task(task, split, data_dir=tmp_path)
    assert ds.texts[0] == first
    assert ds.labels == labels
    assert ds.spec.primary_metric in compute_metrics(task, ds.labels, ds.labels)


@pytest.mark.parametrize("task,stem,lines,first,labels", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_missing_column_names_file_and_line(tmp_path, task, stem, lines, first, labels):
    bad = lines + [lines[-1].rsplit(T, 1)[0]]  # last row without its last column
    path = _write(tmp_path, task, stem, bad)
    with pytest.raises(DataError, match=rf"{path.name}:{len(bad)}: expected"):
        read_tsv(get_task(task), path)


def test_unknown_label(tmp_path):
    path = _write(tmp_path, "sst2", "dev", ["sentence\tlabel", "good \t1", "bad \tpositive"])
    with pytest.raises(DataError, match=r"dev.tsv:3: unknown label 'positive'"):
        read_tsv(get_task("sst2"), path)


def test_bad_encoding(tmp_path):
    path = _write(tmp_path, "sst2", "dev", ["sentence\tlabel", "ok \t1", "caf\u00e9 \t0"], encoding="latin-1")
    with pytest.raises(DataError, match=r"dev.tsv:3: not valid UTF-8"):
        read_tsv(get_task("sst2"), path)


def test_regression_label_must_be_number(tmp_path):
    lines = list(SAMPLES[3][2])
    lines[1] = lines[1].rsplit(T, 1)[0] + "\thigh"
    path = _write(tmp_path, "stsb", "dev", lines)
    with pytest.raises(DataError, match=r":2: label 'high' is not a number"):
        read_tsv(get_task("stsb"), path)


def test_unknown_task_and_unshipped_task():
    with pytest.raises(DataError, match="unknown task"):
        get_task("imdb")
    with pytest.raises(DataError, match="does not ship"):
        load_task("mrpc", "dev")


def test_shipped_data():
    assert len(load_task("sst2", "dev")) == 872
    assert len(load_task("SST-2", "train")) == 67349
    assert len(load_task("cola", "dev")) == 1043
    rte = load_task("rte", "dev")
    assert len(rte) == 277 and rte.spec.is_pair
    chunks = load_corpus(limit=100)
    assert len(chunks) == 100 and all(len(c.split()) <= 48 for c in chunks)
    valid, both = load_corpus("wikitext-2"), load_corpus("wikitext-2-all")
    assert both[:len(valid)] == valid and len(both) > 2 * len(valid) - 500  # the test split is a bit larger


def test_metrics():
    assert compute_metrics("sst2", [[0.1, 0.9], [2.0, 1.0]], [1, 1]) == {"accuracy": 0.5}
    m = compute_metrics("mrpc", [1, 0, 1, 1], [1, 1, 1, 0])
    assert m["f1"] == pytest.approx(2 / 3)
    assert matthews([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert matthews([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0
    # Reference values from scipy.stats and sklearn.metrics.matthews_corrcoef.
    assert matthews([1, 1, 0, 1, 0], [1, 1, 0, 0, 1]) == pytest.approx(1 / 6)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486833)
    s = compute_metrics("stsb", [0.5, 1.0, 4.0], [0.0, 2.0, 5.0])
    assert math.isclose(s["pearson"], 0.9621032142443144, rel_tol=1e-6)
