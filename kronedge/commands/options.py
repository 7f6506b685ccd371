"""Typer options built from config dataclasses, so that every default and help text is written once.

A config field becomes ``--field-name`` with the field's default and, as help, its ``metadata["help"]``
or its entry in the class docstring's ``Args:`` (transformers' ``HfArgumentParser`` builds a parser from
dataclass fields the same way). A field added to the config is an option without a line here. What the
command line does differently from Python (another flag name, minutes instead of seconds, 0 for None) is
a :class:`Cli` adapter, never a second default or help text.

Standard library and typer only: ``kronedge --help`` must not import torch or numpy.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional

import typer

from ..kron_config import ffn_width_value

MISSING = dataclasses.MISSING
FIELD_DEFAULT = object()  # Cli.default: show the field's own
_ENTRY = re.compile(r"(\w+(?:\s*/\s*\w+)*):\s+(.*)")


@dataclass(frozen=True)
class Cli:
    """How one config field differs on the command line (everything optional).

    Args:
        flag: the option's flag when not ``--field-name``, e.g. ``"--kd/--no-kd"``; its first name is
            also the command function's parameter (``--kd`` -> ``kd``).
        type: the command-line type when not the field's (``str`` for a dict written as text).
        default: the shown default when not the field's (the command fills the field itself).
        to_field: the command-line value -> the field's value.
        from_field: the field's default -> the shown default.
        note: what the command line adds to the field's help (a unit, an encoding).
    """

    flag: str | None = None
    type: Any = None
    default: Any = FIELD_DEFAULT
    to_field: Callable | None = None
    from_field: Callable | None = None
    note: str = ""


def zero_is_none(note: str = "(0: None)") -> Cli:
    """An optional count written as 0 on the command line when unset (``--patience 0``)."""
    return Cli(type=int, from_field=lambda v: v or 0, to_field=lambda v: v or None, note=note)


# KronConfig.ffn_width and CompressConfig.ffn_width: a count of neurons or "dense" on the command line
FFN_WIDTH_CLI = Cli(type=str, to_field=ffn_width_value)


@dataclass(frozen=True)
class Option:
    """One parameter of a command: an option (or argument) and, for a config field, how it fills it."""

    name: str
    annotation: Any
    default: Any
    help: str
    flag: str | None = None
    field: str | None = None
    to_field: Callable | None = None
    argument: bool = False

    def parameter(self) -> inspect.Parameter:
        if self.argument:
            info = typer.Argument(self.default, help=self.help)
        else:
            flag = self.flag or "--" + self.name.replace("_", "-")
            if self.annotation is bool and self.flag is None:
                flag = f"{flag}/--no-{flag[2:]}"
            info = typer.Option(self.default, *flag.split(" "), help=self.help)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=self.annotation)


def field_docs(cls, grouped: bool = False) -> dict[str, str]:
    """Each field's help: ``metadata["help"]``, else its docstring ``Args:`` entry.

    An entry may name several fields (``a / b: text``, kept apart unless ``grouped``) or hold a second
    one after a sentence (``a: text. b: text``).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    single, shared = {}, {}
    for fields, text in _args_entries(inspect.getdoc(cls) or ""):
        for part_fields, part in _split_inline(fields, text, names):
            target = single if len(part_fields) == 1 else shared
            for name in part_fields:
                target.setdefault(name, part)
    docs = {k: v[:1].upper() + v[1:] for k, v in (shared | single if grouped else single).items()}
    docs.update({f.name: f.metadata["help"] for f in dataclasses.fields(cls) if "help" in f.metadata})
    return docs


def _args_entries(doc: str) -> list[tuple[list[str], str]]:
    """``[(field names, text)]`` of a Google-style ``Args:`` section."""
    lines = doc.splitlines()
    if "Args:" not in (line.strip() for line in lines):
        return []
    start = next(i for i, line in enumerate(lines) if line.strip() == "Args:") + 1
    entries, indent = [], None
    for line in lines[start:]:
        if line.strip() and not line.startswith(" "):
            break  # the next section ("Example:")
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None and line.strip() else indent
        match = _ENTRY.fullmatch(line.strip())
        if depth == indent and match:
            entries.append(([n.strip() for n in match[1].split("/")], match[2]))
        elif entries and line.strip():
            entries[-1] = (entries[-1][0], entries[-1][1] + " " + line.strip())
    return entries


def _split_inline(fields: list[str], text: str, names: set[str]):
    """``"x. layer_map: y"`` -> the part for ``fields`` and one for ``layer_map`` (a known field only)."""
    parts = re.split(r"(?<=[.)])\s+(\w+):\s+", text)
    pieces = [(fields, parts[0])]
    for name, part in zip(parts[1::2], parts[2::2]):
        if name in names:
            pieces.append(([name], part))
        else:  # "None: everything" is prose, not a field
            pieces[-1] = (pieces[-1][0], f"{pieces[-1][1]} {name}: {part}")
    return pieces


def config_options(cls, defaults=None, docs: dict | None = None, cli: dict[str, Cli] | None = None,
                   exclude: tuple[str, ...] = ()) -> list[Option]:
    """One option per field of the dataclass ``cls`` that is not in ``exclude``.

    Args:
        defaults: an instance whose values are the defaults (default: the fields' own).
        docs: help per field (default: :func:`field_docs` of ``cls``).
        cli: :class:`Cli` adapters per field name (fields without one are plain ``--field-name``).
    """
    docs = field_docs(cls) if docs is None else docs
    cli, hints = cli or {}, typing.get_type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        adapter = cli.get(f.name, Cli())
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        shown = adapter.from_field(default) if adapter.from_field else default
        shown = shown if adapter.default is FIELD_DEFAULT else adapter.default
        annotation = _optional(adapter.type or hints[f.name], shown)
        name = adapter.flag.split("/")[0][2:].replace("-", "_") if adapter.flag else f.name
        text = " ".join(filter(None, [docs.get(f.name, ""), adapter.note]))
        options.append(Option(name, annotation, shown, text, adapter.flag, f.name, adapter.to_field))
    return _with_flags(options)


def _field_default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _optional(annotation, default):
    """typer's form of a type: ``Optional[X]`` for ``X | None`` or a None default."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if len(args) == 1 else annotation
    return Optional[base] if default is None or base is not annotation else base


def _with_flags(options: list[Option]) -> list[Option]:
    """Help texts whose ``field`` references name the option instead (``max_epochs`` -> ``--max-epochs``)."""
    flags = {o.field: (o.flag or "--" + o.name.replace("_", "-")).split("/")[0] for o in options if o.field}

    def render(text: str) -> str:
        text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
        text = re.sub(r"``(\w+)``", lambda m: flags.get(m[1], f"'{m[1]}'"), text)
        return text.replace("``", "'")

    return [dataclasses.replace(o, help=render(o.help)) for o in options]


def field_values(options: list[Option], values: dict) -> dict:
    """The config fields the command line set: ``{field: value}`` from a command's parsed ``values``."""
    out = {}
    for option in options:
        if option.field is not None:
            value = values[option.name]
            out[option.field] = option.to_field(value) if option.to_field else value
    return out


def with_options(*groups: list[Option], context: bool = False):
    """Give the decorated ``fn(**values)`` (or ``fn(ctx, **values)``) the options of ``groups`` as its
    signature, which is what typer reads."""
    options = [o for group in groups for o in group]
    names = [o.name for o in options]
    assert len(names) == len(set(names)), f"an option is defined twice: {sorted(n for n in names if names.count(n) > 1)}"

    def decorate(fn):
        params = [o.parameter() for o in options]
        if context:
            params.insert(0, inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context))
        fn.__signature__ = inspect.Signature(params)
        fn.__annotations__ = {p.name: p.annotation for p in params}
        return fn

    return decorate
