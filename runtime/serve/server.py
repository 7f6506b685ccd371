"""The server process: bind the port, log the start, run uvicorn on the app until interrupted."""

from __future__ import annotations

import json
import logging
import math
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict

from .app import access_log, create_app
from .auth import resolve_token
from .config import ServeConfig


@contextmanager
def access_log_to_stdout():
    """The access log as one JSON line per request on stdout while the server runs; the logger is left as
    it was afterwards (a failed start inside a test or a notebook must not capture its logging)."""
    if access_log.handlers:  # someone configured it already: leave theirs
        yield
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))  # the message is already one JSON object
    level, propagate = access_log.level, access_log.propagate
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    try:
        yield
    finally:
        access_log.removeHandler(handler)
        access_log.setLevel(level)
        access_log.propagate = propagate


def uvicorn_settings(config: ServeConfig) -> dict:
    """uvicorn options for ``config`` (besides host and port); tests that run a real server use them too."""
    # uvicorn's own access log is off: ours is the one JSON line per request. limit_concurrency is a
    # last backstop for connections (uvicorn answers 503 past it); the batcher is the real bound.
    # log_level warning: our "start" event replaces uvicorn's plain-text startup lines.
    return dict(access_log=False, server_header=False, log_level="warning",
                limit_concurrency=max(64, 2 * (config.queue_size + 1)), timeout_keep_alive=5,
                timeout_graceful_shutdown=int(math.ceil(config.timeout_s)))


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the start event: a port in use is one error instead of a start that
    never happens, and ``port`` 0 logs the port the system chose."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a restart reuses the port
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def serve(config: ServeConfig) -> None:
    """Check auth rules, load and self-check the model, bind the port, then run uvicorn until interrupted."""
    import uvicorn

    token = resolve_token(config)  # before loading the model: refuse fast
    app = create_app(config, token=token)
    sock = listening_socket(config.host, config.port)
    with access_log_to_stdout():
        access_log.info(json.dumps({"ts": round(time.time(), 3), "event": "start", "host": config.host,
                                    "port": sock.getsockname()[1], "auth": token is not None,
                                    "model_dir": str(config.model_dir),
                                    "runtime": app.state.predictor.summary()["runtime"],
                                    "config": {k: v for k, v in asdict(config).items() if k != "token_env"}}))
        uvicorn.Server(uvicorn.Config(app, **uvicorn_settings(config))).run(sockets=[sock])
