"""`kronedge export`: a kronedge artifact or a teacher spec -> an ONNX model directory for the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app, friendly_errors) -> None:
    """Add this module's commands to ``app``; wrap each with ``friendly_errors``."""

    @app.command("export")
    @friendly_errors
    def export(
        model: str = typer.Argument(..., help="A kronedge artifact directory or any teacher spec "
                                              "(random:bert-base-uncased, builtin:minilm, a saved BERT): "
                                              "dense models are exported as they are, for baselines."),
        out_dir: Path = typer.Option(..., "--out", help="Directory to write (replaced atomically): model.onnx, "
                                                        "model.ort, tokenizer.json, golden.npz, manifest.json."),
        target: str = typer.Option("x86_64", help="arm64 | x86_64: the int8 preset and the ORT-format platform."),
        quantize: str = typer.Option("none", help="none | int8 (dynamic) | int8-static (QDQ calibrated on --task "
                                                  "sentences)."),
        profile: str = typer.Option("portable", help="portable (ai.onnx ops only, ONNX Attention opset 23) | "
                                                     "ort (ONNX Runtime contrib MultiHeadAttention)."),
        task: Optional[str] = typer.Option(None, help="GLUE task (labels, calibration, golden sentences), e.g. sst2."),
        max_length: int = typer.Option(128, help="Longest sequence validated and recorded in the manifest."),
        data_dir: Optional[Path] = typer.Option(None, help="GLUE root for tasks that do not ship with kronedge."),
        no_vnni: bool = typer.Option(False, "--no-vnni", help="x86_64 without AVX-512/AVX VNNI: u8/u8 weights."),
        sqnr_floor: float = typer.Option(20.0, help="int8 only: minimum SQNR (dB) of the logits vs PyTorch on real "
                                                    "sentences, else the export fails."),
    ):
        """Export to ONNX, fuse the attention core, validate against PyTorch, quantize, write the ORT format."""
        from rich.console import Console

        from exporters.export import export_model

        console = Console(stderr=True)
        with console.status(f"exporting {model} ({target}, {quantize}, {profile})..."):
            path = export_model(model, out_dir, target=target, quantize=quantize, profile=profile, task=task,
                                max_length=max_length,
                                data_dir=str(data_dir) if data_dir else None, vnni=not no_vnni,
                                sqnr_floor_db=sqnr_floor)
        _summary(path)


def _summary(path: Path) -> None:
    import json

    from rich.console import Console

    manifest = json.loads((path / "manifest.json").read_text())
    files = manifest["files"]
    val = manifest["validation"]
    parts = [f"model.onnx {files['model.onnx']['bytes'] / 1e6:.2f} MB", f"opset {manifest['opset']}"]
    if "fp32" in val:
        parts.append(f"fp32 max|diff| {val['fp32']['max_abs_diff']:.1e}")
    if "int8" in val:
        parts.append(f"int8 SQNR >= {val['int8']['min_sqnr_db']} dB")
    Console().print(f"wrote {path}: " + ", ".join(parts))
