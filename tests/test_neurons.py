"""The FFN as kept neurons (``--ffn neurons``, ``kronedge.neurons``): which neurons stay, the refit of the down map,
the budget, and a student that saves, loads and exports as a plain BERT of a smaller intermediate size."""

import copy
import dataclasses

import helpers
import numpy as np
import pytest
import torch

from kronedge.artifact import load_artifact, save_artifact
from kronedge.calibration import collect_input_stats, for_kept_layers
from kronedge.kron_config import PlanError
from kronedge.neurons import ffn_layers, keep_neurons_, narrowed, narrower, neuron_scores, neurons_for, pick_width, refit_down
from kronedge.pipeline import plan_teacher
from kronedge.planner import KronConfig, layer_budgets, plan_model
from kronedge.recipe import CompressConfig
from kronedge.students import KroneckerStudent, build_student
from kronedge.surgery import kronize_
from kronedge.teachers import minilm_dir
from kronedge.training import TrainingError, load_tokenizer

DOWN = "bert.encoder.layer.0.output.dense"


def logits(model, texts=helpers.PROBE_TEXTS):
    return helpers.torch_logits(model, texts)


def probe_stats(model):
    return collect_input_stats(model, load_tokenizer(minilm_dir()), list(helpers.PROBE_TEXTS))


def saved_loaded_and_exported(student, tmp_path):
    """``student`` saved and loaded again (its logits unchanged) and exported (fp32 ONNX = PyTorch within 1e-4);
    returns the loaded model."""
    from exporters.export import export_model
    from runtime.predictor import create_session

    loaded = load_artifact(save_artifact(student, tmp_path / "art", minilm_dir(), {"teacher": "test"}))
    np.testing.assert_allclose(logits(loaded), logits(student), atol=1e-6)
    exported = export_model(student, tmp_path / "fp32", tokenizer_dir=minilm_dir(), max_length=32, ort_format=False)
    session = create_session(exported / "model.onnx")
    names = [i.name for i in session.get_inputs()]
    feeds = helpers.encode(list(helpers.PROBE_TEXTS))
    expected = student(**{n: torch.from_numpy(v) for n, v in feeds.items()}).logits.detach().numpy()
    np.testing.assert_allclose(session.run(None, {n: v for n, v in feeds.items() if n in names})[0], expected, atol=1e-4)
    return loaded


def test_dead_neurons_go_first_and_the_rest_is_the_teacher_exactly():
    model = helpers.informative_bert(kronecker=False)
    dead = {name: torch.randperm(96, generator=torch.Generator().manual_seed(i))[:40]
            for i, (name, _) in enumerate(ffn_layers(model))}
    with torch.no_grad():
        for name, layer in ffn_layers(model):
            layer.output.dense.weight[:, dead[name]] = 0  # these neurons add nothing to the output
    before = logits(model)
    narrowed = copy.deepcopy(model)
    kept = keep_neurons_(narrowed, 56)  # weight-only scores: a zero down column scores 0
    for name, _ in ffn_layers(model):
        assert not set(kept[f"{name}.output.dense"]) & set(dead[name].tolist())
    assert narrowed.config.intermediate_size == 56
    assert narrowed.bert.encoder.layer[1].intermediate.dense.weight.shape == (56, 48)
    np.testing.assert_allclose(logits(narrowed), before, atol=1e-5)
    keep_neurons_(narrowed, 30)  # now live neurons go: the output must move
    assert not np.allclose(logits(narrowed), before, atol=1e-3)


def test_scores_weigh_each_neurons_activation_on_text_by_its_down_column():
    model = helpers.informative_bert(kronecker=False)
    stats = probe_stats(model)
    layer = model.bert.encoder.layer[0]
    up, down = layer.intermediate.dense, layer.output.dense
    # E[a_j^2] from the teacher's own activations on the probe texts, one text at a time as calibration runs
    seen = []
    hook = layer.intermediate.register_forward_hook(lambda m, i, out: seen.append(out.detach().reshape(-1, 96)))
    logits(model)
    hook.remove()
    acts = torch.cat(seen).double()
    expected = (acts ** 2).mean(0) * (down.weight.detach().double() ** 2).sum(0)
    torch.testing.assert_close(neuron_scores(up, down, stats[DOWN]), expected)
    weight_only = neuron_scores(up, down)
    assert not torch.allclose(weight_only / weight_only.sum(), expected / expected.sum(), atol=1e-3)


def test_the_refit_down_map_rebuilds_the_output_better_than_the_slice():
    model = helpers.informative_bert(kronecker=False)
    entry = probe_stats(model)[DOWN]
    w = model.bert.encoder.layer[0].output.dense.weight.detach().double()
    kept = torch.arange(0, 96, 3)
    c = entry.covariance()

    def error(w_kept):  # mean ||W a - W' a_kept||^2 over the calibration activations
        full = torch.zeros_like(w)
        full[:, kept] = w_kept
        diff = w - full
        return float(torch.trace(diff @ c @ diff.T))

    refit = refit_down(w, kept, entry)
    assert error(refit) < 0.9 * error(w[:, kept])
    # a least-squares optimum: moving it in any direction costs more
    for seed in range(3):
        step = 1e-2 * torch.randn(refit.shape, generator=torch.Generator().manual_seed(seed), dtype=refit.dtype)
        assert error(refit + step) > error(refit)


def test_the_other_layers_keep_the_factored_plans_budget_and_the_target_is_met():
    teacher = helpers.tiny_bert()
    factored = plan_model(teacher, KronConfig(compression=8, structure="svd"))
    k = neurons_for(teacher, KronConfig(compression=8, structure="svd", ffn="neurons"))
    assert 1 <= k < 96
    student, plan = build_student(teacher, KroneckerStudent(KronConfig(compression=8, structure="svd", ffn="neurons")))
    assert student.config.intermediate_size == k and teacher.config.intermediate_size == 96
    shapes = {l.name: l.kron for l in factored.layers if l.role not in ("ffn_up", "ffn_down")}
    assert {l.name: l.kron for l in plan.layers} == shapes  # no FFN layer is factored, every other as before
    full = sum(p.numel() for p in teacher.parameters())
    assert full / plan.params_student >= 8
    assert plan.params_student == sum(p.numel() for p in student.parameters())
    # a neuron costs its up row and bias and its down column: k is what the factored FFN's unrounded budget pays for
    budgets = layer_budgets(teacher, KronConfig(compression=8, structure="svd"))
    ffn = budgets["bert.encoder.layer.0.intermediate.dense"] + budgets[DOWN] + 96
    assert k * (2 * 48 + 1) <= ffn < (k + 1) * (2 * 48 + 1)
    # so the FFN spends no less than the factored one did, less one neuron per layer
    assert plan.params_student >= factored.params_student - 2 * (2 * 48 + 1)


def test_a_neurons_student_saves_loads_and_exports_as_a_plain_bert(tmp_path):
    teacher = helpers.informative_bert(kronecker=False)
    stats = probe_stats(teacher)
    student, plan = build_student(teacher, KroneckerStudent(KronConfig(compression=6, structure="svd", ffn="neurons"),
                                                            stats=stats))
    student.eval()
    k = student.config.intermediate_size
    assert k < 96 and any("kept neurons" in note for note in plan.notes)
    assert saved_loaded_and_exported(student, tmp_path).config.intermediate_size == k


def test_kronize_narrows_itself_and_a_plan_of_an_unnarrowed_model_is_refused():
    model = helpers.tiny_bert()
    config = KronConfig(compression=8, structure="svd", ffn="neurons")
    with pytest.raises(PlanError, match="narrow it first"):
        plan_model(model, config)
    plan = kronize_(model, config)
    assert narrowed(model) == {"kept": model.config.intermediate_size, "of": 96} and model.config.intermediate_size < 96
    assert not any(l.role in ("ffn_up", "ffn_down") for l in plan.layers)
    assert isinstance(model.bert.encoder.layer[0].intermediate.dense, torch.nn.Linear)


def test_a_preset_keeps_its_shapes_and_its_ffn_budget_becomes_neurons():
    kb21 = plan_teacher("random:bert-base-uncased", KronConfig.kb21())  # meta weights: shapes only
    plan = plan_teacher("random:bert-base-uncased", dataclasses.replace(KronConfig.kb21(), ffn="neurons"))
    assert {l.name: l.kron for l in plan.layers} == {l.name: l.kron for l in kb21.layers
                                                     if l.role not in ("ffn_up", "ffn_down")}
    assert any("kept neurons per layer 97" in note for note in plan.notes)
    # 97 neurons spend no more than kb21's FFN factors and biases, and the note counts the full teacher
    assert plan.params_student <= kb21.params_student
    assert round(plan.compression_full, 2) == 21.01 and plan.params_full > plan.params_teacher


@pytest.mark.parametrize("fields, message", [
    ({"ffn": "pruned"}, "ffn must be one of"),
    ({"ffn": "neurons", "calibration": False}, "--no-calibration"),
    ({"ffn": "neurons", "embedding_share": 0.3, "structure": "svd"}, "embedding_share"),
    ({"ffn": "neurons", "method": "svd"}, "--method kronecker"),
    ({"ffn": "neurons", "general_student": "auto"}, "--general-student"),
])
def test_compress_refuses_an_ffn_form_it_cannot_build(fields, message):
    with pytest.raises(TrainingError, match=message):
        CompressConfig(**fields)


def test_factored_is_none_and_auto_is_neurons_where_the_student_is_made_from_its_teacher():
    # None keeps earlier recipes' cache keys and resumable runs valid (result_settings drops unset fields)
    assert CompressConfig(ffn="factored").ffn is None is CompressConfig(preset="kb21", compression=None).ffn
    assert CompressConfig().ffn == "neurons" and CompressConfig(vocabulary="full").ffn == "neurons"
    assert CompressConfig(calibration=False).ffn is None  # neurons are picked on the calibration text
    assert KronConfig(compression=5, ffn="factored").ffn is None
    assert CompressConfig(ffn="neurons").kron_config().ffn == "neurons"


def test_an_unknown_form_or_more_neurons_than_the_layer_has_is_refused():
    with pytest.raises(PlanError, match="ffn must be one of"):
        KronConfig(compression=5, ffn="rows")
    with pytest.raises(PlanError, match="cannot keep"):
        keep_neurons_(helpers.tiny_bert(), 97)


def test_a_shallower_student_takes_the_statistics_of_the_teacher_layers_it_kept():
    teacher = helpers.informative_bert(kronecker=False)  # two layers; --layers 1 keeps the teacher's layer 1
    stats = probe_stats(teacher)
    renamed = for_kept_layers(stats, [1])
    assert renamed[DOWN] is stats["bert.encoder.layer.1.output.dense"]
    assert not any(".layer.1." in name for name in renamed)

    config = KroneckerStudent(KronConfig(compression=6, structure="svd", ffn="neurons"), stats=stats, layers=1)
    student, _ = build_student(teacher, config)
    k = student.config.intermediate_size

    def best(i):  # the neurons teacher layer i's own statistics pick
        layer = teacher.bert.encoder.layer[i]
        scores = neuron_scores(layer.intermediate.dense, layer.output.dense, stats[f"bert.encoder.layer.{i}.output.dense"])
        return torch.sort(torch.topk(scores, k).indices).values

    assert not torch.equal(best(0), best(1))
    torch.testing.assert_close(student.bert.encoder.layer[0].intermediate.dense.weight,
                               teacher.bert.encoder.layer[1].intermediate.dense.weight[best(1)])


def test_a_wider_ffn_keeps_more_neurons_factored_at_the_factored_plans_budgets(tmp_path):
    from kronedge.structure import equal_param_rank

    teacher = helpers.informative_bert(kronecker=False)
    stats = probe_stats(teacher)
    factored = KronConfig(compression=6, structure="svd")
    budgets = layer_budgets(teacher, factored)
    k = neurons_for(teacher, KronConfig(compression=6, structure="svd", ffn="neurons"))
    width = k + 24
    student, plan = build_student(teacher, KroneckerStudent(
        KronConfig(compression=6, structure="svd", ffn="neurons", ffn_width=width), stats=stats))
    student.eval()
    assert student.config.intermediate_size == width and narrowed(student) == {"kept": width, "of": 96}
    plain = {l.name: l.kron for l in plan_model(teacher, factored).layers}
    for layer in plan.layers:
        if layer.role in ("ffn_up", "ffn_down"):  # the kept neurons' maps, at the factored FFN's budgets
            dims = (width, 48) if layer.role == "ffn_up" else (48, width)
            assert layer.dense_shape == dims and layer.kron.rank == equal_param_rank(budgets[layer.name], *dims) > 1
        else:  # every other layer exactly as in the factored plan
            assert layer.kron == plain[layer.name]
    assert {l.role for l in plan.layers} >= {"ffn_up", "ffn_down"}
    assert plan.params_student <= plan_model(teacher, factored).params_student

    assert saved_loaded_and_exported(student, tmp_path).config.intermediate_size == width


def test_the_wide_down_map_is_fitted_under_its_kept_neurons_own_statistics():
    from kronedge.neurons import kept_stats, narrower

    teacher = helpers.informative_bert(kronecker=False)
    stats = probe_stats(teacher)
    narrowing = narrower(teacher, KronConfig(compression=6, structure="svd", ffn="neurons", ffn_width=60), stats)
    assert narrowing.stats[DOWN].second_moment.shape == (60, 60)
    up = "bert.encoder.layer.0.intermediate.dense"
    assert narrowing.stats[up] is stats[up]  # the up map still sees the teacher's hidden states
    # the cut is the kept rows and columns of the teacher's second moments
    moments = stats[DOWN].second_moment
    cut = kept_stats(stats, {DOWN: [3, 7, 11]})[DOWN]
    assert torch.equal(cut.second_moment, moments[[3, 7, 11]][:, [3, 7, 11]]) and cut.tokens == stats[DOWN].tokens


@pytest.mark.parametrize("fields, message", [
    ({"compression": 6, "structure": "svd", "ffn_width": 60}, "give --ffn neurons"),
    ({"compression": 6, "ffn": "neurons", "ffn_width": 60}, "structure"),  # the paper's shapes
    ({"compression": 6, "structure": "svd", "ffn": "neurons", "ffn_width": 0}, ">= 1"),
    ({"compression": 6, "structure": "svd", "ffn": "neurons", "ffn_width": "wide"}, "or 'dense'"),
    ({"compression": 6, "structure": "svd", "ffn_width": "dense"}, "give --ffn neurons"),
])
def test_a_width_without_kept_neurons_or_with_fixed_shapes_is_refused(fields, message):
    with pytest.raises(PlanError, match=message):
        KronConfig(**fields)


def test_a_width_below_the_dense_count_is_refused_and_the_dense_count_is_the_dense_ffn():
    teacher = helpers.tiny_bert()
    k = neurons_for(teacher, KronConfig(compression=8, structure="svd", ffn="neurons"))
    with pytest.raises(PlanError, match=f"give at least {k}"):
        kronize_(helpers.tiny_bert(), KronConfig(compression=8, structure="svd", ffn="neurons", ffn_width=k - 1))
    dense = kronize_(helpers.tiny_bert(), KronConfig(compression=8, structure="svd", ffn="neurons"))
    same = kronize_(helpers.tiny_bert(), KronConfig(compression=8, structure="svd", ffn="neurons", ffn_width=k))
    assert [(l.name, l.kron) for l in same.layers] == [(l.name, l.kron) for l in dense.layers]
    assert not any(l.role in ("ffn_up", "ffn_down") for l in same.layers)


def test_a_search_keeps_the_held_out_ffn_inputs_and_scores_widths_on_them():
    from kronedge.neurons import _wide_maps, block_error, narrower, searched_width, width_errors

    teacher = helpers.informative_bert(kronecker=False)
    texts = list(helpers.PROBE_TEXTS)
    stats = collect_input_stats(teacher, load_tokenizer(minilm_dir()), texts, holdout_every=2)
    up = "bert.encoder.layer.1.intermediate.dense"
    samples = stats[up].heldout.samples
    assert samples.shape == (stats[up].heldout.tokens, 48) and stats[up].heldout.tokens < stats[up].tokens
    assert stats[DOWN].heldout.samples is None  # only the FFN's inputs: its error runs through the GELU

    # the held-out tokens are the hidden states that enter the FFN: its own maps rebuild its output exactly
    layer = teacher.bert.encoder.layer[1]
    own = (layer.intermediate.dense.weight.double(), layer.intermediate.dense.bias.double(),
           layer.output.dense.weight.double())
    assert block_error(layer, own, samples) < 1e-20
    config = KronConfig(compression=6, structure="search", ffn="neurons")
    k = neurons_for(teacher, config)
    errors = width_errors(teacher, config, stats, k)
    assert list(errors) == sorted(errors) and errors[k] > 0 and 96 in errors and min(errors) == k
    # the full width, factored at the factored FFN's budgets, is what the factored FFN (refitted) would start at
    fit = {n: e.without_heldout() for n, e in stats.items()}
    budgets = layer_budgets(teacher, KronConfig(compression=6, structure="search"))
    by_hand = sum(block_error(l, _wide_maps(l, name, 96, budgets, fit), stats[f"{name}.intermediate.dense"].heldout.samples)
                  for name, l in ffn_layers(teacher)) / 2
    assert errors[96] == pytest.approx(by_hand)
    # the search keeps the least-error width only where it starts clearly lower than the dense count
    best = min(errors, key=errors.get)
    expected = best if errors[best] < 0.97 * errors[k] else k
    assert searched_width(teacher, config, stats, k) == expected
    narrowing = narrower(helpers.informative_bert(kronecker=False), config, stats)
    assert narrowing.config.ffn_width == (None if expected == k else expected)
    # "dense" turns the search off: k neurons, as without held-out inputs
    assert expected != k  # else the next lines could not tell the two apart
    dense_model = helpers.informative_bert(kronecker=False)
    dense = narrower(dense_model, dataclasses.replace(config, ffn_width="dense"), stats)
    assert dense.config.ffn_width is None and dense.budgets is None
    assert {l.intermediate.dense.out_features for _, l in ffn_layers(dense_model)} == {k}
    # the SVD corners search the width alike (compress's default); the paper's fixed shapes keep the dense count
    svd = dataclasses.replace(config, structure="svd")
    assert searched_width(teacher, svd, stats, k) == expected
    assert narrower(helpers.informative_bert(kronecker=False), svd, stats).config.ffn_width == narrowing.config.ffn_width
    paper = narrower(helpers.informative_bert(kronecker=False), KronConfig(compression=6, ffn="neurons"), stats)
    assert paper.config.ffn_width is None and paper.budgets is None
    # without held-out inputs (no search, or a plan without calibration) the FFN stays dense
    assert searched_width(teacher, config, probe_stats(teacher), k) == k
    assert searched_width(teacher, config, None, k) == k


@pytest.mark.parametrize("args, message", [
    (["--compression", "8", "--structure", "svd", "--ffn", "neurons", "--ffn-width", "2"], "give at least"),
    (["--compression", "8", "--structure", "svd", "--ffn", "neurons", "--ffn-width", "500"], "cannot keep 500 of 96"),
    (["--compression", "8", "--structure", "svd", "--ffn-width", "40"], "give --ffn neurons"),
    (["--compression", "8", "--structure", "svd", "--ffn", "neurons", "--ffn-width", "wide"], "or 'dense'"),
])
def test_the_cli_says_which_widths_it_cannot_keep(tmp_path, args, message):
    assert message in helpers.one_line_error(["plan", helpers.tiny_spec(tmp_path), *args])


def test_the_calibration_holds_texts_out_where_a_structure_or_an_ffn_width_is_searched():
    from kronedge.calibration import HOLDOUT_EVERY, holdout_for

    assert holdout_for("search") == holdout_for("svd", "neurons") == holdout_for("search", "neurons") == HOLDOUT_EVERY
    assert holdout_for("svd") == holdout_for("paper", "neurons") == holdout_for("paper") == 0
    # a width given is not searched: no texts held out for it (a structure search still holds them)
    assert holdout_for("svd", "neurons", 192) == holdout_for("svd", "neurons", "dense") == 0
    assert holdout_for("search", "neurons", 192) == HOLDOUT_EVERY


@pytest.mark.parametrize("errors, kept", [
    # compress's logged errors at 20x: SST-2 (task vocabulary) and CoLA keep their least-error widths, 3% or more
    # below the dense count
    ({76: 0.0868, 96: 0.0845, 128: 0.0815, 192: 0.0800, 256: 0.0792, 384: 0.0811, 1536: 0.1153}, 256),
    ({89: 0.0886, 96: 0.0893, 128: 0.0856, 192: 0.0816, 256: 0.0817, 1536: 0.1125}, 192),
    # SST-2 at 5.7x with the full vocabulary: 384 starts lowest but only 2% below the dense count
    ({249: 0.0569, 256: 0.0593, 384: 0.0557, 512: 0.0562, 1536: 0.0748}, 249),
])
def test_pick_width_keeps_the_least_error_width_only_3_percent_below_the_dense_count(errors, kept):
    assert pick_width(errors, min(errors)) == kept


def test_dense_turns_the_width_search_off_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from kronedge.cli import app
    from kronedge.recipe import CompressConfig

    args = ["plan", helpers.tiny_spec(tmp_path), "--compression", "8", "--structure", "svd", "--ffn", "neurons"]
    result = CliRunner().invoke(app, [*args, "--ffn-width", "dense"])
    assert result.exit_code == 0, result.output
    assert "dense (--ffn neurons)" in result.output
    assert CompressConfig(compression=20, ffn_width="dense").kron_config().ffn_width == "dense"


def test_dense_keeps_an_already_narrowed_ffn_dense():
    teacher = helpers.tiny_bert()
    narrower(teacher, KronConfig(compression=8, structure="svd", ffn="neurons"))
    plan = kronize_(teacher, KronConfig(compression=8, structure="svd", ffn="neurons", ffn_width="dense"))
    assert not any(l.role in ("ffn_up", "ffn_down") for l in plan.layers)
    assert "dense (--ffn neurons)" in plan.notes[0]


# -- part of the FFN's budget to the word embedding (--ffn-to-embedding) ------------------------------------

EMBEDDING = "bert.embeddings.word_embeddings"


def test_ffn_to_embedding_moves_that_share_of_each_ffn_budget_and_nothing_else():
    from kronedge.neurons import factored_budgets

    teacher = helpers.tiny_bert()
    config = KronConfig(compression=8, structure="svd", ffn="neurons")
    before = factored_budgets(teacher, config)
    after = factored_budgets(teacher, dataclasses.replace(config, ffn_to_embedding=0.25))
    ffn = [n for n in before if n.endswith(("intermediate.dense", "output.dense")) and "attention" not in n]
    assert len(ffn) == 4
    for name in before:
        if name in ffn:
            assert after[name] == before[name] - int(before[name] * 0.25)
        elif name != EMBEDDING:
            assert after[name] == before[name]  # the attention keeps its budget
    assert after[EMBEDDING] == before[EMBEDDING] + sum(int(before[n] * 0.25) for n in ffn)
    assert sum(after.values()) == sum(before.values())


@pytest.mark.parametrize("width", [None, "wide"])
def test_ffn_to_embedding_gives_the_embedding_rank_at_one_size(width):
    """Dense kept neurons (fewer of them) and a wider factored FFN (a lower rank): the embedding gains rank, the
    attention keeps its shapes, and the student's size stays the target's."""
    teacher = helpers.tiny_bert(vocab_size=400)  # an embedding rank costs 448 parameters: the moved budget buys some
    base = KronConfig(compression=4, structure="svd", ffn="neurons")
    k = neurons_for(teacher, base)
    if width == "wide":
        base = dataclasses.replace(base, ffn_width=k + 24)
    plans = {share: build_student(copy.deepcopy(teacher), KroneckerStudent(
        dataclasses.replace(base, ffn_to_embedding=share)))[1] for share in (None, 0.5)}
    layers = {share: {l.name: l for l in plan.layers} for share, plan in plans.items()}
    assert layers[0.5][EMBEDDING].kron.rank > layers[None][EMBEDDING].kron.rank
    for name, layer in layers[None].items():
        if layer.role == "attention":
            assert layers[0.5][name].kron == layer.kron
        if layer.role in ("ffn_up", "ffn_down"):  # the wide FFN: the same neurons at a lower rank
            assert layers[0.5][name].kron.rank < layer.kron.rank
    if width is None:  # dense kept neurons: fewer of them
        assert neurons_for(teacher, dataclasses.replace(base, ffn_to_embedding=0.5)) < k
    full = sum(p.numel() for p in teacher.parameters())
    assert full / plans[0.5].params_student >= 4
    assert abs(plans[0.5].params_student / plans[None].params_student - 1) < 0.03


@pytest.mark.parametrize("fields, message", [
    ({"compression": 6, "structure": "svd", "ffn_to_embedding": 0.5}, "needs --ffn neurons"),
    ({"compression": 6, "ffn": "neurons", "ffn_to_embedding": 0.5}, "svd or search"),  # the paper's shapes
    ({"compression": 6, "structure": "svd", "ffn": "neurons", "ffn_to_embedding": 1.0}, r"in \(0, 1\)"),
])
def test_ffn_to_embedding_needs_kept_neurons_and_a_budgeted_structure(fields, message):
    with pytest.raises(PlanError, match=message):
        KronConfig(**fields)


def test_auto_moves_half_the_ffn_budget_from_20x_up_where_the_task_vocabulary_and_kept_neurons_apply():
    # None keeps the keys and resumable runs of recipes below 20x (result_settings drops unset fields)
    assert CompressConfig().ffn_to_embedding is None  # the default 5.5x: a tie there (role_split.md)
    assert CompressConfig(compression=19.9).ffn_to_embedding is None  # 10x: mixed (role_split.md)
    for compression in (20, 24):
        config = CompressConfig(compression=compression)
        assert config.ffn_to_embedding == 0.5 and config.kron_config().ffn_to_embedding == 0.5
    for without in (dict(vocabulary="full"), dict(ffn="factored"), dict(structure="paper"), dict(method="svd"),
                    dict(calibration=False), dict(embedding_share=0.2), dict(ffn_to_embedding=0)):
        assert CompressConfig(compression=20, **without).ffn_to_embedding is None, without
    assert CompressConfig(compression=20, ffn_to_embedding=0.25).ffn_to_embedding == 0.25
    assert CompressConfig(compression=5.5, ffn_to_embedding=0.5).kron_config().ffn_to_embedding == 0.5
    with pytest.raises(TrainingError, match=r"in \(0, 1\)"):
        CompressConfig(compression=20, ffn_to_embedding=1.5)


def test_compress_at_20x_moves_half_the_ffn_budget_and_says_so(tmp_path, monkeypatch, caplog):
    import json

    from typer.testing import CliRunner

    import test_byo_data as byo
    from kronedge.cli import app

    monkeypatch.chdir(tmp_path)
    train, dev, options = byo.nli(tmp_path)
    common = list(byo.COMMON)
    common[common.index("--compression") + 1] = "20"
    args = ["compress", "--teacher", helpers.tiny_spec(tmp_path), "--train", train, "--validation", dev, *options,
            *common, "--out", "art"]
    with caplog.at_level("INFO", logger="kronedge.compress"):
        result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "50% of each kept FFN's parameter budget went to the word embedding" in caplog.text
    recipe = json.loads((tmp_path / "art" / "kronedge.json").read_text())
    assert recipe["compress_config"]["ffn_to_embedding"] == 0.5 and recipe["kron_config"]["ffn_to_embedding"] == 0.5
