"""HTTP backend for a mobile app: FastAPI + uvicorn around a `Predictor`. Torch-free.

    python -m runtime.serve runs/kb21-int8 --host 127.0.0.1 --port 8080     # or: kronedge serve DIR

Endpoints: POST /v1/classify, GET /v1/model, /healthz, /readyz, /metrics (Prometheus text), /docs and
/openapi.json. Errors are JSON: ``{"error": {"code": ..., "message": ..., "status": ...}}``.

Why the pieces look the way they do:
  - One worker thread owns the model and takes every waiting request it can in one go (up to
    ``max_batch_texts`` texts), so concurrent clients share ORT runs and length buckets. The queue in
    front of it is bounded: a full queue answers 503 + Retry-After at once instead of building a
    backlog that would time out anyway.
  - The request body is read by hand (size cap while streaming, strict UTF-8, strict JSON) so every
    malformed request gets a precise 4xx rather than a framework default or a 500.
  - Auth is a static bearer token compared with hmac.compare_digest; the server refuses to listen on a
    non-loopback address without one unless told ``--allow-no-auth``.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import json
import logging
import math
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .predictor import Predictor

TOKEN_ENV = "KRONEDGE_API_TOKEN"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # load balancers and HEALTHCHECK probe these without a token
ROUTES = ("/v1/classify", "/v1/model", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

access_log = logging.getLogger("kronedge.access")


@dataclass
class ServeConfig:
    """Server settings; ``kronedge serve`` and ``python -m runtime.serve`` expose each as a flag.

    Limits are per request. ``queue_size`` counts requests waiting for the model (the one running
    is not counted); the next one gets 503.
    """

    model_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    # ORT intra-op threads. 1, not ORT's one-per-core: a Kronecker graph (many small GEMMs and
    # Transposes) ran 2.6x slower with 2 threads than with 1 on 2 cores (benchmarks/results/load.md);
    # use --workers to put more cores to work. None: ORT's default.
    threads: Optional[int] = 1
    model_file: Optional[str] = None  # model.onnx | model.ort | None (auto)
    max_length: Optional[int] = None  # truncate below the export's max_length (cheaper on small CPUs)
    max_body_bytes: int = 256 * 1024
    max_texts: int = 32
    max_chars: int = 2000
    queue_size: int = 64
    max_batch_texts: int = 64  # texts one worker pass takes from the queue, across requests
    workers: int = 1  # model runs in parallel; threads x workers should not exceed the cores
    timeout_s: float = 10.0
    retry_after_s: int = 1
    token_env: str = TOKEN_ENV
    token_file: Optional[str] = None
    allow_no_auth: bool = False
    log_text: bool = False  # put request texts in the access log (off: they may be personal data)
    self_check: bool = True  # compare golden.npz logits at start-up when the file is there

    def __post_init__(self):
        for name in ("max_body_bytes", "max_texts", "max_chars", "queue_size", "max_batch_texts", "workers", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")


# ---- auth ---------------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def resolve_token(config: ServeConfig) -> Optional[str]:
    """The bearer token from --token-file (or $KRONEDGE_API_TOKEN_FILE, the Docker-secrets convention),
    else from $KRONEDGE_API_TOKEN; None if none is set.

    Also enforces the rule that a server reachable from other machines has a token.
    """
    token = None
    token_file = config.token_file or os.environ.get(f"{config.token_env}_FILE")
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"token file {token_file} is empty")
    elif os.environ.get(config.token_env):
        token = os.environ[config.token_env].strip()
    if token is not None and len(token) < 16:
        raise ValueError("the API token is shorter than 16 characters; use e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    if token is None and not is_loopback(config.host) and not config.allow_no_auth:
        raise ValueError(f"refusing to listen on {config.host} without auth: set {config.token_env} or --token-file, "
                         "or pass --allow-no-auth if something in front of this server authenticates")
    return token


def token_matches(header: Optional[str], token: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time, so response timing does not leak how much of a guess was right.
    return hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))


# ---- errors -------------------------------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Optional[dict] = None, details: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.details = status, code, message, headers, details


def error_response(status: int, code: str, message: str, headers: Optional[dict] = None, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message, "status": status}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


# ---- the queue in front of the model ------------------------------------------------------------------
class Overloaded(Exception):
    pass


class _Job:
    __slots__ = ("inputs", "future", "loop", "cancelled")

    def __init__(self, inputs: list, loop: asyncio.AbstractEventLoop):
        self.inputs, self.loop, self.cancelled = inputs, loop, False
        self.future: asyncio.Future = loop.create_future()


def _deliver(future: asyncio.Future, result: Any = None, error: Optional[BaseException] = None) -> None:
    if future.done():  # the request timed out and went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """A bounded queue and worker threads that run waiting requests together through the model.

    More than one worker pays off when one ORT run cannot use every core well: a Kronecker graph is
    many small GEMMs that scale badly across threads, so on 2 cores two 1-thread runs side by side
    beat one 2-thread run (benchmarks/results/load.md).
    """

    def __init__(self, predict: Callable[[list], list], queue_size: int, max_batch_texts: int, workers: int = 1):
        self._predict = predict
        self._queue: "queue.Queue[_Job]" = queue.Queue(maxsize=queue_size)
        self._max_batch_texts = max_batch_texts
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.busy = 0  # workers inside the model right now
        self._threads = [threading.Thread(target=self._run, name=f"kronedge-worker-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads) and not self._stop.is_set()

    def submit(self, inputs: list) -> _Job:
        """Queue the inputs; raises Overloaded at once when the queue is full."""
        if self._stop.is_set():
            raise Overloaded("shutting down")
        job = _Job(inputs, asyncio.get_running_loop())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"{self._queue.maxsize} requests are waiting") from None
        return job

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            jobs, n = [first], len(first.inputs)
            while n < self._max_batch_texts:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                jobs.append(job)
                n += len(job.inputs)
            jobs = [job for job in jobs if not job.cancelled]
            if not jobs:
                continue
            with self._lock:
                self.busy += 1
            try:
                results = self._predict([x for job in jobs for x in job.inputs])
            except Exception as exc:  # reported to each waiting request as a 500, the worker lives on
                for job in jobs:
                    job.loop.call_soon_threadsafe(_deliver, job.future, None, exc)
                continue
            finally:
                with self._lock:
                    self.busy -= 1
            start = 0
            for job in jobs:
                part = results[start:start + len(job.inputs)]
                start += len(job.inputs)
                job.loop.call_soon_threadsafe(_deliver, job.future, part)


# ---- metrics ------------------------------------------------------------------------------------------
@dataclass
class Metrics:
    """Counters and a latency histogram in Prometheus text format, with no client library to install."""

    requests: dict = field(default_factory=dict)  # (route, method, status) -> count
    errors: dict = field(default_factory=dict)  # code -> count
    buckets: list = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    duration_sum: float = 0.0
    inputs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, route: str, method: str, status: int, seconds: float, n_inputs: int, code: Optional[str]) -> None:
        with self.lock:
            key = (route, method, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            if code:
                self.errors[code] = self.errors.get(code, 0) + 1
            i = next((i for i, b in enumerate(LATENCY_BUCKETS_S) if seconds <= b), len(LATENCY_BUCKETS_S))
            self.buckets[i] += 1
            self.duration_sum += seconds
            self.inputs += n_inputs

    def render(self, gauges: dict[str, tuple[str, float]], info: dict[str, str]) -> str:
        def esc(v: Any) -> str:
            return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

        with self.lock:
            lines = ["# HELP kronedge_requests_total HTTP requests by route, method and status.",
                     "# TYPE kronedge_requests_total counter"]
            for (route, method, status), count in sorted(self.requests.items()):
                lines.append(f'kronedge_requests_total{{route="{esc(route)}",method="{esc(method)}",status="{status}"}} {count}')
            lines += ["# HELP kronedge_errors_total Requests answered with an error, by error code.",
                      "# TYPE kronedge_errors_total counter"]
            for code, count in sorted(self.errors.items()):
                lines.append(f'kronedge_errors_total{{code="{esc(code)}"}} {count}')
            lines += ["# HELP kronedge_request_duration_seconds Time from request to response.",
                      "# TYPE kronedge_request_duration_seconds histogram"]
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS_S, self.buckets):
                cumulative += count
                lines.append(f'kronedge_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
            cumulative += self.buckets[-1]
            lines.append(f'kronedge_request_duration_seconds_bucket{{le="+Inf"}} {cumulative}')
            lines.append(f"kronedge_request_duration_seconds_sum {self.duration_sum:.6f}")
            lines.append(f"kronedge_request_duration_seconds_count {cumulative}")
            lines += ["# HELP kronedge_inputs_total Texts or pairs classified.", "# TYPE kronedge_inputs_total counter",
                      f"kronedge_inputs_total {self.inputs}"]
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        labels = ",".join(f'{k}="{esc(v)}"' for k, v in info.items())
        lines += ["# HELP kronedge_model_info The loaded model.", "# TYPE kronedge_model_info gauge",
                  f"kronedge_model_info{{{labels}}} 1"]
        return "\n".join(lines) + "\n"


# ---- request and response schemas (for /docs and clients; parsing is done by hand below) -------------
class ClassifyRequest(BaseModel):
    """Exactly one of ``texts`` (single-text models) or ``pairs`` (pair models, see GET /v1/model)."""

    texts: Optional[list[str]] = Field(None, description="Texts to classify; non-empty strings.")
    pairs: Optional[list[list[str]]] = Field(None, description="[text_a, text_b] pairs, for pair tasks.")


class Prediction(BaseModel):
    label: Optional[str] = Field(..., description="Most likely label (null for regression).")
    score: float = Field(..., description="Its probability (the value, for regression).")
    scores: dict[str, float] = Field(..., description="Probability of every label.")


class ClassifyResponse(BaseModel):
    results: list[Prediction]
    model: Optional[str] = Field(None, description="The model's task name.")
    latency_ms: float = Field(..., description="Server time for this request, queueing included.")
    inference_ms: float = Field(..., description="Tokenisation + ONNX Runtime time of the batch it ran in.")
    request_id: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    status: int
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES = {status: {"model": ErrorBody, "description": text} for status, text in {
    400: "Body is not UTF-8 or not JSON.", 401: "Missing or wrong bearer token.", 413: "Body too large.",
    415: "Content-Type is not application/json.", 422: "Valid JSON, but not a valid request (see message).",
    503: "Queue full or shutting down; retry after Retry-After seconds.", 504: "Not answered within the timeout.",
}.items()}


# ---- body parsing -------------------------------------------------------------------------------------
async def read_json_body(request: Request, limit: int) -> Any:
    content_type = request.headers.get("content-type", "")
    media_type, *params = [part.strip().lower() for part in content_type.split(";")]
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be application/json, got {content_type[:80]!r}")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            raise ApiError(415, "unsupported_media_type", "only charset=utf-8 is accepted")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_content_length", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():  # also catches chunked bodies with no Content-Length
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"body exceeds the limit of {limit} bytes")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_utf8", f"body is not valid UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # some clients send a BOM; it is still UTF-8
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "body is nested too deeply") from None


def _check_text(value: Any, where: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise ApiError(422, "invalid_item", f"{where} must be a string, got {type(value).__name__ if value is not None else 'null'}")
    if not value.strip():
        raise ApiError(422, "empty_item", f"{where} is empty")
    if len(value) > max_chars:
        raise ApiError(422, "text_too_long", f"{where} has {len(value)} characters; the limit is {max_chars}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON "\ud800" escapes decode to lone surrogates the tokenizer cannot take
        raise ApiError(422, "invalid_item", f"{where} contains an unpaired UTF-16 surrogate") from None
    return value


def parse_classify(body: Any, pair_input: bool, max_texts: int, max_chars: int) -> list:
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", 'body must be a JSON object: {"texts": [...]} or {"pairs": [[a, b], ...]}')
    unknown = sorted(set(body) - {"texts", "pairs"})
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown field(s) {unknown[:5]}; expected texts or pairs")
    if ("texts" in body) == ("pairs" in body):
        raise ApiError(422, "invalid_request", "give exactly one of texts or pairs")
    key = "pairs" if "pairs" in body else "texts"
    if pair_input != (key == "pairs"):
        want = "pairs" if pair_input else "texts"
        raise ApiError(422, "wrong_input_kind", f"this model takes {want}, not {key} (see GET /v1/model)")
    items = body[key]
    if not isinstance(items, list):
        raise ApiError(422, "invalid_request", f"{key} must be a list")
    if not items:
        raise ApiError(422, "empty_request", f"{key} is empty")
    if len(items) > max_texts:
        raise ApiError(422, "too_many_inputs", f"{len(items)} {key}; the limit is {max_texts} per request")
    if key == "texts":
        return [_check_text(t, f"texts[{i}]", max_chars) for i, t in enumerate(items)]
    pairs = []
    for i, pair in enumerate(items):
        if not isinstance(pair, list) or len(pair) != 2:
            raise ApiError(422, "invalid_item", f"pairs[{i}] must be a list of two strings")
        pairs.append((_check_text(pair[0], f"pairs[{i}][0]", max_chars), _check_text(pair[1], f"pairs[{i}][1]", max_chars)))
    return pairs


# ---- the app ------------------------------------------------------------------------------------------
def create_app(config: ServeConfig, predictor: Optional[Predictor] = None, token: Optional[str] = None) -> FastAPI:
    """Build the app. ``predictor`` may be passed in (tests wrap it); ``token`` None means no auth here
    (use `resolve_token` to apply the loopback rule first, as `serve` does).
    """
    from contextlib import asynccontextmanager

    if predictor is None:
        predictor = load_predictor(config)
    summary = predictor.summary()
    pair_input = summary["pair_input"]
    batcher = Batcher(predictor.predict, config.queue_size, config.max_batch_texts, config.workers)
    metrics = Metrics()
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    app = FastAPI(title="kronedge", version="1", lifespan=lifespan,
                  description="Text classification with a KroneckerBERT model exported by kronedge.")
    app.state.batcher, app.state.metrics, app.state.predictor = batcher, metrics, predictor

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        request.state.error_code = exc.code
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        request.state.error_code = code
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        request.state.error_code = "invalid_request"
        return error_response(422, "invalid_request", "invalid request", details=json.loads(json.dumps(exc.errors(), default=str)))

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        request_id = request.headers.get("x-request-id", "")
        if not (0 < len(request_id) <= 64 and request_id.isascii() and request_id.isprintable()):
            request_id = uuid.uuid4().hex
        request.state.request_id = request_id
        path = request.url.path
        if token is not None and path not in OPEN_PATHS and not token_matches(request.headers.get("authorization"), token):
            request.state.error_code = "unauthorized"
            response = error_response(401, "unauthorized", "missing or wrong bearer token",
                                      headers={"WWW-Authenticate": 'Bearer realm="kronedge"'})
        else:
            try:
                response = await call_next(request)
            except Exception as exc:  # never a bare traceback to the client; the log line has the type
                request.state.error_code = "internal"
                request.state.exception = type(exc).__name__
                response = error_response(500, "internal", "internal error")
        seconds = time.perf_counter() - start
        response.headers["X-Request-ID"] = request_id
        state = request.state
        code = getattr(state, "error_code", None)
        n_inputs = getattr(state, "n_inputs", 0)
        route = path if path in ROUTES else "other"
        metrics.observe(route, request.method, response.status_code, seconds, n_inputs if response.status_code < 400 else 0, code)
        record = {"ts": round(time.time(), 3), "request_id": request_id, "method": request.method, "path": route,
                  "status": response.status_code, "duration_ms": round(seconds * 1e3, 2), "inputs": n_inputs}
        if code:
            record["error"] = code
        if getattr(state, "exception", None):
            record["exception"] = state.exception
        if config.log_text and getattr(state, "texts", None) is not None:
            record["texts"] = state.texts
        access_log.info(json.dumps(record, ensure_ascii=False))
        return response

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": ClassifyRequest.model_json_schema()}}}})
    async def classify(request: Request):
        """Classify up to max_texts texts (or pairs); each result has the label, its score and all scores."""
        start = time.perf_counter()
        body = await read_json_body(request, config.max_body_bytes)
        items = parse_classify(body, pair_input, config.max_texts, config.max_chars)
        request.state.n_inputs = len(items)
        if config.log_text:
            request.state.texts = items
        try:
            job = batcher.submit(items)
        except Overloaded as exc:
            raise ApiError(503, "overloaded", f"server busy ({exc}); retry later",
                           headers={"Retry-After": str(config.retry_after_s)}) from None
        try:
            results = await asyncio.wait_for(job.future, config.timeout_s)
        except asyncio.TimeoutError:
            job.cancelled = True  # if still queued, the worker skips it
            raise ApiError(504, "timeout", f"not answered within {config.timeout_s} s") from None
        inference_ms = results[0]["latency_ms"] if results else 0.0
        return {"results": [{k: r[k] for k in ("label", "score", "scores")} for r in results],
                "model": summary.get("task"), "latency_ms": round((time.perf_counter() - start) * 1e3, 3),
                "inference_ms": round(inference_ms, 3), "request_id": request.state.request_id}

    @app.get("/v1/model")
    async def model_info():
        """What is loaded: task, labels, input kind, max length, quantization, versions, limits."""
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

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_endpoint():
        """Prometheus text format."""
        gauges = {"kronedge_queue_depth": ("Requests waiting for the model.", batcher.depth),
                  "kronedge_workers_busy": ("Workers running the model now.", batcher.busy),
                  "kronedge_workers": ("Model workers.", config.workers),
                  "kronedge_uptime_seconds": ("Seconds since start.", round(time.time() - started, 3))}
        info = {"task": summary.get("task") or "", "model_file": summary.get("model_file") or "",
                "sha256": (summary.get("sha256") or "")[:16], "onnxruntime": summary["runtime"]["onnxruntime"]}
        return PlainTextResponse(metrics.render(gauges, info), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def load_predictor(config: ServeConfig) -> Predictor:
    predictor = Predictor(config.model_dir, threads=config.threads, model_file=config.model_file,
                          max_length=config.max_length)
    if config.self_check and (Path(config.model_dir) / "golden.npz").is_file():
        predictor.check_golden()
    predictor.warmup()
    return predictor


def _configure_logging() -> None:
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))  # the message is already one JSON object
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False


def serve(config: ServeConfig) -> None:
    """Check auth rules, load and self-check the model, then run uvicorn until interrupted."""
    import uvicorn

    token = resolve_token(config)  # before loading the model: refuse fast
    _configure_logging()
    app = create_app(config, token=token)
    access_log.info(json.dumps({"ts": round(time.time(), 3), "event": "start", "host": config.host, "port": config.port,
                                "auth": token is not None, "model_dir": str(config.model_dir),
                                "config": {k: v for k, v in asdict(config).items() if k not in ("token_env",)}}))
    # uvicorn's own access log is off: ours is the one JSON line per request. limit_concurrency is a
    # last backstop for connections (uvicorn answers 503 past it); the queue above is the real bound.
    # log_level warning: our "start" event above replaces uvicorn's plain-text startup lines.
    uvicorn.run(app, host=config.host, port=config.port, access_log=False, server_header=False, log_level="warning",
                limit_concurrency=max(64, 2 * (config.queue_size + 1)), timeout_keep_alive=5,
                timeout_graceful_shutdown=int(math.ceil(config.timeout_s)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.serve", description="Serve an exported kronedge model over HTTP.")
    p.add_argument("model_dir", help="directory written by `kronedge export`")
    d = ServeConfig(model_dir="")
    p.add_argument("--host", default=d.host, help="bind address (non-loopback needs a token or --allow-no-auth)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--threads", type=int, default=d.threads, help="ONNX Runtime intra-op threads per worker")
    p.add_argument("--model-file", choices=["model.onnx", "model.ort"], default=None)
    p.add_argument("--max-length", type=int, default=None, help="truncate to this many tokens (<= the export's)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument("--max-texts", type=int, default=d.max_texts, help="texts or pairs per request")
    p.add_argument("--max-chars", type=int, default=d.max_chars, help="characters per text")
    p.add_argument("--queue-size", type=int, default=d.queue_size, help="waiting requests before 503")
    p.add_argument("--max-batch-texts", type=int, default=d.max_batch_texts, help="texts per model pass, across requests")
    p.add_argument("--workers", type=int, default=d.workers, help="model runs in parallel (threads x workers <= cores)")
    p.add_argument("--timeout", dest="timeout_s", type=float, default=d.timeout_s, help="seconds per request before 504")
    p.add_argument("--token-file", default=None, help=f"file holding the bearer token (else ${TOKEN_ENV}_FILE, else ${TOKEN_ENV})")
    p.add_argument("--allow-no-auth", action="store_true", help="serve a non-loopback host without a token")
    p.add_argument("--log-text", action="store_true", help="include request texts in the access log")
    p.add_argument("--no-self-check", dest="self_check", action="store_false", help="skip the golden.npz check at start")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        serve(ServeConfig(**vars(args)))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
