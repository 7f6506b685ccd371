"""The request and response shapes, and how a raw body becomes a validated request.

Two steps. `read_json_body` does what a schema cannot: the content type, the size cap while
streaming (draining an oversize body so the client can read its 413), strict UTF-8 and JSON.
Then `parse_classify` validates the JSON with the pydantic model `ClassifyRequest` and turns its
first error into one `ApiError` with a stable code (``empty_item``, ``text_too_long``, ...). Custom
checks raise `PydanticCustomError` whose type *is* that code, so the mapping needs no table for them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, AsyncIterator, Optional

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError
from starlette.requests import ClientDisconnect


class ApiError(Exception):
    """An answer other than 200, as ``{"error": {"code", "message", "status", "details"?}}``."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[dict] = None, details: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.details = status, code, message, headers, details

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers, self.details)


def error_response(status: int, code: str, message: str, headers: Optional[dict] = None, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message, "status": status}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


# ---- body pre-checks ----------------------------------------------------------------------------------
async def read_json_body(request: Request, limit: int, drain_bytes: int, drain_s: float) -> Any:
    """The body as JSON, or an `ApiError`: 415 content type, 413 size, 400 UTF-8 / JSON / Content-Length.

    An oversize body is read and discarded up to ``drain_bytes`` (and ``drain_s`` seconds) before the
    413 goes out: a server that answers and closes while the client is still sending resets the
    connection, and the client never reads the answer.
    """
    content_type = request.headers.get("content-type", "")
    media_type, *params = [part.strip().lower() for part in content_type.split(";")]
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be application/json, got {content_type[:80]!r}")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            raise ApiError(415, "unsupported_media_type", "only charset=utf-8 is accepted")
    declared = request.headers.get("content-length")
    stream = request.stream()  # also yields chunked bodies, which have no Content-Length
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_content_length", "Content-Length is not a number")
        if int(declared) > limit:
            await _refuse_oversize(request, stream, f"body is {declared} bytes; the limit is {limit}", int(declared),
                                   drain_bytes, drain_s)
    body = bytearray()
    try:
        async for chunk in stream:
            body += chunk
            if len(body) > limit:
                await _refuse_oversize(request, stream, f"body exceeds the limit of {limit} bytes", None,
                                       drain_bytes - len(body), drain_s)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away before sending the whole body") from None
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
    except ValueError as exc:  # e.g. an integer literal past Python's int_max_str_digits
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}"[:200]) from None


async def _refuse_oversize(request: Request, stream: AsyncIterator[bytes], message: str, declared: Optional[int],
                           budget: int, drain_s: float):
    """Raise the 413, after discarding the rest of ``stream`` (the body) when that is cheap enough."""
    too_big = ApiError(413, "body_too_large", message)
    if "100-continue" in request.headers.get("expect", "").lower():
        # The client waits for our answer before sending: reading would ask it for the body.
        raise too_big
    if declared is not None and declared > budget:
        too_big.headers = {"Connection": "close"}  # past the bound: cut off (the client may see a reset)
        raise too_big

    async def discard() -> bool:
        seen = 0
        async for chunk in stream:
            seen += len(chunk)
            if seen > budget:
                return False
        return True

    try:
        complete = await asyncio.wait_for(discard(), drain_s)
    except (asyncio.TimeoutError, ClientDisconnect):
        complete = False
    if not complete:
        too_big.headers = {"Connection": "close"}
    raise too_big


# ---- the request --------------------------------------------------------------------------------------
def _check_text(value: str, info: ValidationInfo) -> str:
    max_chars = (info.context or {}).get("max_chars")
    if not value.strip():
        raise PydanticCustomError("empty_item", "is empty")
    if max_chars is not None and len(value) > max_chars:
        raise PydanticCustomError("text_too_long", "has {n} characters; the limit is {limit}",
                                  {"n": len(value), "limit": max_chars})
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON "\ud800" escapes decode to lone surrogates the tokenizer cannot take
        raise PydanticCustomError("invalid_item", "contains an unpaired UTF-16 surrogate") from None
    return value


Text = Annotated[str, Strict(), AfterValidator(_check_text)]


class ClassifyRequest(BaseModel):
    """Exactly one of ``texts`` (single-text models) or ``pairs`` (pair models, see GET /v1/model).

    Validate with ``context={"max_texts", "max_chars", "pair_input"}`` to apply a server's limits.
    """

    model_config = ConfigDict(extra="forbid")

    texts: Optional[list[Text]] = Field(None, min_length=1, description="Texts to classify; non-empty strings.")
    pairs: Optional[list[tuple[Text, Text]]] = Field(None, min_length=1, description="[text_a, text_b] pairs, for pair tasks.")
    top_k: Optional[Annotated[int, Strict(), Field(ge=1)]] = Field(
        None, description="Return only the k most likely labels in each result's scores, most likely first "
                          "(default: every label, in the model's order). For models with many labels.")

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any, info: ValidationInfo) -> Any:
        # Checked before the items, so a request of the wrong kind or size is refused without looking at them.
        if not isinstance(data, dict):
            raise PydanticCustomError("invalid_request", 'body must be a JSON object: {"texts": [...]} or {"pairs": [[a, b], ...]}')
        unknown = sorted(set(data) - {"texts", "pairs", "top_k"})
        if unknown:
            raise PydanticCustomError("invalid_request", "unknown field(s) {fields}; expected texts or pairs (and "
                                      "optionally top_k)",
                                      {"fields": str(unknown[:5])})
        if ("texts" in data) == ("pairs" in data):
            raise PydanticCustomError("invalid_request", "give exactly one of texts or pairs")
        key = "pairs" if "pairs" in data else "texts"
        ctx = info.context or {}
        if ctx.get("pair_input") is not None and ctx["pair_input"] != (key == "pairs"):
            raise PydanticCustomError("wrong_input_kind", "this model takes {want}, not {key} (see GET /v1/model)",
                                      {"want": "pairs" if ctx["pair_input"] else "texts", "key": key})
        items = data[key]
        if not isinstance(items, list):
            raise PydanticCustomError("invalid_request", "{key} must be a list", {"key": key})
        if ctx.get("max_texts") is not None and len(items) > ctx["max_texts"]:
            raise PydanticCustomError("too_many_inputs", "{n} {key}; the limit is {limit} per request",
                                      {"n": len(items), "key": key, "limit": ctx["max_texts"]})
        return data

    def inputs(self) -> list:
        """What the predictor takes: a list of texts or of (text_a, text_b) tuples."""
        return list(self.texts) if self.texts is not None else list(self.pairs)


CODES = frozenset({"invalid_request", "wrong_input_kind", "too_many_inputs", "empty_item", "text_too_long", "invalid_item"})


def _where(loc: tuple) -> str:
    out = str(loc[0]) if loc else "body"
    return out + "".join(f"[{part}]" for part in loc[1:])


def parse_classify(body: Any, pair_input: bool, max_texts: int, max_chars: int) -> ClassifyRequest:
    """Validate a decoded JSON body against `ClassifyRequest` with these limits; the request, or ApiError 422."""
    try:
        request = ClassifyRequest.model_validate(body, context={"pair_input": pair_input, "max_texts": max_texts,
                                                                "max_chars": max_chars})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise ApiError(422, *_describe(err)) from None
    return request


def _describe(err: dict) -> tuple[str, str]:
    """(code, message) for one pydantic error."""
    kind, loc = err["type"], tuple(err["loc"])
    if kind in CODES:
        return kind, f"{_where(loc)} {err['msg']}" if loc else err["msg"]
    if loc == ("top_k",):
        return "invalid_request", "top_k must be a whole number >= 1"
    if len(loc) == 1 and kind == "too_short":
        return "empty_request", f"{loc[0]} is empty"
    if len(loc) == 1:
        return "invalid_request", f"{loc[0]} must be a list"
    if loc[0] == "pairs" and (len(loc) == 2 or kind == "missing"):
        return "invalid_item", f"{_where(loc[:2])} must be a list of two strings"
    if kind == "string_type":
        got = err.get("input")
        return "invalid_item", f"{_where(loc)} must be a string, got {'null' if got is None else type(got).__name__}"
    return "invalid_request", f"{_where(loc)}: {err['msg']}"


def present(result: dict, top_k: int | None) -> dict:
    """One result as the response gives it: every score in the model's order, or with ``top_k`` the k highest,
    highest first, in ``scores`` and, as a list (a JSON object's key order is not kept by every client), in ``top``."""
    out = {"label": result["label"], "score": result["score"], "scores": result["scores"]}
    if top_k is not None:
        out["scores"] = dict(sorted(result["scores"].items(), key=lambda item: -item[1])[:top_k])
        out["top"] = [{"label": label, "score": score} for label, score in out["scores"].items()]
    return out


# ---- responses (for /docs and clients) ----------------------------------------------------------------
class LabelScore(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: Optional[str] = Field(..., description="Most likely label (null for regression).")
    score: float = Field(..., description="Its probability (the value, for regression).")
    scores: dict[str, float] = Field(..., description="Probability of every label (of the top_k most likely, "
                                                      "most likely first, when the request gives top_k).")
    top: Optional[list[LabelScore]] = Field(None, description="With top_k: the same labels and scores as a list, "
                                                              "most likely first.")


class ClassifyResponse(BaseModel):
    results: list[Prediction]
    model: Optional[str] = Field(None, description="The model that answered, NAME@VERSION (as in GET /v1/model).")
    task: Optional[str] = Field(None, description="Its task: a GLUE task or the name of the user's data set.")
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
    400: "Body is not UTF-8 or not JSON.", 401: "Missing or wrong bearer token.",
    408: "The body did not arrive before the request's deadline.", 413: "Body too large.",
    415: "Content-Type is not application/json.", 422: "Valid JSON, but not a valid request (see message).",
    503: "Cannot be answered before the deadline (queue full or predicted wait too long); retry after Retry-After seconds.",
    504: "The model was still running this request at the deadline.",
}.items()}
