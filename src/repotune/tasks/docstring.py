"""Docstring generation samples from Python: definition without its docstring -> docstring.

A sample's input is the source of a class or function (decorators and the first line's
indentation included) with the docstring statement removed and the rest byte-identical.
When the docstring was the whole body, it is replaced by ``...`` so the input stays valid
Python. The target is the docstring's value (escapes resolved, as ``__doc__`` holds it),
cleaned with ``inspect.cleandoc``; ``summary`` keeps its first paragraph.
"""

from __future__ import annotations

import ast
import inspect
import re
import warnings
from collections import Counter
from collections.abc import Iterator

from tree_sitter import Node

from repotune.languages import captures

_DEFINITIONS = ("function_definition", "class_definition")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def docstring_value(node: Node) -> str | None:
    """The docstring a Python definition node really has (``__doc__``), else None.

    Only a plain or raw ``str`` literal (or an implicit concatenation of them) as the first
    statement is a docstring; byte strings and f-strings are not (Python leaves ``__doc__``
    None for them).
    """
    stmt = docstring_statement(node)
    if stmt is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes such as "\d" warn but still evaluate
        try:
            value = ast.literal_eval(stmt.named_children[0].text.decode("utf-8"))
        except (ValueError, SyntaxError):
            return None  # f-strings and anything else that is not a constant
    return value if isinstance(value, str) else None


def docstring_statement(node: Node) -> Node | None:
    """The first statement of the body if it is a lone string expression."""
    body = node.child_by_field_name("body")
    if body is None:
        return None
    first = next((c for c in body.named_children if c.type != "comment"), None)
    if first is None or first.type != "expression_statement" or first.named_child_count != 1:
        return None
    if first.named_children[0].type not in ("string", "concatenated_string"):
        return None
    return first


def clean(value: str, target: str) -> str:
    """``inspect.cleandoc`` the docstring; 'summary' keeps only its first paragraph."""
    text = inspect.cleandoc(value)
    if target == "summary":
        text = _PARAGRAPH_BREAK.split(text, maxsplit=1)[0]
    return text.strip()


def qualified_name(node: Node) -> str:
    """Python's ``__qualname__``: Outer.method, func.<locals>.inner."""
    parts = [node.child_by_field_name("name").text.decode("utf-8")]
    parent = node.parent
    while parent is not None:
        if parent.type in _DEFINITIONS:
            name = parent.child_by_field_name("name").text.decode("utf-8")
            if parent.type == "function_definition":
                parts.append("<locals>")
            parts.append(name)
        parent = parent.parent
    return ".".join(reversed(parts))


def kind(node: Node) -> str:
    """class, function, method, async_function or async_method."""
    if node.type == "class_definition":
        return "class"
    outer = node.parent
    if outer is not None and outer.type == "decorated_definition":
        outer = outer.parent
    is_method = outer is not None and outer.type == "block" and outer.parent.type == "class_definition"
    base = "method" if is_method else "function"
    is_async = any(c.type == "async" for c in node.children)
    return f"async_{base}" if is_async else base


def _line_start(src: bytes, offset: int) -> int:
    return src.rfind(b"\n", 0, offset) + 1


def strip_docstring(src: bytes, node: Node, stmt: Node) -> str:
    """Source of the definition (from its first line's start) without the docstring."""
    outer = node.parent if node.parent is not None and node.parent.type == "decorated_definition" else node
    start, end = _line_start(src, outer.start_byte), node.end_byte
    body = node.child_by_field_name("body")
    alone = all(c.id == stmt.id or c.type == "comment" for c in body.named_children)
    cut_start, cut_end = stmt.start_byte, stmt.end_byte
    if alone:
        # The docstring was the whole body: keep the body valid with `...`.
        return (src[start:cut_start] + b"..." + src[cut_end:end]).decode("utf-8")
    # `"""doc"""; x = 1`: take the `;` and the spaces after it too.
    rest = re.match(rb"[ \t]*;[ \t]*", src[cut_end:end])
    if rest:
        cut_end += rest.end()
    line_start = _line_start(src, cut_start)
    line_end = src.find(b"\n", cut_end)
    line_end = len(src) if line_end == -1 else line_end + 1
    if not src[line_start:cut_start].strip() and not src[cut_end:line_end].strip():
        cut_start, cut_end = line_start, min(line_end, end)  # the docstring's lines go whole
    return (src[start:cut_start] + src[cut_end:end]).decode("utf-8")


def extract(root: Node, src: bytes, target: str, counts: Counter) -> Iterator[dict]:
    """Yield one sample per class or function that has a docstring.

    Args:
        root: the parsed module's root node.
        src: the module's bytes (tree-sitter offsets are byte offsets).
        target: 'summary' or 'full'.
        counts: updated in place: definitions, definitions_without_docstring.

    Yields:
        Partial records: kind, name, start_line, end_line (1-based, inclusive), input, target.
    """
    for node in captures("python", "definitions", root, "definition"):
        counts["definitions"] += 1
        value = docstring_value(node)
        if value is None:
            counts["definitions_without_docstring"] += 1
            continue
        stmt = docstring_statement(node)
        outer = node.parent if node.parent.type == "decorated_definition" else node
        yield {
            "kind": kind(node),
            "name": qualified_name(node),
            "start_line": outer.start_point.row + 1,
            "end_line": node.end_point.row + 1,
            "input": strip_docstring(src, node, stmt),
            "target": clean(value, target),
        }
