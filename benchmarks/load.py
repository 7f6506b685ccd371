"""Bounded load test of `python -m runtime.serve` on loopback: throughput and p50/p90/p99 latency at
1, 4 and 16 concurrent clients (closed loop: each client sends its next request when the last returns).

    nice -n 5 python benchmarks/load.py runs/kb21-int8 --configs 1x1 1x1b1 2x1 1x2 --max-length 64 --seconds 15
    python benchmarks/load.py --render benchmarks/results/load.json     # re-render the .md only

Starts one server per configuration (THREADSxWORKERS) on 127.0.0.1 (free ports), warms each up, then
runs each concurrency level for a fixed time (and at most --max-requests requests) per configuration,
in interleaved slices, and writes benchmarks/results/load.json and .md.
The client runs on the same machine and takes CPU from the server: on 2 cores the figures are a
floor for what the server does alone. Inputs are SST-2 dev sentences (shipped with kronedge), one per
request, cut to --max-length tokens by the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from runtime import hostinfo

from fuzz_server import ServerProcess  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]


def versions() -> dict[str, str | None]:
    from runtime.hostinfo import versions as installed

    return installed(("onnxruntime", "numpy", "tokenizers", "fastapi", "uvicorn", "httpx"))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sentences() -> list[str]:
    from kronedge.data import load_task

    return list(load_task("sst2", split="dev").texts)


class Server(ServerProcess):
    """`python -m runtime.serve` on 127.0.0.1 with the options a load row varies; logs in a scratch directory."""

    def __init__(self, model_dir: str, threads: int, workers: int, max_length: int | None, queue_size: int,
                 max_batch_texts: int):
        extra = ["--threads", str(threads), "--workers", str(workers), "--queue-size", str(queue_size),
                 "--max-batch-texts", str(max_batch_texts)] + (["--max-length", str(max_length)] if max_length else [])
        self._logs = tempfile.TemporaryDirectory(prefix="kronedge-load-")
        super().__init__(model_dir, extra, Path(self._logs.name))

    def stop(self) -> int:
        code = super().stop()
        self._logs.cleanup()
        return code


async def run_slice(base: str, texts: list[str], clients: int, seconds: float, max_requests: int) -> dict:
    """`clients` closed-loop clients for `seconds` (or max_requests): raw latencies and status counts."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        async def worker(k: int) -> None:
            nonlocal sent
            i = k
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                start = time.perf_counter()
                r = await client.post("/v1/classify", json={"texts": [texts[i % len(texts)]]})
                elapsed = time.perf_counter() - start
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    latencies.append(elapsed)
                i += clients

        wall_start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - wall_start
    return {"latencies": latencies, "statuses": statuses, "wall": wall}


def summarize(clients: int, slices: list[dict]) -> dict:
    latencies = [x for sl in slices for x in sl["latencies"]]
    statuses: dict[int, int] = {}
    for sl in slices:
        for code, n in sl["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    wall = sum(sl["wall"] for sl in slices)
    lat_ms = np.array(latencies) * 1e3

    def pct(q):
        return round(float(np.percentile(lat_ms, q)), 2) if len(lat_ms) else None

    return {
        "clients": clients, "requests": int(sum(statuses.values())), "ok": len(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())}, "seconds": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 2) if wall else None,
        "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
        "mean_ms": round(float(lat_ms.mean()), 2) if len(lat_ms) else None,
    }


def scrape_batching(base: str) -> dict:
    """Texts classified and requests served, from /metrics: how much cross-request batching happened."""
    text = httpx.get(f"{base}/metrics", timeout=5).text
    out = {}
    for line in text.splitlines():
        if line.startswith("kronedge_inputs_total "):
            out["inputs_total"] = int(float(line.split()[-1]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--configs", nargs="+", default=["1x1", "2x1", "1x2"],
                   help="server configs THREADSxWORKERS[bN] (ORT intra-op threads x parallel model runs, optionally N "
                        "texts per model pass across requests instead of --max-batch-texts), run side by side")
    p.add_argument("--max-batch-texts", type=int, default=64, help="server: texts per model pass across requests")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--seconds", type=float, default=15.0, help="per concurrency level and config")
    p.add_argument("--rounds", type=int, default=3, help="slices each level is cut into, configs interleaved")
    p.add_argument("--max-requests", type=int, default=5000, help="per concurrency level")
    p.add_argument("--warmup", type=int, default=30, help="requests before measuring")
    p.add_argument("--queue-size", type=int, default=64)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "load"), help="writes OUT.json and OUT.md")
    p.add_argument("--note", default="", help="free text stored with the results (e.g. which model this is)")
    args = p.parse_args(argv)
    # SIGTERM (e.g. `timeout`) must unwind through `finally` so the server subprocess is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if max(args.clients) > args.queue_size + 1:
        p.error("more clients than queue slots would measure 503s, not latency; raise --queue-size")

    texts = sentences()
    load_at_start = round(os.getloadavg()[0], 2)
    manifest = json.loads((Path(args.model_dir) / "manifest.json").read_text())
    rows, server_cmds = [], []
    # All configurations run side by side and take turns in short slices (rotating the order each
    # round), so a burst from the machine's other tenants lands on every configuration alike.
    servers = []
    try:
        for spec in args.configs:
            m = re.fullmatch(r"(\d+)x(\d+)(?:b(\d+))?", spec.lower())
            if not m:
                p.error(f"config {spec!r}: expected THREADSxWORKERS[bMAX_BATCH_TEXTS], e.g. 1x2 or 1x1b1")
            threads, workers = int(m[1]), int(m[2])
            batch = int(m[3]) if m[3] else args.max_batch_texts
            servers.append((threads, workers, Server(args.model_dir, threads, workers, args.max_length,
                                                     args.queue_size, batch)))
        infos = []
        for _, _, server in servers:
            server.wait_ready()
            infos.append(httpx.get(f"{server.base}/v1/model", timeout=5).json())
            asyncio.run(run_slice(server.base, texts, 1, 60, args.warmup))  # warm-up, not recorded
            server_cmds.append("python " + " ".join(server.cmd[1:]))
        info = infos[0]
        slice_s = args.seconds / args.rounds
        for clients in args.clients:
            slices = {k: [] for k in range(len(servers))}
            served = {k: -scrape_batching(servers[k][2].base)["inputs_total"] for k in range(len(servers))}
            loads = []
            for rnd in range(args.rounds):
                for j in range(len(servers)):
                    k = (j + rnd) % len(servers)
                    slices[k].append(asyncio.run(run_slice(servers[k][2].base, texts, clients, slice_s,
                                                           args.max_requests // args.rounds)))
                    loads.append(os.getloadavg()[0])
            for k, (threads, workers, server) in enumerate(servers):
                row = summarize(clients, slices[k])
                # The other tenants of a shared machine show up here; a figure without it is not comparable.
                row.update(config=args.configs[k], threads=threads, workers=workers, max_length=infos[k]["max_length"],
                           max_batch_texts=infos[k]["limits"]["max_batch_texts"],
                           model_file=infos[k]["model_file"], loadavg_1m_mean=round(float(np.mean(loads)), 2),
                           texts_served=served[k] + scrape_batching(server.base)["inputs_total"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for _, _, server in servers:
            server.stop()

    result = {
        "command": "nice -n 5 python " + " ".join([os.path.relpath(__file__, REPO)] + (argv if argv is not None else sys.argv[1:])),
        "server_commands": server_cmds,
        "machine": {"cpu": hostinfo.cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                "loadavg_1m_at_start": load_at_start},
        "versions": versions(), "git_commit": git_commit(), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "model": {"dir": args.model_dir, "sha256": manifest["files"].get(info["model_file"], {}).get("sha256"),
                  "bytes": manifest["files"].get(info["model_file"], {}).get("bytes"),
                  "quantization": (manifest.get("quantization") or {}).get("name"),
                  "opset": manifest.get("opset"), "profile": manifest.get("profile"), "task": manifest.get("task"),
                  "source": manifest.get("source")},
        "setup": {"client": "httpx.AsyncClient, closed loop, 1 SST-2 dev sentence per request, same machine as the server",
                  "seconds_per_level": args.seconds, "rounds": args.rounds, "max_requests_per_level": args.max_requests,
                  "warmup_requests": args.warmup, "queue_size": args.queue_size},
        "note": args.note,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


def markdown(r: dict) -> str:
    v = r["versions"]
    lines = [
        "# Load test: kronedge server on loopback", "",
        f"- command: `{r['command']}`",
        *[f"- server: `{cmd}`" for cmd in r["server_commands"]],
        f"- machine: {r['machine']['cpu']}, {r['machine']['cores']} cores ({r['machine']['platform']}); 1-min load "
        f"average {r['machine']['loadavg_1m_at_start']} at start (the machine is shared: see the last column)",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- model: `{r['model']['dir']}` ({r['model']['bytes']} bytes, sha256 {str(r['model']['sha256'])[:12]}..., "
        f"quantization {r['model']['quantization']}, opset {r['model']['opset']}, {r['model']['profile']})",
        f"- client: {r['setup']['client']}; {r['setup']['seconds_per_level']} s per level and config, in "
        f"{r['setup']['rounds']} interleaved slices, after "
        f"{r['setup']['warmup_requests']} warm-up requests; git {r['git_commit']}, {r['date_utc']} UTC",
    ]
    if r.get("note"):
        lines.append(f"- note: {r['note']}")
    lines += ["", "| config: ORT threads x workers, max texts per pass | max length | clients | requests | ok | req/s "
              "| p50 ms | p90 ms | p99 ms | statuses | mean load avg (1 min) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['threads']}x{row['workers']}, {row['max_batch_texts']} | {row['max_length']} | {row['clients']} | "
                     f"{row['requests']} | {row['ok']} | "
                     f"{row['throughput_rps']} | {row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} | "
                     f"{', '.join(f'{code}: {n}' for code, n in row['statuses'].items())} | "
                     f"{row['loadavg_1m_mean']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--render"]:  # rewrite OUT.md from OUT.json after a change to the table layout
        path = Path(sys.argv[2])
        path.with_suffix(".md").write_text(markdown(json.loads(path.with_suffix(".json").read_text())))
        sys.exit(0)
    sys.exit(main())
