"""Run Python on emulated Raspberry Pi CPUs: an arm64 Debian userland under QEMU user mode.

Recipe (every step checked on bookworm x86-64; the device tests in the repository run it):

1. ``apt-get install qemu-user-static`` (and ``qemu-user`` + ``gcc`` for instruction counts) on the host.
2. An arm64 userland without debootstrap: a *private* apt state (own sources list, status file, lists and
   cache, so the host's dpkg state is never touched) downloads ``python3`` and ``libstdc++6`` for arm64 and
   ``dpkg -x`` unpacks them into ``ROOTFS``.
3. aarch64 wheels (numpy, onnxruntime, tokenizers, exactly at the host's versions: one without an aarch64 wheel
   is an error, never a reason to take the newest) go straight into
   ``ROOTFS/usr/lib/python3/dist-packages`` with ``pip --target --platform manylinux..._aarch64``.
4. ``.pyc`` files are precompiled on the host (Debian ships none; without them every emulated start recompiles).
5. One *view* per CPU model: a directory of symlinks to ROOTFS plus its own fake ``proc/cpuinfo`` (QEMU 7.2
   does not emulate /proc/cpuinfo for arm and ORT's CPU detection crashes on the host's x86 one; ``-L VIEW``
   redirects the guest's /proc/cpuinfo there). Runs on different CPU models can then go in parallel.
6. Always ``-cpu cortex-a53|cortex-a72|cortex-a76``: QEMU's default ``max`` has SVE2/SME/i8mm that no Pi has.

Everything is cached under ``$KRONEDGE_QEMU_CACHE`` (default ``~/.cache/kronedge/qemu``, shared by the
device tests, ``ci_setup.sh`` and ``kronedge bench --target arm64``) and the setup is idempotent: a second
call only checks stamps.

The instruction counter is ``kronedge/plugins/insncount.c`` (package data, so an installed kronedge builds it
too), a TCG plugin built against bookworm's non-static ``qemu-user`` with ``qemu-plugin.h`` taken from the
qemu source package. The guest marks the
region to count with :func:`marker` (an ``lseek(-1, MAGIC)`` that fails harmlessly); only the marking
thread is counted. Counts are repeatable when environment, arguments, working directory, stdio kind,
PYTHONHASHSEED and address layout (``setarch -R`` + QEMU ``-R``) are fixed, which :func:`run_python` does.

Emulated wall time says nothing about Pi speed: label it emulated, always.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from .errors import KronedgeError

# The TCG plugin's C source ships inside the package (pyproject package-data).
PLUGIN_SOURCE = importlib.resources.files("kronedge") / "plugins" / "insncount.c"
# Packages the guest imports from the host (bench_core's runtime), staged without the host's site-packages.
GUEST_PACKAGES_PY = ("runtime",)

# Raspberry Pi boards and the QEMU CPU model that matches each.
PI_CPUS = {"cortex-a53": "Raspberry Pi 3 / Zero 2 W", "cortex-a72": "Raspberry Pi 4", "cortex-a76": "Raspberry Pi 5"}

# Fake /proc/cpuinfo per CPU model (arm64 kernel format). ORT's cpuinfo library reads the part numbers.
_CPUINFO = {
    "cortex-a53": dict(part="0xd03", variant="0x0", revision="4",
                       features="fp asimd evtstrm crc32 cpuid"),
    "cortex-a72": dict(part="0xd08", variant="0x0", revision="3",
                       features="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a76": dict(part="0xd0b", variant="0x4", revision="1",
                       features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                                "asimdrdm lrcpc dcpop asimddp"),
}

# Marker syscall: lseek(-1, MAGIC, SEEK_SET); must match kronedge/plugins/insncount.c.
MAGIC_START = 0x6B726F6E0001
MAGIC_STOP = 0x6B726F6E0002

GUEST_PACKAGES = ("python3", "libstdc++6")
WHEELS = ("numpy", "onnxruntime", "tokenizers")
RESERVED_VA = "0x1000000000"  # QEMU -R: fixed guest address space, so addresses (and counts) repeat


class QemuError(KronedgeError, RuntimeError):
    """The emulated environment cannot be set up or a guest run failed."""


def marker(start: bool) -> None:
    """Guest side: mark the start/end of the region the instruction counter counts (no-op otherwise)."""
    try:
        os.lseek(-1, MAGIC_START if start else MAGIC_STOP, os.SEEK_SET)
    except OSError:
        pass


def host_supported() -> tuple[bool, str]:
    """(ok, reason): the emulation path needs an x86-64 Linux host."""
    if sys.platform != "linux":
        return False, f"QEMU user-mode emulation needs a Linux host (this is {sys.platform})"
    if platform.machine() not in ("x86_64", "AMD64"):
        return False, f"the arm64 emulation recipe is for x86-64 hosts (this is {platform.machine()})"
    return True, ""


def cache_dir() -> Path:
    """``$KRONEDGE_QEMU_CACHE``, else ``$XDG_CACHE_HOME/kronedge/qemu`` (``~/.cache/kronedge/qemu``)."""
    env = os.environ.get("KRONEDGE_QEMU_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kronedge" / "qemu"


def _run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise QemuError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                        f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def _private_apt_state(state: Path, kind: str, extra_option: str = "") -> Path:
    """A fresh apt state folder (status, lists, cache, sources.list on the host's own mirrors), so
    apt works for another architecture or for sources without touching the host's dpkg state."""
    shutil.rmtree(state, ignore_errors=True)
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").write_text("")
    main, security = _host_mirrors()
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    trust = f"signed-by={keyring}" if Path(keyring).exists() else "trusted=yes"
    opts = " ".join(o for o in (extra_option, trust) if o)
    (state / "sources.list").write_text(
        f"{kind} [{opts}] {main} bookworm main\n"
        f"{kind} [{opts}] {main} bookworm-updates main\n"
        f"{kind} [{opts}] {security} bookworm-security main\n")
    return state


def _host_mirrors() -> tuple[str, str]:
    """(debian mirror, security mirror) from the host's apt sources; deb.debian.org otherwise."""
    main, security = "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            texts.append(path.read_text())
        except (OSError, UnicodeDecodeError):
            continue
    for uri in re.findall(r"(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", "\n".join(texts)):
        if uri.startswith("http") and "security" in uri:
            security = uri.rstrip("/")
        elif uri.startswith("http") and "debian" in uri and "backports" not in uri:
            main = uri.rstrip("/")
    return main, security


def _apt_options(state: Path, arm64: bool = True) -> list[str]:
    arch = ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures=arm64"] if arm64 else []
    return [*arch, "-o", f"Dir::Etc::SourceList={state / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State={state}", "-o", f"Dir::State::Lists={state / 'lists'}",
            "-o", f"Dir::State::status={state / 'status'}", "-o", f"Dir::Cache={state / 'cache'}",
            "-o", "Dir::Etc::Preferences=/dev/null", "-o", "Dir::Etc::PreferencesParts=/dev/null",
            "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root", "-q"]


def _host_versions() -> dict[str, Optional[str]]:
    out = {}
    for name in WHEELS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _stamp_ok(path: Path, key: dict) -> bool:
    try:
        return json.loads(path.read_text()) == key
    except (OSError, ValueError):
        return False


def _write_stamp(path: Path, key: dict) -> None:
    path.write_text(json.dumps(key, sort_keys=True))


@dataclasses.dataclass
class Env:
    """A ready arm64 userland: ``rootfs`` plus one view per CPU model, and the QEMU binaries."""

    cache: Path
    rootfs: Path
    qemu_static: Optional[str]
    qemu_plugin_host: Optional[str]  # non-static qemu-aarch64 (accepts -plugin)
    plugin: Optional[Path]  # built insncount.so, if requested and possible
    versions: dict

    def view(self, cpu: str) -> Path:
        """Directory for ``-L``: the rootfs with this CPU model's fake /proc/cpuinfo."""
        if cpu not in _CPUINFO:
            raise QemuError(f"unknown CPU model {cpu!r}; choose one of {', '.join(_CPUINFO)} (never QEMU's 'max')")
        view = self.cache / "views" / cpu
        view.mkdir(parents=True, exist_ok=True)
        for entry in self.rootfs.iterdir():
            if entry.name == "proc":
                continue
            link = view / entry.name
            if not link.is_symlink():
                if link.exists():
                    shutil.rmtree(link)
                link.symlink_to(os.path.relpath(entry, view))
        (view / "proc").mkdir(exist_ok=True)
        text = cpuinfo_text(cpu)
        cpuinfo = view / "proc" / "cpuinfo"
        if not cpuinfo.exists() or cpuinfo.read_text() != text:
            tmp = cpuinfo.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, cpuinfo)
        return view


def _n_host_cpus() -> int:
    """Processor entries for the fake cpuinfo: as many as the host's /sys says are possible."""
    try:
        spec = Path("/sys/devices/system/cpu/possible").read_text().strip()
        return max(int(part.split("-")[-1]) for part in spec.split(",")) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def cpuinfo_text(cpu: str) -> str:
    """An arm64 /proc/cpuinfo for ``cpu``: QEMU user mode passes the host's x86 one through, which ORT's
    CPU detection cannot parse (also mounted over /proc/cpuinfo in the arm64 container test)."""
    info = _CPUINFO[cpu]
    blocks = []
    for i in range(_n_host_cpus()):
        blocks.append(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {info['features']}\n"
                      f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {info['variant']}\n"
                      f"CPU part\t: {info['part']}\nCPU revision\t: {info['revision']}\n")
    return "\n".join(blocks) + "\n"


def _build_rootfs(cache: Path, log) -> Path:
    """Steps 2-4 of the recipe; idempotent (stamp file)."""
    rootfs = cache / "rootfs"
    versions = _host_versions()
    key = {"packages": list(GUEST_PACKAGES), "wheels": versions, "python": "3.11", "recipe": 2}
    stamp = cache / "rootfs.stamp"
    if rootfs.is_dir() and _stamp_ok(stamp, key):
        return rootfs
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise QemuError("building the arm64 userland needs apt-get and dpkg (a Debian/Ubuntu host)")
    log("building arm64 userland (private apt state, dpkg -x)")
    state = _private_apt_state(cache / "apt", "deb", "arch=arm64")
    apt = ["apt-get", *_apt_options(state)]
    _run([*apt, "update"])
    _run([*apt, "install", "-y", "--download-only", "--no-install-recommends", *GUEST_PACKAGES])
    debs = sorted((state / "cache" / "archives").glob("*.deb"))
    if not debs:
        raise QemuError("apt downloaded no arm64 packages")
    tmp_root = cache / "rootfs.tmp"
    shutil.rmtree(tmp_root, ignore_errors=True)
    tmp_root.mkdir(parents=True)
    for deb in debs:
        _run(["dpkg", "-x", str(deb), str(tmp_root)])
    # usr-merged releases ship only /usr/lib etc.: add the top-level links the loader paths expect.
    for name in ("bin", "sbin", "lib"):
        if not (tmp_root / name).exists() and (tmp_root / "usr" / name).exists():
            (tmp_root / name).symlink_to(f"usr/{name}")
    if not (tmp_root / "usr" / "bin" / "python3").exists():
        raise QemuError("arm64 python3 missing after unpacking")
    site = tmp_root / "usr" / "lib" / "python3" / "dist-packages"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install_guest_wheels(site, versions, log, env=env)
    log("precompiling .pyc")
    # Same bytecode magic (3.11) on host and guest; failures (py2-only test files etc.) are harmless.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                    str(tmp_root / "usr" / "lib" / "python3.11"), str(site)],
                   capture_output=True, env=env)
    shutil.rmtree(rootfs, ignore_errors=True)
    os.replace(tmp_root, rootfs)
    shutil.rmtree(state / "cache" / "archives", ignore_errors=True)
    _write_stamp(stamp, key)
    return rootfs


def install_guest_wheels(site: Path, versions: dict[str, Optional[str]], log, env: Optional[dict] = None) -> None:
    """Install the aarch64 wheels of WHEELS into ``site``, each at exactly the host's version.

    The device tests compare the guest with golden outputs computed on the host, so a guest on another
    onnxruntime measures a different runtime: a version without aarch64 wheels is an error, never a
    reason to install the newest one.
    """
    missing = [name for name in WHEELS if not versions.get(name)]
    if missing:
        raise QemuError(f"the guest's wheels follow the host's versions, but the host has no {', '.join(missing)} "
                        f"installed: pip install {' '.join(missing)}")
    reqs = [f"{name}=={versions[name]}" for name in WHEELS]
    log("installing aarch64 wheels: " + ", ".join(reqs))
    site.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
           "--target", str(site), "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
           "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux_2_17_aarch64",
           "--platform", "manylinux2014_aarch64"]
    try:
        _run([*pip, *reqs], env=env)
    except QemuError as exc:
        unavailable = re.findall(r"No matching distribution found for (\S+)", str(exc))
        what = ", ".join(unavailable) or " ".join(reqs)
        raise QemuError(f"no aarch64 wheel (cp311, manylinux) for {what}, the host's version: install a host "
                        f"version that has one, so guest and host run the same code (pip said: "
                        f"{_last_error_line(str(exc))})") from None


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("ERROR")]
    return lines[-1] if lines else (text.strip().splitlines() or ["no output"])[-1]


GUEST_VERSIONS_CODE = ("import json, numpy, onnxruntime, tokenizers; print(json.dumps({'numpy': numpy.__version__, "
                       "'onnxruntime': onnxruntime.__version__, 'tokenizers': tokenizers.__version__}))")


def guest_versions(env: "Env", cpu: str = "cortex-a72") -> dict[str, str]:
    """The versions of WHEELS that the guest's Python actually imports."""
    res = run_python(env, cpu, "-c", [GUEST_VERSIONS_CODE], timeout=300)
    if res.returncode != 0:
        raise QemuError(f"the guest cannot import {', '.join(WHEELS)} under {cpu}: {res.stderr.strip()[-500:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def check_guest_matches_host(env: "Env", cpu: str = "cortex-a72") -> dict[str, str]:
    """Raise QemuError unless the guest imports exactly the host's versions of WHEELS; return them."""
    guest = guest_versions(env, cpu)
    host = _host_versions()
    differ = [f"{name} {guest.get(name)} in the guest, {host[name]} on the host" for name in WHEELS
              if guest.get(name) != host[name]]
    if differ:
        raise QemuError(f"the arm64 guest does not run the host's versions ({'; '.join(differ)}): delete "
                        f"{env.rootfs} (or {env.cache / 'rootfs.stamp'}) and run python -m kronedge.qemu --check")
    return guest


def _qemu_header(cache: Path, log) -> Path:
    """Directory holding qemu-plugin.h of the installed qemu-user version (from its source package)."""
    inc = cache / "qemu-include"
    if (inc / "qemu-plugin.h").exists():
        return inc
    log("fetching qemu-plugin.h from the qemu source package")
    state = _private_apt_state(cache / "apt-src", "deb-src")
    apt = ["apt-get", *_apt_options(state, arm64=False)]
    _run([*apt, "update"])
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "qemu-user"], capture_output=True,
                             text=True).stdout.strip()
    src = tempfile.mkdtemp(prefix="qemu-src-", dir=cache)
    try:
        target = f"qemu={version}" if version else "qemu"
        try:
            _run([*apt, "source", "--download-only", target], cwd=src)
        except QemuError:
            _run([*apt, "source", "--download-only", "qemu"], cwd=src)
        tarballs = sorted(Path(src).glob("qemu_*.orig.tar.*"))
        if not tarballs:
            raise QemuError("no qemu orig tarball downloaded")
        with tarfile.open(tarballs[0]) as tar:
            member = next((m for m in tar if m.name.endswith("include/qemu/qemu-plugin.h")), None)
            if member is None:
                raise QemuError("qemu-plugin.h not found in the qemu source")
            data = tar.extractfile(member).read()
        inc.mkdir(parents=True, exist_ok=True)
        (inc / "qemu-plugin.h").write_bytes(data)
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    return inc


def build_plugin(cache: Optional[Path] = None, log=print) -> Path:
    """Build the packaged insncount.c into CACHE/insncount.so (rebuilt when the source changes)."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if shutil.which("qemu-aarch64") is None:
        raise QemuError("instruction counts need bookworm's non-static qemu-user: apt-get install qemu-user")
    if shutil.which("gcc") is None:
        raise QemuError("building the instruction-count plugin needs gcc: apt-get install gcc")
    source = PLUGIN_SOURCE.read_bytes()
    so = cache / "insncount.so"
    stamp = cache / "insncount.stamp"
    key = {"sha256": hashlib.sha256(source).hexdigest()}
    if so.exists() and _stamp_ok(stamp, key):
        return so
    inc = _qemu_header(cache, log)
    log("building insncount.so")
    with importlib.resources.as_file(PLUGIN_SOURCE) as c_file:  # a real file even from a zipped install
        _run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-I", str(inc), "-o", str(so), str(c_file)])
    _write_stamp(stamp, key)
    return so


def ensure(plugin: bool = False, cache: Optional[Path] = None, log=None) -> Env:
    """Set up (or reuse) the arm64 userland; with ``plugin=True`` also build the instruction counter."""
    ok, reason = host_supported()
    if not ok:
        raise QemuError(reason)
    log = log or (lambda msg: print(f"[qemu] {msg}", file=sys.stderr))
    cache = (cache or cache_dir()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    qemu_static = shutil.which("qemu-aarch64-static")
    qemu_dyn = shutil.which("qemu-aarch64")
    if not qemu_static and not qemu_dyn:
        raise QemuError("QEMU user mode is not installed: apt-get install qemu-user-static "
                        "(in a checkout: bash device_tests/ci_setup.sh)")
    rootfs = _build_rootfs(cache, log)
    so = build_plugin(cache, log) if plugin else None
    return Env(cache=cache, rootfs=rootfs, qemu_static=qemu_static, qemu_plugin_host=qemu_dyn, plugin=so,
               versions=_host_versions())


def guest_pythonpath(env: Env, packages: Sequence[str] = GUEST_PACKAGES_PY) -> Path:
    """A directory holding only these packages' Python files, for the guest's PYTHONPATH.

    Never the host's site-packages: its x86-64 numpy would shadow the guest's aarch64 one. The directory is
    named by a hash of the files (runs of different code never share one) and appears atomically.
    """
    files: dict[str, bytes] = {}
    for name in packages:
        _python_files(importlib.resources.files(name), name, files)
    digest = hashlib.sha256(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())})
                            .encode()).hexdigest()[:16]
    target = env.cache / "guest-python" / digest
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    for rel, data in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    try:
        os.replace(tmp, target)
    except OSError:  # another run staged the same files first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _python_files(node, rel: str, out: dict[str, bytes]) -> None:
    for entry in node.iterdir():
        if entry.is_dir() and entry.name != "__pycache__":
            _python_files(entry, f"{rel}/{entry.name}", out)
        elif entry.is_file() and entry.name.endswith(".py"):
            out[f"{rel}/{entry.name}"] = entry.read_bytes()


def qemu_version(binary: str) -> str:
    proc = subprocess.run([binary, "--version"], capture_output=True, text=True)
    m = re.search(r"version (\S+)", proc.stdout)
    return m.group(1) if m else "unknown"


@dataclasses.dataclass
class GuestResult:
    returncode: int
    stdout: str
    stderr: str
    regions: list[int]  # instructions per marked region (only with count=True)
    total: Optional[int]  # all guest threads, whole run (reference only; not repeatable)
    qemu: str
    cpu: str


def run_python(env: Env, cpu: str, script: str | Path, args: Sequence[str] = (), *, count: bool = False,
               pythonpath: Sequence[str | Path] = (), timeout: Optional[float] = None, cwd: Optional[Path] = None,
               extra_env: Optional[dict] = None) -> GuestResult:
    """Run ``python3 SCRIPT ARGS`` under ``qemu-aarch64 -cpu CPU`` with a fixed, minimal environment.

    With ``count=True`` the non-static qemu-aarch64 runs with the insncount plugin and the result holds the
    instruction count of every region the guest marked with :func:`marker`.
    """
    if cpu not in _CPUINFO:
        raise QemuError(f"unknown CPU model {cpu!r}; choose one of {', '.join(_CPUINFO)} (never QEMU's 'max')")
    view = env.view(cpu)
    guest_env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(env.cache / "home"),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "ORT_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath),
    }
    guest_env.update(extra_env or {})
    (env.cache / "home").mkdir(exist_ok=True)
    out_file = None
    if count:
        if env.plugin is None or env.qemu_plugin_host is None:
            raise QemuError("instruction counts need the plugin: ensure(plugin=True) with qemu-user and gcc installed")
        binary = env.qemu_plugin_host
        fd, out_file = tempfile.mkstemp(prefix="insncount-", suffix=".txt")
        os.close(fd)
        plugin_args = ["-plugin", f"{env.plugin},outfile={out_file}"]
    else:
        binary = env.qemu_static or env.qemu_plugin_host
        plugin_args = []
    cmd = [binary, "-cpu", cpu, "-R", RESERVED_VA, "-L", str(view), *plugin_args,
           str(view / "usr" / "bin" / "python3"), str(script), *map(str, args)]
    if shutil.which("setarch"):
        cmd = ["setarch", "x86_64", "-R", *cmd]  # no address randomisation: counts depend on addresses
    try:
        proc = subprocess.run(cmd, env=guest_env, cwd=str(cwd or env.cache), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        regions, total = [], None
        if out_file:
            for line in Path(out_file).read_text().splitlines():
                parts = line.split()
                if parts and parts[0] == "region":
                    regions.append(int(parts[2]))
                elif parts and parts[0] == "total":
                    total = int(parts[1])
    finally:
        if out_file:
            Path(out_file).unlink(missing_ok=True)
    return GuestResult(proc.returncode, proc.stdout, proc.stderr, regions, total, qemu_version(binary), cpu)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Set up the cached arm64 userland for QEMU runs.")
    parser.add_argument("--plugin", action="store_true", help="also build the instruction-count plugin")
    parser.add_argument("--check", action="store_true", help="import onnxruntime under every Pi CPU model")
    args = parser.parse_args(argv)
    try:
        env = ensure(plugin=args.plugin)
        if args.check:
            check_guest_matches_host(env)
    except QemuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"rootfs: {env.rootfs}")
    print(f"wheels: {env.versions} (host and guest)")
    if env.plugin:
        print(f"plugin: {env.plugin}")
    if args.check:
        from concurrent.futures import ThreadPoolExecutor

        probe = ["import numpy, onnxruntime, tokenizers; print(onnxruntime.__version__)"]
        with ThreadPoolExecutor(len(PI_CPUS)) as pool:  # one emulator process per CPU model, at once
            results = list(pool.map(lambda cpu: run_python(env, cpu, "-c", probe), PI_CPUS))
        for cpu, res in zip(PI_CPUS, results):
            print(f"{cpu}: rc={res.returncode} {res.stdout.strip()} {res.stderr.strip()[-300:]}")
        return int(any(res.returncode != 0 for res in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
