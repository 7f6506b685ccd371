"""The orchestration layer stays readable: no library function over ~80 lines (issue #11)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("kronedge", "exporters", "runtime")  # benchmark scripts (benchmarks/) aside
MAX_LINES = 80


def long_functions(roots=LIBRARY, limit: int = MAX_LINES, repo: Path = REPO) -> dict[str, int]:
    """``{"path:function": lines}`` of every function (decorators included) longer than ``limit``."""
    found = {}
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                    if node.end_lineno - start + 1 > limit:
                        found[f"{path.relative_to(repo).as_posix()}:{node.name}"] = node.end_lineno - start + 1
    return found


def test_no_library_function_is_longer_than_80_lines():
    found = long_functions()
    assert not found, found


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(f"def short():\n    pass\n\n\n@decorator\ndef long():\n{body}\n")
    assert long_functions(roots=("pkg",), repo=tmp_path) == {"pkg/mod.py:long": MAX_LINES + 2}
