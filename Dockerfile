# syntax=docker/dockerfile:1
# Runtime image of the kronedge HTTP server: numpy + onnxruntime + tokenizers + fastapi/uvicorn.
# No torch, no transformers: the image is the `serve` extra only (see pyproject.toml).
#
# Build for x86 servers and ARM boards (Graviton, Raspberry Pi 4/5 with a 64-bit OS) in one go:
#   docker buildx build --platform linux/amd64,linux/arm64 -t kronedge-serve:latest .
# Run with the exported model mounted read-only at /model (the token is what clients send as
# `Authorization: Bearer ...`; keep it):
#   export KRONEDGE_API_TOKEN="$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
#   docker run --rm -p 8080:8080 -v "$PWD/runs/kb21-int8:/model:ro" -e KRONEDGE_API_TOKEN kronedge-serve
# The server runs as uid 10001, so the model directory must be readable by others: `kronedge export` gives
# it the mode your umask allows (with the usual 022 it is); after exporting under umask 077, run
# `chmod -R o+rX DIR` or pass `--user "$(id -u)"`.
# Or bake a model into the image. runs/ is in .dockerignore (models stay out of the default context),
# so pass the directory as a named build context; it replaces the empty `model` stage below:
#   docker buildx build --platform linux/amd64,linux/arm64 --build-context model=runs/kb21-int8 -t kronedge-kb21 .
# The container listens on 0.0.0.0, so the server refuses to start without a token: set
# KRONEDGE_API_TOKEN, or KRONEDGE_API_TOKEN_FILE=/run/secrets/<name> (Docker/Kubernetes secrets), or append
# --allow-no-auth to the command when a proxy in front of it authenticates.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- deps: the runtime's dependencies in a venv, listed from pyproject.toml alone (tomllib: Python 3.11+) ---
# A change to the source leaves this stage, and the final image's layer copied from it, as they were: a new
# version of the package is a layer of a few MB to build, push and pull, not the whole venv.
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['serve']))" > requirements.txt && python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt

# ---- build: the package as a wheel ------------------------------------------------------------------
FROM deps AS build
COPY README.md ./
COPY kronedge/ kronedge/
COPY exporters/ exporters/
COPY runtime/ runtime/
RUN /opt/venv/bin/pip wheel --no-deps --no-cache-dir --wheel-dir /wheels .

# ---- model: empty unless `--build-context model=DIR` supplies one ------------------------------------
FROM scratch AS model

# ---- final ------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG UID=10001
RUN useradd --system --uid "${UID}" --no-create-home --shell /usr/sbin/nologin kronedge
COPY --from=deps /opt/venv /opt/venv
# The wheel is COPYed, not bind-mounted: buildah's layer cache ignores a mount's content, so a new wheel would
# not rebuild the layer. tests/test_runtime_docker.py runs the install steps of the deps stage, the wheel build
# and this one in a fresh venv; keep each on one line.
COPY --from=build /wheels/ /wheels/
RUN /opt/venv/bin/pip install --no-deps --no-cache-dir --no-index /wheels/kronedge-*.whl
COPY --from=model --chown=root:root / /model/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1
# Not root, and the model is owned by root: the server cannot modify what it serves.
USER ${UID}
WORKDIR /tmp
EXPOSE 8080
# /healthz needs no token; python is there already, so no curl in the image.
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "runtime.serve"]
CMD ["/model", "--host", "0.0.0.0", "--port", "8080"]
