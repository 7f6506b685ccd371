"""Planner: paper presets on BERT_BASE, target compression on any BERT, errors that say what to do."""

import json

import pytest

from kronedge.layers import KronShape
from kronedge.pipeline import kron_config, plan_teacher
from kronedge.planner import (KronConfig, NoMatchingLayersError, PlanError, choose_linear_shape,
                              layer_role, plan_model, rank_capacity)


def test_kb21_reproduces_paper_parameter_count():
    plan = plan_teacher("random:bert-base-uncased", KronConfig.kb21())
    assert abs(plan.params_teacher - 109.5e6) / 109.5e6 < 0.01
    assert abs(plan.params_student - 5.2e6) / 5.2e6 < 0.02
    assert plan.flops_student < plan.flops_teacher / 8


def test_kb8_reproduces_paper_parameter_count():
    plan = plan_teacher("random:bert-base-uncased", KronConfig.kb8())
    assert abs(plan.params_student - 14.3e6) / 14.3e6 < 0.03


@pytest.mark.parametrize("preset", ["kb8", "kb21"])
def test_presets_put_the_small_factor_first(preset):
    # Table 1's sizes with A the small factor in every role, so that no linear needs an axis swap in the
    # exported graph (test_export.py::test_factor_orders_export_without_axis_swaps checks the graph).
    for role, shape in KronConfig.preset(preset).role_shapes.items():
        assert shape.m1 * shape.n1 < shape.m2 * shape.n2 and shape.n1 <= 16, (role, shape)


def test_plan_selects_the_papers_layers():
    plan = plan_teacher("random:bert-base-uncased", KronConfig.kb21())
    roles = [l.role for l in plan.layers]
    assert roles.count("embedding") == 1
    assert roles.count("attention") == 12 * 4
    assert roles.count("ffn_up") == roles.count("ffn_down") == 12
    names = {l.name for l in plan.layers}
    assert not any("pooler" in n or "position" in n or "token_type" in n for n in names)


@pytest.mark.parametrize("target", [3, 5, 12, 21])
def test_compression_target_on_minilm_shape(target):
    plan = plan_teacher("random:minilm", KronConfig(compression=target))
    assert abs(plan.compression - target) / target < 0.10
    for layer in plan.layers:
        if layer.kind == "linear":
            assert rank_capacity(layer.kron) >= min(layer.dense_shape) // 2


def test_preset_on_other_width_falls_back_to_its_compression():
    plan = plan_teacher("random:minilm", KronConfig.kb21())
    assert plan.notes and "do not fit" in plan.notes[0]
    assert abs(plan.compression - 21) / 21 < 0.10


def test_unreachable_compression_says_what_is_possible():
    with pytest.raises(PlanError, match="the most this selection allows is about"):
        plan_teacher("random:minilm", KronConfig(compression=500))


def test_explicit_shape_that_does_not_factor_the_layer(tmp_path):
    # hidden 35 = 5 x 7 and FFN 37 (prime): a shape written for 768 cannot apply
    config = {"vocab_size": 101, "hidden_size": 35, "num_hidden_layers": 1, "num_attention_heads": 5,
              "intermediate_size": 37, "max_position_embeddings": 16}
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(config))
    from kronedge.teachers import load_teacher

    model = load_teacher(f"random:{path}", meta=True).model
    bad = KronConfig(layer_shapes={"encoder.layer.0.intermediate.dense": KronShape(2, 5, 18, 7)})
    with pytest.raises(PlanError, match="implies a 36x35 weight, but the layer is 37x35"):
        plan_model(model, bad)
    # the prime FFN width still gets a (degenerate but valid) factorisation from a target
    plan = plan_model(model, KronConfig(compression=2.9, embedding_k=5))
    ffn = next(l for l in plan.layers if l.role == "ffn_up")
    assert ffn.kron.out_features == 37


def test_filter_matching_nothing_is_an_error():
    from kronedge.teachers import load_teacher

    model = load_teacher("random:minilm", meta=True).model
    with pytest.raises(NoMatchingLayersError):
        plan_model(model, KronConfig.kb21(), filter_fn=lambda module, fqn: False)


def test_choose_linear_shape_prefers_cheap_but_expressive():
    shape = choose_linear_shape(768, 768, budget=768 * 768 / 32)
    assert 768 * 768 / 32 / 1.25 <= shape.params <= 768 * 768 / 32 * 1.25
    assert rank_capacity(shape) >= 384
    assert shape.macs < 768 * 768 / 4


def test_layer_roles():
    assert layer_role("bert.encoder.layer.3.attention.self.key") == "attention"
    assert layer_role("encoder.layer.0.attention.output.dense") == "attention"
    assert layer_role("bert.encoder.layer.11.output.dense") == "ffn_down"
    assert layer_role("bert.pooler.dense") is None
    assert layer_role("classifier") is None


def test_config_checks_itself():
    with pytest.raises(ValueError, match="needs a target"):
        KronConfig()
    with pytest.raises(ValueError, match="compression must be a number > 1"):
        KronConfig(compression=0.5)
    with pytest.raises(ValueError, match="unknown preset"):
        KronConfig.preset("kb99")
    with pytest.raises(ValueError, match="exactly one of"):
        kron_config("kb21", compression=5.0)
    config = KronConfig.kb21()
    assert KronConfig.from_dict(config.to_dict()) == config


def test_plan_json_has_the_documented_fields():
    data = plan_teacher("random:minilm", KronConfig(compression=5)).to_dict()
    for key in ("params_teacher", "params_student", "compression", "flops_teacher", "flops_student", "layers"):
        assert key in data
    assert data["layers"][0]["params_after"] < data["layers"][0]["params_before"]


def test_embedding_k_is_refused_where_the_structure_chooses_it():
    assert kron_config(compression=5, embedding_k=8).embedding_k == 8  # the paper structure takes it
    for structure in ("svd", "search"):
        with pytest.raises(PlanError, match=f"--structure {structure} chooses its own"):
            kron_config(compression=5, embedding_k=8, structure=structure)
    assert kron_config("kb21", structure="svd").embedding_k == 16  # a preset's own k is not the user's option
    with pytest.raises(PlanError, match="--allocation steers --structure search; with --structure svd"):
        kron_config(compression=5, structure="svd", allocation="uniform")
    with pytest.raises(PlanError, match="--max-flops-per-token steers"):
        kron_config(compression=5, max_flops_per_token=1000)
    assert kron_config(compression=5, structure="search", allocation="uniform").allocation == "uniform"
