"""``python -m runtime.serve DIR [options]``: the same options as ``kronedge serve``, without the CLI extras."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from ..errors import KronedgeError
from .config import add_arguments, from_namespace


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime.serve", description="Serve an exported kronedge model over HTTP.")
    return add_arguments(parser)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .server import serve

        serve(from_namespace(vars(args)))
    except (KronedgeError, OSError) as exc:  # the user's to fix: one line, exit 1
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
