"""Real child processes that start without paying for the imports: forked from a preloaded forkserver.

A fresh interpreter spends about 4 CPU-seconds importing torch and transformers before a `kronedge` command
does anything, and the kill/resume tests start many such processes. They start them here instead:
multiprocessing's forkserver imports ``PRELOAD`` once per test worker and forks each child from that state,
so a child is a real, separate process (a SIGKILL ends it with no cleanup, as for a user's process) that
begins with the imports already done and with no logging handlers, threads or pytest capture of its parent.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import time
from pathlib import Path

# What a compress or export run imports, the heavy part first (BERT's modeling pulls in sklearn and scipy).
PRELOAD = ("torch", "transformers.models.bert.modeling_bert", "accelerate", "onnxruntime", "kronedge.cli",
           "kronedge.pipeline", "kronedge.training.trainer", "kronedge.data.glue", "exporters.export",
           "exporters.quantize", "preloaded")
KRONEDGE_CLI = "preloaded:kronedge_cli"


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


def kronedge_cli(*argv: str) -> None:
    """``kronedge ARGV`` as the console script runs it (its exit status becomes the process's)."""
    from kronedge.cli import main

    sys.argv = ["kronedge", *argv]
    main()


def _child(call: str, args: tuple, out: str, err: str, env: dict, stop_before: str | None, stopped) -> None:
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    if stop_before:
        # Looked up at call time by its callers, so replacing the module attribute stops them there.
        module_name, attr = stop_before.rsplit(".", 1)
        module = importlib.import_module(module_name)

        def stop_here(*_args, **_kwargs):
            stopped.set()
            time.sleep(600)

        setattr(module, attr, stop_here)
    module_name, function = call.split(":")
    getattr(importlib.import_module(module_name), function)(*args)


class Child:
    """``CALL(*ARGS)`` (``"module:function"``) in a forked child, its stdout and stderr kept in ``logs``.

    The child has the environment the forkserver started with (the root conftest's: offline hub, the worker's
    thread count) plus ``env``; variables read at import time (e.g. by torch or transformers) are already read.

    With ``stop_before="module.attr"`` the child stops when it is about to call that attribute: the parent
    waits for it with :meth:`wait_stopped` and then kills it at that known point.
    """

    def __init__(self, call: str, *args: str, logs: Path, env: dict | None = None, stop_before: str | None = None):
        context = _context()
        logs.mkdir(parents=True, exist_ok=True)
        self.out, self.err = logs / "stdout.txt", logs / "stderr.txt"
        self.stopped = context.Event()
        self.process = context.Process(target=_child, args=(call, args, str(self.out), str(self.err), env or {},
                                                            stop_before, self.stopped))
        self.process.start()

    def wait(self, timeout: float) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.kill()
            raise TimeoutError(f"the child ran past {timeout} s: {self.stderr()[-2000:]}")
        return self.process.exitcode

    def wait_stopped(self, timeout: float) -> bool:
        """True once the child reached ``stop_before``; False if it ended or the time ran out first."""
        deadline = time.monotonic() + timeout
        while not self.stopped.wait(0.05):
            if not self.process.is_alive() or time.monotonic() > deadline:
                return False
        return True

    def kill(self) -> int:
        """SIGKILL the child and reap it; its exit code (-9 unless it had already ended)."""
        self.process.kill()
        self.process.join()
        return self.process.exitcode

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()


def run_cli(*argv: str, logs: Path, env: dict | None = None, timeout: float = 600) -> str:
    """Run ``kronedge ARGV`` in a preloaded child; its stdout. Fails with its stderr if it exits non-zero."""
    child = Child(KRONEDGE_CLI, *argv, logs=logs, env=env)
    code = child.wait(timeout)
    assert code == 0, f"kronedge {' '.join(argv[:2])} exited {code}: {child.stderr()[-3000:]}"
    return child.stdout()
