"""Validation of an exported graph against PyTorch, as its own step, failing loudly.

Order (optimum's, made strict): output names, then dynamic axes, then shapes, then values, on
shapes other than the export shape (batch 1 and 4 x sequence 7, 19, 128 and the maximum), with
padding in the batch. fp32 must match within ``atol``; int8 is judged by signal-to-noise,
SQNR = 20 log10(|x| / |x - y|) in dB (torchao), never by a raw atol, with each batch's noise measured against
the logits' level over all the inputs checked.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from runtime.contract import GOLDEN_FILE, INPUTS, OUTPUTS, load_golden, rms, sqnr
from runtime.predictor import X64_QUANT_PRECISION, create_session

from .config import BertOnnxConfig, ExportError


class ValidationError(ExportError):
    """The exported graph does not behave like the PyTorch model; the message says where and by how much."""


def validation_shapes(max_length: int) -> list[tuple[int, int]]:
    lengths = sorted({n for n in BertOnnxConfig.VALIDATION_LENGTHS if n <= max_length} | {max_length})
    return [(b, s) for b in BertOnnxConfig.VALIDATION_BATCHES for s in lengths]


def random_inputs(batch: int, seq: int, vocab: int, seed: int = 0, type_vocab: int = 2) -> dict[str, np.ndarray]:
    """Token ids, a padded attention mask (the last row half padding) and mixed token types (all 0 for a model
    with one token type)."""
    rng = np.random.default_rng(seed + 1000 * batch + seq)
    ids = rng.integers(1, vocab, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    if batch > 1:
        mask[-1, max(1, seq // 2):] = 0
    types = np.zeros((batch, seq), dtype=np.int64)
    types[:, seq // 2:] = min(1, type_vocab - 1)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def validate(onnx_path: str | os.PathLike, model, max_length: int = 128, precision: str = "fp32",
             shapes: list[tuple[int, int]] | None = None, atol: float = BertOnnxConfig.ATOL_FP32,
             sqnr_floor: float = BertOnnxConfig.SQNR_FLOOR_INT8_DB, feeds: list[dict] | None = None,
             name: str | None = None) -> dict:
    """Check ``onnx_path`` against the PyTorch ``model``; return the results or raise ValidationError.

    Args:
        onnx_path: the exported model.
        model: the PyTorch BertForSequenceClassification it came from.
        max_length: the longest sequence to check (added to the default lengths).
        precision: "fp32" (max |diff| <= atol) or "int8" (SQNR >= sqnr_floor dB on every batch, the batch's
            noise RMS against the reference logits' RMS over every batch).
        shapes: (batch, sequence) pairs; default batch 1 and 4 x sequence 7, 19, 128, max_length.
        name: what the messages call the model (default: ``onnx_path``, which an export deletes afterwards).
        feeds: explicit input batches instead of random ids at ``shapes``. int8 exports are judged on
            tokenized real sentences: a statically calibrated graph clips activations of random ids,
            which tells nothing about the task.

    Example:
        >>> validate("model.onnx", model, precision="fp32")["max_abs_diff"]
        3.1e-06
    """
    if precision not in ("fp32", "int8"):
        raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
    session = create_session(onnx_path)

    # 1. names
    where = name or onnx_path
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if sorted(inputs) != sorted(BertOnnxConfig.INPUTS) or outputs != list(BertOnnxConfig.OUTPUTS):
        raise ValidationError(f"{where}: inputs {inputs} / outputs {outputs}, expected "
                              f"{list(BertOnnxConfig.INPUTS)} / {list(BertOnnxConfig.OUTPUTS)}")
    # 2. dynamic axes: every declared axis must be symbolic, not a number baked in at export
    for arg in list(session.get_inputs()) + list(session.get_outputs()):
        for axis in BertOnnxConfig.DYNAMIC_AXES[arg.name]:
            if isinstance(arg.shape[axis], int):
                raise ValidationError(f"{where}: axis {axis} of {arg.name} is fixed to {arg.shape[axis]}, "
                                      f"expected a dynamic axis")

    kind = "random ids" if feeds is None else "given inputs (tokenized sentences)"
    if feeds is None:
        feeds = [random_inputs(b, s, model.config.vocab_size, type_vocab=model.config.type_vocab_size)
                 for b, s in (shapes or validation_shapes(max_length))]
    outputs = _run_both(session, model, feeds, where)  # 3. shapes, checked as they come
    # 4. values. int8 noise is measured against the logits' level over every input, not each batch's own: a
    # sentence near the decision boundary has logits near zero, and its own SQNR would fail any sound model.
    level = rms(np.concatenate([expected.ravel() for *_, expected, _ in outputs]))
    results, worst_diff, worst_sqnr = [], 0.0, math.inf
    for batch, seq, expected, got in outputs:
        diff = float(np.abs(got - expected).max())
        ratio = sqnr(expected, got, level=level)
        worst_diff, worst_sqnr = max(worst_diff, diff), min(worst_sqnr, ratio)
        results.append({"batch": batch, "sequence": seq, "max_abs_diff": diff,
                        "sqnr_db": _rounded(ratio),
                        "own_sqnr_db": _rounded(sqnr(expected, got))})
        if precision == "fp32" and not diff <= atol:
            raise ValidationError(f"{where}: fp32 logits differ from PyTorch by {diff:.3g} > atol {atol:g} "
                                  f"at batch {batch} x seq {seq}")
        if precision == "int8" and not ratio >= sqnr_floor:
            raise ValidationError(f"{where}: int8 logits SQNR {ratio:.1f} dB < floor {sqnr_floor:g} dB "
                                  f"at batch {batch} x seq {seq} (quantisation error too large)")
    return {
        "precision": precision,
        "passed": True,
        "criterion": f"max|diff| <= {atol:g}" if precision == "fp32" else
                     f"SQNR >= {sqnr_floor:g} dB per batch, its noise against the logits' RMS over all inputs",
        "max_abs_diff": worst_diff,
        "min_sqnr_db": _rounded(worst_sqnr),
        "inputs": kind,
        "shapes": results,
    }


def _run_both(session, model, feeds: list[dict], where: str) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(batch, seq, PyTorch logits, exported logits) per feed; a logits shape other than (batch, labels) fails."""
    import torch

    num_labels = model.config.num_labels
    outputs = []
    model.eval()
    with torch.no_grad():  # the reference is the model as it runs in PyTorch (SDPA attention), not the export path
        for feed in feeds:
            batch, seq = feed["input_ids"].shape
            expected = model(**{k: torch.from_numpy(v) for k, v in feed.items()}, return_dict=False)[0].numpy()
            got = session.run(["logits"], feed)[0]
            if got.shape != (batch, num_labels):
                raise ValidationError(f"{where}: logits shape {got.shape} at batch {batch} x seq {seq}, "
                                      f"expected {(batch, num_labels)}")
            outputs.append((batch, seq, expected, got))
    return outputs


def _rounded(db: float) -> float | None:
    return round(db, 2) if math.isfinite(db) else None


def check_domains(model, profile: str) -> None:
    """A portable export holds ai.onnx ops only: a custom-domain node there is a bug, not a warning."""
    if profile != "portable":
        return
    custom = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ValidationError(f"portable export contains custom-domain ops {custom}; use --profile ort for those")


def check_ort_matches(out: str | os.PathLike, quantized: bool, saturating_host: bool = False) -> dict:
    """model.ort must give model.onnx's logits on the golden inputs (it is the same graph, pre-optimised).

    fp32 within atol; int8 within 5% of the largest golden logit (the .ort graph's int8 kernels are fused
    ahead of time and may round differently). Raises ValidationError otherwise.

    Args:
        saturating_host: s8 weights on an x86 host without VNNI. model.ort, optimised ahead of time, then keeps the
            saturating int8 products that ORT's precision mode spares model.onnx (and golden.npz), so it is held to
            model.onnx run the same saturating way.
    """
    out = Path(out)
    golden = load_golden(out / GOLDEN_FILE)
    feeds = {k: golden[k] for k in INPUTS}
    expected = golden["logits"]
    if saturating_host:
        expected = create_session(out / "model.onnx", threads=1, config_entries={X64_QUANT_PRECISION: "0"}).run(
            list(OUTPUTS), feeds)[0]
    got = create_session(out / "model.ort", threads=1).run(list(OUTPUTS), feeds)[0]
    diff = float(np.abs(got - expected).max())
    tolerance = 0.05 * float(np.abs(expected).max() + 1e-6) if quantized else BertOnnxConfig.ATOL_FP32
    if not diff <= tolerance:
        raise ValidationError(f"model.ort differs from model.onnx on the golden inputs: max |diff| {diff:.3g} > "
                              f"{tolerance:.3g}")
    return {"max_abs_diff_vs_onnx": diff, "passed": True}
