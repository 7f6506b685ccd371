"""Which layers of a BERT are compressed, in which role, and what each costs per sequence.

Everything here reads module names and dense shapes only, so it works on a model built on the
``meta`` device.
"""

from __future__ import annotations

import re
from typing import Callable

from torch import nn

FilterFn = Callable[[nn.Module, str], bool]

# Role of each compressible BERT module, recognised by its fully-qualified name. Anything else
# (pooler, classifier, position/token-type embeddings, LayerNorms) stays dense, as in the paper.
_ROLE_PATTERNS = (
    ("embedding", re.compile(r"(^|\.)embeddings\.word_embeddings$")),
    ("attention", re.compile(r"(^|\.)encoder\.layer\.\d+\.attention\.(self\.(query|key|value)|output\.dense)$")),
    ("ffn_up", re.compile(r"(^|\.)encoder\.layer\.\d+\.intermediate\.dense$")),
    ("ffn_down", re.compile(r"(^|\.)encoder\.layer\.\d+\.output\.dense$")),
)

# Modules that see one vector per sequence (the [CLS] token), not one per token.
_PER_SEQUENCE = re.compile(r"(^|\.)(pooler\.dense|classifier)$")


def layer_role(fqn: str) -> str | None:
    """'embedding', 'attention', 'ffn_up', 'ffn_down', or None for layers the paper keeps dense."""
    for role, pattern in _ROLE_PATTERNS:
        if pattern.search(fqn):
            return role
    return None


def default_filter(module: nn.Module, fqn: str) -> bool:
    """The paper's selection: word embeddings, Q/K/V/O and both FFN maps; never a head or pooler."""
    return isinstance(module, (nn.Linear, nn.Embedding)) and layer_role(fqn) is not None


def targets(model: nn.Module, filter_fn: FilterFn | None) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs ``filter_fn`` selects, in module order."""
    filter_fn = filter_fn or default_filter
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.Embedding)) and filter_fn(module, name)]


def roles_of(found: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module, str]]:
    """Each target with its role; layers outside BERT's naming get 'embedding' or 'linear'."""
    return [(name, module, layer_role(name) or ("embedding" if isinstance(module, nn.Embedding) else "linear"))
            for name, module in found]


def dense_shape(module: nn.Module) -> tuple[int, int]:
    """(out, in) of a linear, (vocab, dim) of an embedding."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return module.num_embeddings, module.embedding_dim


def tokens_per_sequence(name: str, seq_len: int) -> int:
    return 1 if _PER_SEQUENCE.search(name) else seq_len


def attention_core_macs(model: nn.Module, seq_len: int) -> int:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_hidden_layers"):
        return 0
    # QK^T and softmax @ V: 2 * T^2 * hidden multiply-adds per layer.
    return config.num_hidden_layers * 2 * seq_len * seq_len * config.hidden_size
