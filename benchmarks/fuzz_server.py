"""Hostile-traffic check of `python -m runtime.serve` on loopback: malformed HTTP, malformed and hostile
bodies, oversize bodies, then a burst of concurrent full-size requests. Bounded in count and time, and
127.0.0.1 only: it starts its own server on a free port and stops it at the end.

    nice -n 5 python benchmarks/fuzz_server.py MODEL_DIR --requests 10000 --seconds 600
    python benchmarks/fuzz_server.py --render benchmarks/results/fuzz_server.json     # re-render the .md only

What counts as a pass (each is a line of the report, and the exit status):
  - no 5xx other than 503, as seen by the client and in the server's own /metrics;
  - no 504 anywhere, the burst included (admission control answers 503 + Retry-After at once);
  - a 10 MB and a 100 MB body each get a 413 that the client reads after sending the whole body;
  - the server is alive at the end: /healthz, /readyz and a valid request answer 200.

Requests go over raw sockets (one connection each) so that broken HTTP can be sent at all; the burst
uses httpx. Writes OUT.json and OUT.md (default benchmarks/results/fuzz_server).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import httpx

from runtime import hostinfo

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # never another interface
SERVE_DISTS = hostinfo.RUNTIME_DISTS + ("fastapi", "starlette", "uvicorn", "h11", "pydantic", "prometheus_client", "httpx")
NO_STATUS = ("closed", "reset", "client_timeout")  # outcomes without an HTTP status


# ---- the server under test ----------------------------------------------------------------------------
class ServerProcess:
    """`python -m runtime.serve` on 127.0.0.1 with its stdout (access log) and stderr in files, so a flood of
    log lines can never fill a pipe and stall it."""

    def __init__(self, model_dir: str, extra: list[str], logs: Path):
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        self.base = f"http://{HOST}:{self.port}"
        self.cmd = [sys.executable, "-m", "runtime.serve", model_dir, "--host", HOST, "--port", str(self.port), *extra]
        self.stdout, self.stderr = open(logs / "access.log", "wb"), open(logs / "stderr.log", "wb")
        self.stderr_path = logs / "stderr.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRONEDGE_API_TOKEN")}
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=env, stdout=self.stdout, stderr=self.stderr)

    def wait_ready(self, limit_s: float = 180) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.stderr_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError("server not ready in time")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.stdout.close()
        self.stderr.close()
        return self.proc.returncode


# ---- a raw HTTP/1.1 client ----------------------------------------------------------------------------
@dataclass
class Answer:
    outcome: str  # "200", "413", ... or one of NO_STATUS
    headers: dict
    body: bytes


async def read_answer(reader: asyncio.StreamReader, head_request: bool = False) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()[1]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if status.startswith("1"):  # 100 Continue: the real answer follows
        return await read_answer(reader, head_request)
    if head_request:  # the answer to HEAD has headers only
        body = b""
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        body = await reader.read(1 << 20)
    return Answer(status, headers, body)


async def exchange(port: int, send: Callable, timeout: float) -> Answer:
    """Open a connection, let ``send(writer)`` write the request, read one answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return Answer("reset", {}, b"")
    try:
        await asyncio.wait_for(send(writer), timeout)
        return await asyncio.wait_for(read_answer(reader, getattr(send, "head", False)), timeout)
    except (ConnectionResetError, BrokenPipeError):
        return Answer("reset", {}, b"")
    except (asyncio.IncompleteReadError, IndexError, ValueError):
        return Answer("closed", {}, b"")
    except asyncio.TimeoutError:
        return Answer("client_timeout", {}, b"")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def raw(data: bytes, head: bool = False) -> Callable:
    async def send(writer):
        writer.write(data)
        await writer.drain()
    send.head = head  # a HEAD request: its answer has no body to read
    return send


def http(method: str, path: str, body: bytes = b"", headers: Optional[dict] = None, version: str = "HTTP/1.1",
         length: bool = True) -> bytes:
    hdrs = {"Host": f"{HOST}", "Connection": "close", **(headers or {})}
    if length and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    return head.encode("latin-1", "replace") + body


JSON = {"Content-Type": "application/json"}


def post(body, headers: Optional[dict] = None) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http("POST", "/v1/classify", data, {**JSON, **(headers or {})})


# ---- the cases ----------------------------------------------------------------------------------------
class Cases:
    """Each method ``case_<kind>(rng)`` returns ``(send, expected statuses or None)``; the table of weights
    decides how often each kind is drawn."""

    WEIGHTS = {
        "garbage_request_line": 4, "bad_method": 3, "bad_version": 2, "huge_header": 2, "many_headers": 2,
        "bad_content_length": 3, "cl_and_te": 2, "bad_chunked": 3, "long_url": 2, "odd_paths": 4,
        "wrong_method": 4, "auth_junk": 2, "request_id_junk": 2, "random_bytes_body": 6, "broken_json": 6,
        "deep_nesting": 3, "json_numbers": 3, "wrong_types": 8, "limits": 8, "unicode": 8, "content_types": 5,
        "oversize_small": 3, "pairs_and_fields": 4, "valid": 10, "truncated_body": 0.3, "early_close": 2,
        "pipelined": 2, "expect_continue": 1,
    }

    def __init__(self, texts: list[str]):
        self.texts = texts

    def text(self, rng: random.Random) -> str:
        return rng.choice(self.texts)

    def case_garbage_request_line(self, rng):
        return raw(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) + b"\r\n\r\n"), None

    def case_bad_method(self, rng):
        method = rng.choice(["FOO", "G ET", "GET\x00", "POSTPOST" * 20, "", "get", "CONNECT"])
        return raw(http(method, "/v1/classify", b'{"texts": ["a"]}', JSON)), None

    def case_bad_version(self, rng):
        version = rng.choice(["HTTP/9.9", "HTTP/1", "HTTX/1.1", "HTTP/1.1 extra", "HTTP/0.9"])
        return raw(http("POST", "/v1/classify", b'{"texts": ["a"]}', JSON, version=version)), None

    def case_huge_header(self, rng):
        return raw(http("GET", "/healthz", headers={"X-Big": "a" * rng.choice([20_000, 70_000, 200_000])})), None

    def case_many_headers(self, rng):
        return raw(http("GET", "/v1/model", headers={f"X-H{i}": "v" for i in range(rng.choice([100, 500, 2000]))})), None

    def case_bad_content_length(self, rng):
        value = rng.choice(["abc", "-1", "1e3", "0x10", " 5", "5, 6", "99999999999999999999999", "+5"])
        return raw(http("POST", "/v1/classify", b'{"texts": ["a"]}', {**JSON, "Content-Length": value})), None

    def case_cl_and_te(self, rng):
        body = b'5\r\n{"tex\r\n0\r\n\r\n'
        return raw(http("POST", "/v1/classify", body, {**JSON, "Content-Length": "4", "Transfer-Encoding": "chunked"})), None

    def case_bad_chunked(self, rng):
        body = rng.choice([b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nabc\r\n0\r\n\r\n", b"-1\r\n\r\n", b"ffffffffffffffff\r\nab\r\n",
                           b"3\r\nabc0\r\n\r\n"])
        return raw(http("POST", "/v1/classify", body, {**JSON, "Transfer-Encoding": "chunked"})), None

    def case_long_url(self, rng):
        return raw(http("GET", "/v1/model?" + "a=" + "b" * rng.choice([2_000, 9_000, 70_000]))), None

    def case_odd_paths(self, rng):
        path = rng.choice(["/../../etc/passwd", "/v1/classify/../model", "/%2e%2e/%2e%2e", "/v1//classify", "/%00",
                           "/v1/classify?texts=a", "//", "/docs/../openapi.json", "*", "http://evil.example/v1/model",
                           "/v1/%ff%fe", "/metrics?format=json", "/" + "a/" * 500])
        return raw(http(rng.choice(["GET", "POST"]), path, b'{"texts": ["a"]}', JSON)), None

    def case_wrong_method(self, rng):
        method = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"])
        path = rng.choice(["/v1/classify", "/v1/model", "/healthz", "/readyz", "/metrics"])
        return raw(http(method, path, b'{"texts": ["a"]}', JSON), head=method == "HEAD"), None

    def case_auth_junk(self, rng):
        value = rng.choice(["Bearer", "Bearer " + "x" * 10_000, "Basic Zm9vOmJhcg==", "bearer \xff\xfe", "Bearer a b c"])
        return raw(post({"texts": [self.text(rng)]}, {"Authorization": value})), {"200", "503"}

    def case_request_id_junk(self, rng):
        value = rng.choice(["x" * 5000, "\x7f\x01", "é" * 10, "", "a\tb"])
        return raw(post({"texts": [self.text(rng)]}, {"X-Request-ID": value})), {"200", "503"}

    def case_random_bytes_body(self, rng):
        return raw(post(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 3000))))), {"400", "413", "422"}

    def case_broken_json(self, rng):
        body = rng.choice([b'{"texts": ["a",]}', b'{"texts": ["a"', b"", b"{", b"}", b"nul", b'{"texts": [\'a\']}',
                           b'{"texts": ["a"]} trailing', b'{texts: ["a"]}', b'{"texts": ["\\x41"]}', b"\x00" * 10,
                           b'{"texts": ["a"]}{"texts": ["b"]}', b'{"texts": ["a\nb"]}'])
        return raw(post(body)), {"400", "422"}

    def case_deep_nesting(self, rng):
        depth = rng.choice([100, 1000, 50_000, 130_000])
        return raw(post(b'{"texts": ' + b"[" * depth + b"]" * depth + b"}")), {"400", "413", "422"}

    def case_json_numbers(self, rng):
        body = rng.choice([b'{"texts": [NaN]}', b'{"texts": [Infinity]}', b'{"texts": [1e999999]}',
                           b'{"texts": [' + b"9" * 5000 + b"]}", b'{"texts": [-0.0]}', b'{"texts": 1e400}'])
        return raw(post(body)), {"400", "422"}

    def case_wrong_types(self, rng):
        value = rng.choice([None, 1, True, 3.5, "a", {}, {"texts": ["a"]}, [[]], [None], [1, 2], [{"t": "a"}],
                            [["a", "b"]], [[["deep"]]], ["ok", None]])
        key = rng.choice(["texts", "pairs"])
        return raw(post({key: value})), {"422"}

    def case_limits(self, rng):
        kind = rng.randrange(5)
        if kind == 0:
            body = {"texts": [self.text(rng) for _ in range(rng.randint(33, 200))]}
        elif kind == 1:
            body = {"texts": ["a" * rng.randint(2001, 60_000)]}
        elif kind == 2:
            body = {"texts": [rng.choice(["", " ", "\n\t", "\u3000", "\u00a0 "])]}
        elif kind == 3:
            body = {"texts": []}
        else:
            body = {"texts": ["x"] * 32 + [""]}
        return raw(post(body)), {"413", "422"}

    def case_unicode(self, rng):
        choice = rng.randrange(9)
        if choice == 0:
            return raw(post(b'{"texts": ["\\ud800"]}')), {"422"}
        if choice == 1:
            return raw(post(b'{"texts": ["caf\xe9"]}')), {"400"}
        if choice == 2:
            return raw(post(b'{"texts": ["\xc0\xaf overlong"]}')), {"400"}
        if choice == 3:
            return raw(post("\ufeff".encode() + json.dumps({"texts": [self.text(rng)]}).encode())), {"200", "503"}
        if choice == 4:
            return raw(post(json.dumps({"texts": ["a"]}).encode("utf-16"))), {"400"}
        text = rng.choice(["\u202eevil\u202c", "zero\u200bwidth", "🎬" * 300, "\x00\x01\x1f control", "ﷺ" * 100,
                           "Ünïcödé " * 50, "\ue000 private use", "a\u0300\u0301\u0302" * 100])
        return raw(post({"texts": [text]})), {"200", "503", "422"}

    def case_content_types(self, rng):
        ct = rng.choice(["text/plain", "", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/json; charset=latin-1", "application/json; charset=utf-16", "*/*",
                         "application/jsonx", "application/json;;;", "APPLICATION/JSON; charset=\"utf-8\""])
        return raw(http("POST", "/v1/classify", b'{"texts": ["fine"]}', {"Content-Type": ct} if ct else {})), None

    def case_oversize_small(self, rng):
        size = rng.choice([262_145, 400_000, 1 << 20, 3 << 20])
        chunked = rng.random() < 0.5
        return self.body_sender(size, chunked), {"413"}

    def case_pairs_and_fields(self, rng):
        body = rng.choice([{"pairs": [["a", "b"]]}, {"texts": ["a"], "pairs": [["a", "b"]]}, {}, {"texts": ["a"], "top_k": 3},
                           {"TEXTS": ["a"]}, {"texts": ["a"], "texts ": ["b"]}, {"": ["a"]}])
        return raw(post(body)), {"422"}

    def case_valid(self, rng):
        return raw(post({"texts": [self.text(rng) for _ in range(rng.randint(1, 4))]})), {"200", "503"}

    def case_truncated_body(self, rng):
        # Announces more than it sends, then waits: the server answers 408 at the request's deadline.
        return raw(http("POST", "/v1/classify", b'{"texts": ["a', {**JSON, "Content-Length": "500"})), None

    def case_early_close(self, rng):
        async def send(writer):
            writer.write(http("POST", "/v1/classify", b'{"texts": ["a', {**JSON, "Content-Length": "100000"}))
            await writer.drain()
            writer.transport.abort()  # gone mid-body: the server must not count a 500
        return send, None

    def case_pipelined(self, rng):
        one = http("POST", "/v1/classify", json.dumps({"texts": [self.text(rng)]}).encode(), {**JSON, "Connection": "keep-alive"})
        return raw(one + one + http("GET", "/healthz")), {"200", "503"}

    def case_expect_continue(self, rng):
        return raw(http("POST", "/v1/classify", b"", {**JSON, "Content-Length": str(50 << 20), "Expect": "100-continue"},
                        length=False)), {"413"}

    @staticmethod
    def body_sender(size: int, chunked: bool = False, piece: int = 1 << 20) -> Callable:
        """Send a ``size``-byte body in full (chunked or with Content-Length) before reading the answer."""
        async def send(writer):
            headers = {**JSON, ("Transfer-Encoding" if chunked else "Content-Length"): ("chunked" if chunked else str(size))}
            writer.write(http("POST", "/v1/classify", b"", headers, length=False))
            block, sent = b"a" * piece, 0
            while sent < size:
                n = min(piece, size - sent)
                writer.write(f"{n:x}\r\n".encode() + block[:n] + b"\r\n" if chunked else block[:n])
                await writer.drain()
                sent += n
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
        return send


# ---- the run ------------------------------------------------------------------------------------------
class Fuzzer:
    """Draws cases, sends them with bounded concurrency, and tallies outcomes per kind."""

    def __init__(self, port: int, cases: Cases, seed: int, timeout: float):
        self.port, self.cases, self.timeout = port, cases, timeout
        self.rng = random.Random(seed)
        kinds = list(Cases.WEIGHTS)
        self.kinds, self.weights = kinds, [Cases.WEIGHTS[k] for k in kinds]
        self.by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.unexpected: list[dict] = []
        self.sent = 0

    async def one(self) -> None:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        send, expected = getattr(self.cases, f"case_{kind}")(self.rng)
        answer = await exchange(self.port, send, self.timeout)
        self.by_kind[kind][answer.outcome] += 1
        if expected is not None and answer.outcome not in expected and len(self.unexpected) < 50:
            self.unexpected.append({"kind": kind, "outcome": answer.outcome, "body": answer.body[:300].decode("utf-8", "replace")})

    async def run(self, requests: int, seconds: float, concurrency: int) -> float:
        deadline = time.monotonic() + seconds
        start = time.monotonic()

        async def worker():
            while self.sent < requests and time.monotonic() < deadline:
                self.sent += 1
                await self.one()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.monotonic() - start

    def histogram(self) -> dict[str, int]:
        total = collections.Counter()
        for counter in self.by_kind.values():
            total.update(counter)
        return dict(sorted(total.items()))


async def big_body(port: int, size: int) -> dict:
    """Send a ``size``-byte body in full and read the answer (the client-readable 413 check)."""
    start = time.perf_counter()
    answer = await exchange(port, Cases.body_sender(size), timeout=120)
    code = None
    if answer.outcome == "413":
        try:
            code = json.loads(answer.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            pass
    return {"bytes": size, "outcome": answer.outcome, "error_code": code, "seconds": round(time.perf_counter() - start, 2),
            "readable_413": answer.outcome == "413" and code == "body_too_large"}


async def burst(base: str, texts: list[str], n: int, per_request: int) -> dict:
    """``n`` concurrent requests of ``per_request`` texts each, all sent at once."""
    rng = random.Random(1)
    bodies = [{"texts": [rng.choice(texts) for _ in range(per_request)]} for _ in range(n)]
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        async def one(body):
            start = time.perf_counter()
            try:
                r = await client.post("/v1/classify", json=body)
            except httpx.TransportError as exc:
                return type(exc).__name__, time.perf_counter() - start, None
            return str(r.status_code), time.perf_counter() - start, r.headers.get("retry-after")

        start = time.perf_counter()
        results = await asyncio.gather(*(one(b) for b in bodies))
        wall = time.perf_counter() - start
    statuses = collections.Counter(s for s, _, _ in results)
    by_status = {s: sorted(t for st, t, _ in results if st == s) for s in statuses}
    return {"requests": n, "texts_per_request": per_request, "statuses": dict(sorted(statuses.items())),
            "seconds": round(wall, 2),
            "max_seconds_by_status": {s: round(ts[-1], 3) for s, ts in by_status.items()},
            "median_seconds_by_status": {s: round(ts[len(ts) // 2], 3) for s, ts in by_status.items()},
            "retry_after_values": sorted({ra for s, _, ra in results if s == "503" and ra is not None}),
            "every_503_has_retry_after": all(ra is not None for s, _, ra in results if s == "503")}


def scrape(base: str) -> dict:
    """The server's own counts from /metrics: requests by status, errors by code, 503s by reason."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    out = {"status": collections.Counter(), "error": collections.Counter(), "overload": collections.Counter(),
           "admission": {}}
    for line in text.splitlines():
        m = re.match(r"kronedge_(seconds_per_text|predicted_full_batch_seconds|admission_margin) ([\d.e+-]+)$", line)
        if m:
            out["admission"][m[1]] = round(float(m[2]), 4)
        m = re.match(r'kronedge_requests_total\{.*status="(\d+)".*\} ([\d.e+]+)', line)
        if m:
            out["status"][m[1]] += int(float(m[2]))
        m = re.match(r'kronedge_errors_total\{code="([^"]+)"\} ([\d.e+]+)', line)
        if m:
            out["error"][m[1]] += int(float(m[2]))
        m = re.match(r'kronedge_overload_rejections_total\{reason="([^"]+)"\} ([\d.e+]+)', line)
        if m:
            out["overload"][m[1]] += int(float(m[2]))
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def alive_check(base: str, text: str) -> dict:
    out = {}
    try:
        out["healthz"] = httpx.get(f"{base}/healthz", timeout=10).status_code
        out["readyz"] = httpx.get(f"{base}/readyz", timeout=10).status_code
        out["classify"] = httpx.post(f"{base}/v1/classify", json={"texts": [text]}, timeout=30).status_code
    except httpx.TransportError as exc:
        out["error"] = type(exc).__name__
    out["alive"] = out.get("healthz") == 200 and out.get("readyz") == 200 and out.get("classify") == 200
    return out


def bad_5xx(histogram: dict) -> dict:
    return {k: v for k, v in histogram.items() if k.isdigit() and k.startswith("5") and k != "503"}


def sentences() -> list[str]:
    from kronedge.data import load_task

    return list(load_task("sst2", split="dev").texts)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--requests", type=int, default=10_000, help="hostile requests to send (the burst is extra)")
    p.add_argument("--seconds", type=float, default=600, help="stop the hostile phase after this long regardless")
    p.add_argument("--concurrency", type=int, default=8, help="hostile requests in flight at once")
    p.add_argument("--burst", default="64x32", help="REQUESTSxTEXTS of the concurrent burst")
    p.add_argument("--bursts", type=int, default=2, help="bursts, one after the other (the first meets a server that has "
                                                         "only seen small batches)")
    p.add_argument("--big-bodies", type=int, nargs="*", default=[10 << 20, 100 << 20], help="oversize bodies sent in full")
    p.add_argument("--timeout", type=float, default=15, help="client wait per hostile request (more than the server's "
                                                             "--timeout, so that its 408s are seen)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-args", default="", help="extra `python -m runtime.serve` flags, e.g. '--max-length 64'")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fuzz_server"), help="writes OUT.json and OUT.md")
    p.add_argument("--note", default="", help="free text stored with the results (e.g. how the model was made)")
    args = p.parse_args(argv)
    m = re.fullmatch(r"(\d+)x(\d+)", args.burst)
    if not m:
        p.error("--burst must be REQUESTSxTEXTS, e.g. 64x32")
    if args.requests < 1 or args.seconds <= 0 or args.concurrency < 1:
        p.error("--requests, --seconds and --concurrency must be positive")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through `finally`: the server is stopped

    texts = sentences()
    load_at_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="kronedge-fuzz-") as logs:
        server = ServerProcess(args.model_dir, args.server_args.split(), Path(logs))
        try:
            server.wait_ready()
            info = httpx.get(f"{server.base}/v1/model", timeout=10).json()
            fuzzer = Fuzzer(server.port, Cases(texts), args.seed, args.timeout)
            hostile_s = asyncio.run(fuzzer.run(args.requests, args.seconds, args.concurrency))
            big = [asyncio.run(big_body(server.port, size)) for size in args.big_bodies]
            bursts = []
            for _ in range(args.bursts):
                admission = scrape(server.base)["admission"]  # what the server predicts as the burst arrives
                bursts.append({**asyncio.run(burst(server.base, texts, int(m[1]), int(m[2]))), "admission_before": admission})
                time.sleep(1)
            alive = alive_check(server.base, texts[0])
            server_view = scrape(server.base) if alive.get("healthz") == 200 else {}
            alive["process_running"] = server.alive
        finally:
            exit_code = server.stop()
        stderr = server.stderr_path.read_text(errors="replace")
    client_hist = fuzzer.histogram()
    burst_statuses = collections.Counter()
    for b in bursts:
        burst_statuses.update(b["statuses"])
    checks = {
        "hostile_requests_sent": fuzzer.sent >= 10_000 or fuzzer.sent == args.requests,
        "no_5xx_but_503_client": not bad_5xx(client_hist) and not bad_5xx(burst_statuses),
        "no_5xx_but_503_server_metrics": not bad_5xx(server_view.get("status", {})),
        "no_504": "504" not in client_hist and "504" not in burst_statuses and "504" not in server_view.get("status", {}),
        "burst_only_200_or_503": set(burst_statuses) <= {"200", "503"},
        "every_503_has_retry_after": all(b["every_503_has_retry_after"] for b in bursts),
        "big_bodies_get_readable_413": all(b["readable_413"] for b in big),
        "server_alive_at_end": alive["alive"] and alive["process_running"],
        "no_traceback_in_server_log": "Traceback" not in stderr,
    }
    result = {
        "command": "nice -n 5 python " + shlex.join([os.path.relpath(__file__, REPO)] + (argv if argv is not None else sys.argv[1:])),
        "server_command": "python " + " ".join(server.cmd[1:]),
        "machine": {"cpu": hostinfo.cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1m_at_start": load_at_start, "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "versions": hostinfo.versions(SERVE_DISTS), "git_commit": _git_commit(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "model": {"dir": args.model_dir, "task": info.get("task"), "model_file": info.get("model_file"),
                  "quantization": info.get("quantization"), "max_length": info.get("max_length"), "limits": info.get("limits")},
        "hostile": {"requests": fuzzer.sent, "seconds": round(hostile_s, 1), "concurrency": args.concurrency, "seed": args.seed,
                    "kinds": len(Cases.WEIGHTS), "histogram": client_hist,
                    "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(fuzzer.by_kind.items())},
                    "unexpected": fuzzer.unexpected},
        "big_bodies": big, "bursts": bursts, "alive": alive, "server_metrics": server_view,
        "server_exit_code": exit_code, "server_stderr_lines": len(stderr.splitlines()),
        "server_stderr_sample": sorted(collections.Counter(_strip(line) for line in stderr.splitlines()).items(),
                                       key=lambda kv: -kv[1])[:8],
        "checks": checks, "passed": all(checks.values()), "note": args.note,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    _write(out.with_suffix(".md"), markdown(result))
    print(json.dumps({"checks": checks, "histogram": client_hist, "bursts": [b["statuses"] for b in bursts]}, indent=1))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0 if result["passed"] else 1


def _strip(line: str) -> str:
    """A log line without its variable parts, to group the server's stderr."""
    return re.sub(r"\d+", "N", line)[:160]


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a reader never sees half a report


def markdown(r: dict) -> str:
    h = r["hostile"]
    fmt = lambda d: ", ".join(f"{k}: {v}" for k, v in d.items()) or "none"  # noqa: E731
    lines = [
        "# Hostile traffic against the kronedge server (loopback)", "",
        f"- command: `{r['command']}`",
        f"- server: `{r['server_command']}`",
        f"- machine: {r['machine']['cpu']}, {r['machine']['cores']} cores ({r['machine']['platform']}); 1-min load average "
        f"{r['machine']['loadavg_1m_at_start']} at start, {r['machine']['loadavg_1m_at_end']} at end (shared machine)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        f"- model: `{r['model']['dir']}` (task {r['model']['task']}, {r['model']['model_file']}, quantization "
        f"{r['model']['quantization']}, max_length {r['model']['max_length']}); limits {r['model']['limits']}",
        f"- git {r['git_commit']}, {r['date_utc']} UTC",
        *([f"- note: {r['note']}"] if r.get("note") else []), "",
        "## Checks", "",
        *[f"- {'PASS' if ok else 'FAIL'}: {name.replace('_', ' ')}" for name, ok in r["checks"].items()], "",
        f"## Hostile requests: {h['requests']} of {h['kinds']} kinds in {h['seconds']} s ({h['concurrency']} in flight, seed {h['seed']})", "",
        f"Client-side outcomes (HTTP status, or {', '.join(NO_STATUS)} when no status came back): {fmt(h['histogram'])}", "",
        "| kind | sent | outcomes |", "|---|---|---|",
        *[f"| {k} | {sum(v.values())} | {fmt(v)} |" for k, v in h["by_kind"].items()], "",
    ]
    if h["unexpected"]:
        lines += [f"Outcomes outside the kind's expected set ({len(h['unexpected'])} shown):", ""]
        lines += [f"- {u['kind']}: {u['outcome']} `{u['body'][:120]}`" for u in h["unexpected"][:15]] + [""]
    lines += [
        "## Oversize bodies sent in full", "",
        "| bytes | outcome | error code | seconds | 413 read by the client |", "|---|---|---|---|---|",
        *[f"| {x['bytes']:,} | {x['outcome']} | {x['error_code']} | {x['seconds']} | {'yes' if x['readable_413'] else 'NO'} |"
          for x in r["big_bodies"]], "",
        *[line for i, b in enumerate(r["bursts"], 1) for line in (
            f"## Burst {i} of {len(r['bursts'])}: {b['requests']} concurrent requests of {b['texts_per_request']} texts", "",
            f"- statuses: {fmt(b['statuses'])} in {b['seconds']} s; every 503 carries Retry-After: "
            f"{'yes' if b['every_503_has_retry_after'] else 'NO'} (values {b['retry_after_values']})",
            f"- median seconds by status: {fmt(b['median_seconds_by_status'])}; max: {fmt(b['max_seconds_by_status'])}",
            f"- the server's admission estimate as it arrived: {fmt(b['admission_before'])}", "")],
        "## Server's own view (/metrics at the end, burst and checks included)", "",
        f"- requests by status: {fmt(r['server_metrics'].get('status', {}))}",
        f"- 503 by reason: {fmt(r['server_metrics'].get('overload', {}))}",
        f"- admission estimate at the end: {fmt(r['server_metrics'].get('admission', {}))}",
        f"- errors by code: {fmt(r['server_metrics'].get('error', {}))}",
        f"- alive at the end: {fmt({k: v for k, v in r['alive'].items()})}; server exit code after SIGTERM {r['server_exit_code']}",
        f"- server stderr: {r['server_stderr_lines']} lines; most frequent: "
        + "; ".join(f"`{line}` x{n}" for line, n in r["server_stderr_sample"][:4]), "",
    ]
    if r.get("other_runs"):
        lines += ["## Other runs of the same command (same model, same seed; the machine's load differs)", "",
                  "| git | UTC | load avg (1 min) | bursts (statuses) | 503 by reason | checks | note |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {o['git']} | {o['date_utc']} | {o['loadavg']} | {' / '.join(fmt(b) for b in o['bursts'])} | "
                  f"{fmt(o['overload'])} | {o['checks']} | {o['note']} |" for o in r["other_runs"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--render"]:  # rewrite OUT.md from OUT.json after a change to the layout
        path = Path(sys.argv[2])
        _write(path.with_suffix(".md"), markdown(json.loads(path.with_suffix(".json").read_text())))
        sys.exit(0)
    sys.exit(main())
