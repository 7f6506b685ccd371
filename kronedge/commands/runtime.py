"""CLI commands of the runtime part: `kronedge serve`. `register` adds them to the `kronedge` app.

The command only parses; `runtime.serve.serve` does the work, and `python -m runtime.serve` offers the
same flags on devices without the training extras (typer is one of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app, friendly_errors) -> None:
    """Add this module's commands to ``app``; wrap each with ``friendly_errors``."""

    @app.command()
    @friendly_errors
    def serve(
        model_dir: Path = typer.Argument(..., help="Exported model directory (written by `kronedge export`)."),
        host: str = typer.Option("127.0.0.1", help="Bind address. A non-loopback host needs a token or --allow-no-auth."),
        port: int = typer.Option(8080, help="TCP port."),
        threads: int = typer.Option(1, help="ONNX Runtime intra-op threads per worker (1 is fastest for Kronecker graphs)."),
        model_file: Optional[str] = typer.Option(None, help="model.onnx or model.ort (default: model.onnx if present)."),
        max_length: Optional[int] = typer.Option(None, help="Truncate to this many tokens (<= the export's max_length)."),
        max_body_bytes: int = typer.Option(256 * 1024, help="Largest request body."),
        max_texts: int = typer.Option(32, help="Texts (or pairs) per request."),
        max_chars: int = typer.Option(2000, help="Characters per text."),
        queue_size: int = typer.Option(64, help="Requests waiting for the model before new ones get 503."),
        max_batch_texts: int = typer.Option(64, help="Texts per model pass, gathered across waiting requests."),
        workers: int = typer.Option(1, help="Model runs in parallel (threads x workers should not exceed the cores)."),
        timeout: float = typer.Option(10.0, help="Seconds per request before 504."),
        token_file: Optional[Path] = typer.Option(None, help="File with the bearer token (else $KRONEDGE_API_TOKEN)."),
        allow_no_auth: bool = typer.Option(False, help="Serve a non-loopback host without a token."),
        log_text: bool = typer.Option(False, help="Put request texts in the access log (off: they may be personal)."),
        self_check: bool = typer.Option(True, help="Check golden.npz logits at start-up."),
    ):
        """Serve an exported model over HTTP (POST /v1/classify, /v1/model, /healthz, /readyz, /metrics)."""
        from runtime.serve import ServeConfig, serve as run_server

        run_server(ServeConfig(
            model_dir=str(model_dir), host=host, port=port, threads=threads, model_file=model_file,
            max_length=max_length, max_body_bytes=max_body_bytes, max_texts=max_texts, max_chars=max_chars,
            queue_size=queue_size, max_batch_texts=max_batch_texts, workers=workers, timeout_s=timeout,
            token_file=str(token_file) if token_file else None, allow_no_auth=allow_no_auth, log_text=log_text,
            self_check=self_check))
