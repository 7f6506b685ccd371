"""The HTTP server: answers per text equal the `Predictor`'s (alone and batched across concurrent
requests), every bad input -> its 4xx JSON error, admission control (503 at once, never 504 for a
burst), deadlines (queued work past it never runs), oversize bodies (a 413 the client can read, 10 MB
and 100 MB on a real socket), auth, metrics, logs, fuzzing, and the two command lines.

Built on the informative test model (tests/conftest.py): its labels and scores vary by text, so a
server that returns a constant or hands one request's answers to another fails here.
"""

import asyncio
import contextlib
import json
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.predictor import Predictor
from runtime.serve import ServeConfig, ServeConfigError, create_app, is_loopback, main, resolve_token, token_matches
from runtime.serve.server import uvicorn_settings
from runtime.serve.batcher import Batcher, Overloaded
from runtime.serve.service_time import ServiceTime
from runtime.serve.config import cli_options

TOKEN = "s3cret-token-0123456789"
LIMITS = dict(max_texts=4, max_chars=50, max_body_bytes=2048)
REPO = Path(__file__).resolve().parents[1]
JSON = {"content-type": "application/json"}
FP32_ATOL = 1e-4  # fp32 parity, batched or not (padding changes summation order only)


@pytest.fixture(scope="session")
def export_dir(informative_export_fp32):
    return informative_export_fp32


@pytest.fixture(scope="session")
def pair_dir(export_dir, tmp_path_factory):
    """The same graph declared as a pair task (RTE-like): only the manifest changes."""
    dst = tmp_path_factory.mktemp("server") / "pair"
    shutil.copytree(export_dir, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(task="rte", pair_input=True, labels=["entailment", "not_entailment"])
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.fixture(scope="session")
def shared_predictor(export_dir):
    return Predictor(export_dir, threads=1)


@pytest.fixture(scope="session")
def client(export_dir, shared_predictor):
    app = create_app(ServeConfig(str(export_dir), **LIMITS), predictor=shared_predictor)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def pair_client(pair_dir):
    app = create_app(ServeConfig(str(pair_dir), **LIMITS), predictor=Predictor(pair_dir, threads=1))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def assert_same_answers(got: list[dict], want: list[dict], atol: float = FP32_ATOL) -> None:
    """Per input: the same label, score and scores (the server drops only ``latency_ms``)."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g["label"] == w["label"], (i, g, w)
        assert g["score"] == pytest.approx(w["score"], abs=atol), (i, g, w)
        assert g["scores"].keys() == w["scores"].keys()
        np.testing.assert_allclose([g["scores"][k] for k in w["scores"]], [w["scores"][k] for k in w["scores"]], atol=atol)


def alone(predictor, inputs) -> list[dict]:
    """The single-request answer for each input: one model run per input."""
    return [predictor.predict([x])[0] for x in inputs]


# ---- results ------------------------------------------------------------------------------------------
def test_classify_texts_matches_torch(export_dir, shared_predictor, probe_texts, informative_torch_logits):
    with TestClient(create_app(ServeConfig(str(export_dir)), predictor=shared_predictor)) as c:
        r = c.post("/v1/classify", json={"texts": probe_texts})
    assert r.status_code == 200, r.text
    body = r.json()
    probs = softmax(informative_torch_logits)
    labels = [["negative", "positive"][int(p.argmax())] for p in probs]
    assert set(labels) == {"negative", "positive"}  # the check below can tell a constant answer apart
    assert [item["label"] for item in body["results"]] == labels
    got = [[item["scores"]["negative"], item["scores"]["positive"]] for item in body["results"]]
    np.testing.assert_allclose(got, probs, atol=FP32_ATOL)
    np.testing.assert_allclose([item["score"] for item in body["results"]], probs.max(-1), atol=FP32_ATOL)
    assert body["model"] == shared_predictor.summary()["model"] and body["latency_ms"] >= body["inference_ms"] > 0
    assert r.headers["x-request-id"] == body["request_id"]


def test_classify_pairs_matches_predictor(pair_dir, probe_texts):
    predictor = Predictor(pair_dir, threads=1)
    pairs = [[a, b] for a, b in zip(probe_texts, reversed(probe_texts))][:6]
    with TestClient(create_app(ServeConfig(str(pair_dir)), predictor=predictor)) as c:
        r = c.post("/v1/classify", json={"pairs": pairs})
    assert r.status_code == 200, r.text
    want = alone(predictor, [tuple(p) for p in pairs])
    assert len({round(w["score"], 3) for w in want}) > 1  # pairs get different answers
    assert_same_answers(r.json()["results"], want)


def test_json_with_charset_and_bom_is_accepted(client):
    r = client.post("/v1/classify", content="\ufeff{\"texts\": [\"fine\"]}".encode(),
                    headers={"content-type": "Application/JSON; charset=UTF-8"})
    assert r.status_code == 200, r.text


def test_model_health_ready_openapi(client, shared_predictor):
    info = client.get("/v1/model").json()
    assert info["labels"] == ["negative", "positive"] and info["pair_input"] is False
    assert info["limits"]["max_texts"] == LIMITS["max_texts"] and info["model_file"] == shared_predictor.summary()["model_file"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    schema = client.get("/openapi.json").json()
    body_schema = schema["paths"]["/v1/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"texts", "pairs"} <= set(body_schema["properties"])
    assert {"413", "415", "422", "503"} <= set(schema["paths"]["/v1/classify"]["post"]["responses"])


# ---- every listed bad input -> the right 4xx with a JSON error -------------------------------------------
BAD_REQUESTS = [
    # (name, raw body, headers, status, code)
    ("too large (Content-Length)", b'{"texts": ["' + b"a" * 3000 + b'"]}', JSON, 413, "body_too_large"),
    ("invalid JSON", b'{"texts": ["a",]}', JSON, 400, "invalid_json"),
    ("truncated JSON", b'{"texts": ["a"', JSON, 400, "invalid_json"),
    ("empty body", b"", JSON, 400, "invalid_json"),
    ("deeply nested", b"[" * 2000 + b"]" * 2000, {**JSON}, 413, "body_too_large"),
    ("not UTF-8", b'{"texts": ["caf\xe9"]}', JSON, 400, "invalid_utf8"),
    ("text/plain", b'{"texts": ["a"]}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
    ("form", b"texts=a", {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ("no content type", b'{"texts": ["a"]}', {}, 415, "unsupported_media_type"),
    ("latin-1 charset", b'{"texts": ["a"]}', {"content-type": "application/json; charset=latin-1"}, 415, "unsupported_media_type"),
    ("array body", b'["a"]', JSON, 422, "invalid_request"),
    ("string body", b'"a"', JSON, 422, "invalid_request"),
    ("neither field", b"{}", JSON, 422, "invalid_request"),
    ("both fields", b'{"texts": ["a"], "pairs": [["a", "b"]]}', JSON, 422, "invalid_request"),
    ("unknown field", b'{"texts": ["a"], "topk": 2}', JSON, 422, "invalid_request"),
    ("top_k zero", b'{"texts": ["a"], "top_k": 0}', JSON, 422, "invalid_request"),
    ("top_k string", b'{"texts": ["a"], "top_k": "2"}', JSON, 422, "invalid_request"),
    ("top_k fraction", b'{"texts": ["a"], "top_k": 1.5}', JSON, 422, "invalid_request"),
    ("top_k bool", b'{"texts": ["a"], "top_k": true}', JSON, 422, "invalid_request"),
    ("texts not a list", b'{"texts": "a"}', JSON, 422, "invalid_request"),
    ("texts null", b'{"texts": null}', JSON, 422, "invalid_request"),
    ("no texts", b'{"texts": []}', JSON, 422, "empty_request"),
    ("too many texts", json.dumps({"texts": ["a"] * 5}).encode(), JSON, 422, "too_many_inputs"),
    ("text too long", json.dumps({"texts": ["a" * 51]}).encode(), JSON, 422, "text_too_long"),
    ("empty text", b'{"texts": ["ok", ""]}', JSON, 422, "empty_item"),
    ("blank text", b'{"texts": [" \\n\\t "]}', JSON, 422, "empty_item"),
    ("number item", b'{"texts": [1]}', JSON, 422, "invalid_item"),
    ("bool item", b'{"texts": [true]}', JSON, 422, "invalid_item"),
    ("null item", b'{"texts": [null]}', JSON, 422, "invalid_item"),
    ("object item", b'{"texts": [{"text": "a"}]}', JSON, 422, "invalid_item"),
    ("lone surrogate", b'{"texts": ["\\ud800"]}', JSON, 422, "invalid_item"),
    ("pairs to a text model", b'{"pairs": [["a", "b"]]}', JSON, 422, "wrong_input_kind"),
]


@pytest.mark.parametrize("name, body, headers, status, code", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_json_error(client, name, body, headers, status, code):
    r = client.post("/v1/classify", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code and err["status"] == status and err["message"]


def test_top_k_keeps_the_most_likely_labels_first(client):
    texts = ["a fine film", "dull"]
    full = client.post("/v1/classify", json={"texts": texts}).json()["results"]
    for k in (1, 2, 50):
        results = client.post("/v1/classify", json={"texts": texts, "top_k": k}).json()["results"]
        for short, whole in zip(results, full):
            ranked = sorted(whole["scores"].items(), key=lambda item: -item[1])[:k]
            assert list(short["scores"].items()) == ranked and short["label"] == ranked[0][0]
            assert short["top"] == [{"label": label, "score": score} for label, score in ranked]
            assert short["score"] == whole["score"]
    assert all("top" not in r for r in full)  # without top_k the answer is as before
    err = client.post("/v1/classify", json={"texts": texts, "top_k": 0}).json()["error"]
    assert err["message"] == "top_k must be a whole number >= 1"


def test_item_errors_name_the_item(client):
    err = client.post("/v1/classify", json={"texts": ["ok", "fine", 7]}).json()["error"]
    assert err["message"] == "texts[2] must be a string, got int"
    err = client.post("/v1/classify", json={"texts": ["ok", "a" * 60]}).json()["error"]
    assert err["message"] == "texts[1] has 60 characters; the limit is 50"


def test_deep_nesting_and_huge_numbers_under_the_size_limit_are_400_not_500(export_dir, shared_predictor):
    app = create_app(ServeConfig(str(export_dir), max_body_bytes=1 << 20), predictor=shared_predictor)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/classify", content=b"[" * 200_000 + b"]" * 200_000, headers=JSON)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        # json.loads raises a plain ValueError past Python's int_max_str_digits (4300): still the client's 400
        r = c.post("/v1/classify", content=b'{"texts": [' + b"9" * 5000 + b"]}", headers=JSON)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_chunked_body_over_limit_is_413(client):
    def chunks():
        for _ in range(10):
            yield b'{"texts": ["' + b"a" * 500

    r = client.post("/v1/classify", content=chunks(), headers=JSON)  # no Content-Length: streamed
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("body, code", [
    ({"texts": ["a"]}, "wrong_input_kind"),
    ({"pairs": [["a", "b", "c"]]}, "invalid_item"),
    ({"pairs": ["ab"]}, "invalid_item"),
    ({"pairs": [[]]}, "invalid_item"),
    ({"pairs": [{"a": "b"}]}, "invalid_item"),
    ({"pairs": [["a", ""]]}, "empty_item"),
    ({"pairs": [["a", 3]]}, "invalid_item"),
    ({"pairs": [["a", "b"]] * 5}, "too_many_inputs"),
])
def test_bad_pairs(pair_client, body, code):
    r = pair_client.post("/v1/classify", json=body)
    assert r.status_code == 422 and r.json()["error"]["code"] == code


def test_wrong_method_and_path_are_json(client):
    r = client.get("/v1/classify")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# ---- predictors that let a test control time and count model calls --------------------------------------
class GatedPredictor:
    """Wraps a predictor; each predict call waits until the test opens the gate. Counts calls and texts."""

    def __init__(self, inner):
        self.inner, self.started, self.gate = inner, threading.Event(), threading.Event()
        self.calls, self.texts = 0, []

    def summary(self):
        return self.inner.summary()

    def predict(self, inputs):
        self.calls += 1
        self.texts.extend(inputs)
        self.started.set()
        self.gate.wait(20)
        return self.inner.predict(inputs)


class SlowPredictor(GatedPredictor):
    """A model that takes ``seconds_per_text`` per text (on top of the real run): a steady, known cost."""

    def __init__(self, inner, seconds_per_text: float):
        super().__init__(inner)
        self.seconds_per_text = seconds_per_text
        self.gate.set()

    def predict(self, inputs):
        time.sleep(self.seconds_per_text * len(inputs))
        return super().predict(inputs)


async def _wait_for(cond, what, limit_s=10.0):
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _asgi_client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


# ---- overload, admission control and deadlines ----------------------------------------------------------
def test_full_queue_answers_503_with_retry_after(export_dir, shared_predictor):
    slow = GatedPredictor(shared_predictor)
    app = create_app(ServeConfig(str(export_dir), queue_size=1, retry_after_s=2), predictor=slow)
    batcher = app.state.batcher

    async def scenario():
        async with _asgi_client(app) as c:
            running = asyncio.create_task(c.post("/v1/classify", json={"texts": ["first"]}))
            await _wait_for(slow.started.is_set, "the worker to take the first request")
            queued = asyncio.create_task(c.post("/v1/classify", json={"texts": ["second"]}))
            await _wait_for(lambda: batcher.depth == 1, "the second request to queue")
            rejected = await c.post("/v1/classify", json={"texts": ["third"]})
            ready_while_busy = await c.get("/readyz")
            slow.gate.set()
            return rejected, await running, await queued, ready_while_busy

    try:
        rejected, first, second, ready = asyncio.run(scenario())
    finally:
        slow.gate.set()
        batcher.close()
    assert rejected.status_code == 503 and rejected.headers["retry-after"] == "2"
    assert rejected.json()["error"]["code"] == "overloaded" and rejected.json()["error"]["details"]["reason"] == "queue_full"
    assert first.status_code == 200 and second.status_code == 200
    assert ready.status_code == 200  # busy is not unready
    assert slow.texts == ["first", "second"]  # the refused one never reached the model


def test_predicted_wait_past_the_deadline_is_503_at_once(export_dir, shared_predictor):
    slow = GatedPredictor(shared_predictor)
    app = create_app(ServeConfig(str(export_dir), timeout_s=5.0, max_batch_texts=4), predictor=slow)
    batcher = app.state.batcher
    batcher.service.seconds_per_text = 1.0  # as if measured: 1 s per text

    async def scenario():
        async with _asgi_client(app) as c:
            running = asyncio.create_task(c.post("/v1/classify", json={"texts": ["first"]}))
            await _wait_for(slow.started.is_set, "the worker to take the first request")
            # 1 text running + 4 new = 5 s predicted, with under 5 s left: refused without queueing.
            refused = await c.post("/v1/classify", json={"texts": ["a", "b", "c", "d"]})
            depth_after_refusal = batcher.depth
            # 1 running + 2 new = 3 s: admitted.
            admitted = asyncio.create_task(c.post("/v1/classify", json={"texts": ["e", "f"]}))
            await _wait_for(lambda: batcher.depth == 1, "the admitted request to queue")
            slow.gate.set()
            return refused, depth_after_refusal, await running, await admitted

    try:
        refused, depth_after_refusal, first, admitted = asyncio.run(scenario())
    finally:
        slow.gate.set()
        batcher.close()
    err = refused.json()["error"]
    assert refused.status_code == 503 and err["details"]["reason"] == "predicted_wait", refused.text
    assert int(refused.headers["retry-after"]) >= 1 and depth_after_refusal == 0
    assert first.status_code == 200 and admitted.status_code == 200
    assert slow.texts == ["first", "e", "f"]  # a, b, c, d never ran


def test_queued_request_past_its_deadline_is_dropped_without_running(export_dir, shared_predictor):
    slow = GatedPredictor(shared_predictor)
    app = create_app(ServeConfig(str(export_dir), timeout_s=0.3), predictor=slow)
    batcher = app.state.batcher

    async def scenario():
        async with _asgi_client(app) as c:
            running = asyncio.create_task(c.post("/v1/classify", json={"texts": ["running"]}))
            await _wait_for(slow.started.is_set, "the worker to take the first request")
            queued = await c.post("/v1/classify", json={"texts": ["queued"]})  # waits out its deadline
            first = await running
            slow.gate.set()
            await _wait_for(lambda: batcher.busy == 0 and slow.calls == 1, "the running batch to finish")
            await asyncio.sleep(0.3)  # time for the worker to reach "queued", were it still there
            return first, queued

    try:
        first, queued = asyncio.run(scenario())
    finally:
        slow.gate.set()
        batcher.close()
    assert first.status_code == 504 and first.json()["error"]["code"] == "timeout"  # the model was running it
    assert queued.status_code == 503 and queued.json()["error"]["details"]["reason"] == "expired"
    assert slow.texts == ["running"] and batcher.dropped == 1  # "queued" never reached the model


def test_batcher_drops_jobs_that_expired_in_the_queue():
    """The worker's own check: a job whose deadline passed while it waited is answered, not run."""
    gate, calls = threading.Event(), []

    def predict(inputs):
        calls.append(list(inputs))
        gate.wait(10)
        return [{"x": x} for x in inputs]

    async def scenario():
        batcher = Batcher(predict, queue_size=4, max_batch_texts=8)
        try:
            first = batcher.submit(["a"], time.monotonic() + 10)
            await _wait_for(lambda: calls, "the first batch to start")
            late = batcher.submit(["b"], time.monotonic() + 0.05)
            on_time = batcher.submit(["c"], time.monotonic() + 10)
            await asyncio.sleep(0.1)  # "b" expires in the queue; nobody cancels it
            gate.set()
            return await first.future, await asyncio.gather(late.future, return_exceptions=True), await on_time.future, batcher
        finally:
            gate.set()
            batcher.close()

    first, (late,), on_time, batcher = asyncio.run(scenario())
    assert first == [{"x": "a"}] and on_time == [{"x": "c"}]
    assert isinstance(late, Overloaded) and late.reason == "expired"
    assert calls == [["a"], ["c"]] and batcher.dropped == 1


def test_model_slower_than_estimated_gets_503_not_504(export_dir, shared_predictor):
    """The estimate says 10 ms per text but the model takes 300 ms: a (1 text), b (1) and c (3) are all
    admitted; by the time a worker reaches c (0.6 s in, 0.4 s left, 0.9 s of work) it has learnt the
    real cost and answers c 503 at once instead of running it into a 504."""
    model = SlowPredictor(shared_predictor, seconds_per_text=0.3)
    model.gate.clear()  # a finishes only once b has queued: on a busy machine a could otherwise end before b arrives
    app = create_app(ServeConfig(str(export_dir), timeout_s=1.0, max_batch_texts=3), predictor=model)
    batcher = app.state.batcher
    batcher.service.seconds_per_text = 0.01

    async def scenario():
        async with _asgi_client(app) as c:
            a = asyncio.create_task(c.post("/v1/classify", json={"texts": ["a"]}))
            await _wait_for(lambda: batcher.running_texts == 1, "a to run")
            b = asyncio.create_task(c.post("/v1/classify", json={"texts": ["b"]}))
            await _wait_for(lambda: batcher.waiting_texts == 1, "b to queue")
            model.gate.set()
            late = asyncio.create_task(c.post("/v1/classify", json={"texts": ["c1", "c2", "c3"]}))
            return await a, await b, await late

    try:
        a, b, late = asyncio.run(scenario())
    finally:
        batcher.close()
    assert a.status_code == b.status_code == 200
    assert late.status_code == 503 and late.json()["error"]["details"]["reason"] == "would_overrun", late.text
    assert model.texts == ["a", "b"]  # c never ran


def test_service_time_learns_the_fixed_and_per_text_cost():
    service = ServiceTime()
    assert service.estimate(100, 64) == 0.0  # nothing measured: no prediction
    service.observe(0.13, 8)  # one size only: seconds per text
    assert service.line() is None and service.estimate(16, 64) == pytest.approx(0.26)
    for _ in range(20):
        for n in (1, 4, 16, 64):
            service.observe(0.05 + 0.01 * n, n)
    fixed, per_text = service.line()
    assert fixed == pytest.approx(0.05, abs=2e-3) and per_text == pytest.approx(0.01, abs=2e-4)
    # 130 texts in batches of at most 64: two full batches and one of 2, each paying the fixed cost once.
    assert service.estimate(130, 64) == pytest.approx(2 * (0.05 + 0.64) + (0.05 + 0.02), rel=0.02)
    steady = service.margin
    service.observe(2 * (0.05 + 0.01 * 64), 64)  # the machine got busy: twice the predicted time
    assert steady < 1.3 and service.margin > steady + 0.15  # predictions are padded until they are right again


def test_burst_gets_200_or_503_never_504(export_dir, shared_predictor, probe_texts):
    """A burst far past capacity on a real socket: each answer is 200 (equal to the text's answer alone)
    or an immediate 503 with Retry-After; no 504, and the model only ever ran texts that were answered."""
    model = SlowPredictor(shared_predictor, seconds_per_text=0.02)
    config = ServeConfig(str(export_dir), timeout_s=2.0, max_batch_texts=16, queue_size=64)
    app = create_app(config, predictor=model)
    requests = [[probe_texts[(i + k) % len(probe_texts)] for k in range(8)] for i in range(40)]  # 40 x 8 texts = 6.4 s

    async def burst(base):
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=40)) as c:
            await c.post("/v1/classify", json={"texts": probe_texts[:8]})  # times the model
            model.texts.clear()
            return await asyncio.gather(*(c.post("/v1/classify", json={"texts": t}) for t in requests))

    with live_server(app, config) as base:
        answers = asyncio.run(burst(base))
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {200, 503}, statuses
    served = []
    for texts, r in zip(requests, answers):
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1
        else:
            assert_same_answers(r.json()["results"], alone(shared_predictor, texts))
            served.extend(texts)
    assert sorted(model.texts) == sorted(served)  # no model time spent on a request that was refused


def test_request_timeout_is_504_and_worker_survives(export_dir, shared_predictor):
    slow = GatedPredictor(shared_predictor)
    app = create_app(ServeConfig(str(export_dir), timeout_s=0.2), predictor=slow)
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            r = c.post("/v1/classify", json={"texts": ["slow"]})
            assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
            slow.gate.set()
            # The worker still finishes the timed-out batch; until it has, admission may answer 503 (never 5xx else).
            for _ in range(100):
                r = c.post("/v1/classify", json={"texts": ["fast now"]})
                if r.status_code != 503:
                    break
                time.sleep(0.05)
            assert r.status_code == 200, r.text
    finally:
        slow.gate.set()


def test_two_workers_run_two_requests_at_once(export_dir, shared_predictor):
    slow = GatedPredictor(shared_predictor)
    app = create_app(ServeConfig(str(export_dir), workers=2, queue_size=1), predictor=slow)

    async def scenario():
        async with _asgi_client(app) as c:
            first = asyncio.create_task(c.post("/v1/classify", json={"texts": ["one"]}))
            await _wait_for(lambda: slow.calls == 1, "the first worker to start")
            second = asyncio.create_task(c.post("/v1/classify", json={"texts": ["two"]}))
            await _wait_for(lambda: slow.calls == 2, "the second worker to start")
            metrics = (await c.get("/metrics")).text
            slow.gate.set()
            return await first, await second, metrics

    try:
        first, second, metrics = asyncio.run(scenario())
    finally:
        slow.gate.set()
        app.state.batcher.close()
    assert first.status_code == second.status_code == 200
    assert "kronedge_workers_busy 2.0" in metrics and "kronedge_workers 2.0" in metrics


def test_model_failure_is_json_500_and_worker_survives(export_dir, shared_predictor):
    class Flaky:
        calls = 0

        def summary(self):
            return shared_predictor.summary()

        def predict(self, inputs):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("boom")
            return shared_predictor.predict(inputs)

    with TestClient(create_app(ServeConfig(str(export_dir)), predictor=Flaky()), raise_server_exceptions=False) as c:
        r = c.post("/v1/classify", json={"texts": ["a"]})
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal" and "boom" not in r.text
        assert c.post("/v1/classify", json={"texts": ["a"]}).status_code == 200


# ---- batching across concurrent requests: every answer is the text's own ---------------------------------
def _mixed_requests(probe_texts, n: int) -> list[list[str]]:
    """n requests of 1 to 6 texts of different lengths, overlapping, in different orders."""
    variants = list(probe_texts) + [f"{a} {b}" for a, b in zip(probe_texts, probe_texts[3:])]
    return [[variants[(7 * i + 5 * k) % len(variants)] for k in range(1 + i % 6)] for i in range(n)]


class RecordingPredictor(GatedPredictor):
    """Holds the first model call until the test releases it, so that the others queue and get batched."""

    def __init__(self, inner):
        super().__init__(inner)
        self.batches = []

    def predict(self, inputs):
        self.batches.append(len(inputs))
        return super().predict(inputs)


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_requests_batched_answer_each_text_alone(export_dir, shared_predictor, probe_texts, workers):
    model = RecordingPredictor(shared_predictor)
    config = ServeConfig(str(export_dir), max_batch_texts=16, workers=workers, queue_size=64, timeout_s=60)
    app = create_app(config, predictor=model)
    app.state.batcher.service.seconds_per_text = 1e-3  # as if timed: admission control lets them all queue
    requests = _mixed_requests(probe_texts, 48)
    total = sum(len(t) for t in requests)

    async def run(base):
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=48)) as c:
            tasks = [asyncio.create_task(c.post("/v1/classify", json={"texts": t})) for t in requests]
            batcher = app.state.batcher
            await _wait_for(lambda: batcher.waiting_texts + batcher.running_texts == total, "the requests to queue", 30)
            model.gate.set()
            return await asyncio.gather(*tasks)

    try:
        with live_server(app, config) as base:
            answers = asyncio.run(run(base))
    finally:
        model.gate.set()
    assert [r.status_code for r in answers] == [200] * len(requests)
    assert len(model.batches) < len(requests) and max(model.batches) > 6  # requests really shared model runs
    cache = {t: a for t, a in zip(sorted({t for req in requests for t in req}),
                                  alone(shared_predictor, sorted({t for req in requests for t in req})))}
    labels = set()
    for texts, r in zip(requests, answers):
        assert_same_answers(r.json()["results"], [cache[t] for t in texts])
        labels.update(item["label"] for item in r.json()["results"])
    assert labels == {"negative", "positive"}


def test_int8_server_answers_match_the_int8_predictor(host_export_int8, probe_texts):
    """The int8 model served: per text, the label and scores of the same int8 model run alone.

    Dynamic int8 picks activation scales per model run, so a text batched with others can move
    slightly: labels must agree and scores stay within 5e-3 (fp32 is held to 1e-4 above)."""
    predictor = Predictor(host_export_int8, threads=1)
    config = ServeConfig(str(host_export_int8), max_batch_texts=32, timeout_s=60)
    requests = _mixed_requests(probe_texts, 12)
    with TestClient(create_app(config, predictor=predictor)) as c:
        answers = [c.post("/v1/classify", json={"texts": t}) for t in requests]
    for texts, r in zip(requests, answers):
        assert r.status_code == 200, r.text
        assert_same_answers(r.json()["results"], alone(predictor, texts), atol=5e-3)


# ---- oversize bodies on a real socket ------------------------------------------------------------------
@contextlib.contextmanager
def live_server(app, config: ServeConfig):
    """uvicorn with the settings `serve` uses, on 127.0.0.1 (a free port), in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **uvicorn_settings(config)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def raw_post(base: str, size: int, chunked: bool = False, expect_continue: bool = False, chunk: int = 1 << 20):
    """Send a ``size``-byte body with a raw socket, all of it (unless told to wait for 100-continue),
    then read the answer: (status, headers, body). A connection reset on the way fails the test."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        head = ["POST /v1/classify HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
        head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
        if expect_continue:
            head.append("Expect: 100-continue")
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if not expect_continue:
            piece, sent = b"a" * chunk, 0
            while sent < size:
                n = min(chunk, size - sent)
                s.sendall(f"{n:x}\r\n".encode() + piece[:n] + b"\r\n" if chunked else piece[:n])
                sent += n
            if chunked:
                s.sendall(b"0\r\n\r\n")
        return read_answer(s)


def read_answer(s: socket.socket):
    """(status, headers, JSON body) of one HTTP answer on ``s``."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = s.recv(65536)
        assert more, f"connection closed before an answer: {data!r}"
        data += more
    head_bytes, body = data.split(b"\r\n\r\n", 1)
    lines = head_bytes.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        more = s.recv(65536)
        assert more, "connection closed inside the answer"
        body += more
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.fixture(scope="module")
def live(export_dir, shared_predictor):
    config = ServeConfig(str(export_dir))
    with live_server(create_app(config, predictor=shared_predictor), config) as base:
        yield base


@pytest.mark.parametrize("size, chunked", [(10 << 20, False), (100 << 20, False), (10 << 20, True)],
                         ids=["10MB", "100MB", "10MB-chunked"])
def test_oversize_body_gets_a_413_the_client_reads(live, size, chunked):
    status, headers, body = raw_post(live, size, chunked=chunked)
    assert status == 413 and body["error"]["code"] == "body_too_large", body
    assert httpx.get(f"{live}/healthz", timeout=10).status_code == 200


def test_trickled_body_gets_408_at_the_deadline(export_dir, shared_predictor):
    config = ServeConfig(str(export_dir), timeout_s=0.5)
    with live_server(create_app(config, predictor=shared_predictor), config) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"texts\": [")  # and nothing more
            status, headers, body = read_answer(s)
        assert status == 408 and body["error"]["code"] == "body_timeout" and headers["connection"] == "close"
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200


def test_oversize_body_with_httpx(live):
    r = httpx.post(f"{live}/v1/classify", content=b"x" * (10 << 20), headers=JSON, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_oversize_body_announced_with_expect_100_is_refused_before_it_is_sent(live):
    status, headers, body = raw_post(live, 50 << 20, expect_continue=True)
    assert status == 413 and body["error"]["code"] == "body_too_large"


# ---- auth ---------------------------------------------------------------------------------------------
def test_auth_enforced_when_configured(export_dir, shared_predictor):
    app = create_app(ServeConfig(str(export_dir)), predictor=shared_predictor, token=TOKEN)
    body = {"texts": ["hello"]}
    with TestClient(app, raise_server_exceptions=False) as c:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"},
                        {"authorization": f"Bearer {TOKEN}x"}, {"authorization": "Bearer"}):
            r = c.post("/v1/classify", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/metrics").status_code == 401 and c.get("/v1/model").status_code == 401
        ok = {"authorization": f"bearer {TOKEN}"}
        assert c.post("/v1/classify", json=body, headers=ok).status_code == 200
        assert c.get("/metrics", headers=ok).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200  # probes stay open


def test_token_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("KRONEDGE_API_TOKEN", raising=False)
    monkeypatch.delenv("KRONEDGE_API_TOKEN_FILE", raising=False)
    assert resolve_token(ServeConfig("m", host="127.0.0.1")) is None
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org"):
        with pytest.raises(ServeConfigError, match="refusing"):
            resolve_token(ServeConfig("m", host=host))
    assert resolve_token(ServeConfig("m", host="0.0.0.0", allow_no_auth=True)) is None
    monkeypatch.setenv("KRONEDGE_API_TOKEN", TOKEN)
    assert resolve_token(ServeConfig("m", host="0.0.0.0")) == TOKEN
    (tmp_path / "tok").write_text("file-token-abcdefghijkl\n")
    assert resolve_token(ServeConfig("m", host="0.0.0.0", token_file=str(tmp_path / "tok"))) == "file-token-abcdefghijkl"
    monkeypatch.setenv("KRONEDGE_API_TOKEN_FILE", str(tmp_path / "tok"))
    assert resolve_token(ServeConfig("m", host="0.0.0.0")) == "file-token-abcdefghijkl"
    monkeypatch.delenv("KRONEDGE_API_TOKEN_FILE")
    monkeypatch.setenv("KRONEDGE_API_TOKEN", "short")
    with pytest.raises(ServeConfigError, match="shorter"):
        resolve_token(ServeConfig("m"))
    assert is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")
    assert token_matches(f"Bearer {TOKEN}", TOKEN) and not token_matches("Bearer é", TOKEN)


@pytest.mark.parametrize("overrides, match", [
    (dict(queue_size=0), "queue_size"), (dict(timeout_s=0), "timeout"), (dict(port=70000), "port"),
    (dict(threads=0), "threads"), (dict(model_file="model.bin"), "model_file"),
    (dict(max_body_bytes=2048, drain_bytes=1024), "drain_bytes"),
])
def test_config_checks_itself(overrides, match):
    with pytest.raises(ServeConfigError, match=match):
        ServeConfig("m", **overrides)


def test_cli_refuses_public_host_without_auth(export_dir, monkeypatch, capsys):
    monkeypatch.delenv("KRONEDGE_API_TOKEN", raising=False)
    monkeypatch.delenv("KRONEDGE_API_TOKEN_FILE", raising=False)
    assert main([str(export_dir), "--host", "0.0.0.0"]) == 1
    assert "refusing" in capsys.readouterr().err


# ---- one definition of the serve options ----------------------------------------------------------------
def test_both_command_lines_come_from_serve_config(monkeypatch):
    """`python -m runtime.serve` and `kronedge serve` parse the same flags into the same ServeConfig."""
    from typer.testing import CliRunner

    import runtime.serve.server
    from kronedge.cli import app
    from runtime.serve import build_parser
    from runtime.serve.config import from_namespace

    flags = [o.flag for o in cli_options() if not o.positional]
    assert len(flags) >= 17 and "--timeout" in flags and "--drain-bytes" in flags
    assert from_namespace(vars(build_parser().parse_args(["m"]))) == ServeConfig("m")  # defaults agree
    args = ["m", "--port", "9001", "--threads", "2", "--workers", "3", "--timeout", "2.5", "--max-texts", "7",
            "--model-file", "model.ort", "--no-self-check", "--log-text", "--token-file", "t"]
    want = ServeConfig("m", port=9001, threads=2, workers=3, timeout_s=2.5, max_texts=7, model_file="model.ort",
                       self_check=False, log_text=True, token_file="t")
    assert from_namespace(vars(build_parser().parse_args(args))) == want

    seen = []
    monkeypatch.setattr(runtime.serve.server, "serve", seen.append)
    runner = CliRunner()
    for argv, expected in ((["m"], ServeConfig("m")), (args, want)):
        result = runner.invoke(app, ["serve", *argv])
        assert result.exit_code == 0, result.output
        assert seen.pop() == expected
    helped = runner.invoke(app, ["serve", "--help"], terminal_width=200).output
    for flag in flags:
        assert flag in helped, flag


def test_kronedge_serve_cli_refuses_public_host(export_dir, monkeypatch):
    from typer.testing import CliRunner

    from kronedge.cli import app

    monkeypatch.delenv("KRONEDGE_API_TOKEN", raising=False)
    monkeypatch.delenv("KRONEDGE_API_TOKEN_FILE", raising=False)
    result = CliRunner().invoke(app, ["serve", str(export_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "refusing" in result.output
    result = CliRunner().invoke(app, ["serve", str(export_dir), "--queue-size", "0"])
    assert result.exit_code == 1 and "queue_size must be >= 1" in result.output


def test_server_modules_stay_torch_free():
    code = ("import sys, runtime.serve, runtime.serve.app, runtime.serve.server, runtime.serve.__main__\n"
            "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---- metrics and logs ---------------------------------------------------------------------------------
def test_metrics_content(export_dir, shared_predictor):
    with TestClient(create_app(ServeConfig(str(export_dir)), predictor=shared_predictor)) as c:
        c.post("/v1/classify", json={"texts": ["a", "b"]})
        c.post("/v1/classify", content=b"{", headers=JSON)
        r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in r.text.splitlines():  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['kronedge_requests_total{method="POST",route="/v1/classify",status="200"}'] == 1
    assert samples['kronedge_requests_total{method="POST",route="/v1/classify",status="400"}'] == 1
    assert samples['kronedge_errors_total{code="invalid_json"}'] == 1
    assert samples["kronedge_inputs_total"] == 2
    assert "# TYPE kronedge_request_duration_seconds histogram" in r.text
    buckets = [v for k, v in samples.items() if k.startswith("kronedge_request_duration_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 2 and samples["kronedge_request_duration_seconds_count"] == 2
    assert samples["kronedge_queue_depth"] == 0 and samples["kronedge_seconds_per_text"] > 0
    info = next(k for k in samples if k.startswith("kronedge_model_info{"))
    assert f'model_file="{shared_predictor.summary()["model_file"]}"' in info


def test_metrics_count_overload_reasons(export_dir, shared_predictor):
    slow = GatedPredictor(shared_predictor)
    app = create_app(ServeConfig(str(export_dir), queue_size=1), predictor=slow)

    async def scenario():
        async with _asgi_client(app) as c:
            running = asyncio.create_task(c.post("/v1/classify", json={"texts": ["one"]}))
            await _wait_for(slow.started.is_set, "the first request to run")
            queued = asyncio.create_task(c.post("/v1/classify", json={"texts": ["two"]}))
            await _wait_for(lambda: app.state.batcher.depth == 1, "the second request to queue")
            assert (await c.post("/v1/classify", json={"texts": ["three"]})).status_code == 503
            slow.gate.set()
            await running, await queued
            return (await c.get("/metrics")).text

    try:
        text = asyncio.run(scenario())
    finally:
        slow.gate.set()
        app.state.batcher.close()
    assert 'kronedge_overload_rejections_total{reason="queue_full"} 1.0' in text


def test_one_json_log_line_per_request_without_text(export_dir, shared_predictor, caplog):
    caplog.set_level(logging.INFO, logger="kronedge.access")
    with TestClient(create_app(ServeConfig(str(export_dir)), predictor=shared_predictor)) as c:
        c.post("/v1/classify", json={"texts": ["private words"]}, headers={"x-request-id": "abc-1"})
        c.post("/v1/classify", json={"texts": []})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "kronedge.access"]
    assert [(l["status"], l["inputs"]) for l in lines] == [(200, 1), (422, 0)]
    assert lines[0]["request_id"] == "abc-1" and lines[1]["error"] == "empty_request"
    assert "private words" not in caplog.text

    caplog.clear()
    with TestClient(create_app(ServeConfig(str(export_dir), log_text=True), predictor=shared_predictor)) as c:
        c.post("/v1/classify", json={"texts": ["private words"]})
    assert json.loads(caplog.records[-1].getMessage())["texts"] == ["private words"]


def test_a_failed_start_leaves_logging_alone(tmp_path):
    """`serve` points the access log at stdout only while uvicorn runs: a start that fails (here: no
    model) must not leave a handler behind that swallows the log records of whatever runs next."""
    from runtime.serve.app import access_log
    from runtime.serve.server import access_log_to_stdout, serve

    before = (list(access_log.handlers), access_log.propagate, access_log.level)
    with pytest.raises((ValueError, OSError)):
        serve(ServeConfig(str(tmp_path)))
    assert (list(access_log.handlers), access_log.propagate, access_log.level) == before
    with access_log_to_stdout():
        assert len(access_log.handlers) == len(before[0]) + 1 and not access_log.propagate
    assert (list(access_log.handlers), access_log.propagate, access_log.level) == before


# ---- fuzzing: no input may produce a 5xx ----------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=60),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"texts": st.lists(st.one_of(st.text(max_size=70), json_values), max_size=6)}),
    st.fixed_dictionaries({"pairs": st.lists(st.lists(st.text(max_size=30), max_size=3), max_size=5)}),
    st.dictionaries(st.sampled_from(["texts", "pairs", "x"]), json_values, max_size=3),
)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(body=bodies)
def test_fuzz_json_bodies_never_5xx(client, pair_client, body):
    for c in (client, pair_client):
        r = c.post("/v1/classify", content=json.dumps(body).encode(), headers=JSON)
        assert r.status_code < 500, (body, r.text)
        assert r.status_code in (200, 413, 422), (body, r.text)
        if r.status_code != 200:
            assert r.json()["error"]["code"]


@FUZZ
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(
    ["application/json", "application/json; charset=utf-16", "text/plain", "", "application/json;;", "*/*"]))
def test_fuzz_raw_bytes_never_5xx(client, raw, content_type):
    r = client.post("/v1/classify", content=raw, headers={"content-type": content_type})
    assert r.status_code < 500 and "error" in r.json()


# ---- the real thing: `python -m runtime.serve` on 127.0.0.1 --------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_m_runtime_serve_on_loopback(export_dir, probe_texts, shared_predictor):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRONEDGE_API_TOKEN")}
    command = [sys.executable, "-m", "runtime.serve", str(export_dir), "--host", "127.0.0.1", "--threads", "1"]
    # --port 0: the system picks a free port, and the start event says which
    proc = subprocess.Popen([*command, "--port", "0"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    start_line = []
    try:
        assert select.select([proc.stdout], [], [], 30)[0], "no start event in 30 s"
        start_line.append(proc.stdout.readline())
        port = json.loads(start_line[0])["port"]
        assert port > 0
        busy = subprocess.run([*command, "--port", str(port)], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=60)
        assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr, busy.stderr
        assert '"event": "start"' not in busy.stdout  # refused before it announces a start
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready in 30 s"
            time.sleep(0.2)
        seeded = httpx.get(f"{base}/metrics", timeout=10).text  # before any request
        r = httpx.post(f"{base}/v1/classify", json={"texts": probe_texts}, timeout=10)
        assert r.status_code == 200
        assert_same_answers(r.json()["results"], alone(shared_predictor, probe_texts))
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    events = [json.loads(line) for line in "".join(start_line + [out]).splitlines() if line.startswith("{")]
    assert events[0]["event"] == "start" and events[0]["auth"] is False
    assert any(e.get("path") == "/v1/classify" and e.get("status") == 200 for e in events)
    # Timed at start-up, so admission control can predict waits from the first request on.
    per_text = [float(line.split()[-1]) for line in seeded.splitlines() if line.startswith("kronedge_seconds_per_text ")]
    assert per_text and per_text[0] > 0
