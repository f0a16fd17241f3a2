"""No function of the package or of a stage script is over 80 lines without a comment saying why.

A long function is usually several jobs that a reader has to tell apart; when one is long for
a reason (a stage's ``main`` that reads like the stage's recipe, a report written top to
bottom), the reason is written down where the function starts: a comment block starting
``# long:`` directly above the ``def`` (or above its decorators), or such a comment at the end
of the ``def`` line itself. Lines are counted from the ``def`` (or the first decorator) to the last line of the
body, docstring and comments included, as an editor shows them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = (ROOT / "src" / "repotune", ROOT / "stages")
MAX_LINES = 80
MARK = "# long:"


def comment_above(lines: list[str], first: int) -> str:
    """The block of comment lines right above line `first` (1-based), joined; '' if none."""
    block = []
    number = first - 1
    while number >= 1 and lines[number - 1].strip().startswith("#"):
        block.append(lines[number - 1].strip())
        number -= 1
    return "\n".join(reversed(block))


def long_functions(path: Path) -> list[tuple[str, int, int, bool]]:
    """(qualified name, first line, length, explained) of every function in `path` over MAX_LINES."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = f"{prefix}{getattr(child, 'name', '')}"
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = child.decorator_list[0].lineno if child.decorator_list else child.lineno
                length = child.end_lineno - first + 1
                if length > MAX_LINES:
                    explained = MARK in comment_above(lines, first) or MARK in lines[child.lineno - 1]
                    found.append((name, first, length, explained))
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, f"{name}.")

    visit(ast.parse(text), "")
    return found


def test_no_function_over_80_lines_without_a_comment_saying_why() -> None:
    unexplained = [
        f"{path.relative_to(ROOT)}:{line} {name} is {length} lines"
        for folder in FOLDERS
        for path in sorted(folder.rglob("*.py"))
        for name, line, length, explained in long_functions(path)
        if not explained
    ]
    assert not unexplained, (
        f"functions over {MAX_LINES} lines: split them, or say why one is long in a "
        f"'{MARK} ...' comment right above its def:\n" + "\n".join(unexplained)
    )


def test_the_scan_counts_decorators_and_reads_the_comment(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(80))
    source = (
        "@decorator\ndef decorated():\n" + body          # 82 lines from the decorator
        + "\n# long: a recipe read\n# top to bottom\ndef explained():\n" + body
        + "\ndef short():\n    return 1\n"
        + "\nclass Holder:\n    def method(self):  # long: one table written row by row\n"
        + body.replace("    ", "        ")
    )
    path = tmp_path / "module.py"
    path.write_text(source, encoding="utf-8")
    assert long_functions(path) == [
        ("decorated", 1, 82, False),
        ("explained", 86, 81, True),
        ("Holder.method", 172, 81, True),
    ]
