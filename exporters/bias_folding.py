"""Bias adds a BERT layer does not need, folded into constants before export (exact up to float rounding).

Three of a BERT layer's six bias vectors can go without changing the model's function:

* **key bias**: it adds ``q . b_k`` to every score of a query row; softmax is invariant to a constant shift of
  its row, so the bias is dropped.
* **value bias**: every row of the attention probabilities sums to 1 (masked keys included, at weight ~0), so
  ``probs @ (V + b_v) = probs @ V + b_v``; the constant goes through the output projection and joins its bias:
  ``b_o <- W_o b_v + b_o``.
* **FFN-down bias**: the down projection's output is added to the attention block's LayerNorm output ``h``,
  which only the residual and the FFN-up projection read. Adding ``b_down`` to that LayerNorm's ``beta``
  instead gives the residual its constant, and the FFN-up bias takes the change back:
  ``b_up <- b_up - W_up b_down``.

Each fold removes one bias ``Add`` over (batch, sequence, hidden) per layer from the exported graph; for a
Kronecker student those adds cost as much as a fifth of the non-GEMM time. The folds read the layers only as
affine maps (``f(x) = W x + b``), so they apply alike to ``nn.Linear``, ``KroneckerLinear`` and low-rank layers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def folded_copy(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with the three folds applied to every BERT layer; ``(copy, biases removed)``.

    The original is left untouched (validation compares the export against it). Layers that are not the
    standard post-LayerNorm BERT layer (cross-attention, decoder) are left alone.
    """
    from transformers.models.bert.modeling_bert import BertLayer

    folded = copy.deepcopy(model)
    removed = 0
    with torch.no_grad():
        for layer in folded.modules():
            if isinstance(layer, BertLayer) and not getattr(layer, "is_decoder", False) \
                    and not getattr(layer, "add_cross_attention", False):
                removed += _fold_layer(layer)
    return folded, removed


def _fold_layer(layer) -> int:
    attention, output = layer.attention.self, layer.attention.output
    removed = 0
    if attention.key.bias is not None:
        _drop_bias(attention.key)
        removed += 1
    if attention.value.bias is not None and output.dense.bias is not None:
        output.dense.bias.copy_(_apply(output.dense, attention.value.bias))  # W_o b_v + b_o
        _drop_bias(attention.value)
        removed += 1
    up, down, norm = layer.intermediate.dense, layer.output.dense, output.LayerNorm
    if down.bias is not None and up.bias is not None and norm.bias is not None:
        shift = down.bias.detach().clone()
        norm.bias.add_(shift)
        up.bias.sub_(_apply(up, shift) - up.bias)  # b_up - W_up b_down (the forward adds b_up back)
        _drop_bias(down)
        removed += 1
    return removed


def _apply(linear: nn.Module, vector: torch.Tensor) -> torch.Tensor:
    """``W vector + b`` through the layer's own forward (dense, Kronecker or low-rank alike)."""
    return linear(vector.reshape(1, 1, -1)).reshape(-1)


def _drop_bias(linear: nn.Module) -> None:
    linear.register_parameter("bias", None)
