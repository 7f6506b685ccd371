"""Graph passes over an exported BERT graph: small declarative rules and a pipeline that counts.

Each rule is one file (onnxscript rewriter style: ``pattern`` / ``check`` returning a reason /
``rewrite``) with the matched subgraph drawn in its docstring. :func:`optimize` applies the rules of
a profile and returns how often each fired, so callers and tests can assert on the counts.

Profiles:
  every profile: Gemm -> MatMul+Add (quantizable), rank-1 Kronecker head swap -> 2-D transpose, an SVD-corner
                 layer's head swap (only size-1 axes move) -> nothing, any other Transpose that moves only
                 size-1 axes -> Reshape,
                 small factor between two axis swaps -> left-hand MatMul (no transposes; a swap that Q, K
                 and V share is copied for each first), position ids
                 counted along input_ids, Kronecker linears kept 4-D with constant reshapes (KronRank4),
                 so that ORT's SkipLayerNorm and BiasGelu fusions fire on load.
  portable  ai.onnx ops only; attention core -> ONNX ``Attention`` (opset 23).
  ort       attention core -> ``com.microsoft.MultiHeadAttention``; bias + GELU -> ``BiasGelu``
            (``SkipLayerNormalization`` rule off by default: slower on the CPUs measured).
  none      no attention fusion (the plain graph, for comparisons).
"""

from __future__ import annotations

import onnx

from ..config import ExportError
from .attention_mha import MultiHeadAttentionRule
from .attention_onnx import OnnxAttentionRule
from .bias_gelu import BiasGeluRule
from .gelu_tanh import GeluTanhRule
from .gemm_to_matmul import GemmToMatMulAddRule
from .kron_rank4 import KronRank4Rule
from .kron_small_left import KronSharedSwapRule, KronSmallLeftReshapeRule, KronSmallLeftRule
from .kron_transpose import KronTransposeRule, KronUnitSwapRule
from .position_ids import PositionIdsRule
from .skip_layer_norm import SkipLayerNormRule
from .unit_transpose import UnitTransposeRule

PORTABLE_OPSET = 23
# Rules a profile holds but does not run unless asked (optimize(disable=())): measured slower here.
DISABLED_BY_DEFAULT = ("SkipLayerNorm",)


def rules_for(profile: str, num_heads: int, head_size: int) -> list:
    """The rewrite rules a profile applies, in order."""
    # KronSharedSwap (graph-level) needs the swaps KronTranspose writes and prepares KronSmallLeft's matches.
    rules = [GemmToMatMulAddRule.rule(), KronTransposeRule.rule(), KronUnitSwapRule.rule(), KronSharedSwapRule(),
             KronSmallLeftReshapeRule.rule(), KronSmallLeftRule.rule(), PositionIdsRule.rule()]
    if profile == "portable":
        rules.append(OnnxAttentionRule.rule(num_heads, head_size))
    elif profile == "ort":
        rules.append(MultiHeadAttentionRule.rule(num_heads, head_size))
    elif profile != "none":
        raise ValueError(f"unknown profile {profile!r}; choose portable, ort or none")
    return rules


def graph_rules_for(profile: str) -> list:
    """Rules over whole chains (no fixed-size pattern), applied after :func:`rules_for`'s."""
    return [KronRank4Rule()]


def cleanup_rules_for(profile: str) -> list:
    """Rules for what the chain rules leave, applied after :func:`graph_rules_for`'s."""
    return [UnitTransposeRule.rule()]


def fusion_rules_for(profile: str) -> list:
    """Elementwise fusions written into the file (ORT profile), applied after constant folding so that biases
    the TorchScript exporter shared through Identity nodes are constants again."""
    return [BiasGeluRule.rule(), SkipLayerNormRule.rule()] if profile == "ort" else []


def optimize(model: onnx.ModelProto, profile: str, num_heads: int, head_size: int,
             expect_attention: int | None = None,
             disable: tuple[str, ...] = DISABLED_BY_DEFAULT) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Apply a profile's rules; return the new model and ``{rule name: matches}``.

    Args:
        model: an exported graph (any opset >= 17; the portable profile upgrades it to opset 23).
        profile: "portable", "ort" or "none".
        num_heads, head_size: from the model config; the attention rules check the score scale.
        expect_attention: if given, raise unless exactly this many attention cores were fused
            (one per encoder layer): a silent partial fusion would be a slow model, not a wrong one.
        disable: rule names to skip (for measurements), e.g. ``("KronTranspose", "KronSmallLeft")``; by
            default ``DISABLED_BY_DEFAULT`` (SkipLayerNorm: ORT's fused CPU kernel measured 6x slower).

    Example:
        >>> model, counts = optimize(onnx.load("model.onnx"), "portable", 12, 64, expect_attention=12)
        >>> counts
        {'GemmToMatMulAdd': 2, 'OnnxAttention': 12}
    """
    from onnxscript import ir, optimizer
    from onnxscript.ir.passes.common import CommonSubexpressionEliminationPass, RemoveUnusedNodesPass

    if profile == "portable" and _opset(model) < PORTABLE_OPSET:
        from onnx import version_converter

        model = version_converter.convert_version(model, PORTABLE_OPSET)
    ir_model = ir.from_proto(model)
    counts: dict[str, int] = {}
    _apply(rules_for(profile, num_heads, head_size) + graph_rules_for(profile) + cleanup_rules_for(profile),
           ir_model, disable, counts)
    # Drop the shape arithmetic the fused nodes no longer need; share the per-layer mask Expand.
    ir_model = optimizer.optimize(ir_model, num_iterations=1, onnx_shape_inference=False)
    CommonSubexpressionEliminationPass()(ir_model)
    _apply(fusion_rules_for(profile), ir_model, disable, counts)
    RemoveUnusedNodesPass()(ir_model)
    optimized = ir.to_proto(ir_model)
    # The shapes recorded while tracing and rewriting name the (batch, sequence) dims with a fresh symbol per
    # op; ONNX Runtime merges them with its own inference, and fusions that compare dims (SkipLayerNorm)
    # then see different names. Re-infer from the inputs instead, so they carry "batch"/"sequence".
    del optimized.graph.value_info[:]
    optimized = onnx.shape_inference.infer_shapes(optimized)
    fused = counts.get("OnnxAttention", 0) + counts.get("MultiHeadAttention", 0)
    if expect_attention is not None and profile != "none" and fused != expect_attention:
        raise ExportError(f"fused {fused} attention cores, expected {expect_attention} (one per layer); "
                         f"the exported attention does not have the eager BERT pattern")
    return optimized, counts


def _apply(rules: list, ir_model, disable: tuple[str, ...], counts: dict[str, int]) -> None:
    """Apply each rule not in ``disable`` in order, adding its matches to ``counts``: onnxscript pattern rules
    through a RewriteRuleSet, graph-level rules (no fixed-size pattern) through their own ``apply_to_model``."""
    from onnxscript.rewriter import RewriteRule, RewriteRuleSet

    for rule in rules:
        if rule.name in disable:
            continue
        matches = (RewriteRuleSet([rule]).apply_to_model(ir_model) if isinstance(rule, RewriteRule)
                   else rule.apply_to_model(ir_model))
        counts[rule.name] = counts.get(rule.name, 0) + matches


def approximate_gelu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Every exact GELU -> ``approximate="tanh"`` (for quantized exports; see gelu_tanh.py); ``(model, count)``."""
    from onnxscript import ir
    from onnxscript.rewriter import RewriteRuleSet

    ir_model = ir.from_proto(model)
    count = RewriteRuleSet([GeluTanhRule.rule()]).apply_to_model(ir_model)
    return ir.to_proto(ir_model), count


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
