"""ORT-format conversion for ONNX Runtime Mobile / minimal builds.

Writes ``model.ort`` next to ``model.onnx`` plus ``model.required_operators.config`` (the operator
list a reduced ORT build needs), via ``onnxruntime.tools.convert_onnx_models_to_ort``.
The graph is saved with the "Fixed" optimisation style at the target's platform, at level "extended":
"all" adds only the NCHWc/NHWC layout transformers, which are hardware specific (AVX-512 vs AVX2 block
sizes) and do nothing for a graph without convolutions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

PLATFORMS = {"arm64": "arm", "x86_64": "amd64"}
LEVEL = "extended"


def convert_to_ort(onnx_path: str | Path, out_dir: str | Path, target: str) -> dict:
    """Convert ``onnx_path`` to ``out_dir/model.ort`` (+ required-operators config); return what was written."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="kronedge-ort-") as tmp:
        tmp = Path(tmp)
        src = tmp / "in" / "model.onnx"
        src.parent.mkdir()
        shutil.copy2(onnx_path, src)
        with _quiet(), _env("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", LEVEL):
            convert_onnx_models_to_ort(src.parent, output_dir=tmp / "out", optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform=PLATFORMS[target], allow_conversion_failures=False)
        ort_files = sorted((tmp / "out").glob("*.ort"))
        configs = sorted((tmp / "out").glob("*.config"))
        if len(ort_files) != 1:
            raise RuntimeError(f"ORT-format conversion produced {len(ort_files)} .ort files, expected 1")
        shutil.copy2(ort_files[0], out_dir / "model.ort")
        if configs:
            shutil.copy2(configs[0], out_dir / "model.required_operators.config")
    return {"platform": PLATFORMS[target], "optimization_style": "Fixed", "optimization_level": LEVEL}


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


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
