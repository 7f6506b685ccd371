"""Teacher-labelled augmentation for stage 2: pair structure, teacher targets, no dev leak, seeds, the CLI."""

import json
import math

import pytest
import torch

from kronedge.augment import NO_LABEL, OPERATIONS, AugmentConfig, Augmenter, read_unlabelled, stage2_examples
from kronedge.data import TaskData, TaskSpec
from kronedge.training import TrainingError

SENTENCES = ["the cat sat on the mat", "a dog ran in the park today", "birds sing", "rain", "it was a long and cold night"]
PAIRS = [("a man plays a guitar", "someone makes music"), ("it rains", "the weather is dry"),
         ("two kids run on the beach", "children are outside"), ("the shop is closed", "you can buy bread now")]


def task(texts, labels=None, split="train", regression=False, pair=False):
    spec = TaskSpec.custom("toy", problem_type="regression" if regression else "single_label_classification",
                           label_names=("no", "yes"), is_pair=pair)
    labels = labels if labels is not None else [float(i % 2) if regression else i % 2 for i in range(len(texts))]
    return TaskData(spec, split, list(texts), labels)


@pytest.mark.parametrize("op", OPERATIONS)
def test_each_edit_keeps_kind_and_never_empties(op):
    new = Augmenter(AugmentConfig(copies=3, operations=(op,))).augment(SENTENCES)
    assert len(new) == 3 * len(SENTENCES)
    assert all(isinstance(t, str) and t.split() for t in new)
    originals = {w for s in SENTENCES for w in s.split()}
    if op == "replace":  # replacement words come from the text itself
        assert {w for t in new for w in t.split()} <= originals
    if op in ("span", "dropout"):  # words only go; the rest keep their order
        for i, t in enumerate(new):
            source = SENTENCES[i // 3].split()
            it = iter(source)
            assert all(w in it for w in t.split()), (t, source)
    if op == "mask":
        assert any("[MASK]" in t for t in new)


def test_pairs_stay_pairs_and_repairing_takes_another_rows_second_sentence():
    new = Augmenter(AugmentConfig(copies=8, repair_prob=0.5, operations=("mask",), mask_prob=0.0)).augment(PAIRS)
    assert len(new) == 8 * len(PAIRS)
    assert all(isinstance(t, tuple) and len(t) == 2 and all(s.split() for s in t) for t in new)
    firsts, seconds = {a for a, _ in PAIRS}, [b for _, b in PAIRS]
    repaired = 0
    for i, (a, b) in enumerate(new):
        src = PAIRS[i // 8]
        # mask_prob 0 still masks one word per side: compare the unmasked words
        def same(x, y):
            return all(u == v or u == "[MASK]" for u, v in zip(x.split(), y.split())) and len(x.split()) == len(y.split())
        assert same(a, src[0]) and not any(same(a, f) for f in firsts - {src[0]})  # the first sentence stays
        match = [j for j, s in enumerate(seconds) if same(b, s)]
        assert len(match) == 1
        repaired += match[0] != i // 8
    assert 0 < repaired < len(new)


def test_deterministic_with_a_seed_and_different_across_seeds():
    def make(seed):
        return Augmenter(AugmentConfig(copies=4, seed=seed)).augment(SENTENCES + PAIRS[:0])

    assert make(0) == make(0)
    assert make(0) != make(1)
    assert Augmenter(AugmentConfig(copies=0)).augment(SENTENCES) == []


@pytest.mark.parametrize("kwargs,match", [
    ({"copies": -1}, "whole number"), ({"copies": 1.5}, "whole number"), ({"mask_prob": 1.0}, "mask_prob"),
    ({"operations": ("shuffle",)}, "operations"), ({"operations": ()}, "operations"), ({"mask_token": ""}, "mask_token"),
])
def test_config_checks_itself(kwargs, match):
    with pytest.raises(TrainingError, match=match):
        AugmentConfig(**kwargs)


@pytest.mark.parametrize("regression", [False, True])
def test_added_rows_carry_no_gold_label(regression):
    train = task(SENTENCES, regression=regression)
    texts, labels = stage2_examples(train, AugmentConfig(copies=2))
    assert texts[:len(SENTENCES)] == SENTENCES and labels[:len(SENTENCES)] == train.labels
    assert len(texts) == len(labels) == 3 * len(SENTENCES)
    added = labels[len(SENTENCES):]
    assert all(math.isnan(y) for y in added) if regression else added == [NO_LABEL] * 2 * len(SENTENCES)


def _tiny(seed, labels=2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32, num_labels=labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config).eval()


def _batch(labels):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 60, (len(labels), 6), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": torch.tensor(labels)}


@pytest.mark.parametrize("num_labels", [2, 1])
def test_targets_of_added_rows_come_from_the_teacher_not_the_source_label(num_labels):
    from kronedge.distill import DistillConfig, Distiller

    no = float("nan") if num_labels == 1 else NO_LABEL
    student, losses = _tiny(1, num_labels), DistillConfig.task(attention=0.0, embedding=0.0, hidden=0.0)
    added = _batch([no, no, no])
    loss, parts = Distiller(_tiny(0, num_labels), student, losses)(student, added)
    assert parts["supervised"] == 0 and loss > 0  # only the teacher's logits train on these rows
    # Another teacher, another target; the loss equals the logit KD against that teacher alone
    loss2, parts2 = Distiller(_tiny(2, num_labels), student, losses)(student, added)
    assert not torch.isclose(parts["logits"], parts2["logits"])
    assert torch.isclose(loss2, parts2["logits"])
    # In a mixed batch, the gold label counts for the labelled row only
    y = 1.0 if num_labels == 1 else 1
    mixed = _batch([y, no, no])
    _, with_added = Distiller(_tiny(0, num_labels), student, losses)(student, mixed)
    alone = {k: v[:1] for k, v in mixed.items()}
    _, labelled = Distiller(_tiny(0, num_labels), student, losses)(student, alone)
    assert torch.isclose(with_added["supervised"], labelled["supervised"], atol=1e-6)
    # a trainable step: the all-added batch backpropagates without NaN
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)


def test_dev_rows_never_reach_training(tmp_path):
    train = task(SENTENCES)
    dev_texts = ["zebra quantum violin", "xylophone nebula"]
    with pytest.raises(AssertionError, match="training split only"):
        stage2_examples(task(dev_texts, split="dev"), AugmentConfig(copies=2))
    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("zebra quantum violin\n\nfresh text about a cat\n")
    texts, labels = stage2_examples(train, AugmentConfig(copies=5), dev_texts=dev_texts,
                                    unlabelled=read_unlabelled(unlabelled, is_pair=False))
    assert "fresh text about a cat" in texts and len(texts) == 6 * len(SENTENCES) + 1
    dev_words = {w for t in dev_texts for w in t.split()}
    assert not any(set(t.split()) & dev_words for t in texts)  # no dev text, no dev word via replacement


def test_unlabelled_file_errors_are_one_line(tmp_path):
    from kronedge.data import DataError

    bad = tmp_path / "pairs.txt"
    bad.write_text("only one side\n")
    with pytest.raises(DataError, match=r"pairs.txt:1 needs two texts"):
        read_unlabelled(bad, is_pair=True)
    bad.write_text("first\tsecond\n")
    assert read_unlabelled(bad, is_pair=True) == [("first", "second")]
    with pytest.raises(DataError, match="is not a file"):
        read_unlabelled(tmp_path / "missing.txt", is_pair=False)


def test_compress_config_checks_augment():
    from kronedge.recipe import CompressConfig

    assert CompressConfig().augment == 0
    with pytest.raises(TrainingError, match="whole number"):
        CompressConfig(augment=-1)
    with pytest.raises(TrainingError, match="need the KD losses"):
        CompressConfig(augment=2, stage2_kd=False)
    assert not CompressConfig(augment=2).same_recipe(CompressConfig().to_dict())


@pytest.mark.slow
def test_cli_augment_reaches_the_stage2_trainer(tmp_path, monkeypatch):
    from helpers import tiny_bert as shared_tiny_bert, tokenizer_dir
    from typer.testing import CliRunner

    from kronedge.artifact import copy_tokenizer
    from kronedge.cli import app

    monkeypatch.chdir(tmp_path)
    teacher = tmp_path / "teacher"
    shared_tiny_bert(seed=0).save_pretrained(teacher)
    copy_tokenizer(tokenizer_dir(), teacher)
    args = ["compress", "--teacher", str(teacher), "--compression", "4", "--no-stage1", "--stage2-examples", "12",
            "--max-length", "32", "--min-steps", "0", "--stage2-min-steps", "0", "--patience", "0", "--precision", "fp32", "--no-teacher-check",
            "--out", "art", "--json"]
    runner = CliRunner()
    result = runner.invoke(app, args + ["--run-dir", "run3", "--augment", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run3" / "stage2" / "config.json").read_text())["examples"] == 12 * (1 + 3)
    assert json.loads((tmp_path / "run3" / "compress_config.json").read_text())["augment"] == 3
    # resume rebuilds the same set (same examples, no retraining); another multiplier is refused
    again = runner.invoke(app, args + ["--run-dir", "run3", "--augment", "3", "--resume"])
    assert again.exit_code == 0, again.output
    first, resumed = (json.loads(r.stdout[r.stdout.index("{\n"):]) for r in (result, again))
    assert resumed["student_metrics"] == first["student_metrics"]
    assert json.loads((tmp_path / "run3" / "stage2" / "config.json").read_text())["examples"] == 48
    other = runner.invoke(app, args + ["--run-dir", "run3", "--augment", "2", "--resume"])
    assert other.exit_code == 1 and "another recipe (augment 3 -> 2)" in " ".join(other.output.split())


@pytest.mark.parametrize("extra,match", [
    (["--augment", "-1"], "whole number"),
    (["--augment", "2", "--no-kd"], "need the KD losses"),
    (["--unlabelled", "missing.txt"], "is not a file"),
])
def test_cli_refuses_bad_augment_options_before_training(tmp_path, monkeypatch, extra, match):
    from typer.testing import CliRunner

    from kronedge.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps({"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
                                                    "num_attention_heads": 4, "intermediate_size": 64}))
    result = CliRunner().invoke(app, ["compress", "--teacher", f"random:{tmp_path / 'tiny.json'}", "--compression", "4",
                                      "--run-dir", "run"] + extra)
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and match in text and "Traceback" not in text
    assert not (tmp_path / "run" / "stage1").exists()


def test_plain_text_options_refuse_a_table_or_bytes(tmp_path):
    from kronedge.augment import read_unlabelled
    from kronedge.data import DataError

    (tmp_path / "dev.csv").write_text("text,label\na,b\n")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe bad\n")
    with pytest.raises(DataError, match="--calibration: .*dev.csv looks like a table"):
        read_unlabelled(tmp_path / "dev.csv", False, flag="--calibration")
    with pytest.raises(DataError, match="bin.txt is not UTF-8 text"):
        read_unlabelled(tmp_path / "bin.txt", False)
