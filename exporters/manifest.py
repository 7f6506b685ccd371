"""manifest.json of an exported directory: the exporter's side of :mod:`runtime.contract`.

The format (file names, inputs, outputs, the :class:`~runtime.contract.Manifest` fields) is defined once in
``runtime/contract.py``; this module only gathers what the exporter knows into a Manifest.
"""

from __future__ import annotations

from pathlib import Path

from runtime.contract import FORMAT, INPUTS, OUTPUTS, Manifest, file_table, sha256_file  # noqa: F401 (re-exported)
from runtime.hostinfo import EXPORT_DISTS, versions as _host_versions

sha256 = sha256_file  # the name the export tests and benches have used


def versions() -> dict:
    """Versions recorded in an export's manifest (the exporting side: torch, transformers, onnx, ORT, ...)."""
    return _host_versions(EXPORT_DISTS)


def onnx_opsets(path: Path) -> tuple[int, dict[str, int]]:
    """(ai.onnx opset, {domain: version}) of an ONNX file, without loading external data."""
    import onnx

    graph = onnx.load(path, load_external_data=False)
    opsets = {o.domain or "ai.onnx": o.version for o in graph.opset_import}
    return opsets["ai.onnx"], opsets


def build_manifest(out: Path, model, opts, preset, pass_counts: dict, validation: dict, source: dict,
                   info, name_dir) -> Manifest:
    """The manifest of the files in ``out``; ``info`` is :func:`exporters.identity.resolve_task`'s answer,
    ``name_dir`` the directory the model is named after when ``opts.name`` is None."""
    import onnx

    from .identity import model_identity

    graph = onnx.load(out / "model.onnx", load_external_data=False)
    opset, opsets = onnx_opsets(out / "model.onnx")
    config = model.config
    files = file_table(out)
    name, version = model_identity(opts.name, opts.model_version, name_dir, files)
    ops: dict[str, int] = {}
    for node in graph.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        ops[key] = ops.get(key, 0) + 1
    return Manifest(
        name=name, model_version=version, task=info.task, data_file=info.data_file,
        labels=list(info.labels), problem_type=info.problem_type, pair_input=info.pair_input,
        max_length=opts.max_length,
        inputs=list(INPUTS), outputs=list(OUTPUTS), opset=opset, target=opts.target, profile=opts.profile,
        quantization=preset.to_dict() if preset is not None else None,
        files=files, validation=validation,
        graph={"passes": pass_counts, "op_counts": dict(sorted(ops.items())), "opsets": opsets},
        model={"hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
               "heads": config.num_attention_heads, "vocab_size": config.vocab_size,
               "kronecker": bool(getattr(config, "kronecker_layout", None))},
        # The opset-23 Attention op runs on ONNX Runtime's CPU provider from 1.23 on; model.ort is
        # written by (and loads in) the exporting ORT's format version or newer.
        requires={"onnxruntime": ">=1.23" if opset >= 23 else ">=1.17"},
        versions=versions(),
        source=source | {"labels_from": info.origin},
    )
