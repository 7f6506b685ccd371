"""Structure search and data-aware fits: the SVD corner, budgets, weighted errors, planner options."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from helpers import PROBE_TEXTS, tiny_bert, tokenizer_dir
from kronedge.calibration import collect_input_stats
from kronedge.fitting import InputStats, WeightedProblem, kronecker_covariance
from kronedge.layers import KronShape, KroneckerEmbedding, KroneckerLinear, nearest_kronecker
from kronedge.planner import KronConfig, PlanError, plan_model
from kronedge.structure import Candidate, allocate, svd_corner
from kronedge.surgery import kronize_


def _truncated_svd(w: torch.Tensor, r: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    return (u[:, :r] * s[:r]) @ vh[:r]


@pytest.mark.parametrize("m,n,r", [(12, 20, 3), (37, 8, 5), (6, 6, 1)])
def test_svd_corner_is_truncated_svd(m, n, r):
    torch.manual_seed(0)
    dense = nn.Linear(n, m)
    layer = KroneckerLinear.from_dense(dense, svd_corner(m, n, r))
    expected = _truncated_svd(dense.weight.detach(), r)
    torch.testing.assert_close(layer.to_dense().double(), expected, atol=1e-5, rtol=1e-5)
    x = torch.randn(4, n)
    torch.testing.assert_close(layer(x), x @ expected.float().T + dense.bias, atol=1e-5, rtol=1e-5)
    if r > 1:  # not a coincidence of a full-rank fit: one rank less is measurably worse
        worse = (_truncated_svd(dense.weight.detach(), r - 1) - dense.weight.double()).norm()
        assert (layer.to_dense().double() - dense.weight.double()).norm() < worse - 1e-3


def test_embedding_svd_corner_is_truncated_svd():
    torch.manual_seed(0)
    table = nn.Embedding(50, 12)
    emb = KroneckerEmbedding.from_dense(table, k=12, rank=4)  # A 50x1 ⊗ B 1x12, four terms
    torch.testing.assert_close(emb.to_dense().double(), _truncated_svd(table.weight.detach(), 4), atol=1e-5, rtol=1e-5)


def _anisotropic_stats(n: int, seed: int = 0) -> InputStats:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4000, n, generator=g, dtype=torch.float64) * torch.logspace(1, -1, n, dtype=torch.float64)
    return InputStats(second_moment=x.T @ x, tokens=x.shape[0])


def test_weighted_corner_fit_is_the_weighted_optimum():
    torch.manual_seed(0)
    w = torch.randn(10, 16, dtype=torch.float64)
    stats = _anisotropic_stats(16)
    problem = WeightedProblem(w, stats)
    shape = svd_corner(10, 16, 3)
    a, b = problem.fit(shape)
    plain = nearest_kronecker(w, shape)
    # the weighted fit beats the plain (Frobenius-optimal) fit on the inputs' norm by a wide margin
    assert problem.error(a, b) < 0.5 * problem.error(*plain)
    # and it is the closed-form optimum [W S]_r S^-1 (up to the small ridge)
    evals, evecs = torch.linalg.eigh(stats.covariance())
    s = (evecs * evals.sqrt()) @ evecs.T
    optimum = _truncated_svd(w @ s, 3) @ torch.linalg.inv(s)
    assert problem.error(a, b) == pytest.approx(problem.error(optimum[None], torch.ones(1, 1, 1, dtype=torch.float64)), rel=0.05)


def test_weighted_fit_never_loses_to_plain_on_a_general_split():
    torch.manual_seed(1)
    w = torch.randn(12, 24, dtype=torch.float64)
    problem = WeightedProblem(w, _anisotropic_stats(24, seed=1))
    for shape in (KronShape(3, 4, 4, 6, 1), KronShape(2, 6, 6, 4, 2)):
        assert problem.error(*problem.fit(shape)) <= problem.error(*nearest_kronecker(w, shape)) + 1e-12


def test_kronecker_covariance_recovers_a_kronecker_product():
    torch.manual_seed(0)
    p, q = torch.randn(3, 3, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    c1, c2 = p @ p.T + torch.eye(3), q @ q.T + torch.eye(4)
    f1, f2 = kronecker_covariance(torch.kron(c1, c2), 3, 4)
    torch.testing.assert_close(torch.kron(f1, f2), torch.kron(c1, c2))
    assert torch.linalg.eigvalsh(f1).min() > 0 and torch.linalg.eigvalsh(f2).min() > 0


def test_error_curve_matches_fitted_errors():
    torch.manual_seed(0)
    w = torch.randn(24, 30, dtype=torch.float64)
    problem = WeightedProblem(w, None)
    shape = KronShape(4, 5, 6, 6, 1)
    curve = problem.error_curve(shape, 4)
    for r in (1, 4):
        fitted = KronShape(4, 5, 6, 6, r)
        assert float(curve[r - 1]) == pytest.approx(problem.error(*problem.fit(fitted)), rel=1e-4)


def test_allocation_meets_the_budget_and_prefers_steep_layers():
    # layer "steep" loses a lot of error per parameter, layer "flat" almost none: parameters go to "steep"
    steep = [Candidate(KronShape(10, 1, 1, 10, r), 1.0 / r) for r in range(1, 10)]
    flat = [Candidate(KronShape(10, 1, 1, 10, r), 0.5 - 0.001 * r) for r in range(1, 10)]
    picks = allocate({"steep": steep, "flat": flat}, budget=200)
    assert sum(c.params for c in picks.values()) <= 200
    assert picks["steep"].shape.rank > picks["flat"].shape.rank
    with pytest.raises(ValueError, match="over the budget"):
        allocate({"steep": steep}, budget=10)


class _SmallVocab:
    """The packaged tokenizer with ids folded into a small vocabulary, so a search over the embedding
    table stays a matter of seconds."""

    def __init__(self, vocab: int):
        from transformers import AutoTokenizer

        self.inner, self.vocab = AutoTokenizer.from_pretrained(tokenizer_dir()), vocab

    def __call__(self, *texts, **kwargs):
        enc = self.inner(*texts, **kwargs)
        enc["input_ids"] = enc["input_ids"] % self.vocab
        return enc


SMALL_VOCAB = 500


@pytest.fixture(scope="module")
def teacher_and_stats():
    model = tiny_bert(seed=0, vocab_size=SMALL_VOCAB)
    stats = collect_input_stats(model, _SmallVocab(SMALL_VOCAB), list(PROBE_TEXTS) * 3)
    return model, stats


def test_calibration_records_every_selected_layer(teacher_and_stats):
    model, stats = teacher_and_stats
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and "encoder" in n]
    assert set(linears) <= set(stats) and "bert.embeddings.word_embeddings" not in stats
    assert all(stats[n].tokens > 3 * len(PROBE_TEXTS) for n in linears)


def test_calibration_leaves_the_word_embeddings_unweighted(teacher_and_stats):
    """With calibration the linears get data-aware fits, the word embeddings the plain nearest Kronecker product:
    token-frequency weighting spent a 20x student's few embedding ranks on frequent tokens (sst2_structures.md)."""
    model, stats = teacher_and_stats
    config = KronConfig(compression=4, structure="svd")
    calibrated, plain = copy.deepcopy(model), copy.deepcopy(model)
    kronize_(calibrated, config, stats=stats)
    kronize_(plain, config)
    c, p = calibrated.bert.embeddings.word_embeddings, plain.bert.embeddings.word_embeddings
    assert torch.equal(c.a, p.a) and torch.equal(c.b, p.b)
    query = "bert.encoder.layer.0.attention.self.query"
    cq, pq = calibrated.get_submodule(query), plain.get_submodule(query)
    assert not torch.allclose(cq.a, pq.a), "the linears' fits are data-aware"


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_search_stays_within_budget(teacher_and_stats, allocation):
    model, stats = teacher_and_stats
    config = KronConfig(compression=4, structure="search", allocation=allocation)
    plan = plan_model(model, config, stats=stats)
    assert plan.params_student <= model.num_parameters() / 4 * 1.01
    if allocation == "uniform":
        from kronedge.layer_roles import roles_of, targets
        from kronedge.shape_choice import uniform_budgets

        roles = roles_of(targets(model, None))
        budgets = uniform_budgets(roles, config, plan.params_teacher)
        for layer in plan.layers:
            assert layer.params_after <= budgets[layer.name], layer.name


def test_searched_start_is_no_worse_than_svd_on_every_layer(teacher_and_stats):
    model, stats = teacher_and_stats
    searched = plan_model(model, KronConfig(compression=4, structure="search", allocation="uniform"), stats=stats)
    svd = plan_model(model, KronConfig(compression=4, structure="svd"), stats=stats)
    for mine, theirs in zip(searched.layers, svd.layers):
        assert mine.name == theirs.name
        error = "error_plain" if mine.kind == "embedding" else "error_weighted"  # the embeddings are fitted unweighted
        assert mine.errors[error] <= theirs.errors[error] + 1e-9, mine.name


@pytest.fixture(scope="module")
def planted_teacher_and_stats():
    """The tiny teacher with every attention weight a Kronecker product (6 x 8) ⊗ (8 x 6) plus noise: a split that
    is not the SVD corner fits it far better than SVD at the same budget, so a search that works must leave the corner."""
    model = tiny_bert(seed=0, vocab_size=SMALL_VOCAB)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and ".attention." in name:
                planted = torch.kron(torch.randn(6, 8, generator=gen), torch.randn(8, 6, generator=gen))
                module.weight.copy_(planted + 0.01 * torch.randn(planted.shape, generator=gen))
    return model, collect_input_stats(model, _SmallVocab(SMALL_VOCAB), list(PROBE_TEXTS) * 3)


@pytest.mark.parametrize("allocation", ["global", "across-roles"])
def test_global_search_starts_no_role_worse_than_svd(planted_teacher_and_stats, allocation):
    model, stats = planted_teacher_and_stats
    searched = plan_model(model, KronConfig(compression=4, structure="search", allocation=allocation), stats=stats)
    svd = plan_model(model, KronConfig(compression=4, structure="svd"), stats=stats)
    assert searched.params_student <= model.num_parameters() / 4 * 1.01  # the same budget as SVD's
    totals = {}
    for mine, theirs in zip(searched.layers, svd.layers):
        for error in ("error_weighted", "error_plain"):
            if mine.errors[error] is None:  # the word embeddings have no weighted error
                continue
            role = totals.setdefault((mine.role, error), [0.0, 0.0])
            role[0] += mine.errors[error]
            role[1] += theirs.errors[error]
    worse = {role: t for role, t in totals.items() if t[0] > t[1] + 1e-9}
    if allocation == "global":
        assert not worse, worse
        assert any(l.kron.n1 > 1 and l.kron.m2 > 1 for l in searched.layers), "the search kept every layer at the corner"


def test_search_needs_weights_and_a_known_structure():
    with pytest.raises(ValueError, match="structure must be one of"):
        KronConfig(compression=4, structure="tucker")
    with pytest.raises(PlanError, match="weights"):
        with torch.device("meta"):
            model = tiny_bert(seed=0)
        plan_model(model, KronConfig(compression=4, structure="search"))


def test_structure_round_trips_through_the_recorded_layout(teacher_and_stats):
    import copy

    from kronedge.surgery import layout_config

    teacher, stats = teacher_and_stats
    student = copy.deepcopy(teacher)
    plan = kronize_(student, KronConfig(compression=4, structure="search"), stats=stats)
    recorded = layout_config(student.config)
    assert recorded.layer_shapes == plan.layer_shapes
    rebuilt = tiny_bert(seed=3, vocab_size=SMALL_VOCAB)
    kronize_(rebuilt, recorded, init="random")
    rebuilt.load_state_dict(student.state_dict())
    torch.testing.assert_close(torch.from_numpy(torch_logits_of(rebuilt)), torch.from_numpy(torch_logits_of(student)))


def torch_logits_of(model):
    ids = torch.arange(2, 40).reshape(2, 19) % SMALL_VOCAB
    with torch.no_grad():
        return model(input_ids=ids).logits.numpy()


def test_keep_layers_takes_the_layers_the_uniform_kd_map_names():
    from kronedge.distill import layer_mapping
    from kronedge.surgery import keep_layers_

    teacher = tiny_bert(seed=0, vocab_size=SMALL_VOCAB, num_hidden_layers=6)
    student = tiny_bert(seed=0, vocab_size=SMALL_VOCAB, num_hidden_layers=6)
    kept = keep_layers_(student, 3)
    assert kept == [1, 3, 5] == layer_mapping(3, 6, "uniform")
    assert student.config.num_hidden_layers == 3 and len(student.bert.encoder.layer) == 3
    for j, i in enumerate(kept):
        torch.testing.assert_close(student.bert.encoder.layer[j].output.dense.weight,
                                   teacher.bert.encoder.layer[i].output.dense.weight)
    with pytest.raises(ValueError, match="between 1 and"):
        keep_layers_(student, 4)


def test_layers_option_counts_compression_against_the_full_teacher(tmp_path):
    from helpers import tiny_spec

    from kronedge.pipeline import plan_teacher

    spec = tiny_spec(tmp_path, vocab_size=SMALL_VOCAB, num_hidden_layers=4, hidden_size=96, intermediate_size=192)
    full = plan_teacher(spec, KronConfig(compression=3, structure="svd"))
    shallow = plan_teacher(spec, KronConfig(compression=3, structure="svd"), layers=2)
    assert len([l for l in shallow.layers if l.role == "ffn_up"]) == 2
    assert full.params_teacher / shallow.params_student == pytest.approx(3, rel=0.05)
    with pytest.raises(ValueError, match="layers alone give"):
        plan_teacher(spec, KronConfig(compression=1.2, structure="svd"), layers=1)
    assert (shallow.params_full, shallow.flops_full) == (full.params_teacher, full.flops_teacher)
    assert shallow.flops_teacher < full.flops_teacher
    assert shallow.compression_full == pytest.approx(full.params_teacher / shallow.params_student)


@pytest.mark.parametrize("layers, ffn", [(2, None), (None, "neurons"), (2, "neurons")])
def test_a_preset_that_does_not_fit_keeps_its_compression_against_the_full_teacher(tmp_path, layers, ffn):
    """kb21's shapes are BERT_BASE's: on another teacher the planner falls back to kb21's 21x, and with fewer
    layers or FFN neurons kept first that 21x still counts against the whole teacher, not the part kept."""
    from helpers import tiny_spec

    from kronedge.pipeline import plan_teacher

    spec = tiny_spec(tmp_path, vocab_size=3000, num_hidden_layers=4, hidden_size=192, intermediate_size=768)
    plan = plan_teacher(spec, dataclasses.replace(KronConfig.kb21(), ffn=ffn), layers=layers)
    assert any("do not fit" in note for note in plan.notes)
    assert plan.params_full > plan.params_teacher
    assert plan.compression_full == pytest.approx(21, rel=0.15)
    assert plan.compression < plan.compression_full


@pytest.mark.slow
def test_compress_with_searched_structure_calibration_and_fewer_layers(tmp_path, monkeypatch):
    """`kronedge compress --structure search --calibration --layers 1`: the artifact records the searched
    layout, one layer, and loads back to the same outputs."""
    import json

    from typer.testing import CliRunner

    from helpers import tiny_spec
    from kronedge.artifact import load_artifact
    from kronedge.cli import app

    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(tmp_path, num_hidden_layers=2)
    args = ["compress", "--teacher", spec, "--compression", "4", "--teacher-train-limit", "64", "--stage1-examples",
            "16", "--stage2-examples", "32", "--max-length", "32", "--out", "art", "--run-dir", "run",
            "--precision", "fp32", "--no-teacher-check", "--structure", "search", "--calibration", "--layers", "1",
            "--min-steps", "0", "--stage2-min-steps", "0", "--json", "--ffn", "factored"]  # the searched FFN too
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "calibration" in report["seconds"]
    model = load_artifact(tmp_path / "art")
    assert model.config.num_hidden_layers == 1
    layout = model.config.kronecker_layout
    assert len([n for n in layout if ".intermediate." in n]) == 1
    recipe = json.loads((tmp_path / "art" / "kronedge.json").read_text())
    assert recipe["compress_config"]["structure"] == "search" and recipe["compress_config"]["layers"] == 1
    assert recipe["compress_config"]["layer_map"] == "uniform"


def test_calibration_holds_out_every_nth_text_inside_the_totals():
    model = tiny_bert(seed=0, vocab_size=SMALL_VOCAB)
    texts = list(PROBE_TEXTS) * 2
    full = collect_input_stats(model, _SmallVocab(SMALL_VOCAB), texts, holdout_every=3)
    held_only = collect_input_stats(model, _SmallVocab(SMALL_VOCAB), texts[2::3])
    rest = collect_input_stats(model, _SmallVocab(SMALL_VOCAB), [t for i, t in enumerate(texts) if i % 3 != 2])
    for name, entry in full.items():
        assert entry.heldout.tokens == held_only[name].tokens > 0
        fitted = entry.without_heldout()
        assert fitted.tokens == rest[name].tokens
        torch.testing.assert_close(fitted.second_moment, rest[name].second_moment)
        torch.testing.assert_close(entry.heldout.second_moment, held_only[name].second_moment)


class _PenalisesSplits:
    """A held-out check on which every split (n1 > 1) is far worse than the SVD corner (n1 == 1)."""

    def error(self, a, b) -> float:
        return 0.0 if a.shape[2] == 1 else 1.0


def test_the_guard_keeps_the_corners_when_the_picks_lose_on_heldout_texts():
    from kronedge.structure import _guarded

    a, b = torch.randn(2, 2, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    weight = torch.kron(a, b) + 0.01 * torch.randn(8, 8, dtype=torch.float64)  # nearly one Kronecker product
    problem = WeightedProblem(weight, None)
    split = Candidate(KronShape(2, 2, 4, 4), problem.error(*problem.fit(KronShape(2, 2, 4, 4))))
    corners = [Candidate(svd_corner(8, 8, r), problem.error(*problem.fit(svd_corner(8, 8, r)))) for r in (1, 2)]
    args = ({"w": split}, {"w": problem}, {"w": corners}, {"w": 32})
    assert split.error < 0.01 < corners[-1].error  # on the fitted texts the split wins by far
    assert _guarded(*args, checks={})["w"] is split
    assert _guarded(*args, checks={"w": _PenalisesSplits()})["w"] is corners[-1]
    assert _guarded(*args, checks={"w": problem})["w"] is split  # held-out texts that agree keep the split


def test_searched_start_is_no_worse_than_svd_on_the_heldout_texts(teacher_and_stats):
    model, _ = teacher_and_stats
    stats = collect_input_stats(model, _SmallVocab(SMALL_VOCAB), list(PROBE_TEXTS) * 3, holdout_every=4)
    layers = dict(model.named_modules())
    totals = {}
    for structure in ("search", "svd"):
        plan = plan_model(model, KronConfig(compression=4, structure=structure), stats=stats)
        for layer in plan.layers:
            if layer.name not in stats:  # the word embeddings: fitted unweighted, no held-out inputs
                continue
            entry = stats[layer.name]
            fitted = WeightedProblem(layers[layer.name].weight, entry.without_heldout())
            error = WeightedProblem(layers[layer.name].weight, entry.heldout).error(*fitted.fit(layer.kron))
            totals.setdefault(layer.role, {}).setdefault(structure, 0.0)
            totals[layer.role][structure] += error
    worse = {role: t for role, t in totals.items() if t["search"] > t["svd"] + 1e-9}
    assert not worse, worse


def test_the_guard_keeps_the_corners_when_the_picks_lose_on_the_weights():
    from kronedge.structure import _guarded

    # W's first four input columns are one Kronecker block, its last four a large rank-1 part that no
    # split with that B can follow; calibration inputs (almost) never use the last four.
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, generator=g, dtype=torch.float64), torch.randn(4, 4, generator=g, dtype=torch.float64)
    weight = torch.cat([torch.kron(a, b), 10 * torch.outer(torch.randn(8, generator=g, dtype=torch.float64),
                                                          torch.randn(4, generator=g, dtype=torch.float64))], dim=1)
    inputs = torch.diag(torch.tensor([1.0] * 4 + [1e-4] * 4, dtype=torch.float64))
    problem = WeightedProblem(weight, InputStats(second_moment=inputs * 100, tokens=100))
    split_shape, corner_shape = KronShape(2, 2, 4, 4), svd_corner(8, 8, 1)  # 20 and 16 parameters
    split = Candidate(split_shape, problem.error(*problem.fit(split_shape)))
    corner = Candidate(corner_shape, problem.error(*problem.fit(corner_shape)))
    assert split.error < 0.5 * corner.error  # on the calibration inputs the split wins by far...
    plain = WeightedProblem(weight, None)
    assert plain.error(*plain.fit(split_shape)) > plain.error(*plain.fit(corner_shape))  # ...on the weights it loses
    assert _guarded({"w": split}, {"w": problem}, {"w": [corner]}, {"w": 20}, checks={})["w"] is corner
    unweighted = WeightedProblem(torch.kron(torch.randn(2, 2, generator=g, dtype=torch.float64), b), None)
    exact_split = Candidate(split_shape, unweighted.error(*unweighted.fit(split_shape)))
    exact_corner = Candidate(corner_shape, unweighted.error(*unweighted.fit(corner_shape)))
    assert _guarded({"w": exact_split}, {"w": unweighted}, {"w": [exact_corner]}, {"w": 20}, checks={})["w"] is exact_split


def test_the_swapped_svd_corner_is_not_a_candidate():
    """(1 x n) ⊗ (m x 1) is the SVD corner with its factors swapped: the same matrices, so only one orientation is
    searched and a search that finds nothing better builds exactly SVD's student."""
    from kronedge.structure import base_shapes

    shapes = base_shapes("attention", 8, 12)
    assert svd_corner(8, 12, 1) in shapes and KronShape(1, 12, 8, 1) not in shapes
    assert KronShape(2, 3, 4, 4) in shapes  # the genuine splits stay


def test_kronize_counts_flops_at_the_length_plan_counts_them(tmp_path):
    """A teacher with 64 positions: plan and kronize both count FLOPs at 64 tokens, not kronize at 128."""
    from helpers import tiny_spec

    from kronedge.pipeline import kronize_teacher, plan_teacher

    spec = tiny_spec(tmp_path, vocab_size=SMALL_VOCAB, hidden_size=96, intermediate_size=192)
    config = KronConfig(compression=3, structure="svd")
    planned = plan_teacher(spec, config)
    _, kronized = kronize_teacher(spec, config, tmp_path / "art")
    # kronize's teacher has a classification head (a few FLOPs more); at 128 tokens every count would double
    assert kronized.flops_full == pytest.approx(planned.flops_full, rel=1e-3)
    assert kronized.flops_student == pytest.approx(planned.flops_student, rel=1e-3)
    assert planned.flops_full == plan_teacher(spec, config, seq_len=64).flops_full


def test_calibration_reads_a_data_files_text_column_and_a_text_file_as_text(tmp_path):
    from kronedge.calibration import calibration_texts

    table = tmp_path / "train.csv"
    table.write_text('text,label\n"a fine, quiet film",positive\nbleak and desperate,negative\n', encoding="utf-8")
    assert calibration_texts(str(table), limit=None) == ["a fine, quiet film", "bleak and desperate"]
    plain = tmp_path / "notes.txt"
    plain.write_text("text,label is how the table above begins. Its rows follow, one review to a line.\n", encoding="utf-8")
    assert "label" in " ".join(calibration_texts(str(plain), limit=None))  # plain text is read as it is
