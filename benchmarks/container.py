"""Image size and cold start of the runtime image, run with podman as tests/test_container.py runs it.

Cold start = from `podman run -d` to the first 200 from /healthz, then to the first 200 from /v1/classify
(one short text). Each round starts a new container from the same image (no image pull involved: the image
is local), with the model mounted read-only as the Dockerfile's header documents.

    python benchmarks/container.py MODEL_DIR [--image localhost/kronedge-serve:test] [--rounds 5]

Prints a Markdown block (machine, versions, layers, per-round times) for benchmarks/results/container.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def podman(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"error: podman {args[0]} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_of(url: str, token: str | None = None, body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def one_cold_start(image: str, model_dir: Path) -> tuple[float, float]:
    token, port, name = secrets.token_urlsafe(32), free_port(), f"kronedge-bench-{secrets.token_hex(4)}"
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    podman("run", "-d", "--name", name, *LIMITS, "-p", f"127.0.0.1:{port}:8080", "-v", f"{model_dir}:/model:ro",
           "-e", "KRONEDGE_API_TOKEN", image, env={"KRONEDGE_API_TOKEN": token})
    try:
        while status_of(f"{url}/healthz") != 200:
            if time.perf_counter() - start > 120:
                raise SystemExit(f"error: no /healthz within 120 s: {podman('logs', name)[-500:]}")
            time.sleep(0.05)
        healthy = time.perf_counter() - start
        if status_of(f"{url}/v1/classify", token, {"texts": ["a gripping film"]}) != 200:
            raise SystemExit("error: /v1/classify did not answer 200")
        return healthy, time.perf_counter() - start
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "2", name], capture_output=True)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--image", default="localhost/kronedge-serve:test")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model_dir = args.model_dir.resolve()

    inspected = json.loads(podman("image", "inspect", args.image))[0]
    layers = podman("history", "--format", "{{.Size}}\t{{.CreatedBy}}", args.image).splitlines()
    code = ("import onnxruntime, numpy, tokenizers, fastapi, uvicorn, platform; print(platform.python_version(), "
            "onnxruntime.__version__, numpy.__version__, tokenizers.__version__, fastapi.__version__, uvicorn.__version__)")
    versions = podman("run", "--rm", *LIMITS, "--entrypoint", "python", args.image, "-c", code).split()
    rounds = [one_cold_start(args.image, model_dir) for _ in range(args.rounds)]

    print(f"- image: `{args.image}` {inspected['Id'][:12]}, {inspected['Size'] / 1e6:.0f} MB "
          f"({inspected['Architecture']}); podman {podman('--version').split()[-1]}")
    print(f"- in the image: python {versions[0]}, onnxruntime {versions[1]}, numpy {versions[2]}, "
          f"tokenizers {versions[3]}, fastapi {versions[4]}, uvicorn {versions[5]}")
    print(f"- machine: {cpu_name()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"1-min load average {os.getloadavg()[0]:.2f} at the end (shared machine)")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    size = (model_dir / "model.onnx").stat().st_size
    quantization = (manifest.get("quantization") or {}).get("name", "none")
    print(f"- model: `{model_dir.name}`, model.onnx {size / 1e6:.2f} MB, quantization {quantization}")
    print("\nLayers (largest first):\n")
    for line in sorted(layers, key=lambda l: -_bytes(l.split("\t")[0]))[:4]:
        size_text, created = line.split("\t", 1)
        print(f"- {size_text}: `{created.strip()[:90]}`")
    print("\n| round | to /healthz 200 (s) | to first /v1/classify 200 (s) |\n|---|---|---|")
    for i, (healthy, answered) in enumerate(rounds, 1):
        print(f"| {i} | {healthy:.2f} | {answered:.2f} |")
    print(f"| median | {statistics.median(r[0] for r in rounds):.2f} | {statistics.median(r[1] for r in rounds):.2f} |")


def _bytes(text: str) -> float:
    number, _, unit = text.partition(" ")
    scale = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}.get(unit.strip(), 1)
    try:
        return float(number) * scale
    except ValueError:
        return 0.0


if __name__ == "__main__":
    main()
