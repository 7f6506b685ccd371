"""The exported-directory contract between `kronedge export` and the runtime, torch-free and written once.

The exporter (``exporters/``) writes a directory with these files; the runtime (``runtime.predictor``), the
server, the benches and the device tests read it. Both sides import the names, the :class:`Manifest` and
the checks from here, so a field or a file name is defined in one place (docs/INTERFACES.md describes it).

    model.onnx | model.ort     the graph: INPUTS (int64, (batch, sequence)) -> OUTPUTS (float32, (batch, labels))
    tokenizer.json             the fast tokenizer, truncating at max_length
    golden.npz                 GOLDEN_KEYS: the inputs of a few sentences and the exporter's logits for them
    manifest.json              :class:`Manifest`: format, labels, limits, sha256 of every file, provenance

Only numpy and the standard library are imported here (a lean-import test guards the runtime).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import KronedgeError

FORMAT_VERSION = 1
FORMAT = f"kronedge-onnx/{FORMAT_VERSION}"

INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # int64, (batch, sequence); input_ids is required
OUTPUTS = ("logits",)  # float32, (batch, num_labels); (batch, 1) for regression
DYNAMIC_AXES = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {"logits": {0: "batch"}}

MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
GOLDEN_FILE = "golden.npz"
MODEL_FILES = ("model.onnx", "model.ort")  # the runtime loads the first present unless told otherwise
GOLDEN_KEYS = INPUTS + OUTPUTS
PROBLEM_TYPES = ("single_label_classification", "regression")
# Keys a manifest must carry (written since format 1); the others have defaults.
REQUIRED_KEYS = ("labels", "problem_type", "pair_input", "max_length", "inputs", "outputs", "files")

# A model's identity, NAME@VERSION, is what the Predictor, /v1/model and every /v1/classify answer name, so a
# client can tell which model answered. Both parts are URL- and filename-safe; VERSION may carry "+" (semver
# build metadata). Without --name an export is named after its directory and versioned by a short model hash.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
SHORT_HASH_CHARS = 12

# A golden check on another CPU (ARM kernels, other ISA) is judged by signal-to-noise, not atol: int8 graphs
# take different integer kernels there without being wrong. A constant or shuffled output scores < 10 dB.
GOLDEN_MIN_SQNR_DB = 25.0


class ModelDirError(KronedgeError, ValueError):
    """The exported directory cannot be used: a file is missing, truncated or corrupt, the manifest is not
    valid, or a file's hash does not match. The message is one line that names the file."""


def sqnr(reference, test, level: float | None = None) -> float:
    """Signal-to-quantisation-noise ratio 20 log10(|x| / |x - y|) in dB (torchao's); inf when identical.

    With ``level``, the noise's RMS is measured against that signal RMS instead of the reference's own: export
    validation passes the logits' RMS over all its inputs, since one input near a decision boundary has logits
    near zero, and its own ratio says nothing about the quantisation.

    The one definition used by export validation, the golden check, the benches and the tests.
    """
    reference = np.asarray(reference, np.float64)
    test = np.asarray(test, np.float64)
    if reference.shape != test.shape:
        raise ValueError(f"sqnr needs equal shapes, got {reference.shape} and {test.shape}")
    noise = rms(reference - test)
    if noise == 0.0:
        return math.inf
    return 20.0 * math.log10(max(rms(reference) if level is None else level, 1e-30) / noise)


def rms(values) -> float:
    """Root mean square of all the values (0.0 for none)."""
    values = np.asarray(values, np.float64)
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else 0.0


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_table(directory: str | os.PathLike) -> dict[str, dict]:
    """``{name: {"sha256", "bytes"}}`` for every file of ``directory`` except the manifest itself."""
    directory = Path(directory)
    return {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}


def model_id(name: str, version: str) -> str:
    """The identity string of a model: ``"tickets-kb21@1.2.0"``."""
    return f"{name}@{version}"


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid model name (None when it is)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return (f"model name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                "digit")
    return None


def version_problem(version: object) -> str | None:
    """Why ``version`` is not a valid model version (None when it is)."""
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        return (f"model version {version!r} must be 1-64 letters, digits, '.', '_', '+' or '-', starting with a "
                "letter or digit")
    return None


def default_name(directory_name: str) -> str:
    """A valid model name made from a directory's name (characters a name cannot hold become '-')."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", directory_name).strip("-._")[:64]
    return name or "model"


def default_version(files: dict[str, dict]) -> str | None:
    """The first SHORT_HASH_CHARS hex digits of the model file's sha256 (model.onnx, else model.ort): the same
    graph gives the same version, any change of weights, quantisation or graph a new one."""
    for name in MODEL_FILES:
        digest = (files.get(name) or {}).get("sha256")
        if isinstance(digest, str) and digest:
            return digest[:SHORT_HASH_CHARS]
    return None


def version_tuple(text: str) -> tuple[int, ...]:
    """Leading release numbers of a version string: "1.24.0rc1" -> (1, 24, 0), "2.13.0+cpu" -> (2, 13, 0).

    ``packaging`` would do, but it is not a runtime dependency and only ">=X.Y" specifiers are written.
    """
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


@dataclass(frozen=True)
class Manifest:
    """manifest.json, checked on construction (so a bad one fails the writer as well as the reader).

    The first twelve fields are what the runtime relies on and shows; the rest describe where the model came from and
    how it was judged, and are written by the exporter and shown by ``Predictor.summary``. Keys this
    version does not know are kept in ``extra`` and written back unchanged.

    Example:
        >>> Manifest(labels=["negative", "positive"], max_length=128).to_dict()["format"]
        'kronedge-onnx/1'
    """

    labels: list[str]
    max_length: int
    task: str | None = None
    data_file: str | None = None  # the training file's name (no directory) of a task from a user's own files
    name: str | None = None  # the model's identity NAME@MODEL_VERSION (see NAME_RE); None in older exports
    model_version: str | None = None
    problem_type: str = "single_label_classification"
    pair_input: bool = False
    inputs: list[str] = field(default_factory=lambda: list(INPUTS))
    outputs: list[str] = field(default_factory=lambda: list(OUTPUTS))
    files: dict[str, dict] = field(default_factory=dict)
    format: str = FORMAT
    opset: int | None = None
    target: str | None = None
    profile: str | None = None
    quantization: dict | None = None
    validation: dict = field(default_factory=dict)
    graph: dict | None = None
    model: dict | None = None
    requires: dict = field(default_factory=dict)  # {"onnxruntime": ">=1.23"}
    versions: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ModelDirError(f"manifest: {problems[0]}")

    @property
    def version(self) -> int:
        return int(self.format.rsplit("/", 1)[1])

    @property
    def is_regression(self) -> bool:
        return self.problem_type == "regression"

    @property
    def raw(self) -> dict[str, Any]:
        """The whole document as a dict (what ``to_dict`` writes)."""
        return self.to_dict()

    def identity(self, directory_name: str) -> tuple[str, str]:
        """(name, version) of the model: the manifest's, or for an export written before they were recorded,
        the same defaults an export without ``--name`` gets (the directory's name, the model file's short hash).
        """
        name = self.name or default_name(directory_name)
        return name, self.model_version or default_version(self.files) or "unversioned"

    @property
    def num_outputs(self) -> int:
        return 1 if self.is_regression else len(self.labels)

    def problems(self) -> list[str]:
        """Every reason this manifest is not one the runtime can use (empty when it is)."""
        out = []
        if self.format != FORMAT:
            out.append(f"format is {self.format!r}, this runtime reads {FORMAT!r}")
        if self.problem_type not in PROBLEM_TYPES:
            out.append(f"problem_type {self.problem_type!r} is not supported {PROBLEM_TYPES}")
        if not isinstance(self.labels, list) or not all(isinstance(x, str) for x in self.labels):
            out.append("labels must be a list of strings")
        elif self.problem_type != "regression" and len(self.labels) < 2:
            out.append(f"a classifier needs at least 2 labels, got {self.labels}")
        if not isinstance(self.max_length, int) or isinstance(self.max_length, bool) or self.max_length < 2:
            out.append(f"max_length must be an integer >= 2, got {self.max_length!r}")
        if (not isinstance(self.inputs, list) or "input_ids" not in self.inputs
                or any(name not in INPUTS for name in self.inputs)):
            out.append(f"inputs {self.inputs} must include input_ids and only {list(INPUTS)}")
        if list(self.outputs) != list(OUTPUTS):
            out.append(f"outputs {self.outputs} must be {list(OUTPUTS)}")
        if not isinstance(self.files, dict) or not all(isinstance(v, dict) for v in self.files.values()):
            out.append("files must map file names to {sha256, bytes}")
        if not isinstance(self.pair_input, bool):
            out.append(f"pair_input must be true or false, got {self.pair_input!r}")
        for key in ("task", "data_file"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                out.append(f"{key} must be a string or null, got {getattr(self, key)!r}")
        if self.name is not None and name_problem(self.name):
            out.append(name_problem(self.name))
        if self.model_version is not None and version_problem(self.model_version):
            out.append(version_problem(self.model_version))
        return out

    # ---- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the documented order, unknown keys (``extra``) last."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        order = ["format", "name", "model_version", "task", "data_file", "labels", "problem_type", "pair_input", "max_length", "inputs", "outputs"]
        ordered = {key: out.pop(key) for key in order}
        return {**ordered, **out, **self.extra}

    @classmethod
    def from_dict(cls, raw: Any, where: str = MANIFEST_FILE) -> "Manifest":
        """Check and load a parsed manifest; ModelDirError (one line naming ``where``) when it is not usable."""
        if not isinstance(raw, dict):
            raise ModelDirError(f"{where} must hold a JSON object, not {type(raw).__name__}")
        if raw.get("format") != FORMAT:
            raise ModelDirError(f"{where}: format is {raw.get('format')!r}, this runtime reads {FORMAT!r}")
        missing = [key for key in REQUIRED_KEYS if key not in raw]
        if missing:
            raise ModelDirError(f"{where} lacks {missing}; re-export with a current `kronedge export`")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {key: value for key, value in raw.items() if key in known}
        for key in ("validation", "requires", "versions", "source"):
            if kwargs.get(key) is None:
                kwargs.pop(key, None)
        try:
            return cls(**kwargs, extra={k: v for k, v in raw.items() if k not in known})
        except ModelDirError as exc:
            raise ModelDirError(f"{where}: {str(exc).removeprefix('manifest: ')}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """Read and check ``path`` (a manifest.json)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelDirError(f"{path.parent} has no {MANIFEST_FILE}; is it a directory written by "
                                "`kronedge export`?") from None
        except UnicodeDecodeError as exc:
            raise ModelDirError(f"{path} is not UTF-8 text: {exc.reason}") from None
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ModelDirError(f"{path} is not valid JSON: {str(exc).splitlines()[0]}") from None
        return cls.from_dict(raw, str(path))

    def write(self, path: str | os.PathLike) -> Path:
        """Write as indented JSON, atomically (a temporary file in the same directory, then rename)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(self.to_dict(), indent=2) + "\n")
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- checks of the other files ---------------------------------------------------------------------
def verify_files(model_dir: str | os.PathLike, manifest: Manifest, names: Sequence[str]) -> None:
    """Check size and sha256 of each named file against the manifest; ModelDirError on the first mismatch.

    Files listed but not named (golden.npz, the other model format) are not required: a device image may
    ship only model.ort. A named file missing from the manifest is an error, since nothing vouches for it.
    """
    model_dir = Path(model_dir)
    for name in names:
        entry = manifest.files.get(name)
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise ModelDirError(f"{name} is not listed with a sha256 in {model_dir / MANIFEST_FILE}")
        path = model_dir / name
        if not path.is_file():
            raise ModelDirError(f"{path} does not exist")
        if "bytes" in entry and path.stat().st_size != entry["bytes"]:
            raise ModelDirError(f"{path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}: "
                                "truncated copy or a different export")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ModelDirError(f"{path} sha256 {actual[:12]}... does not match the manifest's "
                                f"{str(entry['sha256'])[:12]}...")


def check_requires(manifest: Manifest, installed: str) -> None:
    """Fail with a readable message when the export needs a newer onnxruntime than ``installed``
    (opset 23's Attention op needs >= 1.23); ORT's own error is an opaque schema failure."""
    spec = manifest.requires.get("onnxruntime")
    if not isinstance(spec, str) or not spec.startswith(">="):
        return
    if version_tuple(installed) < version_tuple(spec[2:]):
        raise ModelDirError(f"this export needs onnxruntime {spec} (opset {manifest.opset}), but {installed} is "
                            "installed: pip install -U onnxruntime, or re-export with a lower opset")


def load_golden(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """golden.npz as arrays (inputs int64, logits float64); ModelDirError when missing, corrupt or incomplete."""
    path = Path(path)
    if not path.is_file():
        raise ModelDirError(f"{path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as golden:
            missing = [key for key in GOLDEN_KEYS if key not in golden.files]
            if missing:
                raise ModelDirError(f"{path} lacks {missing}; re-export the model")
            arrays = {key: golden[key] for key in GOLDEN_KEYS}
    except ModelDirError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelDirError(f"{path} is not a readable golden file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'corrupt'})") from None
    batch = arrays["input_ids"].shape[0] if arrays["input_ids"].ndim == 2 else -1
    same_shape = all(arrays[k].shape == arrays["input_ids"].shape for k in INPUTS)
    if batch < 1 or not same_shape or arrays["logits"].shape[0] != batch:
        raise ModelDirError(f"{path}: inconsistent shapes {({k: v.shape for k, v in arrays.items()})}")
    return {**{k: arrays[k].astype(np.int64) for k in INPUTS}, "logits": arrays["logits"].astype(np.float64)}
