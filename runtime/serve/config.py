"""`ServeConfig`: every server setting, its default and its help, written once.

Both command lines are derived from the fields: `add_arguments` builds the argparse parser of
``python -m runtime.serve`` and `cli_options` feeds the Typer command ``kronedge serve``. Each field's
``metadata`` carries its help and, where it differs from ``--field-name``, its flag. Stdlib only: the
CLI imports this module while building ``kronedge --help``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from ..errors import KronedgeError
from ..threads import AUTO

if TYPE_CHECKING:
    import argparse

TOKEN_ENV = "KRONEDGE_API_TOKEN"


class ServeConfigError(KronedgeError, ValueError):
    """A server setting or option combination a user can fix; the CLIs print it as one line."""


def _opt(default: Any, help: str, flag: Optional[str] = None, choices: Optional[tuple] = None, cli: bool = True):
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "cli": cli})


@dataclass
class ServeConfig:
    """Server settings; ``kronedge serve`` and ``python -m runtime.serve`` expose each field as a flag.

    Limits are per request. ``queue_size`` counts requests waiting for the model (the ones running are
    not counted); the next one gets 503.

    Example:
        >>> ServeConfig("runs/kb21-int8", port=9000, workers=2).queue_size
        64
    """

    model_dir: str = field(metadata={"help": "Exported model directory (written by `kronedge export`).", "positional": True})
    host: str = _opt("127.0.0.1", "Bind address. A non-loopback host needs a token or --allow-no-auth.")
    port: int = _opt(8080, "TCP port.")
    # Measured, not assumed: whether a second thread helps a Kronecker graph depends on the CPU
    # (benchmarks/results/speed_avx2.md, speed_xeon.md); with --workers the cores are shared out first.
    threads: Optional[str] = _opt(AUTO, "ONNX Runtime intra-op threads per worker: a count, or auto: at start-up, time "
                                        "the model at 1, 2, 4 threads (up to the cores per worker) and keep the fastest.")
    model_file: Optional[str] = _opt(None, "model.onnx or model.ort (default: model.onnx if present).",
                                     choices=("model.onnx", "model.ort"))
    max_length: Optional[int] = _opt(None, "Truncate to this many tokens (<= the export's max_length).")
    max_body_bytes: int = _opt(256 * 1024, "Largest request body in bytes.")
    drain_bytes: int = _opt(256 * 1024 * 1024, "An oversize body up to this many bytes is read and discarded so that "
                                               "the client can read its 413; a larger one is cut off.")
    max_texts: int = _opt(32, "Texts (or pairs) per request.")
    max_chars: int = _opt(2000, "Characters per text.")
    queue_size: int = _opt(64, "Requests waiting for the model before new ones get 503.")
    max_batch_texts: int = _opt(64, "Texts per model pass, gathered across waiting requests.")
    workers: int = _opt(1, "Model runs in parallel (threads x workers should not exceed the cores).")
    timeout_s: float = _opt(10.0, "Seconds a request may take. One that cannot start in time gets 503 at once; "
                                  "one still running at the deadline gets 504.", flag="--timeout")
    retry_after_s: int = _opt(1, "Smallest Retry-After (seconds) sent with a 503.", flag="--retry-after")
    token_env: str = _opt(TOKEN_ENV, "Environment variable holding the bearer token.", cli=False)
    token_file: Optional[str] = _opt(None, f"File with the bearer token (else ${TOKEN_ENV}_FILE, else ${TOKEN_ENV}).")
    allow_no_auth: bool = _opt(False, "Serve a non-loopback host without a token.")
    log_text: bool = _opt(False, "Put request texts in the access log (off: they may be personal data).")
    self_check: bool = _opt(True, "Check golden.npz logits at start-up when the file is there.")

    def __post_init__(self):
        for name in ("max_body_bytes", "max_texts", "max_chars", "queue_size", "max_batch_texts", "workers",
                     "retry_after_s"):
            if getattr(self, name) < 1:
                raise ServeConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.drain_bytes < self.max_body_bytes:
            raise ServeConfigError(f"drain_bytes ({self.drain_bytes}) must be >= max_body_bytes ({self.max_body_bytes})")
        self.threads = _threads(self.threads)
        if not self.timeout_s > 0:
            raise ServeConfigError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if not 0 <= self.port <= 65535:
            raise ServeConfigError(f"port must be in 0..65535, got {self.port}")
        if self.model_file is not None and self.model_file not in ("model.onnx", "model.ort"):
            raise ServeConfigError(f"model_file must be model.onnx or model.ort, got {self.model_file!r}")


def _threads(value) -> int | str | None:
    """``threads`` as the Predictor takes it: a count >= 1, ``"auto"``, or None (ONNX Runtime's default)."""
    if value is None or value == AUTO:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ServeConfigError(f"threads must be a count >= 1 or {AUTO}, got {value!r}")
    return value


@dataclass(frozen=True)
class CliOption:
    """One `ServeConfig` field as a command-line parameter (what both CLIs need to declare it)."""

    dest: str  # the field name
    flag: str  # "--max-texts"; the positional argument's is its name
    type: type  # int, float, str or bool
    default: Any
    help: str
    optional: bool = False  # None is a valid value
    choices: Optional[tuple] = None
    positional: bool = False


def cli_options() -> list[CliOption]:
    """The exposed fields of `ServeConfig`, in declaration order."""
    hints = typing.get_type_hints(ServeConfig)
    options = []
    for f in dataclasses.fields(ServeConfig):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = typing.get_origin(hint) is typing.Union and len(args) == 1
        kind = args[0] if optional else hint
        options.append(CliOption(
            dest=f.name, flag=meta.get("flag") or "--" + f.name.replace("_", "-"), type=kind,
            default=None if f.default is dataclasses.MISSING else f.default, help=meta["help"],
            optional=optional, choices=meta.get("choices"), positional=bool(meta.get("positional"))))
    return options


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare every `ServeConfig` option on ``parser`` (``python -m runtime.serve``)."""
    import argparse  # here: `kronedge --help` imports this module and never needs argparse

    for opt in cli_options():
        if opt.positional:
            parser.add_argument(opt.dest, help=opt.help)
        elif opt.type is bool:
            # --flag / --no-flag for every switch, as Typer does for `kronedge serve`.
            parser.add_argument(opt.flag, dest=opt.dest, action=argparse.BooleanOptionalAction, default=opt.default,
                                help=opt.help)
        else:
            parser.add_argument(opt.flag, dest=opt.dest, type=opt.type, default=opt.default, choices=opt.choices,
                                help=opt.help + (" (default: %(default)s)" if opt.default is not None else ""))
    return parser


def from_namespace(values: dict) -> ServeConfig:
    """A `ServeConfig` from parsed CLI values keyed by field name; unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(ServeConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ServeConfigError(f"unknown server option(s): {unknown}")
    return ServeConfig(**{k: (str(v) if v is not None and k in ("model_dir", "token_file") else v)
                          for k, v in values.items()})
