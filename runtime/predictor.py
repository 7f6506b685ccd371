"""Load an exported kronedge directory and classify text with ONNX Runtime. No torch, no transformers.

The directory is the one `kronedge export` writes (docs/INTERFACES.md): model.onnx and/or model.ort,
tokenizer.json, manifest.json (format ``kronedge-onnx/1``) and golden.npz. Everything here needs only
numpy, onnxruntime and tokenizers, so it runs on a phone-class board or in a slim container.

Example:
    >>> p = Predictor("runs/kb21-int8", threads=2)
    >>> p.predict(["a gripping, funny film"])
    [{'label': 'positive', 'score': 0.93, 'scores': {'negative': 0.07, 'positive': 0.93}, 'latency_ms': 4.1}]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from .contract import (GOLDEN_FILE, GOLDEN_MIN_SQNR_DB, INPUTS, MANIFEST_FILE, MODEL_FILES, OUTPUTS,
                       TOKENIZER_FILE, Manifest, ModelDirError, check_requires, load_golden, model_id, sqnr,
                       verify_files)
from .errors import KronedgeError
from .hostinfo import EXACT_INT8_FLAGS, clips_s8_weights, default_threads, host_saturates_s8_weights
from .threads import AUTO, ThreadTrial, candidate_threads, fastest

GRAPH_OPT_LEVELS = ("disabled", "basic", "extended", "all")
# threads="auto" times one input of this many tokens: about a sentence or two, what a request to a server holds.
PROBE_TOKENS = 64
# ONNX Runtime's own fix for x86 CPUs without VNNI, whose u8 x s8 GEMM adds pairs of products into int16 (VPMADDUBSW)
# and saturates: at load, its Avx2WeightS8ToU8Transformer stores the s8 weights of MatMulInteger,
# DynamicQuantizeMatMul and its other int8 GEMM ops as u8 of the same value, and the u8 x u8 GEMM does not saturate. Set only
# where hostinfo.host_saturates_s8_weights() (ORT would also apply it on VNNI CPUs, which need no help and lose speed).
# A model.ort is optimised ahead of time, so it keeps the saturating products (benchmarks/results/speed_avx2.md).
X64_QUANT_PRECISION = "session.x64quantprecision"
HOST_INT8_NOTE = (f"run with ONNX Runtime's {X64_QUANT_PRECISION}=1 (the s8 weights as u8 of the same value): this "
                  "x86 host has no VNNI, and its int8 GEMM saturates on s8 weights")
# ORT fusions that are measured slower than the ops they replace, skipped unless a caller asks for them
# (benchmarks/results/speed_fusions.md, speed_folds.md):
# - SkipLayerNormFusion: ORT's fused CPU kernel is slower than Add + Add + LayerNormalization.
# - MatmulTransposeFusion: folding a Transpose of the last two axes into MatMul(transA=1) turns one flat GEMM
#   over all tokens into one tiny GEMM per token (a Kronecker linear's factor swap); the explicit Transpose is cheaper.
DEFAULT_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion", "MatmulTransposeFusion")

Text = str
Pair = Sequence[str]  # (first, second) for pair tasks such as RTE
Inputs = Union[Sequence[Text], Sequence[Pair]]

# The ORT load errors (InvalidProtobuf, InvalidGraph, Fail, ...) derive from Exception only; a model file
# ORT cannot load is the user's to fix, so it becomes a ModelDirError naming the file.
_ORT_LOAD_ERRORS = ("InvalidProtobuf", "InvalidGraph", "Fail", "NoSuchFile", "InvalidArgument", "NotImplemented")


class PredictorOptionError(KronedgeError, ValueError):
    """A Predictor or session option out of range (threads, max_length beyond the export's, ...)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def session_options(threads: int | None = None, graph_optimization: str = "all",
                    optimized_model_path: str | os.PathLike | None = None, allow_spinning: bool = True):
    """ORT session options for small devices (see shared notes: onnxruntime-facts.md).

    Args:
        threads: intra-op threads; None keeps ORT's default (one per physical core). Setting it turns
            off ORT's thread pinning, which is what you want on a shared box.
        graph_optimization: disabled | basic | extended | all.
        optimized_model_path: write the optimised graph here, to load it next time without optimising.
            Such a graph is specific to this CPU: never ship it to another device.
        allow_spinning: let idle ORT threads spin; off saves CPU (and battery) between requests.
    """
    import onnxruntime as ort

    if graph_optimization not in GRAPH_OPT_LEVELS:
        raise PredictorOptionError(f"graph_optimization must be one of {GRAPH_OPT_LEVELS}, got {graph_optimization!r}")
    if threads is not None and threads < 1:
        raise PredictorOptionError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    if threads is not None:
        so.intra_op_num_threads = threads
    # One graph, no parallel branches worth a second pool: sequential keeps the thread count bounded.
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Every request has a different (batch, length): the arena and memory patterns planned for one
    # shape only grow the resident set (onnxruntime#11627) and buy nothing.
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    so.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
    return so


def create_session(model: str | os.PathLike | bytes, threads: int | None = None, graph_optimization: str = "all",
                   optimized_model_path: str | os.PathLike | None = None, allow_spinning: bool = True,
                   disabled_optimizers: Sequence[str] = DEFAULT_DISABLED_OPTIMIZERS, profile_prefix: str | None = None,
                   config_entries: dict[str, str] | None = None):
    """The one way this project opens an ONNX Runtime session (runtime, exporter, validation, benches).

    Args:
        model: a model.onnx / model.ort path, or serialized ONNX bytes.
        threads, graph_optimization, optimized_model_path, allow_spinning: see :func:`session_options`.
        disabled_optimizers: ORT optimiser names to skip; default ``DEFAULT_DISABLED_OPTIMIZERS`` (the fusions
            measured slower here); ``()`` runs every fusion.
        profile_prefix: turn on ORT's profiler, writing ``<prefix>_<date>.json``.
        config_entries: extra ORT session config entries, e.g. {"session.intra_op_thread_affinities": "2"};
            ``{X64_QUANT_PRECISION: "0"}`` keeps a saturating host's int8 products as they are.

    Raises:
        ModelDirError: ORT cannot load the file (truncated, corrupt, unknown op); one line naming it.
    """
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    so = session_options(threads, graph_optimization, optimized_model_path, allow_spinning)
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    entries = {X64_QUANT_PRECISION: "1"} if host_saturates_s8_weights() else {}
    for key, value in {**entries, **(config_entries or {})}.items():
        so.add_session_config_entry(key, str(value))
    kwargs = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
    source = model if isinstance(model, bytes) else str(model)
    load_errors = tuple(getattr(ort_state, name) for name in _ORT_LOAD_ERRORS if hasattr(ort_state, name))
    try:
        return ort.InferenceSession(source, sess_options=so, providers=["CPUExecutionProvider"], **kwargs)
    except load_errors as exc:
        what = "the serialized model" if isinstance(model, bytes) else str(model)
        detail = " ".join(str(exc).split())[:300]
        raise ModelDirError(f"ONNX Runtime cannot load {what}: {detail}") from None


class Predictor:
    """Tokenise, batch by length and run an exported model with ONNX Runtime.

    Args:
        model_dir: directory written by `kronedge export` (manifest.json, tokenizer.json, model.onnx|model.ort).
        threads: ORT intra-op threads; None: :func:`runtime.hostinfo.default_threads` for this model (1 for a
            Kronecker export, whose many small ops lose from a second thread; ORT's default otherwise); "auto":
            time the model at each of ``thread_candidates`` and keep the fastest (:mod:`runtime.threads`; the
            measurement is ``thread_trial``).
        thread_candidates: the counts "auto" chooses from (default: 1, 2, 4 up to this process's cores).
        model_file: "model.onnx", "model.ort" or None (model.onnx if present, else model.ort). The .onnx
            lets ORT optimise for this CPU; the .ort loads faster and is what ORT Mobile runs.
        graph_optimization: ORT graph optimisation level (disabled | basic | extended | all).
        optimized_model_path: save the optimised graph there (host-specific; for a faster next start).
        disabled_optimizers: ORT optimiser names to skip (default ``DEFAULT_DISABLED_OPTIMIZERS``).
        max_batch: most sequences per ORT run; longer input lists are split after sorting by length.
        max_padding: start a new batch rather than pad a row by more than this fraction of its length.
        max_length: truncate to this many tokens (<= the manifest's max_length; default: the manifest's).
        verify: check manifest hashes of the files loaded (on by default; costs one read of the model).
        allow_spinning: see `session_options`.

    Example:
        >>> Predictor("runs/rte-int8").predict([("A man plays.", "Someone plays.")])
    """

    def __init__(self, model_dir: str | os.PathLike, threads: int | str | None = None, *, model_file: str | None = None,
                 graph_optimization: str = "all", optimized_model_path: str | os.PathLike | None = None,
                 disabled_optimizers: Sequence[str] = DEFAULT_DISABLED_OPTIMIZERS, max_batch: int = 16,
                 max_padding: float = 0.3,
                 max_length: int | None = None, verify: bool = True, allow_spinning: bool = True,
                 thread_candidates: Sequence[int] | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ModelDirError(f"{self.model_dir} is not a directory")
        self.manifest = Manifest.load(self.model_dir / MANIFEST_FILE)
        if model_file is None:
            model_file = next((name for name in MODEL_FILES if (self.model_dir / name).is_file()), None)
            if model_file is None:
                raise ModelDirError(f"{self.model_dir} has neither model.onnx nor model.ort")
        elif model_file not in MODEL_FILES:
            raise PredictorOptionError(f"model_file must be one of {MODEL_FILES}, got {model_file!r}")
        elif not (self.model_dir / model_file).is_file():
            raise ModelDirError(f"{self.model_dir / model_file} does not exist")
        if not (self.model_dir / TOKENIZER_FILE).is_file():
            raise ModelDirError(f"{self.model_dir} has no {TOKENIZER_FILE}")
        check_requires(self.manifest, ort.__version__)
        if verify:
            # golden.npz is optional (a device image may leave it out) but, when shipped, vouched for too
            golden = [GOLDEN_FILE] if (self.model_dir / GOLDEN_FILE).is_file() else []
            verify_files(self.model_dir, self.manifest, [model_file, TOKENIZER_FILE, *golden])
        if max_batch < 1:
            raise PredictorOptionError(f"max_batch must be >= 1, got {max_batch}")
        if max_padding < 0:
            raise PredictorOptionError(f"max_padding must be >= 0, got {max_padding}")
        self.max_batch, self.max_padding = max_batch, max_padding
        self.max_length = self.manifest.max_length if max_length is None else max_length
        if not 2 <= self.max_length <= self.manifest.max_length:
            raise PredictorOptionError(f"max_length must be in [2, {self.manifest.max_length}] (the export's limit), got {max_length}")
        self.model_file = model_file
        candidates = None
        if threads == AUTO:
            candidates = sorted(set(candidate_threads() if thread_candidates is None else thread_candidates))
            if not candidates or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in candidates):
                raise PredictorOptionError(f"thread_candidates must be counts >= 1, got {thread_candidates}")
            threads = candidates[0]
        elif threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
            raise PredictorOptionError(f"threads must be a count >= 1, None or {AUTO!r}, got {threads!r}")
        self.threads = default_threads(self.manifest.graph) if threads is None else threads
        self.thread_trial: ThreadTrial | None = None
        # Named in every answer so a client can tell which model answered (NAME@VERSION).
        self.name, self.model_version = self.manifest.identity(self.model_dir.resolve().name)

        try:
            self.tokenizer = Tokenizer.from_file(str(self.model_dir / TOKENIZER_FILE))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on a corrupt file
            raise ModelDirError(f"{self.model_dir / TOKENIZER_FILE} is not a readable tokenizer: "
                                f"{' '.join(str(exc).split())[:200]}") from None
        # The packaged tokenizers pad to a fixed 128; we pad each length bucket ourselves instead.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.pad_id = self._pad_id()

        session_options = (graph_optimization, optimized_model_path, allow_spinning, disabled_optimizers)
        self.session = create_session(self.model_dir / model_file, self.threads, *session_options)
        session_inputs = [i.name for i in self.session.get_inputs()]
        unknown = [name for name in session_inputs if name not in INPUTS]
        if unknown:
            raise ModelDirError(f"{model_file} wants inputs {unknown} this runtime does not produce")
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs != list(OUTPUTS):
            raise ModelDirError(f"{model_file} has outputs {outputs}, the manifest says {list(OUTPUTS)}")
        self.input_names = session_inputs
        self.output_name = OUTPUTS[0]
        if candidates is not None and len(candidates) > 1:
            self._choose_threads(candidates, session_options)

    def _choose_threads(self, candidates: list[int], session_options: tuple) -> None:
        """Time the model at each thread count on one request of ``PROBE_TOKENS`` tokens; keep the fastest session."""
        sessions = {self.threads: self.session}
        sessions.update({t: create_session(self.model_dir / self.model_file, t, *session_options)
                         for t in candidates if t != self.threads})
        feeds = self._probe_feeds()
        self.thread_trial = fastest(sessions, lambda session: session.run([self.output_name], feeds))
        self.threads, self.session = self.thread_trial.threads, sessions[self.thread_trial.threads]

    def _probe_feeds(self) -> dict[str, np.ndarray]:
        """One input of ``min(PROBE_TOKENS, max_length)`` tokens, fed as ``logits`` would feed it."""
        length = min(PROBE_TOKENS, self.max_length)
        item = ("word " * length, "word " * length) if self.manifest.pair_input else "word " * length
        _, feeds = self._batches(self.encode([item]))[0]
        return {name: array[:, :length] for name, array in feeds.items()}

    def _pad_id(self) -> int:
        padding = json.loads(self.tokenizer.to_str()).get("padding") or {}
        if "pad_id" in padding:
            return int(padding["pad_id"])
        pad = self.tokenizer.token_to_id("[PAD]")
        return 0 if pad is None else pad

    @property
    def labels(self) -> list[str]:
        """Label names in logit-column order; [] for a regression model."""
        return self.manifest.labels

    @property
    def task(self) -> str | None:
        return self.manifest.task

    @property
    def model_id(self) -> str:
        """``NAME@VERSION``, e.g. "tickets-kb21@1.2.0" (see runtime.contract.model_id)."""
        return model_id(self.name, self.model_version)

    def summary(self) -> dict[str, Any]:
        """What a client or operator needs to know about the loaded model (no hashes of other files)."""
        import onnxruntime as ort

        m = self.manifest
        return {
            "model": self.model_id, "name": self.name, "version": self.model_version,
            "format": m.format, "task": m.task, "data_file": m.data_file, "labels": self.labels,
            "problem_type": m.problem_type, "pair_input": m.pair_input,
            "max_length": self.max_length, "target": m.target, "profile": m.profile,
            "opset": m.opset, "quantization": m.quantization,
            "model_file": self.model_file, "sha256": (m.files.get(self.model_file) or {}).get("sha256"),
            # Not "source": it may name paths on the exporting machine, which clients have no use for.
            "versions": m.versions or None,
            "runtime": {"onnxruntime": ort.__version__, "threads": self.threads, "max_batch": self.max_batch,
                        **({"thread_trial": self.thread_trial.to_dict()} if self.thread_trial else {})},
        }

    # ---- tokenisation and batching -------------------------------------------------------------
    def _check_inputs(self, inputs: Inputs) -> list:
        if isinstance(inputs, (str, bytes)):
            raise TypeError("predict takes a list of texts (or of (a, b) pairs), not a single string")
        items = list(inputs)
        for i, item in enumerate(items):
            if self.manifest.pair_input:
                if isinstance(item, (str, bytes)) or len(item) != 2 or not all(isinstance(s, str) for s in item):
                    raise ValueError(f"item {i}: this model ({self.manifest.task or 'pair task'}) takes (text_a, text_b) pairs")
            elif not isinstance(item, str):
                raise ValueError(f"item {i}: this model takes single texts; got {type(item).__name__}")
        return [tuple(item) for item in items] if self.manifest.pair_input else items

    def encode(self, inputs: Inputs) -> list:
        """Tokenise (with truncation to max_length); one `tokenizers.Encoding` per input."""
        items = self._check_inputs(inputs)
        return self.tokenizer.encode_batch(items) if items else []

    def _groups(self, lengths: list[int]) -> list[list[int]]:
        """Indices sorted by length, cut into groups of at most max_batch whose longest is at most
        (1 + max_padding) x their shortest (+2 tokens of slack).

        Why: a Kronecker graph costs about the same per token at any batch size (it is many small GEMMs),
        so padding is pure waste there, and one long text would make every short one pay for it.
        """
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        groups: list[list[int]] = []
        for i in order:
            group = groups[-1] if groups else None
            if (group is None or len(group) >= self.max_batch
                    or lengths[i] > (1 + self.max_padding) * lengths[group[0]] + 2):
                groups.append([i])
            else:
                group.append(i)
        return groups

    def _batches(self, encodings: list) -> list[tuple[list[int], dict[str, np.ndarray]]]:
        """Length-bucketed batches (see `_groups`), each padded only to its own longest."""
        batches = []
        for idx in self._groups([len(e.ids) for e in encodings]):
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                enc = encodings[i]
                n = len(enc.ids)
                ids[row, :n] = enc.ids
                mask[row, :n] = 1
                types[row, :n] = enc.type_ids
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            batches.append((idx, {name: feeds[name] for name in self.input_names}))
        return batches

    def logits(self, inputs: Inputs) -> np.ndarray:
        """Raw model outputs, (len(inputs), num_labels) float32, in input order."""
        encodings = self.encode(inputs)
        out = None
        for idx, feeds in self._batches(encodings):
            result = self.session.run([self.output_name], feeds)[0]
            if out is None:
                out = np.empty((len(encodings), result.shape[-1]), dtype=np.float32)
            out[idx] = result
        if out is None:
            width = 1 if self.manifest.is_regression else len(self.labels)
            return np.empty((0, width), dtype=np.float32)
        return out

    def predict(self, inputs: Inputs) -> list[dict[str, Any]]:
        """Classify texts (or pairs, for pair tasks).

        Returns one dict per input: ``label`` (the argmax label name), ``score`` (its probability),
        ``scores`` ({label: probability}) and ``latency_ms`` (wall time of this whole call, tokenisation
        included, the same for every item of the call). Regression models return ``label`` None,
        ``score`` the predicted value and ``scores`` {"value": score}. An empty text is scored as it is
        (the model sees only [CLS] [SEP]), so a batch job keeps one answer per row; the HTTP server
        refuses one with 422 ``empty_item`` instead, and training files refuse empty rows.
        """
        start = time.perf_counter()
        logits = self.logits(inputs)
        latency_ms = (time.perf_counter() - start) * 1e3
        if self.manifest.is_regression:
            return [{"label": None, "score": float(v[0]), "scores": {"value": float(v[0])}, "latency_ms": latency_ms}
                    for v in logits]
        if logits.shape[-1] != len(self.labels):
            raise ModelDirError(f"the model returns {logits.shape[-1]} scores but the manifest has {len(self.labels)} labels")
        probs = softmax(logits.astype(np.float64))
        results = []
        for row in probs:
            best = int(row.argmax())
            results.append({"label": self.labels[best], "score": float(row[best]),
                            "scores": {name: float(p) for name, p in zip(self.labels, row)}, "latency_ms": latency_ms})
        return results

    def warmup(self, runs: int = 2) -> None:
        """Run a short and a long input so ORT's first-run costs are not paid by a client."""
        sample = ("warm up", "warm up") if self.manifest.pair_input else "warm up"
        long = ("word " * self.max_length, "word") if self.manifest.pair_input else "word " * self.max_length
        for _ in range(runs):
            self.logits([sample, long])

    def check_golden(self, min_sqnr_db: float = GOLDEN_MIN_SQNR_DB) -> dict[str, float]:
        """Re-run golden.npz's inputs and compare with the exporter's logits.

        Uses a signal-to-noise floor rather than an atol, because an int8 model gives slightly different
        numbers on another CPU (x86 vs ARM kernels) without being wrong. Raises ModelDirError below it, or
        when golden.npz is missing or unreadable.
        """
        golden = load_golden(self.model_dir / GOLDEN_FILE)
        feeds = {name: golden[name] for name in self.input_names}
        got = self.session.run([self.output_name], feeds)[0].astype(np.float64)
        expected = golden["logits"]
        if got.shape != expected.shape:
            raise ModelDirError(f"golden check failed: the model returns shape {got.shape}, golden.npz holds "
                                f"{expected.shape}")
        score = sqnr(expected, got)
        report = {"sqnr_db": score, "max_abs_diff": float(np.abs(expected - got).max()) if got.size else 0.0}
        if score < min_sqnr_db and self.model_file == "model.ort" and clips_s8_weights(self.manifest.quantization):
            raise ModelDirError(
                f"golden check failed: SQNR {score:.1f} dB < {min_sqnr_db} dB. This x86 CPU has no VNNI "
                f"({' / '.join(EXACT_INT8_FLAGS)}), so ONNX Runtime's int8 GEMM saturates on the s8 weights of this "
                f"{(self.manifest.quantization or {}).get('name')} export's model.ort, which is optimised ahead of "
                "time; run its model.onnx here (ORT rewrites its weights at load), or export with --target x86_64 "
                "--no-vnni")
        if score < min_sqnr_db:
            raise ModelDirError(f"golden check failed: SQNR {score:.1f} dB < {min_sqnr_db} dB "
                                f"(max |diff| {report['max_abs_diff']:.3g}); the model or runtime is broken")
        return report
