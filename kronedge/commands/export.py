"""`kronedge export`: a kronedge artifact or a teacher spec -> an ONNX model directory for the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError

# exporters.config.BertOnnxConfig.SQNR_FLOOR_INT8_DB, written here so that `kronedge --help` does not import numpy
# (tests/test_export_cli.py checks that the two agree).
SQNR_FLOOR_HELP = 20.0


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
                                                  "sentences or --calibration FILE)."),
        calibration: Optional[Path] = typer.Option(None, help="int8-static on your own task: a text file of its "
                                                              "inputs, one per line (pairs: FIRST<TAB>SECOND)."),
        profile: str = typer.Option("portable", help="portable (ai.onnx ops only, ONNX Attention opset 23) | "
                                                     "ort (ONNX Runtime contrib MultiHeadAttention)."),
        task: Optional[str] = typer.Option(None, help="GLUE task (labels, calibration, golden sentences), e.g. sst2."),
        max_length: Optional[int] = typer.Option(None, help="Longest sequence validated and recorded in the manifest "
                                                          "(default: 128, or the model's positions where fewer)."),
        data_dir: Optional[Path] = typer.Option(None, help="GLUE root for tasks that do not ship with kronedge."),
        no_vnni: bool = typer.Option(False, "--no-vnni", help="x86_64 int8 with u8 weights, for ONNX Runtime "
                                                              "sessions other than kronedge's on x86 CPUs without VNNI "
                                                              "(kronedge's runtime runs s8 weights exactly there)."),
        sqnr_floor: Optional[float] = typer.Option(None, help="int8 only: minimum SQNR (dB) of the logits vs PyTorch "
                                                              "on real sentences, each batch's error against the "
                                                              "logits' RMS over all of them; else the export fails (default: "
                                                              f"{SQNR_FLOOR_HELP:g})."),
        gelu: Optional[str] = typer.Option(None, help="int8 only: exact | tanh GELU (default: the target's preset, "
                                                      "tanh: as accurate after int8, and cheaper)."),
        fold_biases: bool = typer.Option(True, help="Fold the key, value and FFN-down biases into other constants "
                                                    "(exact; three fewer adds per layer)."),
        name: Optional[str] = typer.Option(None, "--name", metavar="NAME[@VERSION]",
                                           help="The model's name and version, answered by /v1/model and every "
                                                "/v1/classify (e.g. tickets-kb21@1.2.0). Default: the artifact's "
                                                "directory name @ a short hash of model.onnx."),
    ):
        """Export to ONNX, fuse the attention core, validate against PyTorch, quantize, write the ORT format."""
        from rich.console import Console

        from exporters.config import split_name
        from exporters.export import export_model

        if sqnr_floor is not None and quantize == "none":
            raise UsageError("--sqnr-floor judges an int8 export; an fp32 export is held to PyTorch by max |diff| "
                             "instead: add --quantize int8 or drop --sqnr-floor")
        model_name, model_version = split_name(name)
        console = Console(stderr=True)
        with console.status(f"exporting {model} ({target}, {quantize}, {profile})..."):
            path = export_model(model, out_dir, target=target, quantize=quantize, profile=profile, task=task,
                                max_length=max_length,
                                data_dir=str(data_dir) if data_dir else None, vnni=not no_vnni,
                                **({"sqnr_floor_db": sqnr_floor} if sqnr_floor is not None else {}),
                                name=model_name, model_version=model_version,
                                gelu=gelu, fold_biases=fold_biases,
                                calibration=str(calibration) if calibration else None)
        typer.echo(summary_text(path))


def summary_text(path: Path) -> str:
    """What `kronedge export` prints: plain lines (no wrapping, no Python reprs), so a pipe or a log reads it."""
    from runtime.contract import MANIFEST_FILE, Manifest, model_id

    from ..data.spec import describe_labels

    manifest = Manifest.load(path / MANIFEST_FILE)
    val = manifest.validation
    parts = [f"model.onnx {manifest.files['model.onnx']['bytes'] / 1e6:.2f} MB", f"opset {manifest.opset}"]
    if "fp32" in val:
        parts.append(f"fp32 max|diff| {val['fp32']['max_abs_diff']:.1e}")
    if "int8" in val:
        parts.append(f"int8 SQNR >= {val['int8']['min_sqnr_db']} dB"
                     + (" (in ORT's x64 precision mode: this CPU has no VNNI)" if val["int8"].get("host_int8") else ""))
    if manifest.is_regression:
        answers = "a value (regression, no labels)"
    else:
        answers = "labels " + describe_labels(manifest.labels)
        if manifest.source.get("labels_from") == "generic":
            answers += " (nothing names them: export with --task, or a model whose config names its labels)"
    task = manifest.task or "not recorded"
    if manifest.data_file:
        task += f" (from {manifest.data_file})"
    name, version = manifest.identity(path.name)
    return "\n".join([f"wrote {path}: " + ", ".join(parts),
                      f"  model {model_id(name, version)}", f"  task  {task}",
                      f"  input {'text pairs' if manifest.pair_input else 'single texts'}, {answers}"])
