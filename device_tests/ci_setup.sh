#!/usr/bin/env bash
# Set up everything device_tests/ need on a FRESH Debian bookworm x86-64 machine, as root:
#   - qemu-user-static (runs the arm64 userland), qemu-user (non-static: accepts TCG plugins),
#     gcc (builds the instruction-count plugin), dpkg-dev (apt-get source), xz-utils;
#   - the cached arm64 userland (python3 + aarch64 numpy/onnxruntime/tokenizers at the host's versions)
#     and the insncount plugin, in the machine's cache that `kronedge bench --target arm64` uses too
#     ($KRONEDGE_QEMU_CACHE, default ~/.cache/kronedge/qemu; idempotent: fast when cached, also for a new clone).
# Needs the project installed first (pip install -e ".[dev]"): the wheel versions follow the host's.
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *)
    # In CI a wrong host must turn the run red, not leave it green with the device tests skipped.
    if [ "${CI:-}" = "true" ]; then
      echo "device_tests/ci_setup.sh: $(uname -s)-$(uname -m) is not an x86-64 Linux host; CI=true needs one" >&2
      exit 1
    fi
    echo "device_tests/ci_setup.sh: not an x86-64 Linux host; device tests will skip"; exit 0 ;;
esac

need=()
for bin in qemu-aarch64-static qemu-aarch64 gcc dpkg-source xz setarch; do
  command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "device_tests/ci_setup.sh: missing ${need[*]}; run as root (apt-get install)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends qemu-user-static qemu-user gcc libc6-dev dpkg-dev xz-utils \
    util-linux ca-certificates >/dev/null
fi

# The machine's cache ($KRONEDGE_QEMU_CACHE, default ~/.cache/kronedge/qemu): device_tests/ read the same place.
python -m kronedge.qemu --plugin --check
