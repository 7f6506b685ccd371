"""Bias folding before export (exporters/bias_folding.py): exact, three biases fewer per layer, each fold needed."""

from __future__ import annotations

import copy

import helpers
import numpy as np
import onnx
import pytest
import torch

from exporters.bias_folding import folded_copy
from exporters.validate import random_inputs


def _with_large_biases(model, seed: int = 0):
    """The model with every bias drawn at std 0.5: a fold that drops a constant instead of moving it shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias") and "LayerNorm" not in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def kron_model(informative_model):
    return _with_large_biases(copy.deepcopy(informative_model))


def _logits(model, batch: int = 3, seq: int = 17) -> np.ndarray:
    feeds = random_inputs(batch, seq, model.config.vocab_size, seed=3)  # the last row half padding
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()


def _layers(model):
    return model.bert.encoder.layer


@pytest.mark.parametrize("kronecker", [True, False], ids=["kronecker", "dense"])
def test_folded_copy_is_exact_and_removes_three_biases_per_layer(kronecker, kron_model):
    model = kron_model if kronecker else _with_large_biases(helpers.informative_bert(kronecker=False))
    folded, removed = folded_copy(model)
    assert removed == 3 * model.config.num_hidden_layers
    for layer in _layers(folded):
        assert layer.attention.self.key.bias is None and layer.attention.self.value.bias is None
        assert layer.output.dense.bias is None and layer.attention.self.query.bias is not None
    assert all(layer.attention.self.key.bias is not None for layer in _layers(model)), "the original was changed"
    expected, got = _logits(model), _logits(folded)
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("dropped", ["value", "output.dense"])
def test_dropping_a_bias_without_moving_it_changes_the_model(dropped, kron_model):
    """The negative control: the value and FFN-down biases matter, so the exactness above is the folds' doing."""
    model = kron_model
    broken = copy.deepcopy(model)
    for layer in _layers(broken):
        module = layer.attention.self.value if dropped == "value" else layer.output.dense
        module.register_parameter("bias", None)
    assert np.abs(_logits(broken) - _logits(model)).max() > 1e-2


def test_key_bias_is_dropped_because_softmax_ignores_it(kron_model):
    model = kron_model
    without_key = copy.deepcopy(model)
    for layer in _layers(without_key):
        layer.attention.self.key.register_parameter("bias", None)
    assert np.abs(_logits(without_key) - _logits(model)).max() <= 1e-5


def test_export_without_folding_keeps_the_adds(kron_model, tmp_path):
    from exporters.export import export_model

    model = kron_model
    adds = {}
    for fold in (True, False):
        out = export_model(model, tmp_path / str(fold), tokenizer_dir=helpers.tokenizer_dir(), fold_biases=fold,
                           max_length=32, ort_format=False)
        graph = onnx.load(out / "model.onnx")
        adds[fold] = sum(n.op_type == "Add" for n in graph.graph.node)
    assert adds[False] - adds[True] == 3 * model.config.num_hidden_layers
