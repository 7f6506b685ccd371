"""ORT-format conversion for ONNX Runtime Mobile / minimal builds.

Writes ``model.ort`` next to ``model.onnx`` plus ``model.required_operators.config`` (the operator
list a reduced ORT build needs), the way ``onnxruntime.tools.convert_onnx_models_to_ort`` does with its
"Fixed" optimisation style: one session at level "extended" that saves its optimised graph in ORT format
(``session.qdqisint8allowed`` on for arm), then ``create_config_from_models``. Done here rather than
through the converter so the runtime's ``DEFAULT_DISABLED_OPTIMIZERS`` (fusions measured slower, which
a pre-optimised .ort would otherwise bake in) are skipped too. "all" adds only the NCHWc/NHWC layout
transformers, which are hardware specific (AVX-512 vs AVX2 block sizes) and do nothing for a graph
without convolutions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

PLATFORMS = {"arm64": "arm", "x86_64": "amd64"}
LEVEL = "extended"


def convert_to_ort(onnx_path: str | Path, out_dir: str | Path, target: str) -> dict:
    """Convert ``onnx_path`` to ``out_dir/model.ort`` (+ required-operators config); return what was written."""
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    from runtime.predictor import DEFAULT_DISABLED_OPTIMIZERS

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="kronedge-ort-") as tmp:
        ort_file = Path(tmp) / "model.ort"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(ort_file)
        so.add_session_config_entry("session.save_model_format", "ORT")
        so.add_session_config_entry("session.qdqisint8allowed", "1" if PLATFORMS[target] == "arm" else "0")
        so.log_severity_level = 3
        ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"],
                             disabled_optimizers=list(DEFAULT_DISABLED_OPTIMIZERS))
        if not ort_file.is_file():
            raise RuntimeError(f"ORT-format conversion of {onnx_path} wrote no model.ort")
        config = Path(tmp) / "model.required_operators.config"
        with _quiet():
            create_config_from_models([ort_file], config, enable_type_reduction=False)
        shutil.copy2(ort_file, out_dir / "model.ort")
        if config.is_file():
            shutil.copy2(config, out_dir / "model.required_operators.config")
    return {"platform": PLATFORMS[target], "optimization_style": "Fixed", "optimization_level": LEVEL,
            "disabled_optimizers": list(DEFAULT_DISABLED_OPTIMIZERS)}


@contextlib.contextmanager
def _quiet():
    """The converter prints progress and logs INFO lines; keep `kronedge export` output to its summary."""
    logger = logging.getLogger("ort_format_model.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
