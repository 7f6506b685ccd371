#!/usr/bin/env bash
# Set up what tests/test_container.py needs, on a Debian bookworm machine, as root (see
# ../shared/notes/containers.md for the recipe and why each step is there):
#   - podman (called with --runtime runc: crun refuses these hosts' hybrid cgroups), runc, debootstrap;
#   - a stand-in for python:3.11-slim-bookworm, since no container registry is reachable: a debootstrap
#     minbase rootfs imported into podman, plus Debian's python3 (3.11 on bookworm). The host's CA bundle
#     goes into that stand-in only (PIP_CERT), so pip in the real Dockerfile's build stage trusts this
#     machine's TLS setup; the Dockerfile itself stays what a user builds with Docker.
# Idempotent: when the stand-in image exists already, only the tools are checked (a few seconds).
# The runtime image itself is built by the tests, from the Dockerfile in the working tree.
#
# --image: then also build the runtime image from the working tree's Dockerfile (localhost/kronedge-serve:test,
# what tests/test_container.py runs; the test builds it this way).
#
# --arm64 (opt-in, not part of CI: ~6 min): the arm64 stand-in, localhost/python:3.11-slim-bookworm-arm64,
# built under QEMU user mode through binfmt_misc (qemu-user-static; binfmt_misc is mounted and
# qemu-aarch64 registered from /usr/lib/binfmt.d if they are not). For KRONEDGE_CONTAINER_ARM64=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

arch=amd64
if [ "${1:-}" = "--arm64" ]; then arch=arm64; fi
image=""
if [ "${1:-}" = "--image" ]; then image="${KRONEDGE_CONTAINER_IMAGE:-localhost/kronedge-serve:test}"; fi
BASE_IMAGE="${KRONEDGE_CONTAINER_BASE:-localhost/python:3.11-slim-bookworm}"
MIN_IMAGE="localhost/debian-min:bookworm"
if [ "$arch" = arm64 ]; then BASE_IMAGE="$BASE_IMAGE-arm64"; MIN_IMAGE="$MIN_IMAGE-arm64"; fi
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
say() { echo "tests/container/setup.sh: $*"; }

build_image() {
  # --format docker keeps HEALTHCHECK. Each source change leaves the previous image and build stages behind as
  # untagged layers; a day of them stays as build cache, so a CI machine that keeps its storage does not fill
  # its disk.
  "${PODMAN[@]}" build --network host "${LIMITS[@]}" --format docker --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
    -t "$image" -f Dockerfile .
  "${PODMAN[@]}" image prune -f --filter until=24h >/dev/null || true
}

need=()
for bin in podman runc debootstrap; do
  command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if [ "$arch" = arm64 ] && ! command -v qemu-aarch64-static >/dev/null 2>&1; then need+=(qemu-user-static); fi
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "tests/container/setup.sh: missing ${need[*]}; run as root (apt-get install podman runc debootstrap)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  extra=()
  if [ "$arch" = arm64 ]; then extra=(qemu-user-static); fi
  apt-get install -y -qq --no-install-recommends podman runc debootstrap ca-certificates "${extra[@]}" >/dev/null
fi

if [ "$arch" = arm64 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
  say "registered qemu-aarch64 with binfmt_misc"
fi

if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
  say "$BASE_IMAGE exists (cached)"
  if [ -n "$image" ]; then build_image; fi
  exit 0
fi

# The host's own Debian mirror (the one apt uses here), deb.debian.org otherwise.
mirror="$(sed -n 's#^URIs: *\(http[^ ]*/debian\)/*$#\1#p; s#^deb \(\[[^]]*\] \)\{0,1\}\(http[^ ]*/debian\)/* .*#\2#p' \
  /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1 || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d /var/tmp/kronedge-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
say "debootstrap --arch $arch --variant=minbase bookworm from $mirror"
debootstrap --arch "$arch" --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2; echo "tests/container/setup.sh: debootstrap failed" >&2; exit 1; }
mkdir -p "$work/rootfs/usr/local/share/ca-certificates-host"
cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/usr/local/share/ca-certificates-host/host-ca.crt"
tar -C "$work/rootfs" -c . | "${PODMAN[@]}" import --quiet --arch "$arch" \
  --change 'ENV PIP_CERT=/usr/local/share/ca-certificates-host/host-ca.crt' \
  --change 'CMD ["/bin/bash"]' - "$MIN_IMAGE" >/dev/null

cat >"$work/Containerfile" <<CONTAINERFILE
FROM $MIN_IMAGE
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip python-is-python3 \
    && rm -rf /var/lib/apt/lists/*
CONTAINERFILE
"${PODMAN[@]}" build -q --arch "$arch" --network host "${LIMITS[@]}" -t "$BASE_IMAGE" -f "$work/Containerfile" \
  "$work" >/dev/null
"${PODMAN[@]}" run --rm --network host "${LIMITS[@]}" "$BASE_IMAGE" python --version
say "built $BASE_IMAGE in $((SECONDS - start)) s"
if [ -n "$image" ]; then build_image; fi
