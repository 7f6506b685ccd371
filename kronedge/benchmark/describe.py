"""What is known about a model before it runs: its file, size, parameters, quantization, vocabulary and
(per batch and sequence length) its GEMM FLOPs, all read from the exported directory and its graph."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

from .flops import GemmFlops, count_gemm_flops, skeleton

MODEL_FILE_CANDIDATES = ("model.onnx", "model_quantized.onnx", "model_optimized.onnx", "model.ort")
# Ops whose presence marks a graph as int8 (dynamic QOperator, static QDQ or fused contrib forms).
QUANT_OPS = frozenset({"MatMulInteger", "DynamicQuantizeLinear", "QAttention", "DynamicQuantizeMatMul",
                       "MatMulIntegerToFloat", "QLinearMatMul", "DequantizeLinear"})


@dataclasses.dataclass
class ModelInfo:
    """One model of a bench: what it is and the FLOPs of its graph (counted once per batch and seq)."""

    name: str
    dir: str
    path: str  # the .onnx/.ort file measured
    file_bytes: int
    params: Optional[int]
    flops: Optional[float]  # at batch 1 and the bench's longest seq, unless flops_note says otherwise
    flops_note: str
    quantization: Any
    vocab: int
    manifest: Optional[dict]
    positions: Optional[int] = None  # the longest input its position table holds (config.json), if known
    graph: Any = dataclasses.field(default=None, repr=False)  # onnx skeleton (weights as typed inputs) or None
    _gemm: dict = dataclasses.field(default_factory=dict, repr=False)

    def gemm_flops(self, batch: int, seq: int) -> Optional[GemmFlops]:
        """GEMM FLOPs at (batch, seq) by precision; None for a graph that cannot be read (.ort)."""
        if self.graph is None:
            return None
        if (batch, seq) not in self._gemm:
            self._gemm[(batch, seq)] = count_gemm_flops(self.graph, batch, seq)
        return self._gemm[(batch, seq)]

    def flops_at(self, seq: int) -> tuple[Optional[float], str]:
        """(FLOPs, note) of one sequence of ``seq`` tokens: the graph's GEMM FLOPs at that length when the graph
        can be read, else the model's one figure (``flops``, at the length its note names)."""
        counted = self.gemm_flops(1, seq)
        if counted is not None and counted.complete:
            return counted.total, f"graph: GEMM FLOPs at batch 1, seq {seq}"
        return self.flops, self.flops_note

    def to_dict(self) -> dict:
        skip = ("manifest", "graph", "_gemm")
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        d["gemm_flops"] = {f"batch={b},seq={s}": g.to_dict() for (b, s), g in self._gemm.items()}
        return d


def resolve_model_file(path: Path) -> Path:
    if path.is_file():
        if path.suffix not in (".onnx", ".ort"):
            raise FileNotFoundError(f"{path} is a file but not a model: give an exported directory or an "
                                    ".onnx/.ort file")
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a model directory nor an .onnx/.ort file")
    for name in MODEL_FILE_CANDIDATES:
        if (path / name).is_file():
            return path / name
    onnx_files = sorted(path.glob("*.onnx"))
    if len(onnx_files) == 1:
        return onnx_files[0]
    raise FileNotFoundError(f"{path} holds no model.onnx/model.ort (found {[p.name for p in onnx_files]})")


def _dir_vocab(model_dir: Path, manifest: Optional[dict]) -> int:
    """Vocabulary size from the manifest, config.json or tokenizer.json; 1000 when none says."""
    if manifest and isinstance(manifest.get("source"), dict) and manifest["source"].get("vocab_size"):
        return int(manifest["source"]["vocab_size"])
    vocab = _config_value(model_dir, "vocab_size")
    if vocab:
        return vocab
    tok = model_dir / "tokenizer.json"
    if tok.is_file():
        try:
            vocab = json.loads(tok.read_text()).get("model", {}).get("vocab", {})
            if vocab:
                return len(vocab)
        except ValueError:
            pass
    return 1000


def _config_value(model_dir: Path, key: str) -> Optional[int]:
    """An integer of the model's config.json, or None where there is none."""
    cfg = model_dir / "config.json"
    if not cfg.is_file():
        return None
    try:
        return int(json.loads(cfg.read_text())[key])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _find_key(obj: Any, words: tuple[str, ...]) -> Optional[tuple[str, Any]]:
    """Depth-first search of a JSON object for the first numeric value whose key contains all `words`."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            low = key.lower()
            if all(w in low for w in words) and isinstance(value, (int, float)) and not isinstance(value, bool):
                return key, value
        for key, value in obj.items():
            hit = _find_key(value, words)
            if hit:
                return f"{key}.{hit[0]}", hit[1]
    return None


def _graph_vocab(model) -> Optional[int]:
    """Rows of the table that input_ids index (Gather of an initializer), if the graph says."""
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    ids = {i.name for i in model.graph.input if "ids" in i.name and "type" not in i.name and "position" not in i.name}
    sizes = [inits[n.input[0]][0] for n in model.graph.node
             if n.op_type == "Gather" and len(n.input) == 2 and n.input[1] in ids and n.input[0] in inits]
    return min(sizes) if sizes else None


def _graph_params(model) -> int:
    """Initializer elements, scalars left out (scales, zero points, shape constants)."""
    total = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        total += n if n > 1 else 0
    return total


def _optimum_quantization(model_dir: Path) -> Any:
    """optimum's ort_config.json quantization block, named; plain "int8" without one."""
    ort_cfg = model_dir / "ort_config.json"
    if not ort_cfg.is_file():
        return "int8"
    try:
        q = json.loads(ort_cfg.read_text()).get("quantization") or {}
    except (OSError, ValueError):
        return "int8"
    name = ("optimum int8 " + ("per-channel" if q.get("per_channel") else "per-tensor")
            + (" reduce_range" if q.get("reduce_range") else ""))
    return {"name": name, **{k: q.get(k) for k in ("is_static", "per_channel", "reduce_range", "weights_dtype",
                                                      "activations_dtype")}}


def describe_model(path: str | os.PathLike, name: Optional[str] = None, seq: int = 128) -> ModelInfo:
    """Read one model directory (or .onnx/.ort file). ``flops`` is the manifest's figure when it has one,
    else the graph's GEMM FLOPs at batch 1 and ``seq``."""
    path = Path(path).resolve()
    model_file = resolve_model_file(path)
    model_dir = model_file.parent
    manifest_file = model_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # the user's file: one line, not a traceback
        from runtime.contract import ModelDirError

        raise ModelDirError(f"{manifest_file} is not valid JSON: {exc}") from None
    graph, params, vocab, int8 = None, None, None, False
    if model_file.suffix == ".onnx":
        import onnx

        from google.protobuf.message import DecodeError

        try:
            model = onnx.load(str(model_file), load_external_data=False)
        except DecodeError as exc:  # a truncated or foreign file: one line, as ORT's own load failure is
            from runtime.contract import ModelDirError

            raise ModelDirError(f"{model_file} is not an ONNX model: {exc}") from None
        params, vocab = _graph_params(model), _graph_vocab(model)
        int8 = any(n.op_type in QUANT_OPS for n in model.graph.node)
        graph = skeleton(model)
        del model
    info = ModelInfo(name=name or (model_dir.name if path.is_dir() else model_file.stem), dir=str(model_dir),
                     path=str(model_file), file_bytes=model_file.stat().st_size, params=params, flops=None,
                     flops_note="unknown", quantization=manifest.get("quantization") if manifest else None,
                     vocab=vocab or _dir_vocab(model_dir, manifest), manifest=manifest,
                     positions=_config_value(model_dir, "max_position_embeddings"), graph=graph)
    hit = _find_key(manifest.get("source", manifest), ("flop",)) if manifest else None
    if hit:
        info.flops, info.flops_note = float(hit[1]), f"manifest {hit[0]}"
    else:
        info.flops, info.flops_note = info.flops_at(seq)  # the graph's count, or still None / "unknown"
    if info.params is None and manifest:
        hit = _find_key(manifest.get("source", manifest), ("param",))
        info.params = int(hit[1]) if hit else None
    if info.quantization is None and int8:
        info.quantization = _optimum_quantization(model_dir)
    return info
