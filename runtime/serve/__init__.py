"""HTTP backend for a mobile app: FastAPI + uvicorn around a `Predictor`. Torch-free.

    python -m runtime.serve runs/kb21-int8 --host 127.0.0.1 --port 8080     # or: kronedge serve DIR

Endpoints: POST /v1/classify, GET /v1/model, /healthz, /readyz, /metrics (Prometheus), /docs and
/openapi.json. Errors are JSON: ``{"error": {"code": ..., "message": ..., "status": ...}}``.

One module per job:
  - `config`: `ServeConfig`, every setting with its default and help, and both CLIs built from it.
  - `auth`: where the bearer token comes from, the loopback rule, the constant-time check.
  - `batcher`: the deadline-aware queue and the worker threads that batch requests across clients.
  - `service_time`: the learnt cost of a batch that admission control predicts waits with.
  - `schemas`: body pre-checks (size, content type, UTF-8, JSON) and the pydantic request/response models.
  - `metrics`: Prometheus counters and histogram via `prometheus_client`.
  - `app`: `create_app` (routes, errors, access log).
  - `server`: `serve`, the process: the port bound before the start event, then uvicorn.
  - `__main__`: ``python -m runtime.serve``.

The heavy parts (FastAPI, pydantic, prometheus_client, the predictor) load on first use, so the
`kronedge` CLI can read `ServeConfig` to build ``kronedge serve --help`` without them.
"""

from __future__ import annotations

import importlib

from .config import ServeConfig, ServeConfigError

_LAZY = {
    "create_app": "app", "load_predictor": "app", "serve": "server",
    "resolve_token": "auth", "token_matches": "auth", "is_loopback": "auth",
    "Batcher": "batcher", "Overloaded": "batcher",
    "ApiError": "schemas", "ClassifyRequest": "schemas",
    "Metrics": "metrics",
    "main": "__main__", "build_parser": "__main__",
}

__all__ = ["ServeConfig", "ServeConfigError", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
