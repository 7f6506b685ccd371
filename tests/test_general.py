"""The reusable general student: `kronedge distill-general` once, `compress --general-student DIR|auto` after.

Shows with the tiny model that a general student is written, reused (not recomputed) under the same key,
keyed apart by structure, teacher and corpus, that compress starts from it without stage 1, and that a
general student of another teacher or structure is one error before any training.
"""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import TINY_FIELDS, tiny_spec, tokenizer_dir
from kronedge.cli import app
from kronedge.general import (GeneralConfig, GeneralRun, GeneralStudentError, distill_general, general_key,
                              read_general, resolve_general, teacher_fingerprint)
from kronedge.recipe import CompressConfig

pytestmark = pytest.mark.slow  # each general student or compress trains for seconds

# A few seconds per general student: 48 texts, 32 tokens, fp32, 4x.
SMALL = dict(compression=4, examples=48, max_length=32, precision="fp32")
# compress on the tiny teacher in seconds (its head is used as is: no fine-tune)
COMPRESS = ["--task", "sst2", "--stage2-examples", "32", "--max-length", "32",
            "--precision", "fp32", "--no-teacher-check", "--min-steps", "0", "--stage2-min-steps", "0", "--patience", "0",
            "--json"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(random: spec of the tiny BERT, a 'fine-tuned' teacher dir made from it, a general student of it)."""
    root = tmp_path_factory.mktemp("general")
    spec = tiny_spec(root)
    teacher = finetuned_teacher(root / "teacher", spec)
    general = distill_general(GeneralConfig(teacher=spec, **SMALL), cache_dir=root / "cache")
    return spec, teacher, general


def finetuned_teacher(path: Path, base: str, **overrides) -> Path:
    """A classifier directory as `kronedge finetune` leaves it (finetune.json names its base), without training."""
    from transformers import BertConfig, BertForSequenceClassification

    from kronedge.artifact import copy_tokenizer

    torch.manual_seed(1)
    model = BertForSequenceClassification(BertConfig(**{**TINY_FIELDS, **overrides}))
    path.mkdir(parents=True)
    model.save_pretrained(path)
    copy_tokenizer(tokenizer_dir(), path)
    (path / "finetune.json").write_text(json.dumps({"teacher": base, "metrics": {"accuracy": 0.5}}))
    return path


def test_general_student_is_written_with_its_record(tiny):
    spec, _, general = tiny
    assert not general.cached
    for name in ("kronedge.json", "model.safetensors", "config.json", "tokenizer.json", "README.md"):
        assert (general.path / name).is_file()
    info = read_general(general.path)
    assert info["key"] == general.key == general.path.name
    assert info["teacher"] == spec and info["teacher_fingerprint"] == teacher_fingerprint(spec)
    assert info["structure"]["compression"] == 4 and info["structure"]["structure"] == "svd"
    assert info["texts"] == 48 and info["steps"] >= 1


def test_same_key_reuses_the_student_without_recomputing(tiny, monkeypatch):
    spec, _, general = tiny
    weights = general.path / "model.safetensors"
    before = weights.stat().st_mtime_ns

    def no_training(self):
        raise AssertionError("the general student was recomputed")

    monkeypatch.setattr(GeneralRun, "run", no_training)
    again = distill_general(GeneralConfig(teacher=spec, **SMALL, checkpoint_seconds=1.0),  # cadence: same key
                            cache_dir=general.path.parent)
    assert again.cached and again.path == general.path and again.key == general.key
    assert weights.stat().st_mtime_ns == before


def test_key_follows_structure_teacher_corpus_and_recipe(tiny):
    spec, _, general = tiny
    fp = teacher_fingerprint(spec)
    base = GeneralConfig(teacher=spec, **SMALL)
    key = general_key(base, fp, "corpus")
    assert key == general_key(GeneralConfig(teacher=spec, **SMALL), fp, "corpus")  # stable
    others = [general_key(GeneralConfig(teacher=spec, **{**SMALL, "compression": 3}), fp, "corpus"),
              general_key(GeneralConfig(teacher=spec, **SMALL, structure="paper"), fp, "corpus"),
              general_key(GeneralConfig(teacher=spec, **SMALL, layers=1), fp, "corpus"),
              general_key(GeneralConfig(teacher=spec, **SMALL, lr=1e-4), fp, "corpus"),
              general_key(base, teacher_fingerprint("random:minilm"), "corpus"),
              general_key(base, fp, "another corpus")]
    assert len({key, *others}) == 1 + len(others)
    assert teacher_fingerprint("builtin:minilm").startswith("weights-")  # a real teacher: its weights' hash


def test_student_from_a_general_student_takes_its_encoder_and_the_teachers_head(tiny):
    from kronedge.artifact import load_artifact
    from kronedge.students import GeneralStartStudent, build_student

    _, teacher_dir, general = tiny
    from transformers import BertForSequenceClassification

    teacher = BertForSequenceClassification.from_pretrained(teacher_dir)
    student, plan = build_student(teacher, GeneralStartStudent(str(general.path)))
    source = load_artifact(general.path)
    for name, tensor in source.state_dict().items():
        if name.startswith(("embeddings.", "encoder.")):
            assert torch.equal(student.bert.state_dict()[name], tensor), name
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert torch.equal(student.bert.pooler.dense.weight, teacher.bert.pooler.dense.weight)
    assert plan.layers and all(layer.name.startswith("bert.") for layer in plan.layers)
    assert student.config.kronecker_layout  # saved artifacts reload it


def test_compress_starts_from_the_general_student_and_skips_stage1(tiny, tmp_path, monkeypatch):
    from kronedge.compress import CompressRun

    _, teacher, general = tiny
    monkeypatch.chdir(tmp_path)

    def no_stage1(self):
        raise AssertionError("stage 1 ran despite the general student")

    monkeypatch.setattr(CompressRun, "stage1", no_stage1)
    result = CliRunner().invoke(app, ["compress", "--teacher", str(teacher), "--general-student", str(general.path),
                                      "--out", "art", "--run-dir", "run", "--compression", "4", *COMPRESS])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "stage1" not in report["seconds"] and report["seconds"]["stage2"] > 0
    assert not (tmp_path / "run" / "stage1").exists()
    recipe = json.loads((tmp_path / "art" / "kronedge.json").read_text())
    assert recipe["general_student"]["key"] == general.key
    assert Path(recipe["general_student"]["path"]) == general.path.resolve()
    assert general.key in (tmp_path / "art" / "README.md").read_text()


def test_auto_finds_the_cached_student_or_runs_stage1(tiny, tmp_path, monkeypatch):
    spec, teacher, general = tiny
    monkeypatch.setenv("KRONEDGE_CACHE", str(tmp_path / "empty"))
    assert resolve_general(CompressConfig(teacher=str(teacher), compression=4, general_student="auto")) is None
    root = general.path.parent
    found = resolve_general(CompressConfig(teacher=str(teacher), compression=4, general_student="auto"), root=root)
    assert found == general.path
    # another structure has no cached student: stage 1 runs as before
    assert resolve_general(CompressConfig(teacher=str(teacher), compression=3, general_student="auto"), root=root) is None


@pytest.mark.parametrize("change,match", [
    (["--compression", "3"], "the structures differ"),
    (["--compression", "4", "--structure", "paper"], "the structures differ"),
    (["--other-teacher"], "the teachers' shapes differ"),
])
def test_a_general_student_that_does_not_fit_is_one_error_before_training(tiny, tmp_path, monkeypatch, change, match):
    spec, teacher, general = tiny
    monkeypatch.chdir(tmp_path)
    if change == ["--other-teacher"]:
        other = tiny_spec(tmp_path, hidden_size=32, intermediate_size=64)
        teacher, change = finetuned_teacher(tmp_path / "other", other, hidden_size=32, intermediate_size=64), []
    args = ["compress", "--teacher", str(teacher), "--general-student", str(general.path), "--out", "art",
            "--run-dir", "run", *COMPRESS, *change]
    if "--compression" not in args:
        args += ["--compression", "4"]
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and match in text and "does not fit" in text and "Traceback" not in text
    assert not (tmp_path / "run" / "stage2").exists() and not (tmp_path / "art").exists()


def test_not_a_general_student_and_method_checks(tmp_path):
    with pytest.raises(GeneralStudentError, match="not a general student"):
        resolve_general(CompressConfig(compression=4, general_student=str(tmp_path)))
    with pytest.raises(GeneralStudentError, match="not found"):
        resolve_general(CompressConfig(compression=4, general_student=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="--method kronecker"):
        CompressConfig(method="dense-small", general_student="auto")


def test_distill_general_cli_trains_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("KRONEDGE_CACHE", str(tmp_path / "cache"))
    spec = tiny_spec(tmp_path)
    args = ["distill-general", "--teacher", spec, "--compression", "4", "--examples", "32", "--max-length", "32",
            "--precision", "fp32", "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    made = json.loads(first.stdout)
    assert not made["cached"] and Path(made["path"]).parent == tmp_path / "cache" / "general"
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["cached"]
    assert "reusing general student" in again.output


def test_help():
    result = CliRunner().invoke(app, ["distill-general", "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and "--time-budget" in result.output


def test_general_corpus_is_every_unlabelled_text_that_ships():
    from kronedge.data import load_task
    from kronedge.data.corpus import general_texts, load_corpus

    texts = general_texts()
    assert len(texts) == len(set(texts)) > 50_000
    chunks = set(load_corpus("wikitext-2-all"))
    assert chunks <= set(texts)
    have = set(texts)
    cola = load_task("cola", "train").texts
    assert sum(t in have for t in cola) > 0.9 * len(cola)
    first, second = load_task("rte", "train").texts[0]
    assert first in have and second in have  # a pair's sentences as two texts
    dev = [t for t in load_task("cola", "dev").texts if t not in set(cola)]
    assert not any(t in have for t in dev)  # dev splits score students: never trained on


def test_a_time_budget_without_epochs_plans_the_epochs_that_fit():
    from kronedge.general import MAX_BUDGET_EPOCHS

    assert GeneralConfig().train_config().epochs == 1
    assert GeneralConfig(time_budget_s=60).train_config().epochs == MAX_BUDGET_EPOCHS  # the budget trims them
    assert GeneralConfig(epochs=2, time_budget_s=60).train_config().epochs == 2
