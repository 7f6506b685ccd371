"""The HTTP server: results, every bad input -> its 4xx JSON error, overload -> 503, timeout, auth, metrics,
logs, fuzzing (no 5xx), and one real uvicorn process on 127.0.0.1."""

import asyncio
import json
import logging
import os
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
from runtime.serve import ServeConfig, create_app, is_loopback, main, resolve_token, token_matches
from test_runtime import PAIRS, SENTENCES, build_tiny_export, make_pair_variant, torch_logits

TOKEN = "s3cret-token-0123456789"
LIMITS = dict(max_texts=4, max_chars=50, max_body_bytes=2048)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny-export")


@pytest.fixture(scope="session")
def pair_dir(export_dir, tmp_path_factory):
    return make_pair_variant(export_dir, tmp_path_factory.getbasetemp() / "tiny-export-pair")


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


# ---- results ------------------------------------------------------------------------------------------
def test_classify_texts_matches_torch(export_dir, shared_predictor):
    texts = [t for t in SENTENCES if t.strip()]  # includes one longer than max_length tokens
    with TestClient(create_app(ServeConfig(str(export_dir)), predictor=shared_predictor)) as c:
        r = c.post("/v1/classify", json={"texts": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    ref = softmax(torch_logits(export_dir)[[SENTENCES.index(t) for t in texts]])
    assert len(body["results"]) == len(texts)
    for item, probs in zip(body["results"], ref):
        assert item["label"] == ["negative", "positive"][int(probs.argmax())]
        np.testing.assert_allclose([item["scores"]["negative"], item["scores"]["positive"]], probs, atol=1e-4)
        assert item["score"] == pytest.approx(probs.max(), abs=1e-4)
    assert body["model"] == "sst2" and body["latency_ms"] >= body["inference_ms"] > 0
    assert r.headers["x-request-id"] == body["request_id"]


def test_classify_pairs_matches_torch(pair_dir, export_dir):
    with TestClient(create_app(ServeConfig(str(pair_dir)), predictor=Predictor(pair_dir, threads=1))) as c:
        r = c.post("/v1/classify", json={"pairs": [list(p) for p in PAIRS]})
    assert r.status_code == 200, r.text
    ref = softmax(torch_logits(export_dir)[len(SENTENCES):])
    got = [[i["scores"]["entailment"], i["scores"]["not_entailment"]] for i in r.json()["results"]]
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_json_with_charset_and_bom_is_accepted(client):
    r = client.post("/v1/classify", content="\ufeff{\"texts\": [\"fine\"]}".encode(),
                    headers={"content-type": "Application/JSON; charset=UTF-8"})
    assert r.status_code == 200, r.text


def test_model_health_ready_openapi(client):
    info = client.get("/v1/model").json()
    assert info["labels"] == ["negative", "positive"] and info["pair_input"] is False
    assert info["limits"]["max_texts"] == LIMITS["max_texts"] and info["model_file"] == "model.onnx"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    schema = client.get("/openapi.json").json()
    body_schema = schema["paths"]["/v1/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"texts", "pairs"} <= set(body_schema["properties"])
    assert {"413", "415", "422", "503"} <= set(schema["paths"]["/v1/classify"]["post"]["responses"])


# ---- every listed bad input -> the right 4xx with a JSON error -------------------------------------------
JSON = {"content-type": "application/json"}
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
    ("unknown field", b'{"texts": ["a"], "top_k": 2}', JSON, 422, "invalid_request"),
    ("texts not a list", b'{"texts": "a"}', JSON, 422, "invalid_request"),
    ("no texts", b'{"texts": []}', JSON, 422, "empty_request"),
    ("too many texts", json.dumps({"texts": ["a"] * 5}).encode(), JSON, 422, "too_many_inputs"),
    ("text too long", json.dumps({"texts": ["a" * 51]}).encode(), JSON, 422, "text_too_long"),
    ("empty text", b'{"texts": ["ok", ""]}', JSON, 422, "empty_item"),
    ("blank text", b'{"texts": [" \\n\\t "]}', JSON, 422, "empty_item"),
    ("number item", b'{"texts": [1]}', JSON, 422, "invalid_item"),
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


def test_deep_nesting_under_the_size_limit_is_400_not_500(export_dir, shared_predictor):
    app = create_app(ServeConfig(str(export_dir), max_body_bytes=1 << 20), predictor=shared_predictor)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/classify", content=b"[" * 200_000 + b"]" * 200_000, headers=JSON)
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
    ({"pairs": [["a", ""]]}, "empty_item"),
    ({"pairs": [["a", 3]]}, "invalid_item"),
])
def test_bad_pairs(pair_client, body, code):
    r = pair_client.post("/v1/classify", json=body)
    assert r.status_code == 422 and r.json()["error"]["code"] == code


def test_wrong_method_and_path_are_json(client):
    r = client.get("/v1/classify")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# ---- overload and timeout -----------------------------------------------------------------------------
class GatedPredictor:
    """Wraps a predictor; each predict call waits until the test opens the gate."""

    def __init__(self, inner):
        self.inner, self.started, self.gate = inner, threading.Event(), threading.Event()
        self.calls = 0

    def summary(self):
        return self.inner.summary()

    def predict(self, inputs):
        self.calls += 1
        self.started.set()
        self.gate.wait(20)
        return self.inner.predict(inputs)


async def _wait_for(cond, what, limit_s=10.0):
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_full_queue_answers_503_with_retry_after(export_dir, shared_predictor):
    slow = GatedPredictor(shared_predictor)
    app = create_app(ServeConfig(str(export_dir), queue_size=1, retry_after_s=2), predictor=slow)
    batcher = app.state.batcher

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
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
    assert rejected.json()["error"]["code"] == "overloaded"
    assert first.status_code == 200 and second.status_code == 200
    assert ready.status_code == 200  # busy is not unready


def test_two_workers_run_two_requests_at_once(export_dir, shared_predictor):
    slow = GatedPredictor(shared_predictor)
    app = create_app(ServeConfig(str(export_dir), workers=2, queue_size=1), predictor=slow)

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
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
    assert "kronedge_workers_busy 2" in metrics and "kronedge_workers 2" in metrics


def test_request_timeout_is_504_and_worker_survives(export_dir, shared_predictor):
    slow = GatedPredictor(shared_predictor)
    app = create_app(ServeConfig(str(export_dir), timeout_s=0.2), predictor=slow)
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            r = c.post("/v1/classify", json={"texts": ["slow"]})
            assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
            slow.gate.set()
            assert c.post("/v1/classify", json={"texts": ["fast now"]}).status_code == 200
    finally:
        slow.gate.set()


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
        with pytest.raises(ValueError, match="refusing"):
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
    with pytest.raises(ValueError, match="shorter"):
        resolve_token(ServeConfig("m"))
    assert is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")
    assert token_matches(f"Bearer {TOKEN}", TOKEN) and not token_matches("Bearer é", TOKEN)


def test_cli_refuses_public_host_without_auth(export_dir, monkeypatch, capsys):
    monkeypatch.delenv("KRONEDGE_API_TOKEN", raising=False)
    monkeypatch.delenv("KRONEDGE_API_TOKEN_FILE", raising=False)
    assert main([str(export_dir), "--host", "0.0.0.0"]) == 1
    assert "refusing" in capsys.readouterr().err


# ---- metrics and logs ---------------------------------------------------------------------------------
def test_metrics_content(export_dir, shared_predictor):
    with TestClient(create_app(ServeConfig(str(export_dir)), predictor=shared_predictor)) as c:
        c.post("/v1/classify", json={"texts": ["a", "b"]})
        c.post("/v1/classify", content=b"{", headers=JSON)
        r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'kronedge_requests_total{route="/v1/classify",method="POST",status="200"} 1' in text
    assert 'kronedge_requests_total{route="/v1/classify",method="POST",status="400"} 1' in text
    assert 'kronedge_errors_total{code="invalid_json"} 1' in text
    assert "kronedge_inputs_total 2" in text
    assert "# TYPE kronedge_request_duration_seconds histogram" in text
    buckets = [int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("kronedge_request_duration_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 2
    assert "kronedge_request_duration_seconds_count 2" in text and "kronedge_queue_depth 0" in text
    assert 'kronedge_model_info{task="sst2",model_file="model.onnx"' in text
    for line in text.splitlines():  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


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


# ---- the real thing: uvicorn on 127.0.0.1 via `python -m runtime.serve` ----------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_m_runtime_serve_on_loopback(export_dir):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRONEDGE_API_TOKEN")}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.serve", str(export_dir), "--host", "127.0.0.1",
                             "--port", str(port), "--threads", "1"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
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
        r = httpx.post(f"{base}/v1/classify", json={"texts": ["a fine film"]}, timeout=10)
        assert r.status_code == 200 and r.json()["results"][0]["label"] in ("negative", "positive")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert events[0]["event"] == "start" and events[0]["auth"] is False
    assert any(e.get("path") == "/v1/classify" and e.get("status") == 200 for e in events)


def test_kronedge_serve_cli(export_dir, monkeypatch):
    from typer.testing import CliRunner

    from kronedge.cli import app

    monkeypatch.delenv("KRONEDGE_API_TOKEN", raising=False)
    monkeypatch.delenv("KRONEDGE_API_TOKEN_FILE", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--queue-size" in result.output
    result = runner.invoke(app, ["serve", str(export_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "refusing" in result.output
