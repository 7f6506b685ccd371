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

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

MANIFEST_FORMAT = "kronedge-onnx/1"
MODEL_FILES = ("model.onnx", "model.ort")
GRAPH_OPT_LEVELS = ("disabled", "basic", "extended", "all")
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

Text = str
Pair = Sequence[str]  # (first, second) for pair tasks such as RTE
Inputs = Union[Sequence[Text], Sequence[Pair]]


class ModelDirError(ValueError):
    """The exported directory is missing a file, has a bad manifest, or a file's hash does not match."""


@dataclass(frozen=True)
class Manifest:
    """The fields of manifest.json the runtime relies on; ``raw`` keeps the whole document."""

    task: str | None
    labels: list[str]
    problem_type: str
    pair_input: bool
    max_length: int
    inputs: list[str]
    outputs: list[str]
    files: dict[str, dict]
    raw: dict = field(repr=False)

    @property
    def is_regression(self) -> bool:
        return self.problem_type == "regression"

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelDirError(f"{path.parent} has no manifest.json; is it a directory written by `kronedge export`?") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelDirError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ModelDirError(f"{path} must hold a JSON object")
        if raw.get("format") != MANIFEST_FORMAT:
            raise ModelDirError(f"{path}: format is {raw.get('format')!r}, this runtime reads {MANIFEST_FORMAT!r}")
        missing = [k for k in ("labels", "problem_type", "pair_input", "max_length", "inputs", "outputs", "files") if k not in raw]
        if missing:
            raise ModelDirError(f"{path} lacks {missing}; re-export with a current `kronedge export`")
        problem_type = raw["problem_type"]
        if problem_type not in ("single_label_classification", "regression"):
            raise ModelDirError(f"{path}: problem_type {problem_type!r} is not supported (single_label_classification, regression)")
        labels = raw["labels"]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ModelDirError(f"{path}: labels must be a list of strings")
        if problem_type != "regression" and len(labels) < 2:
            raise ModelDirError(f"{path}: a classifier needs at least 2 labels, got {labels}")
        max_length = raw["max_length"]
        if not isinstance(max_length, int) or max_length < 2:
            raise ModelDirError(f"{path}: max_length must be an integer >= 2, got {max_length!r}")
        unknown = [name for name in raw["inputs"] if name not in KNOWN_INPUTS]
        if unknown or "input_ids" not in raw["inputs"]:
            raise ModelDirError(f"{path}: inputs {raw['inputs']} must include input_ids and only {KNOWN_INPUTS}")
        if not isinstance(raw["files"], dict):
            raise ModelDirError(f"{path}: files must map file names to {{sha256, bytes}}")
        return cls(task=raw.get("task"), labels=labels, problem_type=problem_type, pair_input=bool(raw["pair_input"]),
                   max_length=max_length, inputs=list(raw["inputs"]), outputs=list(raw["outputs"]),
                   files=raw["files"], raw=raw)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_files(model_dir: Path, manifest: Manifest, names: Sequence[str]) -> None:
    """Check size and sha256 of each file we are about to load against the manifest.

    Files listed in the manifest but not loaded (golden.npz, the other model format) are not required:
    a device image may ship only model.ort. A loaded file missing from the manifest is an error,
    because then nothing vouches for it.
    """
    for name in names:
        entry = manifest.files.get(name)
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise ModelDirError(f"{name} is not listed with a sha256 in {model_dir / 'manifest.json'}")
        path = model_dir / name
        if "bytes" in entry and path.stat().st_size != entry["bytes"]:
            raise ModelDirError(f"{path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}: "
                                "truncated copy or a different export")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ModelDirError(f"{path} sha256 {actual[:12]}... does not match the manifest's {str(entry['sha256'])[:12]}...")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.strip().split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:  # "0rc1", "0+cpu": keep the leading number, stop there
            break
    return tuple(parts)


def check_requires(manifest: Manifest, installed: str) -> None:
    """Fail with a readable message when the export needs a newer onnxruntime than the one installed
    (e.g. opset 23's Attention op needs >= 1.23); ORT's own error is an opaque schema failure."""
    spec = (manifest.raw.get("requires") or {}).get("onnxruntime")
    if not isinstance(spec, str) or not spec.startswith(">="):
        return
    if _version_tuple(installed) < _version_tuple(spec[2:]):
        raise ModelDirError(f"this export needs onnxruntime {spec} (opset {manifest.raw.get('opset')}), "
                            f"but {installed} is installed: pip install -U onnxruntime, or re-export with a lower opset")


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
        raise ValueError(f"graph_optimization must be one of {GRAPH_OPT_LEVELS}, got {graph_optimization!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
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


class Predictor:
    """Tokenise, batch by length and run an exported model with ONNX Runtime.

    Args:
        model_dir: directory written by `kronedge export` (manifest.json, tokenizer.json, model.onnx|model.ort).
        threads: ORT intra-op threads (None: ORT default).
        model_file: "model.onnx", "model.ort" or None (model.onnx if present, else model.ort). The .onnx
            lets ORT optimise for this CPU; the .ort loads faster and is what ORT Mobile runs.
        graph_optimization: ORT graph optimisation level (disabled | basic | extended | all).
        optimized_model_path: save the optimised graph there (host-specific; for a faster next start).
        disabled_optimizers: ORT optimiser names to skip, e.g. ["SkipLayerNormFusion"], measured slower
            on Kronecker graphs.
        max_batch: most sequences per ORT run; longer input lists are split after sorting by length.
        max_padding: start a new batch rather than pad a row by more than this fraction of its length.
        max_length: truncate to this many tokens (<= the manifest's max_length; default: the manifest's).
        verify: check manifest hashes of the files loaded (on by default; costs one read of the model).
        allow_spinning: see `session_options`.

    Example:
        >>> Predictor("runs/rte-int8").predict([("A man plays.", "Someone plays.")])
    """

    def __init__(self, model_dir: str | os.PathLike, threads: int | None = None, *, model_file: str | None = None,
                 graph_optimization: str = "all", optimized_model_path: str | os.PathLike | None = None,
                 disabled_optimizers: Sequence[str] = (), max_batch: int = 16, max_padding: float = 0.3,
                 max_length: int | None = None, verify: bool = True, allow_spinning: bool = True):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ModelDirError(f"{self.model_dir} is not a directory")
        self.manifest = Manifest.load(self.model_dir / "manifest.json")
        if model_file is None:
            model_file = next((name for name in MODEL_FILES if (self.model_dir / name).is_file()), None)
            if model_file is None:
                raise ModelDirError(f"{self.model_dir} has neither model.onnx nor model.ort")
        elif model_file not in MODEL_FILES:
            raise ValueError(f"model_file must be one of {MODEL_FILES}, got {model_file!r}")
        elif not (self.model_dir / model_file).is_file():
            raise ModelDirError(f"{self.model_dir / model_file} does not exist")
        if not (self.model_dir / "tokenizer.json").is_file():
            raise ModelDirError(f"{self.model_dir} has no tokenizer.json")
        check_requires(self.manifest, ort.__version__)
        if verify:
            verify_files(self.model_dir, self.manifest, [model_file, "tokenizer.json"])
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_padding < 0:
            raise ValueError(f"max_padding must be >= 0, got {max_padding}")
        self.max_batch, self.max_padding = max_batch, max_padding
        self.max_length = self.manifest.max_length if max_length is None else max_length
        if not 2 <= self.max_length <= self.manifest.max_length:
            raise ValueError(f"max_length must be in [2, {self.manifest.max_length}] (the export's limit), got {max_length}")
        self.model_file = model_file
        self.threads = threads

        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        # The packaged tokenizers pad to a fixed 128; we pad each length bucket ourselves instead.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.pad_id = self._pad_id()

        so = session_options(threads, graph_optimization, optimized_model_path, allow_spinning)
        kwargs = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
        self.session = ort.InferenceSession(str(self.model_dir / model_file), sess_options=so,
                                            providers=["CPUExecutionProvider"], **kwargs)
        session_inputs = [i.name for i in self.session.get_inputs()]
        unknown = [name for name in session_inputs if name not in KNOWN_INPUTS]
        if unknown:
            raise ModelDirError(f"{model_file} wants inputs {unknown} this runtime does not produce")
        self.input_names = session_inputs
        self.output_name = self.manifest.outputs[0] if self.manifest.outputs else self.session.get_outputs()[0].name

    def _pad_id(self) -> int:
        padding = json.loads(self.tokenizer.to_str()).get("padding") or {}
        if "pad_id" in padding:
            return int(padding["pad_id"])
        pad = self.tokenizer.token_to_id("[PAD]")
        return 0 if pad is None else pad

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def summary(self) -> dict[str, Any]:
        """What a client or operator needs to know about the loaded model (no hashes of other files)."""
        import onnxruntime as ort

        raw = self.manifest.raw
        return {
            "format": raw.get("format"), "task": self.manifest.task, "labels": self.labels,
            "problem_type": self.manifest.problem_type, "pair_input": self.manifest.pair_input,
            "max_length": self.max_length, "target": raw.get("target"), "profile": raw.get("profile"),
            "opset": raw.get("opset"), "quantization": raw.get("quantization"),
            "model_file": self.model_file, "sha256": (self.manifest.files.get(self.model_file) or {}).get("sha256"),
            # Not "source": it may name paths on the exporting machine, which clients have no use for.
            "versions": raw.get("versions"),
            "runtime": {"onnxruntime": ort.__version__, "threads": self.threads, "max_batch": self.max_batch},
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
        ``score`` the predicted value and ``scores`` {"value": score}.
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

    def check_golden(self, min_sqnr_db: float = 25.0) -> dict[str, float]:
        """Re-run golden.npz's inputs and compare with the exporter's logits.

        Uses a signal-to-noise floor rather than an atol, because an int8 model gives slightly different
        numbers on another CPU (x86 vs ARM kernels) without being wrong. Raises ModelDirError below it.
        """
        path = self.model_dir / "golden.npz"
        if not path.is_file():
            raise ModelDirError(f"{path} does not exist")
        with np.load(path) as golden:
            feeds = {name: golden[name].astype(np.int64) for name in self.input_names}
            expected = golden["logits"].astype(np.float64)
        got = self.session.run([self.output_name], feeds)[0].astype(np.float64)
        noise = np.linalg.norm(expected - got)
        sqnr = float("inf") if noise == 0 else float(20 * np.log10(np.linalg.norm(expected) / noise))
        report = {"sqnr_db": sqnr, "max_abs_diff": float(np.abs(expected - got).max()) if got.size else 0.0}
        if sqnr < min_sqnr_db:
            raise ModelDirError(f"golden check failed: SQNR {sqnr:.1f} dB < {min_sqnr_db} dB "
                                f"(max |diff| {report['max_abs_diff']:.3g}); the model or runtime is broken")
        return report
