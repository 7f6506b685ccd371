"""ORT-format conversion for ONNX Runtime Mobile / minimal builds.

Writes ``model.ort`` next to ``model.onnx`` plus ``model.required_operators.config`` (the operator
list a reduced ORT build needs), via ``onnxruntime.tools.convert_onnx_models_to_ort``.
The graph is saved with the "Fixed" optimisation style at the target's platform.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

PLATFORMS = {"arm64": "arm", "x86_64": "amd64"}


def convert_to_ort(onnx_path: str | Path, out_dir: str | Path, target: str) -> dict:
    """Convert ``onnx_path`` to ``out_dir/model.ort`` (+ required-operators config); return what was written."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="kronedge-ort-") as tmp:
        tmp = Path(tmp)
        src = tmp / "in" / "model.onnx"
        src.parent.mkdir()
        shutil.copy2(onnx_path, src)
        convert_onnx_models_to_ort(src.parent, output_dir=tmp / "out", optimization_styles=[OptimizationStyle.Fixed],
                                   target_platform=PLATFORMS[target], allow_conversion_failures=False)
        ort_files = sorted((tmp / "out").glob("*.ort"))
        configs = sorted((tmp / "out").glob("*.config"))
        if len(ort_files) != 1:
            raise RuntimeError(f"ORT-format conversion produced {len(ort_files)} .ort files, expected 1")
        shutil.copy2(ort_files[0], out_dir / "model.ort")
        if configs:
            shutil.copy2(configs[0], out_dir / "model.required_operators.config")
    return {"platform": PLATFORMS[target], "optimization_style": "Fixed"}
