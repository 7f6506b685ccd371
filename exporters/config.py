"""Export settings in one place (optimum's OnnxConfig, reduced to what a BERT classifier needs).

Input names, dynamic axes, opsets and validation tolerances are class constants; the per-export
choices (target, quantisation, profile, length) live on :class:`ExportOptions`, which checks itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime import contract
from runtime.errors import KronedgeError

TARGETS = ("x86_64", "arm64")
QUANTIZE_MODES = ("none", "int8", "int8-static")
PROFILES = ("portable", "ort")


class ExportError(KronedgeError, ValueError):
    """An export the user asked for cannot be made as asked (options, model, task); one line says why."""


class BertOnnxConfig:
    """What the exported graph looks like and how it is judged.

    The TorchScript exporter writes ``EXPORT_OPSET``; the portable profile is then converted to
    ``PORTABLE_OPSET`` so that the attention core can be the standard ONNX ``Attention`` op (opset 23).
    """

    # The graph's signature is the exported-directory contract's (runtime/contract.py), not restated here.
    INPUTS = contract.INPUTS  # int64, (batch, sequence)
    OUTPUTS = contract.OUTPUTS  # float32, (batch, num_labels)
    DYNAMIC_AXES = contract.DYNAMIC_AXES
    EXPORT_OPSET = 20  # highest opset of torch's TorchScript exporter; has LayerNormalization and Gelu
    PORTABLE_OPSET = 23  # standard ONNX Attention
    EXPORT_SHAPE = (2, 16)  # (batch, sequence) traced at export; validation uses other shapes
    VALIDATION_BATCHES = (1, 4)
    VALIDATION_LENGTHS = (7, 19, 128)  # plus max_length, added at run time
    ATOL_FP32 = 1e-4
    RTOL_FP32 = 1e-4
    # int8 is judged by signal-to-noise (torchao's SQNR, dB) and by the task metric, never by atol.
    SQNR_FLOOR_INT8_DB = 20.0


DEFAULT_MAX_LENGTH = 128


@dataclass
class ExportOptions:
    """The choices of one export.

    Args:
        target: "x86_64" or "arm64": picks the quantisation preset and the ORT-format target.
        quantize: "none", "int8" (dynamic, weights int8, activations quantized at run time) or
            "int8-static" (QDQ, activations calibrated on real task sentences; needs ``task``).
        profile: "portable" (ai.onnx ops only, opset 23 Attention) or "ort" (ONNX Runtime contrib
            ops: com.microsoft MultiHeadAttention).
        task: GLUE task name (labels, calibration and golden sentences), e.g. "sst2".
        max_length: longest sequence the model is validated at and the runtime should feed (None:
            ``DEFAULT_MAX_LENGTH``, or the model's positions where it has fewer; set by ``resolve_max_length``).
        data_dir: GLUE root for tasks that do not ship with kronedge (passed to ``load_task``).
        vnni: x86_64 int8 only: s8 weights, fastest on a CPU with VNNI (AVX-512 VNNI or AVX-VNNI) and run exactly
            without it by the runtime (ORT's x64 precision mode); False stores u8 weights, for ONNX Runtime
            sessions elsewhere that run on x86 CPUs without VNNI and lack that option.
        per_channel: quantize weights per output channel (default: the target preset decides).
        gelu: quantized exports only: "exact" or "tanh" GELU (default: the target preset decides).
        sqnr_floor_db: the int8 logits must keep this signal-to-noise ratio (dB) against PyTorch on
            real sentences; the task metric (``kronedge eval``) is the final judge.
        name: the model's name, e.g. "tickets-kb21"; default: the artifact's directory name (the output
            directory's for a teacher spec). The runtime and the server answer with NAME@MODEL_VERSION.
        model_version: e.g. "1.2.0"; default: the first 12 hex digits of model.onnx's sha256.
        calibration: for "int8-static": a text file of the model's own inputs, one per line (pairs:
            FIRST<TAB>SECOND), to calibrate on instead of ``task``'s sentences (a model of a user's task).
        validate: run validation (fails loudly); only tests of the export machinery turn it off.
        ort_format: also write model.ort and its required-operators config.
        fold_biases: fold the key, value and FFN-down biases into other constants before tracing
            (exact; three fewer adds per layer, see exporters/bias_folding.py); False for comparisons.
    """

    target: str = "x86_64"
    quantize: str = "none"
    profile: str = "portable"
    task: str | None = None
    max_length: int | None = None
    data_dir: str | None = None
    vnni: bool = True
    per_channel: bool | None = None
    gelu: str | None = None
    sqnr_floor_db: float = BertOnnxConfig.SQNR_FLOOR_INT8_DB
    validate: bool = True
    ort_format: bool = True
    fold_biases: bool = True
    calibration_size: int = 128
    calibration: str | None = None
    name: str | None = None
    model_version: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ExportError(f"unknown target {self.target!r}; choose one of {list(TARGETS)}")
        if self.quantize not in QUANTIZE_MODES:
            raise ExportError(f"unknown quantization {self.quantize!r}; choose one of {list(QUANTIZE_MODES)}")
        if self.profile not in PROFILES:
            raise ExportError(f"unknown profile {self.profile!r}; choose one of {list(PROFILES)}")
        if self.max_length is not None and not (isinstance(self.max_length, int) and 8 <= self.max_length <= 4096):
            raise ExportError(f"max_length must be an integer in [8, 4096], got {self.max_length!r}")
        for problem in (self.name is not None and contract.name_problem(self.name),
                        self.model_version is not None and contract.version_problem(self.model_version)):
            if problem:
                raise ExportError(problem)
        if self.gelu not in (None, "exact", "tanh"):
            raise ExportError(f"--gelu must be exact or tanh, got {self.gelu!r}")
        if self.gelu is not None and self.quantize == "none":
            raise ExportError("--gelu chooses the GELU of an int8 export; an fp32 export keeps the exact one "
                              "(it must match PyTorch): add --quantize int8 or drop --gelu")
        if self.quantize == "int8-static" and not (self.task or self.calibration):
            raise ExportError("--quantize int8-static calibrates on real task sentences: give --task (e.g. sst2) or, "
                              "for your own task, --calibration FILE (one input text per line)")
        if not self.vnni and (self.quantize == "none" or self.target != "x86_64"):
            raise ExportError("--no-vnni picks the x86_64 int8 weights for CPUs without VNNI; it does nothing for "
                              f"--target {self.target} --quantize {self.quantize}")
        if self.calibration is not None and self.quantize != "int8-static":
            raise ExportError("--calibration is for --quantize int8-static (dynamic int8 needs no calibration)")


def split_name(text: str | None) -> tuple[str | None, str | None]:
    """``--name NAME[@VERSION]`` -> (name, version); either part may be absent ("@2" keeps the default name).

    Example:
        >>> split_name("tickets-kb21@1.2.0")
        ('tickets-kb21', '1.2.0')
    """
    if text is None:
        return None, None
    name, at, version = text.partition("@")
    if at and not version:
        raise ExportError(f"--name {text!r} ends with '@': give NAME@VERSION, or NAME alone for a hash version")
    return name or None, version or None


def positions_problem(config) -> str | None:
    """Why the export cannot trace a model with ``config``'s position embeddings (relative ones), or None."""
    kind = getattr(config, "position_embedding_type", "absolute")
    return None if kind == "absolute" else f"export supports absolute position embeddings only, got {kind!r}"


def resolve_max_length(opts: ExportOptions, config) -> None:
    """Fill in ``opts.max_length`` for the model's ``config`` (None: DEFAULT_MAX_LENGTH, or its positions where fewer);
    a length the model cannot embed is one error naming the flag."""
    positions = config.max_position_embeddings
    if opts.max_length is None:
        opts.max_length = min(DEFAULT_MAX_LENGTH, positions)
    elif opts.max_length > positions:
        raise ExportError(f"--max-length {opts.max_length} exceeds the model's {positions} positions: pass "
                          f"--max-length {positions} or less")
