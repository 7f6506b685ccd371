"""The FastAPI app around a `Predictor` (`create_app`) and the uvicorn process that serves it (`serve`)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .auth import OPEN_PATHS, token_matches
from .batcher import Batcher, Overloaded
from .config import ServeConfig
from .metrics import CONTENT_TYPE, Metrics
from .schemas import (ERROR_RESPONSES, ApiError, ClassifyRequest, ClassifyResponse, ErrorBody, error_response,
                      parse_classify, present, read_json_body)

if TYPE_CHECKING:
    from runtime.predictor import Predictor

ROUTES = ("/v1/classify", "/v1/model", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
MAX_RETRY_AFTER_S = 60

access_log = logging.getLogger("kronedge.access")


def overloaded_error(exc: Overloaded, config: ServeConfig, metrics: Metrics) -> ApiError:
    """503 with a Retry-After of the predicted time until a request would be admitted (at least
    ``retry_after_s``, at most a minute)."""
    metrics.rejected.labels(exc.reason).inc()
    retry = min(MAX_RETRY_AFTER_S, max(config.retry_after_s, math.ceil(exc.retry_after_s)))
    return ApiError(503, "overloaded", f"server busy ({exc}); retry later", headers={"Retry-After": str(retry)},
                    details={"reason": exc.reason})


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if 0 < len(given) <= 64 and given.isascii() and given.isprintable() else uuid.uuid4().hex


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        request.state.error_code = exc.code
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        request.state.error_code = code
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        request.state.error_code = "invalid_request"
        return error_response(422, "invalid_request", "invalid request", details=json.loads(json.dumps(exc.errors(), default=str)))


def _install_access_middleware(app: FastAPI, config: ServeConfig, metrics: Metrics, token: Optional[str]) -> None:
    """Auth, request ids, metrics and one JSON access-log line per request; never a bare traceback."""

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        state = request.state
        state.started = time.monotonic()
        state.request_id = _request_id(request)
        path = request.url.path
        if token is not None and path not in OPEN_PATHS and not token_matches(request.headers.get("authorization"), token):
            state.error_code = "unauthorized"
            response = error_response(401, "unauthorized", "missing or wrong bearer token",
                                      headers={"WWW-Authenticate": 'Bearer realm="kronedge"'})
        else:
            try:
                response = await call_next(request)
            except Exception as exc:  # the log line names the type; the client gets no traceback
                state.error_code, state.exception = "internal", type(exc).__name__
                response = error_response(500, "internal", "internal error")
        seconds = time.perf_counter() - start
        response.headers["X-Request-ID"] = state.request_id
        code = getattr(state, "error_code", None)
        n_inputs = getattr(state, "n_inputs", 0)
        route = path if path in ROUTES else "other"
        metrics.observe(route, request.method, response.status_code, seconds, n_inputs if response.status_code < 400 else 0, code)
        record = {"ts": round(time.time(), 3), "request_id": state.request_id, "method": request.method, "path": route,
                  "status": response.status_code, "duration_ms": round(seconds * 1e3, 2), "inputs": n_inputs}
        if code:
            record["error"] = code
        if getattr(state, "exception", None):
            record["exception"] = state.exception
        if config.log_text and getattr(state, "texts", None) is not None:
            record["texts"] = state.texts
        access_log.info(json.dumps(record, ensure_ascii=False))
        return response


class ClassifyEndpoint:
    """POST /v1/classify: read the body, validate it, admit it to the batcher, wait for its batch."""

    def __init__(self, config: ServeConfig, batcher: Batcher, metrics: Metrics, summary: dict):
        self.config, self.batcher, self.metrics, self.summary = config, batcher, metrics, summary

    async def classify(self, request: Request):
        """Classify up to max_texts texts (or pairs); each result has the label, its score and all scores."""
        start = time.perf_counter()
        deadline = request.state.started + self.config.timeout_s
        body = await self._read(request, deadline)
        parsed = parse_classify(body, self.summary["pair_input"], self.config.max_texts, self.config.max_chars)
        items = parsed.inputs()
        request.state.n_inputs = len(items)
        if self.config.log_text:
            request.state.texts = items
        results = await self._run(items, deadline)
        inference_ms = results[0]["latency_ms"] if results else 0.0
        return {"results": [present(r, parsed.top_k) for r in results],
                "model": self.summary.get("model"), "task": self.summary.get("task"), "latency_ms": round((time.perf_counter() - start) * 1e3, 3),
                "inference_ms": round(inference_ms, 3), "request_id": request.state.request_id}

    async def _read(self, request: Request, deadline: float):
        c = self.config
        try:  # the deadline covers the upload too: a client that trickles its body cannot hold a connection
            return await asyncio.wait_for(read_json_body(request, c.max_body_bytes, c.drain_bytes, c.timeout_s),
                                          max(deadline - time.monotonic(), 1e-3))
        except asyncio.TimeoutError:
            raise ApiError(408, "body_timeout", f"the body did not arrive within {c.timeout_s} s",
                           headers={"Connection": "close"}) from None

    async def _run(self, items: list, deadline: float) -> list:
        try:
            job = self.batcher.submit(items, deadline)
            return await asyncio.wait_for(job.future, max(deadline - time.monotonic(), 0.0))
        except Overloaded as exc:
            raise overloaded_error(exc, self.config, self.metrics) from None
        except asyncio.TimeoutError:
            if self.batcher.cancel(job):  # still queued: it never runs, and the client may retry
                raise overloaded_error(Overloaded("expired", "the deadline passed while the request waited",
                                                  self.batcher.predicted_wait(0)), self.config, self.metrics) from None
            raise ApiError(504, "timeout", f"not answered within {self.config.timeout_s} s") from None


def create_app(config: ServeConfig, predictor: Optional["Predictor"] = None, token: Optional[str] = None) -> FastAPI:
    """Build the app. ``predictor`` may be passed in (tests wrap it); ``token`` None means no auth here
    (use `resolve_token` to apply the loopback rule first, as `serve` does).

    Example:
        >>> app = create_app(ServeConfig("runs/kb21-int8", workers=2))   # doctest: +SKIP
    """
    timed = None
    if predictor is None:
        predictor = load_predictor(config)
        n = min(config.max_batch_texts, 8)
        timed = (time_model(predictor, n), n)
    summary = predictor.summary()
    batcher = Batcher(predictor.predict, config.queue_size, config.max_batch_texts, config.workers)
    if timed is not None:
        batcher.service.observe(*timed)  # admission control can predict waits from the first request on
    metrics = Metrics(
        gauges={"kronedge_queue_depth": ("Requests waiting for the model.", lambda: batcher.depth),
                "kronedge_workers_busy": ("Workers running the model now.", lambda: batcher.busy),
                "kronedge_workers": ("Model workers.", lambda: config.workers),
                "kronedge_seconds_per_text": ("Measured model seconds per text (admission control's estimate).",
                                              lambda: batcher.service.seconds_per_text or 0.0),
                "kronedge_predicted_full_batch_seconds": ("Predicted model time of a batch of max_batch_texts texts.",
                                                          lambda: batcher.service.batch(config.max_batch_texts)),
                "kronedge_admission_margin": ("Factor on predicted waits before they meet a deadline.",
                                              lambda: batcher.service.margin)},
        info={"model": summary.get("model") or "", "task": summary.get("task") or "", "model_file": summary.get("model_file") or "",
              "sha256": (summary.get("sha256") or "")[:16], "onnxruntime": summary["runtime"]["onnxruntime"]})

    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    app = FastAPI(title="kronedge", version="1", lifespan=lifespan,
                  description="Text classification with a KroneckerBERT model exported by kronedge.")
    app.state.batcher, app.state.metrics, app.state.predictor = batcher, metrics, predictor
    _install_error_handlers(app)
    _install_access_middleware(app, config, metrics, token)

    classify = ClassifyEndpoint(config, batcher, metrics, summary)
    # exclude_unset: "top" appears only when the request asked for top_k; a regression's null label stays.
    app.post("/v1/classify", response_model=ClassifyResponse, response_model_exclude_unset=True, responses=ERROR_RESPONSES,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": ClassifyRequest.model_json_schema()}}}})(classify.classify)
    _add_probe_routes(app, config, batcher, metrics, summary)
    return app


def _add_probe_routes(app: FastAPI, config: ServeConfig, batcher: Batcher, metrics: Metrics, summary: dict) -> None:
    """GET /v1/model, /healthz, /readyz and /metrics."""

    @app.get("/v1/model")
    async def model_info():
        """What is loaded: model (NAME@VERSION), task, labels, input kind, max length, quantization, versions, limits."""
        return {**summary, "limits": {"max_texts": config.max_texts, "max_chars": config.max_chars,
                                      "max_body_bytes": config.max_body_bytes, "timeout_s": config.timeout_s,
                                      "queue_size": config.queue_size, "workers": config.workers,
                                      "max_batch_texts": config.max_batch_texts}}

    @app.get("/healthz")
    async def healthz():
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorBody}})
    async def readyz():
        """Readiness: the model is loaded and its workers run."""
        if not batcher.alive:
            return error_response(503, "not_ready", "model workers are not running", headers={"Retry-After": "1"})
        return {"status": "ready", "queue_depth": batcher.depth}

    @app.get("/metrics")
    async def metrics_endpoint():
        """Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def load_predictor(config: ServeConfig) -> "Predictor":
    """The model of ``config``, checked against its golden logits (when exported with them) and warmed up."""
    from runtime.predictor import Predictor  # here, not at the top: `import runtime.serve.app` stays light
    from runtime.threads import candidate_threads

    predictor = Predictor(config.model_dir, threads=config.threads, model_file=config.model_file,
                          max_length=config.max_length, thread_candidates=candidate_threads(config.workers))
    if config.self_check and (Path(config.model_dir) / "golden.npz").is_file():
        predictor.check_golden()
    predictor.warmup()
    return predictor


WARMUP_TEXT = "a short review of a film, about as long as a typical request, with a few more words in it."


def time_model(predictor: "Predictor", texts: int) -> float:
    """Measured seconds of one warm batch of ``texts`` inputs."""
    summary = predictor.summary()
    sample = (WARMUP_TEXT, WARMUP_TEXT) if summary["pair_input"] else WARMUP_TEXT
    start = time.perf_counter()
    predictor.predict([sample] * texts)
    return time.perf_counter() - start
