"""CLI commands of the runtime part: `kronedge serve`. `register` adds them to the `kronedge` app.

The command only parses; `runtime.serve.serve` does the work. Its options are not written here: they
are built from the fields of `runtime.serve.config.ServeConfig` (help and defaults included), the
same source as the parser of ``python -m runtime.serve``, which offers them on devices without the
training extras (typer is one of them).
"""

from __future__ import annotations

import inspect
from typing import Optional

import typer


def _parameters() -> list[inspect.Parameter]:
    """One Typer parameter per exposed `ServeConfig` field."""
    from runtime.serve.config import cli_options

    params = []
    for opt in cli_options():
        if opt.positional:
            default = typer.Argument(..., help=opt.help)
        elif opt.type is bool:
            name = opt.flag[2:]
            default = typer.Option(opt.default, f"--{name}/--no-{name}", help=opt.help)
        else:
            default = typer.Option(opt.default, opt.flag, help=opt.help + (f" (choices: {', '.join(opt.choices)})" if opt.choices else ""),
                                   show_default=opt.default is not None)
        annotation = Optional[opt.type] if opt.optional else opt.type
        params.append(inspect.Parameter(opt.dest, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    return params


def register(app, friendly_errors) -> None:
    """Add this module's commands to ``app``; wrap each with ``friendly_errors``."""

    def serve(**options):
        """Serve an exported model over HTTP (POST /v1/classify, /v1/model, /healthz, /readyz, /metrics)."""
        from runtime.serve.server import serve as run_server
        from runtime.serve.config import from_namespace

        run_server(from_namespace(options))

    params = _parameters()
    serve.__signature__ = inspect.Signature(params)
    serve.__annotations__ = {p.name: p.annotation for p in params}
    app.command(name="serve")(friendly_errors(serve))
