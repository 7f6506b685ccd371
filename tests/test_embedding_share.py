"""--embedding-share: the word embedding's share of the factorised budget (svd and search structures)."""

import pytest

from kronedge.kron_config import KronConfig, PlanError
from kronedge.pipeline import kron_config, plan_teacher
from kronedge.recipe import CompressConfig
from kronedge.training import TrainingError


def _plan(share):
    return plan_teacher("builtin:minilm", KronConfig(compression=5.5, structure="svd", embedding_share=share))


def _factor_params(plan, embedding: bool) -> int:
    return sum(layer.kron.params for layer in plan.layers if (layer.kind == "embedding") == embedding)


@pytest.mark.parametrize("share", [0.2, 0.6])
def test_share_moves_parameters_between_embedding_and_encoder_at_the_same_size(share):
    uniform, shared = _plan(None), _plan(share)
    factors = _factor_params(shared, True) + _factor_params(shared, False)
    # the embedding gets its share (up to one rank of rounding), and the whole plan stays within the target
    assert _factor_params(shared, True) / factors == pytest.approx(share, abs=0.02)
    assert shared.compression >= 5.5 * 0.99 and abs(shared.params_student - uniform.params_student) < 0.02 * uniform.params_student
    ranks = {layer.name: layer.kron.rank for layer in uniform.layers}
    bigger = [layer.kron.rank > ranks[layer.name] for layer in shared.layers if layer.kind == "linear"]
    # a share below the uniform one (~0.5 on MiniLM) gives every encoder matrix more rank, a larger one less
    assert all(bigger) if share < 0.5 else not any(bigger)


@pytest.mark.parametrize("share", [0, 1, -0.1, 1.5])
def test_share_outside_zero_one_is_refused(share):
    with pytest.raises(PlanError, match="embedding_share"):
        KronConfig(compression=5.5, structure="svd", embedding_share=share)


def test_share_needs_a_budgeted_structure():
    with pytest.raises(PlanError, match="paper"):
        kron_config(compression=5.5, structure="paper", embedding_share=0.2)


def test_compress_config_carries_the_share_and_checks_it_before_training():
    assert CompressConfig(embedding_share=0.2).kron_config().embedding_share == 0.2
    assert CompressConfig().kron_config().embedding_share is None
    with pytest.raises(TrainingError, match="embedding_share"):
        CompressConfig(embedding_share=2.0)


def test_general_student_key_changes_with_the_share_and_not_without_it():
    from kronedge.general import GeneralConfig, general_key

    base = general_key(GeneralConfig(), "fp", "general")
    assert general_key(GeneralConfig(embedding_share=None), "fp", "general") == base
    assert general_key(GeneralConfig(embedding_share=0.2), "fp", "general") != base
    assert GeneralConfig.for_compress(CompressConfig(embedding_share=0.2)).embedding_share == 0.2
