"""Distillation losses, the training loop (resume), baselines and a tiny end-to-end `kronedge compress`."""

import copy
import json
import time

import pytest
import torch

from helpers import micro_bert, micro_data
from kronedge.distill import (DistillConfig, Distiller, ScoreCapture, layer_mapping, logit_loss, masked_mse)
from kronedge.lowrank import LowRankEmbedding, LowRankLinear, equal_param_rank, lowrank_
from kronedge.planner import KronConfig
from kronedge.surgery import kronize_
from kronedge.training import TrainConfig, bucket_batches, read_progress, train_loop

LOSSES = ["embedding", "attention", "hidden", "logits", "supervised"]


def batch(seed=0, n=4, t=7, labels=2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 60, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[0, 5:] = 0  # one padded row: masked positions must not count
    y = torch.randint(0, labels, (n,), generator=g) if labels > 1 else torch.rand(n, generator=g) * 5
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": y}


def only(name, **kw):
    return DistillConfig(**{k: float(k == name) for k in LOSSES}, **kw)


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_zero_for_identical_and_positive_otherwise(name):
    teacher = micro_bert(0)
    b = batch()
    if name == "supervised":
        # Against the gold labels: zero only for a perfect, confident student.
        loss, _ = Distiller(teacher, copy.deepcopy(teacher), only(name))(copy.deepcopy(teacher), b)
        assert loss > 0
        return
    same = copy.deepcopy(teacher)
    loss, parts = Distiller(teacher, same, only(name))(same, b)
    assert set(parts) == {name}
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-10)
    other = micro_bert(1)
    loss, _ = Distiller(teacher, other, only(name))(other, b)
    assert float(loss.detach()) > 1e-7


def test_supervised_and_logit_losses_for_regression():
    s = torch.tensor([[1.0], [2.0]])
    assert float(logit_loss(s, s.clone(), 2.0, regression=True)) == 0.0
    assert float(logit_loss(s, s + 1, 2.0, regression=True)) == pytest.approx(1.0)
    teacher = micro_bert(0, labels=1)
    student = micro_bert(1, labels=1)
    loss, parts = Distiller(teacher, student, DistillConfig())(student, batch(labels=1))
    assert set(parts) == set(LOSSES) and float(loss.detach()) > 0


def test_masked_positions_do_not_count():
    a, b = torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)
    b[0, 2] = 100.0
    mask = torch.tensor([[1, 1, 0]])[:, :, None]
    assert float(masked_mse(a, b, mask)) == 0.0


def test_scores_match_attention_probabilities():
    model = micro_bert(0)
    # Only eager attention returns probabilities (transformers 5 drops them under sdpa).
    model.config._attn_implementation = "eager"
    b = batch()
    with ScoreCapture(model) as cap:
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_attentions=True)
    scores = cap.scores(1)
    mask = b["attention_mask"][:, None, None, :].bool()
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    torch.testing.assert_close(probs, out.attentions[1], atol=1e-5, rtol=1e-5)


def test_capture_works_on_kronecker_student_and_hooks_are_removed():
    student = micro_bert(0)
    kronize_(student, KronConfig(compression=2))
    with ScoreCapture(student) as cap:
        student(**{k: v for k, v in batch().items() if k != "labels"})
        assert cap.scores(0).shape == (4, 4, 7, 7)
    assert not student.bert.encoder.layer[0].attention.self.query._forward_hooks


def test_one_distillation_step_reduces_the_loss():
    teacher = micro_bert(0)
    student = copy.deepcopy(teacher)
    kronize_(student, KronConfig(compression=2))
    student.train()
    distiller = Distiller(teacher, student, DistillConfig())
    b = batch()
    before, _ = distiller(student, b)
    opt = torch.optim.SGD(student.parameters(), lr=1e-3)
    before.backward()
    opt.step()
    after, _ = distiller(student, b)
    assert float(after.detach()) < float(before.detach())


def test_uniform_layer_mapping_and_narrow_student():
    assert layer_mapping(3, 6, "uniform") == [1, 3, 5]
    assert layer_mapping(1, 6, "uniform") == [5]
    with pytest.raises(ValueError, match="uniform"):
        layer_mapping(3, 6, "one-to-one")
    teacher = micro_bert(0, layers=4)
    student = micro_bert(1, layers=2, hidden=16)
    d = Distiller(teacher, student, DistillConfig(layer_map="uniform"))
    assert d.mapping == [1, 3]
    loss, parts = d(student, batch())
    assert set(parts) == set(LOSSES) and torch.isfinite(loss)
    assert sum(p.numel() for p in d.parameters()) == 16 * 24  # the hidden-size projection only


@pytest.mark.parametrize("kwargs,match", [
    ({"hidden": -1.0}, "finite and >= 0"),
    ({"embedding": 0, "attention": 0, "hidden": 0, "logits": 0, "supervised": 0}, "nothing to train"),
    ({"temperature": 0}, "temperature"),
    ({"layer_map": "skip"}, "layer_map"),
])
def test_distill_config_checks_itself(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillConfig(**kwargs)


def test_lowrank_is_exact_at_full_rank_and_matches_kronecker_params():
    torch.manual_seed(0)
    dense = torch.nn.Linear(12, 8)
    layer = LowRankLinear.from_dense(dense, rank=8)
    x = torch.randn(3, 12)
    torch.testing.assert_close(layer(x), dense(x), atol=1e-5, rtol=1e-5)
    emb = torch.nn.Embedding(20, 6)
    low = LowRankEmbedding.from_dense(emb, rank=6)
    ids = torch.tensor([[1, 5, 19]])
    torch.testing.assert_close(low(ids), emb(ids), atol=1e-5, rtol=1e-5)
    assert equal_param_rank(100, 12, 8) == 5

    kron, svd = micro_bert(0), micro_bert(0)
    plan = kronize_(kron, KronConfig(compression=2))
    lowrank_(svd, KronConfig(compression=2))
    n_kron = sum(p.numel() for p in kron.parameters())
    n_svd = sum(p.numel() for p in svd.parameters())
    assert n_svd <= n_kron and n_svd > 0.8 * n_kron
    assert plan.params_student == n_kron


def test_bucket_batches_cover_every_example_once_and_group_lengths():
    lengths = [(i * 37) % 50 + 1 for i in range(1000)]
    batches = bucket_batches(lengths, 16, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert bucket_batches(lengths, 16, seed=3) == batches
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 5  # random batches would spread ~45 tokens


def test_resume_continues_from_the_saved_step(tmp_path):
    data = micro_data()
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, precision="fp32", log_every=1)

    def step(m, b):
        return m(**b).loss, {}

    reference = micro_bert(0)
    train_loop(reference, data, step, config, tmp_path / "ref")

    calls = {"n": 0}

    def interrupted(m, b):
        calls["n"] += 1
        if calls["n"] == 9:  # the 3rd batch of epoch 2
            raise KeyboardInterrupt
        return step(m, b)

    model = micro_bert(0)
    with pytest.raises(KeyboardInterrupt):
        train_loop(model, data, interrupted, config, tmp_path / "run")
    progress = read_progress(tmp_path / "run")
    assert (progress["step"], progress["epoch"], progress["batch"], progress["done"]) == (8, 1, 2, False)

    resumed = micro_bert(5)  # different weights: everything must come from the checkpoint
    result = train_loop(resumed, data, step, config, tmp_path / "run", resume=True)
    assert result.resumed_from == 8 and result.steps == 12
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == list(range(1, 13))


def test_time_budget_keeps_whole_epochs_and_rescales_the_schedule(tmp_path, monkeypatch):
    data = micro_data()  # 6 batches of 8 per epoch
    full = TrainConfig(epochs=20, batch_size=8, lr=1e-3, precision="fp32", log_every=1, time_budget_s=1e6)
    # The trainer's clock advances only inside a step, so the budget's decisions do not depend on the machine's load.
    clock = {"now": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])

    def slow_step(m, b):
        clock["now"] += 0.02  # 20 epochs take 2.4 s: a 1 s budget cannot hold them
        return m(**b).loss, {}

    roomy = train_loop(micro_bert(0), data, slow_step, TrainConfig(**{**full.__dict__, "epochs": 2}), tmp_path / "roomy")
    assert (roomy.steps, roomy.planned_steps, roomy.stopped_at_budget) == (12, 12, False)

    tight = TrainConfig(**{**full.__dict__, "time_budget_s": 1.0})
    result = train_loop(micro_bert(0), data, slow_step, tight, tmp_path / "tight", eval_fn=lambda m: {"score": 1.0},
                        primary_metric="score")
    assert result.steps < 120 and result.history
    logged = [json.loads(line) for line in (tmp_path / "tight" / "log.jsonl").read_text().splitlines()]
    plan = [r for r in logged if "seconds_per_step" in r]  # the first plan, after the calibration steps
    assert len(plan) == 1 and 1 <= plan[0]["epochs_planned"] < 20
    assert all(1 <= r["epochs_planned"] < 20 for r in logged if "replanned_after_epoch" in r)
    if not result.stopped_at_budget:
        # The schedule ends where the plan says: whole epochs with the learning rate decayed to 0 there,
        # unless the machine is so slow that the plan came after the end of its one epoch.
        assert result.steps == result.planned_steps
        if result.planned_steps > 10:  # 10: the step the calibration ends, the earliest possible end
            assert result.steps % 6 == 0
            assert result.epochs_planned * 6 == result.planned_steps  # the budget's epochs, not the 20 asked for
            assert [r for r in logged if "lr" in r][-1]["lr"] == 0.0
    with pytest.raises(ValueError, match="time_budget_s"):
        TrainConfig(time_budget_s=0)


@pytest.mark.parametrize("bad,match", [
    ({"precision": "fp8"}, "precision"), ({"epochs": 0}, "epochs"), ({"weight_decay": -1.0}, "weight_decay"),
    ({"max_grad_norm": -1.0}, "max_grad_norm"), ({"log_every": 0}, "log_every"), ({"max_steps": 0}, "max_steps"),
    ({"max_steps": -1}, "max_steps"), ({"checkpoint_seconds": -1.0}, "checkpoint_seconds"),
])
def test_train_config_checks_itself(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)
    TrainConfig(max_grad_norm=0.0, checkpoint_seconds=0.0, max_steps=1)  # no clipping, a checkpoint every step


def test_an_example_longer_than_the_positions_stops_before_training():
    from transformers import BertConfig

    from kronedge.training import Encoded, check_max_length

    config = BertConfig(max_position_embeddings=64)
    fits, too_long = Encoded([[1] * 64, [1] * 10], [[0] * 64, [0] * 10]), Encoded([[1] * 65], [[0] * 65])
    check_max_length(config, fits)
    with pytest.raises(ValueError, match="65-token examples through, but the teacher has 64 positions"):
        check_max_length(config, fits, too_long)


TINY = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 128, "type_vocab_size": 2}


def test_compress_end_to_end_with_cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kronedge.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    runner = CliRunner()
    args = ["compress", "--teacher", f"random:{tmp_path / 'tiny.json'}", "--compression", "4", "--teacher-train-limit",
            "64", "--stage1-examples", "32", "--stage2-examples", "64", "--max-length", "32", "--out", "art",
            "--run-dir", "run", "--precision", "fp32", "--no-teacher-check", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # progress goes to stderr: stdout is pure JSON
    assert report["compression"] > 2.5
    assert set(report["seconds"]) >= {"stage1", "stage2", "teacher_finetune"}
    for name in ("kronedge.json", "README.md", "model.safetensors", "tokenizer.json"):
        assert (tmp_path / "art" / name).is_file()
    assert (tmp_path / "run" / "stage2" / "log.jsonl").is_file()
    card = (tmp_path / "art" / "README.md").read_text()
    assert "teacher" in card and "accuracy" in card

    evaluated = runner.invoke(app, ["eval", "art", "--task", "sst2", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    scored = json.loads(evaluated.stdout)
    assert scored["examples"] == 872
    assert scored["accuracy"] == pytest.approx(report["student_metrics"]["accuracy"], abs=1e-9)

    # The fine-tuned teacher is cached: a second run reuses it (and resumes finished stages).
    again = runner.invoke(app, args + ["--resume"])
    assert again.exit_code == 0, again.output
    assert "reusing fine-tuned teacher" in again.output
    assert json.loads(again.output[again.output.index("{\n"):])["student_metrics"] == report["student_metrics"]


@pytest.mark.parametrize("command", ["compress", "finetune", "eval"])
def test_help(command):
    from typer.testing import CliRunner

    from kronedge.cli import app

    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_eval_rejects_missing_dir(tmp_path):
    from typer.testing import CliRunner

    from kronedge.cli import app

    result = CliRunner().invoke(app, ["eval", str(tmp_path / "nope"), "--task", "sst2"])
    assert result.exit_code == 1


def test_compress_config_checks_itself_and_parses_loss_weights():
    from kronedge.commands.distill import _weights
    from kronedge.compress import CompressConfig

    assert _weights("attention=0.1, hidden=2") == {"attention": 0.1, "hidden": 2.0}
    with pytest.raises(ValueError, match="NAME=NUMBER"):
        _weights("attention")
    with pytest.raises(ValueError, match="unknown loss weights"):
        CompressConfig(loss_weights={"attn": 1.0})
    with pytest.raises(ValueError, match="exactly one"):
        CompressConfig(preset="kb8")
    with pytest.raises(ValueError, match="method"):
        CompressConfig(method="pruning")
    assert CompressConfig(method="dense-small").layer_map == "uniform"


def test_teacher_cache_key_needs_no_special_cases():
    """A config field added later with a None default keeps every cached teacher's key; fields that change the
    result change it; fields that only change logging do not."""
    from kronedge.finetune import finetune_cache_dir
    from kronedge.training import settings_key

    config = TrainConfig(epochs=1, lr=5e-5, batch_size=32, max_length=128, precision="auto", seed=0)
    key = finetune_cache_dir("builtin:minilm", "sst2", None, config, cache_root="c").name
    assert key == "sst2-" + settings_key({"teacher": "builtin:minilm", "task": "sst2", "train_limit": None,
                                          **config.result_settings()})
    # What a field added in a later version looks like while unset: not part of the key.
    assert all(v is not None for v in config.result_settings().values())
    assert "max_steps" not in config.result_settings() and "log_every" not in config.result_settings()
    for change in ({"time_budget_s": 60.0}, {"min_steps": 600}, {"patience": 2}, {"lr": 1e-4}):
        changed = TrainConfig(**{**config.__dict__, **change})
        assert finetune_cache_dir("builtin:minilm", "sst2", None, changed, cache_root="c").name != key, change
    quiet = TrainConfig(**{**config.__dict__, "log_every": 1, "checkpoint_seconds": 5.0})
    assert finetune_cache_dir("builtin:minilm", "sst2", None, quiet, cache_root="c").name == key


def test_persisted_configs_carry_a_version():
    from kronedge.compress import CompressConfig
    from kronedge.training import TrainingError

    saved = TrainConfig(min_steps=600).to_dict()
    assert saved["version"] == TrainConfig.VERSION
    assert TrainConfig.from_dict(saved) == TrainConfig(min_steps=600)
    assert TrainConfig.from_dict({"epochs": 2}).epochs == 2  # version 1 records had no version field
    with pytest.raises(TrainingError, match="newer kronedge"):
        TrainConfig.from_dict({**saved, "version": TrainConfig.VERSION + 1})
    assert CompressConfig().to_dict()["version"] == CompressConfig.VERSION


# -- recipes that scale with the data ---------------------------------------------------------------


def test_min_steps_adds_epochs_to_small_data_only():
    config = TrainConfig(epochs=1, min_steps=600, max_epochs=10)
    assert config.planned_epochs(188) == 4 and 4 * 188 >= 600  # ~6k examples in batches of 32
    assert config.planned_epochs(30) == 10  # tiny data: capped at max_epochs
    assert config.planned_epochs(625) == 1 and config.planned_epochs(2105) == 1  # big data: not inflated
    assert TrainConfig(epochs=3, min_steps=600).planned_epochs(2105) == 3  # never fewer than asked
    assert TrainConfig(epochs=1).planned_epochs(5) == 1  # off by default


def test_trainer_reaches_the_minimum_steps_on_small_data(tmp_path):
    data = micro_data()  # 6 batches of 8 per epoch

    def step(m, b):
        return m(**b).loss, {}

    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, precision="fp32", min_steps=20)
    result = train_loop(micro_bert(0), data, step, config, tmp_path / "small")
    assert result.epochs_planned == 4 and result.steps == 24 >= 20
    big = TrainConfig(epochs=1, batch_size=8, lr=1e-3, precision="fp32", min_steps=4)
    assert train_loop(micro_bert(0), data, step, big, tmp_path / "big").steps == 6


def test_early_stopping_stops_after_patience_and_keeps_the_best(tmp_path):
    data = micro_data()
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])  # best at the 2nd evaluation, then two worse ones
    seen = []

    def score(m):
        seen.append(copy.deepcopy(m.state_dict()))
        return {"score": next(scores)}

    config = TrainConfig(epochs=6, batch_size=8, lr=1e-3, precision="fp32", patience=2)
    model = micro_bert(0)
    result = train_loop(model, data, lambda m, b: (m(**b).loss, {}), config, tmp_path / "run", eval_fn=score,
                        primary_metric="score")
    assert result.stopped_early and len(result.history) == 4 and result.steps == 24
    assert result.best_metrics == {"score": 0.7}
    for key, value in seen[1].items():  # the model ends at the best epoch's weights
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    assert read_progress(tmp_path / "run")["stopped_early"]
    never = TrainConfig(epochs=3, batch_size=8, lr=1e-3, precision="fp32")
    scores = iter([0.5, 0.4, 0.3])
    assert not train_loop(micro_bert(0), data, lambda m, b: (m(**b).loss, {}), never, tmp_path / "never",
                          eval_fn=lambda m: {"score": next(scores)}, primary_metric="score").stopped_early


def test_spent_patience_cools_down_one_epoch_with_the_rate_decaying_to_zero(tmp_path):
    """With cooldown_epochs, a spent patience shortens the schedule to one more epoch instead of stopping: that
    epoch trains with the learning rate falling to 0, it is evaluated, and the best epoch is still kept."""
    data = micro_data()  # 48 examples in batches of 8: 6 steps an epoch, 10 epochs planned (60 steps)
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.68, 0.9])  # patience 2 spent at the 4th evaluation
    seen = []

    def score(m):
        seen.append(copy.deepcopy(m.state_dict()))
        return {"score": next(scores)}

    config = TrainConfig(epochs=10, batch_size=8, lr=1e-3, precision="fp32", patience=2, cooldown_epochs=1,
                         log_every=1)
    model = micro_bert(0)
    result = train_loop(model, data, lambda m, b: (m(**b).loss, {}), config, tmp_path / "run", eval_fn=score,
                        primary_metric="score")
    assert len(result.history) == 5 and result.steps == 30 and result.planned_steps == 30 and result.epochs_planned == 5
    assert result.stopped_early and result.best_metrics == {"score": 0.7}
    for key, value in seen[1].items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["cooldown_after_epoch"] for row in log if "cooldown_after_epoch" in row] == [3]
    lrs = {row["step"]: row["lr"] for row in log if "lr" in row}
    # Linear decay after int(total * 0.06) warm-up steps: after step 24 the planned schedule (60 steps) is still at
    # 36/57 of the peak; the cool-down's (30 steps, 1 warm-up step) is at 5/29 after step 25 and 0 after step 30.
    assert lrs[24] == pytest.approx(1e-3 * 36 / 57)
    assert lrs[25] == pytest.approx(1e-3 * 5 / 29) and lrs[30] == 0.0
    assert all(lrs[s] > lrs[s + 1] for s in range(25, 30))
    assert read_progress(tmp_path / "run")["cooling"]

    # Patience spent at the last planned epoch changes nothing: the schedule ends there, and not "early".
    scores = iter([0.5, 0.7, 0.6, 0.65])
    late = TrainConfig(epochs=4, batch_size=8, lr=1e-3, precision="fp32", patience=2, cooldown_epochs=1)
    result = train_loop(micro_bert(0), data, lambda m, b: (m(**b).loss, {}), late, tmp_path / "late",
                        eval_fn=lambda m: {"score": next(scores)}, primary_metric="score")
    assert result.steps == 24 and len(result.history) == 4 and not result.stopped_early


class InterruptAt:
    """A training step function that raises KeyboardInterrupt (as Ctrl-C does) on its ``at``-th call."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return model(**batch).loss, {}


def test_a_cool_down_interrupted_and_resumed_ends_like_an_uninterrupted_one(tmp_path):
    """Interrupted in the first of two cool-down epochs, --resume keeps the shortened schedule and the cool-down
    (a spent patience does not cut it again) and ends with the weights of a run never interrupted."""
    data = micro_data()
    config = TrainConfig(epochs=10, batch_size=8, lr=1e-3, precision="fp32", patience=2, cooldown_epochs=2)
    scores = [0.5, 0.7, 0.6, 0.65, 0.68, 0.69]

    def run(step_fn, run_dir, resume=False, evals=None):
        model = micro_bert(0)
        it = iter(evals if evals is not None else scores)
        result = train_loop(model, data, step_fn, config, run_dir, eval_fn=lambda m: {"score": next(it)},
                            primary_metric="score", resume=resume)
        return model, result

    # The best epoch is the second: compare the last weights (the checkpoint's), not the kept ones.
    reference, done = run(InterruptAt(0), tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        run(InterruptAt(27), tmp_path / "cut")  # step 27 of 36: inside the first cool-down epoch
    assert read_progress(tmp_path / "cut")["cooling"]
    _, resumed = run(InterruptAt(0), tmp_path / "cut", resume=True, evals=scores[4:])
    assert resumed.steps == done.steps == 36 and resumed.history == done.history
    for name in ("ref", "cut"):
        state = torch.load(tmp_path / name / "checkpoint" / "state.pt", weights_only=False)
        assert state["scheduler"]["_last_lr"][0] == 0.0, name
    last = [torch.load(tmp_path / n / "checkpoint" / "state.pt", weights_only=False)["modules"]["model"]
            for n in ("ref", "cut")]
    for key, tensor in last[0].items():
        assert torch.equal(last[1][key], tensor), key


@pytest.mark.parametrize("task,labels,metrics,near", [
    ("sst2", [0] * 60 + [1] * 40, {"accuracy": 0.62}, True),   # majority 0.60, margin ~0.098
    ("sst2", [0] * 60 + [1] * 40, {"accuracy": 0.75}, False),
    ("rte", [0] * 146 + [1] * 131, {"accuracy": 0.545}, True),  # the measured RTE teacher: near chance
    ("cola", [0] * 322 + [1] * 721, {"matthews": 0.03}, True),
    ("cola", [0] * 322 + [1] * 721, {"matthews": 0.281}, False),  # the measured CoLA teacher
])
def test_near_chance_guard(task, labels, metrics, near):
    from kronedge.evaluation import TeacherNearChanceError, chance_level, check_not_chance

    chance = chance_level(task, labels)
    assert chance.level == (0.0 if task == "cola" else max(labels.count(0), labels.count(1)) / len(labels))
    if near:
        with pytest.raises(TeacherNearChanceError, match="chance"):
            check_not_chance(task, metrics, labels)
    else:
        check_not_chance(task, metrics, labels)


def test_a_teacher_far_below_chance_is_told_its_labels_are_likely_swapped():
    """0.15 on a 60/40 split is no weak teacher but a head whose labels run the other way: 'fine-tune it longer' is
    the wrong advice."""
    from kronedge.evaluation import TeacherNearChanceError, check_not_chance

    with pytest.raises(TeacherNearChanceError, match="far below chance.*orders the labels otherwise.*negative, positive"):
        check_not_chance("sst2", {"accuracy": 0.15}, [0] * 60 + [1] * 40)


def _saved_teacher(path, seed=0):
    from helpers import tiny_bert as shared_tiny_bert, tokenizer_dir

    from kronedge.artifact import copy_tokenizer

    shared_tiny_bert(seed=seed).save_pretrained(path)
    copy_tokenizer(tokenizer_dir(), path)
    return path


def test_compress_stops_on_a_near_chance_teacher_before_distilling(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kronedge.cli import app

    monkeypatch.chdir(tmp_path)
    teacher = _saved_teacher(tmp_path / "teacher")  # random weights: about a constant guess on SST-2
    result = CliRunner().invoke(app, ["compress", "--teacher", str(teacher), "--compression", "4", "--out", "art",
                                      "--run-dir", "run", "--precision", "fp32"])
    assert result.exit_code == 1
    assert "of chance" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "stage1").exists() and not (tmp_path / "art").exists()


@pytest.mark.parametrize("extra,match", [
    (["--method", "svd", "--out", "art"], "svd baseline has no artifact format"),
    (["--compression", "1000"], "the most this selection allows"),  # refused before the teacher fine-tune
    (["--patience", "-1"], "patience"),
    (["--min-retention", "2"], "min_retention"),
    (["--threads", "-2"], "--threads must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--out", "."], "is the working directory"),
])
def test_compress_checks_options_before_training(tmp_path, monkeypatch, extra, match):
    from typer.testing import CliRunner

    from kronedge.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    args = ["compress", "--teacher", f"random:{tmp_path / 'tiny.json'}", "--run-dir", "run"]
    if "--compression" not in extra:
        args += ["--compression", "4"]
    result = CliRunner().invoke(app, args + extra)
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 1 and match in text and "Traceback" not in text
    assert not (tmp_path / "runs").exists() and not (tmp_path / "run" / "stage1").exists()


def test_resume_refuses_another_recipe_but_not_another_checkpoint_cadence():
    from kronedge.compress import CompressConfig

    saved = CompressConfig().to_dict()
    assert CompressConfig(checkpoint_seconds=0).same_recipe(saved)
    assert not CompressConfig(min_steps=100).same_recipe(saved)
    assert CompressConfig(min_steps=100, checkpoint_seconds=0).recipe_changes(saved) == {
        "min_steps": (saved["min_steps"], 100)}  # what the --resume error names
    # A nested option is named by its own key, not by two whole dicts.
    from kronedge.data import DataFiles, TaskSource

    def own(**options):
        return CompressConfig(task=None, source=TaskSource(files=DataFiles(train="t.csv", validation="v.csv",
                                                                           **options)).to_dict())
    assert own(metric="f1_macro").recipe_changes(own().to_dict()) == {"source.files.metric": (None, "f1_macro")}


@pytest.mark.parametrize("command,extra,match", [
    ("finetune", ["--train-limit", "0"], "--train-limit must be a positive count"),
    ("finetune", ["--log-every", "0"], "log_every"),
    ("finetune", ["--max-grad-norm", "-1"], "max_grad_norm"),
    ("finetune", ["--max-steps", "-1"], "max_steps"),
    ("finetune", ["--threads", "-1"], "--threads must be >= 1"),
    ("eval", ["--limit", "0"], "--limit must be >= 1"),
])
def test_finetune_and_eval_check_options_first(tmp_path, monkeypatch, command, extra, match):
    from typer.testing import CliRunner

    from kronedge.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    target = ["--task", "sst2"] if command == "finetune" else [str(tmp_path), "--task", "sst2"]
    first = [f"random:{tmp_path / 'tiny.json'}"] if command == "finetune" else []
    result = CliRunner().invoke(app, [command, *first, *target, *extra])
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and match in text and "Traceback" not in text, text
    assert not (tmp_path / "runs").exists()


def test_retention_warning_reaches_the_model_card():
    from kronedge.compress import CompressConfig, CompressResult
    from kronedge.model_card import model_card

    result = CompressResult(None, "t", {"matthews": 0.28}, {"matthews": 0.13}, {"matthews": 0.0}, "matthews", 10, 2, 5.0)
    warning = result.retention_warning(0.9)
    assert "46.4%" in warning and "90%" in warning
    # A teacher at or below zero (MCC, Pearson): no share, a warning about the teacher instead.
    poor = CompressResult(None, "t", {"matthews": -0.01}, {"matthews": 0.05}, {}, "matthews", 10, 2, 5.0)
    assert poor.retained != poor.retained and "no better than a guess" in poor.retention_warning(0.9)
    assert CompressResult(None, "t", {"matthews": 0.28}, {"matthews": 0.27}, {}, "matthews", 10, 2,
                          5.0).retention_warning(0.9) is None
    recipe = {"task": "cola", "compression": 5.0, "teacher": "t", "teacher_finetuned": "t", "params_teacher": 10,
              "params_student": 2, "metrics": {"teacher": {"matthews": 0.28}, "student": {"matthews": 0.13},
                                               "student_before_training": {"matthews": 0.0}, "primary": "matthews",
                                               "examples": 1043},
              "compress_config": CompressConfig(task="cola").to_dict(), "training": {"seconds": {}, "precision": "fp32"},
              "versions": {}, "warnings": [warning]}
    assert f"**Warning:** {warning}" in model_card(recipe)
    assert "Warning" not in model_card({**recipe, "warnings": []})
    # The stage-2 example limit is a cap: a smaller file gives fewer, so the card says "up to".
    assert "cola train: up to 20,000 examples" in model_card(recipe)
    every = {**recipe, "compress_config": CompressConfig(task="cola", stage2_examples=None).to_dict()}
    assert "cola train: all examples" in model_card(every)
    # --vocabulary task: the card says how many rows the word embedding kept
    assert "vocabulary" not in model_card(recipe)
    assert "5,590 tokens of the training text (of 30,522)" in model_card({**recipe, "vocabulary": {"kept": 5590,
                                                                                                  "of": 30522}})
    # --ffn neurons: the card says how many FFN neurons each layer kept
    assert "neurons" not in model_card(recipe)
    assert "keeps 54 of the teacher's 1,536 neurons" in model_card({**recipe, "ffn_neurons": {"kept": 54, "of": 1536}})


def test_cli_defaults_are_the_config_defaults():
    import typer.main

    from kronedge.cli import app
    from kronedge.commands.distill import _weights
    from kronedge.compress import CompressConfig
    from kronedge.finetune import default_teacher_config

    commands = typer.main.get_command(app).commands
    shown = {p.name: p.default for p in commands["compress"].params}
    config = CompressConfig()
    for name in ("teacher", "task", "rank", "method", "stage1_examples", "stage1_epochs", "stage1_lr", "stage2_examples",
                 "stage2_epochs", "stage2_lr", "batch_size", "max_length", "temperature", "layer_map", "seed",
                 "precision", "min_steps", "stage2_min_steps", "patience", "min_retention"):
        assert shown[name] == getattr(config, name), name
    assert _weights(shown["loss_weights"]) == config.loss_weights
    assert shown["checkpoint_every"] == config.checkpoint_seconds and shown["teacher_check"] == config.check_teacher
    shown = {p.name: p.default for p in commands["finetune"].params}
    teacher = default_teacher_config()
    for name in ("epochs", "lr", "batch_size", "max_length", "seed", "precision", "min_steps", "patience"):
        assert shown[name] == getattr(teacher, name), name


def test_time_budget_shares_cover_the_teacher_fine_tune(tmp_path):
    from kronedge.compress import CompressConfig, CompressRun

    run = CompressRun(CompressConfig(time_budget_s=900.0), None, tmp_path)
    assert run.budget("teacher") == 300.0
    run.seconds["teacher_finetune"] = 300.0
    assert run.budget("stage1") == 200.0
    run.seconds["stage1"] = 250.0
    assert run.budget("stage2") == 350.0
    run.seconds.update(teacher_finetune=2000.0, stage1=0.0)  # an overrun teacher still leaves stage 2 a fifth
    assert run.budget("stage1") == 60.0 and run.budget("stage2") == 180.0
    assert CompressRun(CompressConfig(), None, tmp_path).budget("stage2") is None


def test_near_chance_message_points_at_the_budget_when_it_cut_the_teacher(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kronedge.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    args = ["compress", "--teacher", f"random:{tmp_path / 'tiny.json'}", "--compression", "4", "--teacher-train-limit",
            "32", "--max-length", "32", "--min-steps", "2", "--precision", "fp32", "--run-dir", "run", "--out", "art",
            "--time-budget", "0.5"]
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "of chance" in text and "third of --time-budget" in text
    assert not (tmp_path / "run" / "stage1").exists()


def test_stage2_has_its_own_minimum_of_steps():
    from kronedge.compress import CompressConfig

    config = CompressConfig(min_steps=100, stage1_min_steps=50, stage2_min_steps=1800)
    assert config.teacher_config().min_steps == 100
    assert config.train_config(1).min_steps == 50
    assert config.train_config(2).min_steps == 1800
    # a CoLA-sized task (267 steps an epoch) gets 7 epochs of stage 2; the 20,000-sentence SST-2 default gets 3
    assert config.train_config(2).planned_epochs(267) == 7 and config.train_config(2).planned_epochs(625) == 3
    assert CompressConfig(stage2_min_steps=None).train_config(2).planned_epochs(267) == 1
