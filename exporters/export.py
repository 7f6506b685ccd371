"""Export a kronedge artifact (or a dense teacher) to an ONNX model directory for the edge runtime.

The steps, each its own function so tests and the bench can call them one by one:

  1. :func:`torch_to_onnx`   TorchScript exporter inside :func:`export_mode` (eager attention), of a copy
     whose unneeded bias adds are folded into constants (:mod:`exporters.bias_folding`).
  2. :func:`exporters.passes.optimize`   Gemm -> MatMul+Add, fused attention core (per profile).
  3. :func:`exporters.validate.validate`   names, dynamic axes, shapes, values on new shapes; raises.
  4. :func:`exporters.quantize.quantize`   a target preset (dynamic int8 or static QDQ), re-validated.
  5. ORT format, golden.npz, config.json, tokenizer.json and manifest.json, all in one atomic rename.

The directory format is runtime/contract.py's (the runtime reads it with the same module).
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from runtime.contract import GOLDEN_FILE, MANIFEST_FILE, OUTPUTS, TOKENIZER_FILE
from runtime.hostinfo import clips_s8_weights
from runtime.predictor import HOST_INT8_NOTE, create_session

from .config import BertOnnxConfig, ExportError, ExportOptions, positions_problem, resolve_max_length
from .identity import TaskInfo, resolve_task

SAMPLE_SENTENCES = (
    "a charming and often affecting journey.",
    "the plot is paper-thin and the acting is wooden.",
    "an absolute joy from start to finish, with a cast that clearly loves the material.",
    "it's not bad, but it's not good either.",
)


@contextmanager
def export_mode(model):
    """Export-only behaviour, undone on exit: eval, no grad, eager attention with a traceable head merge.

    transformers' SDPA attention exports as a graph that no fusion recognises, and its eager
    attention reads the merged shape from the context tensor, which ties the attention core to
    the shape arithmetic after it. Here every self-attention runs the same eager math but takes
    (B, S) from its input, so the core (QK^T, mask, softmax, ·V) is a closed subgraph that a rule
    can replace with one fused node.
    """
    from transformers.models.bert.modeling_bert import BertSelfAttention

    patched, saved_impl = [], []
    was_training = model.training
    for module in model.modules():
        if isinstance(module, BertSelfAttention):
            if problem := positions_problem(module):
                raise ExportError(problem)
            patched.append(module)
            module.forward = types.MethodType(_eager_attention_forward, module)
        if hasattr(module, "attn_implementation"):
            saved_impl.append((module, module.attn_implementation))
            module.attn_implementation = "eager"
    config_impl = getattr(model.config, "_attn_implementation", None)
    model.config._attn_implementation = "eager"
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module in patched:
            del module.forward  # back to the class method
        for module, impl in saved_impl:
            module.attn_implementation = impl
        model.config._attn_implementation = config_impl
        model.train(was_training)


def _eager_attention_forward(self, hidden_states, attention_mask=None, head_mask=None, *args, **kwargs):
    b, s, _ = hidden_states.shape
    n, h = self.num_attention_heads, self.attention_head_size
    q = self.query(hidden_states).view(b, s, n, h).transpose(1, 2)  # (B, N, S, H)
    k = self.key(hidden_states).view(b, s, n, h).transpose(1, 2)
    v = self.value(hidden_states).view(b, s, n, h).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(h)  # (B, N, S, S)
    if attention_mask is not None:
        scores = scores + attention_mask  # additive (B, 1, 1, S)
    probs = torch.softmax(scores, dim=-1)
    context = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, n * h)  # (B, S, D)
    return context, None


class _Logits(torch.nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> logits, the exported signature."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          return_dict=False)[0]


def torch_to_onnx(model, path: str | os.PathLike, opset: int = BertOnnxConfig.EXPORT_OPSET) -> Path:
    """Trace ``model`` (a BertForSequenceClassification, dense or kronized) to an ONNX file.

    Uses the TorchScript exporter (``dynamo=False``): 3x faster than dynamo here and its graph is
    the one the attention rules are written for.
    """
    import warnings

    path = Path(path)
    batch, seq = BertOnnxConfig.EXPORT_SHAPE
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, seq // 2:] = 0
    types_ = torch.zeros_like(ids)
    with export_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Logits(model), (ids, mask, types_), str(path),
            input_names=list(BertOnnxConfig.INPUTS), output_names=list(BertOnnxConfig.OUTPUTS),
            dynamic_axes=BertOnnxConfig.DYNAMIC_AXES, opset_version=opset, do_constant_folding=True,
            dynamo=False,
        )
    return path


def load_source(model_spec: str | os.PathLike, num_labels: int | None = None):
    """The torch model, tokenizer folder and a description of where it came from.

    A kronedge artifact directory loads through :func:`kronedge.artifact.load_artifact`; anything
    else is a teacher spec (:func:`kronedge.teachers.load_teacher`), exported dense as it is.
    """
    from kronedge.artifact import ArtifactError, RECIPE_FILE, load_artifact, read_recipe
    from kronedge.finetune import finetune_record
    from kronedge.teachers import head_of, load_teacher

    spec = str(model_spec)
    path = Path(spec)
    # "org/name" may be a hub id; only an explicit filesystem path is known to be missing.
    looks_like_path = (spec.startswith((".", "/", "~")) or path.exists()
                       or (os.sep in spec and Path(spec.split(os.sep)[0]).is_dir()))
    if path.is_dir() and (path / RECIPE_FILE).exists():
        model = load_artifact(path)
        recipe = read_recipe(path)
        tuned = finetune_record(path, recipe)  # a kronized teacher that `kronedge finetune` trained
        source = {"kind": "kronedge-artifact", "path": str(path.resolve()), "teacher": recipe.get("teacher"),
                  "kron_config": recipe.get("kron_config"), "params": recipe.get("params_student"),
                  "training": recipe.get("training"),
                  # what the head answers (exporters.identity.resolve_task reads these three)
                  "task": recipe.get("task") or tuned.get("task"), "labels": recipe.get("labels"),
                  "task_spec": recipe.get("task_spec") or tuned.get("task_spec")}
        tokenizer_dir = path
    elif looks_like_path and not path.exists():
        raise ArtifactError(f"model directory {path} not found")
    else:
        teacher = load_teacher(spec, head="sequence-classification", num_labels=num_labels)
        model, tokenizer_dir = teacher.model, teacher.tokenizer_dir
        source = {"kind": "teacher", "spec": spec, "pretrained": teacher.pretrained}
        tuned = finetune_record(path) if path.is_dir() else {}  # what `kronedge finetune` recorded it answers
        if tuned:
            source.update(task=tuned.get("task"), task_spec=tuned.get("task_spec"))
    if head_of(model) != "sequence-classification":
        raise ExportError(f"{spec} has a {head_of(model)!r} head; export needs a sequence-classification model "
                         f"(kronize or distil it with a classification head)")
    source["params_total"] = int(sum(p.numel() for p in model.parameters()))
    return model.eval(), Path(tokenizer_dir), source


def export_model(model, out_dir: str | os.PathLike, target: str = "x86_64", quantize: str = "none",
                 profile: str = "portable", task: str | None = None, max_length: int | None = None,
                 **options) -> Path:
    """Export MODEL to ``out_dir`` (model.onnx, model.ort, tokenizer.json, golden.npz, manifest.json).

    Args:
        model: a kronedge artifact directory or any teacher spec (``random:bert-base-uncased``,
            ``builtin:minilm``, a saved BERT); dense models are exported as they are, for baselines.
            A torch model (BertForSequenceClassification) is accepted too, with ``tokenizer_dir=``.
        out_dir: destination; written atomically (a failure leaves nothing behind).
        target: "x86_64" or "arm64" (quantisation preset, ORT-format platform).
        quantize: "none", "int8" (dynamic) or "int8-static" (QDQ calibrated on ``task`` sentences).
        profile: "portable" (ai.onnx ops only) or "ort" (ONNX Runtime contrib ops).
        task: GLUE task (labels, calibration and golden sentences), e.g. "sst2".
        max_length: longest sequence validated and recorded for the runtime (default: 128, or the model's
            positions where it has fewer).
        **options: further :class:`exporters.config.ExportOptions` fields (vnni, per_channel, ...).

    Returns:
        ``Path(out_dir)``.

    Example:
        >>> export_model("runs/kb21", "runs/kb21-arm64", target="arm64", quantize="int8")
    """
    from kronedge.artifact import atomic_directory, sibling_prefix

    tokenizer_dir = options.pop("tokenizer_dir", None)
    opts = ExportOptions(target=target, quantize=quantize, profile=profile, task=task, max_length=max_length, **options)
    task_data = _task_data(opts.task, opts.data_dir)
    if isinstance(model, (str, os.PathLike)):
        torch_model, tokenizer_dir, source = load_source(model, task_data.spec.num_labels if task_data else None)
    else:
        if tokenizer_dir is None:
            raise ValueError("exporting a torch model object needs tokenizer_dir=")
        torch_model, tokenizer_dir = model.eval(), Path(tokenizer_dir)
        source = {"kind": "torch-module", "class": type(model).__name__,
                  "params_total": int(sum(p.numel() for p in model.parameters()))}
    _check_fits(torch_model, opts, task_data)
    info = resolve_task(torch_model.config, source, task_data.spec if task_data is not None else None)
    if not any((Path(tokenizer_dir) / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise ExportError(f"{tokenizer_dir} has no tokenizer.json or vocab.txt: save the model's tokenizer beside it")
    # Without --name the model is called after the artifact it was made from (the output directory for a
    # teacher spec): exports of one artifact for several targets share the name and differ in version.
    name_dir = source["path"] if source.get("kind") == "kronedge-artifact" else out_dir

    # The work directory sits beside the output, named for this process: a killed export's is swept by the next.
    with (atomic_directory(out_dir, MANIFEST_FILE) as tmp,
          tempfile.TemporaryDirectory(prefix=sibling_prefix(Path(out_dir), "work"), dir=tmp.parent) as work):
        if not (Path(tokenizer_dir) / "tokenizer.json").is_file():  # vocab.txt only: the runtime needs tokenizer.json
            from kronedge.artifact import fast_tokenizer

            tokenizer_dir = fast_tokenizer(tokenizer_dir, Path(work) / "tokenizer")
        _export_into(torch_model, Path(tmp), Path(work), Path(tokenizer_dir), opts, task_data, source, info,
                     name_dir)
    return Path(out_dir)


def _task_data(task: str | None, data_dir=None):
    if task is None:
        return None
    try:
        from kronedge.data import load_task
    except ImportError as exc:  # the data part is optional for a bare export
        raise ExportError(f"--task {task} needs kronedge.data (the GLUE loaders): {exc}") from exc
    return load_task(task, split="dev", data_dir=data_dir)


def _check_fits(model, opts: ExportOptions, task_data) -> None:
    config = model.config
    resolve_max_length(opts, config)
    if task_data is not None and task_data.spec.num_labels != config.num_labels:
        raise ExportError(f"task {task_data.spec.name} has {task_data.spec.num_labels} labels but the model's head "
                         f"has {config.num_labels}")


def _export_into(model, out: Path, work: Path, tokenizer_dir: Path, opts: ExportOptions, task_data, source: dict,
                 info: TaskInfo, name_dir) -> None:
    import onnx

    from . import passes
    from .bias_folding import folded_copy
    from .manifest import build_manifest
    from .quantize import preset_for, quantize as run_quantize
    from .validate import check_domains, check_ort_matches, validate

    config = model.config
    num_heads = config.num_attention_heads
    head_size = config.hidden_size // num_heads

    traced, folded = folded_copy(model) if opts.fold_biases else (model, 0)
    raw = torch_to_onnx(traced, work / "raw.onnx")
    del traced  # the copy; validation compares the export with the model as given
    optimized, counts = passes.optimize(onnx.load(raw), opts.profile, num_heads, head_size,
                                        expect_attention=config.num_hidden_layers)
    counts = {"FoldBiases": folded, **counts}
    fp32_path = work / "model.fp32.onnx"
    onnx.save(optimized, fp32_path)
    check_domains(optimized, opts.profile)

    validation = {}
    if opts.validate:
        validation["fp32"] = validate(fp32_path, model, max_length=opts.max_length, precision="fp32",
                                      name="the fp32 export")

    preset = None
    final = fp32_path
    # s8 weights on an x86 host without VNNI: every check below runs them as ORT's precision mode does (exact)
    saturating_host = False
    if opts.quantize != "none":
        preset = preset_for(opts.target, opts.quantize, vnni=opts.vnni, per_channel=opts.per_channel, gelu=opts.gelu)
        saturating_host = clips_s8_weights(preset.to_dict())
        calibration = None
        if preset.is_static:
            calibration = _calibration_feeds(tokenizer_dir, task_data, opts, info.pair_input)
        final = work / "model.int8.onnx"
        to_quantize = fp32_path
        if preset.gelu == "tanh":
            approximated, counts["GeluTanh"] = passes.approximate_gelu(optimized)
            to_quantize = work / "model.approx.onnx"
            onnx.save(approximated, to_quantize)
        run_quantize(to_quantize, final, preset, calibration=calibration)
        check_domains(onnx.load(final), opts.profile)
        if opts.validate:
            sentences = _sentence_batches(tokenizer_dir, task_data or _own_task_data(source), opts.max_length)
            validation["int8"] = validate(final, model, max_length=opts.max_length, precision="int8",
                                          sqnr_floor=opts.sqnr_floor_db, feeds=sentences,
                                          name=f"the {preset.name} int8 export")
            if saturating_host:
                validation["int8"]["host_int8"] = HOST_INT8_NOTE

    os.replace(final, out / "model.onnx")
    _write_tokenizer(tokenizer_dir, out, opts.max_length)
    _write_hf_config(model, out, info)
    texts = _golden_texts(task_data)
    _write_golden(out, texts, opts.max_length)

    if opts.ort_format:
        from .ort_format import convert_to_ort

        ort_info = convert_to_ort(out / "model.onnx", out, opts.target)
        if opts.validate:
            # model.ort is optimised ahead of time: where the host saturates, it is held to model.onnx run alike
            validation["ort_format"] = {**check_ort_matches(out, opts.quantize != "none", saturating_host), **ort_info}
    build_manifest(out, model, opts, preset, counts, validation, source, info, name_dir).write(out / MANIFEST_FILE)


def _write_tokenizer(tokenizer_dir: Path, out: Path, max_length: int) -> None:
    """tokenizer.json with truncation at max_length; vocab/config files too, for transformers' pipeline."""
    import shutil

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.no_padding()
    tok.save(str(out / "tokenizer.json"))
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, out / name)
    cfg_path = out / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        cfg["model_max_length"] = max_length
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def _write_hf_config(model, out: Path, info: TaskInfo) -> None:
    """config.json next to model.onnx, so optimum's ORTModelForSequenceClassification loads the folder; its
    id2label holds the names the manifest records, so a transformers pipeline answers with them too."""
    config = model.config.to_dict()
    config.pop("kronecker_layout", None)  # the ONNX graph already encodes the factors
    config.pop("_attn_implementation_autoset", None)
    config["architectures"] = ["BertForSequenceClassification"]
    if not info.is_regression:
        config["id2label"] = {str(i): name for i, name in enumerate(info.labels)}
        config["label2id"] = {name: i for i, name in enumerate(info.labels)}
    config["problem_type"] = info.problem_type
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")


def _golden_texts(task_data) -> list:
    if task_data is None:
        return list(SAMPLE_SENTENCES)
    return list(task_data.texts[:4])


def encode(tokenizer_path: Path, texts, max_length: int) -> dict[str, np.ndarray]:
    """Tokenize single sentences or (a, b) pairs into the model's int64 inputs, padded to the longest."""
    tok = _padding_tokenizer(str(tokenizer_path), max_length)
    batch = [tuple(t) if isinstance(t, (list, tuple)) else t for t in texts]
    enc = tok.encode_batch(batch)
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


@functools.lru_cache(maxsize=4)
def _padding_tokenizer(path: str, max_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.enable_truncation(max_length)
    pad_id = tok.token_to_id("[PAD]") or 0
    tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    return tok


def _write_golden(out: Path, texts, max_length: int) -> None:
    feeds = encode(out / TOKENIZER_FILE, texts, max_length)
    logits = create_session(out / "model.onnx", threads=1).run(list(OUTPUTS), feeds)[0]
    np.savez(out / GOLDEN_FILE, **feeds, logits=logits.astype(np.float32))


def _own_task_data(source: dict):
    """The validation (else training) rows of the user's own file a kronedge artifact was distilled on, when that file
    is still there: its int8 check then runs on the model's own kind of text, not on generic sample sentences (None
    otherwise, and for any file that no longer reads: the samples then stand in)."""
    if source.get("kind") != "kronedge-artifact":
        return None
    from kronedge.artifact import read_recipe
    from kronedge.data import TaskSource
    from kronedge.errors import KronedgeError

    files = ((read_recipe(source["path"]).get("compress_config") or {}).get("source") or {}).get("files")
    if not files:
        return None
    try:
        data_source = TaskSource.from_dict({"task": None, "data_dir": None, "files": files})
        split = "validation" if files.get("validation") and Path(files["validation"]).is_file() else "train"
        return data_source.load(split) if Path(files.get(split) or "").is_file() else None
    except (KronedgeError, OSError):
        return None


def _sentence_batches(tokenizer_dir: Path, task_data, max_length: int) -> list[dict[str, np.ndarray]]:
    """Real sentences (task dev set, else built-in samples) in batches of 1, 4 and 16, padded."""
    texts = list(task_data.texts[-64:]) if task_data is not None else list(SAMPLE_SENTENCES) * 4
    path = tokenizer_dir / "tokenizer.json"
    batches = [texts[:1], texts[1:5], texts[5:21] if len(texts) >= 21 else texts]
    long_text = " ".join(t if isinstance(t, str) else " ".join(t) for t in texts)  # reaches max_length
    batches.append([long_text])
    return [encode(path, batch, max_length) for batch in batches if batch]


def _calibration_feeds(tokenizer_dir: Path, task_data, opts: ExportOptions, pair: bool) -> list[dict[str, np.ndarray]]:
    """Real task sentences, one per feed, for static calibration: ``opts.calibration``'s lines, else the
    task's train split when shipped, else its dev split."""
    if opts.calibration is not None:
        from kronedge.augment import read_unlabelled

        texts = read_unlabelled(opts.calibration, pair, flag="--calibration")
    else:
        from kronedge.data import load_task

        try:
            texts = load_task(task_data.spec.name, split="train", data_dir=opts.data_dir).texts
        except Exception:  # noqa: BLE001 - not every task ships its train split
            texts = task_data.texts
    rng = np.random.default_rng(0)
    picks = rng.choice(len(texts), size=min(opts.calibration_size, len(texts)), replace=False)
    return [encode(tokenizer_dir / "tokenizer.json", [texts[i]], opts.max_length) for i in picks]
