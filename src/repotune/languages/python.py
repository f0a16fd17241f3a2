"""Python definitions: classes and functions at any depth (methods, nested, decorated, async).

The docstring is the first statement of a body when it is a plain or raw ``str`` literal (or
an implicit concatenation of them); byte strings and f-strings are not docstrings (Python
leaves ``__doc__`` None for them). ``code`` is the definition without the docstring statement,
the rest byte-identical; a body that was only a docstring becomes ``...``.
"""

from __future__ import annotations

import ast
import inspect
import re
import warnings
from collections.abc import Iterator

from tree_sitter import Node

from repotune.languages.syntax import Definition, captures, line_start, node_text

_DEFINITIONS = ("function_definition", "class_definition")
# Test files (gitignore-style, see extract.exclude_tests): pytest's and unittest's layouts and
# names. A pattern without an inner slash matches at any depth (pkg/tests/, a/b/test_x.py).
TEST_PATHS = ("tests/", "test/", "testing/", "test_*.py", "*_test.py", "conftest.py")
# File suffixes of the language (walking a tree needs no grammar: repotune.files).
EXTENSIONS = (".py",)
# What starts a line comment (prompts render retrieved context as comments, see repotune.prompts;
# the completion task strips a licence header written in comments).
LINE_COMMENT = "#"
# Block comment markers (start, end), None when the language has none.
BLOCK_COMMENT = None
# The receiver of a method inside its body (trivial accessors: `return self.x`).
SELF = "self"
# One statement (optionally `return`) that only calls the super implementation: `super().name(...)`.
SUPER_CALL = re.compile(r"^(return\s+)?super\(\)\.(?P<name>[\w$]+)\s*\(.*\)\s*;?$", re.S)

_DEPRECATED_DECORATOR = re.compile(r"^\s*@(?:[\w.]+\.)?deprecated\b", re.M)
_DEF_LINE = re.compile(r"^\s*(?:async\s+def|def|class)\s")
_WARNING_CALL = re.compile(r"\s*(?:warnings\.)?warn\w*\(")


def grammar() -> object:
    import tree_sitter_python

    return tree_sitter_python.language()


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


def docstring_value(node: Node) -> str | None:
    """The docstring a Python definition node really has (``__doc__``), else None."""
    stmt = docstring_statement(node)
    if stmt is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes such as "\d" warn but still evaluate
        try:
            value = ast.literal_eval(node_text(stmt.named_children[0]))
        except (ValueError, SyntaxError):
            return None  # f-strings and anything else that is not a constant
    return value if isinstance(value, str) else None


def qualified_name(node: Node) -> str:
    """Python's ``__qualname__``: Outer.method, func.<locals>.inner."""
    parts = [node_text(node.child_by_field_name("name"))]
    parent = node.parent
    while parent is not None:
        if parent.type in _DEFINITIONS:
            if parent.type == "function_definition":
                parts.append("<locals>")
            parts.append(node_text(parent.child_by_field_name("name")))
        parent = parent.parent
    return ".".join(reversed(parts))


def kind(node: Node) -> str:
    """class, function, method, async_function or async_method."""
    if node.type == "class_definition":
        return "class"
    outer = _outer(node).parent
    is_method = outer is not None and outer.type == "block" and outer.parent.type == "class_definition"
    base = "method" if is_method else "function"
    is_async = any(c.type == "async" for c in node.children)
    return f"async_{base}" if is_async else base


def _outer(node: Node) -> Node:
    """The decorated_definition wrapping `node`, or `node` itself."""
    parent = node.parent
    return parent if parent is not None and parent.type == "decorated_definition" else node


def strip_docstring(src: bytes, node: Node, stmt: Node) -> str:
    """Source of the definition (from its first line's start) without the docstring."""
    start, end = line_start(src, _outer(node).start_byte), node.end_byte
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
    first = line_start(src, cut_start)
    last = src.find(b"\n", cut_end)
    last = len(src) if last == -1 else last + 1
    if not src[first:cut_start].strip() and not src[cut_end:last].strip():
        cut_start, cut_end = first, min(last, end)  # the docstring's lines go whole
    return (src[start:cut_start] + src[cut_end:end]).decode("utf-8")


def is_test(qualname: str) -> bool:
    """pytest/unittest conventions: test* functions, Test* classes (or anything inside one)."""
    parts = [p for p in qualname.split(".") if p != "<locals>"]
    return parts[-1].startswith("test") or any(p.startswith("Test") for p in parts)


def definitions(root: Node, src: bytes) -> Iterator[Definition]:
    """Every class and function of a parsed module, in source order."""
    for node in captures(grammar, "python", "definitions", root, "definition"):
        outer = _outer(node)
        start = line_start(src, outer.start_byte)
        text = src[start:node.end_byte].decode("utf-8")
        value = docstring_value(node)
        stmt = docstring_statement(node) if value is not None else None
        decorators = tuple(
            node_text(c) for c in outer.children if c.type == "decorator"
        ) if outer is not node else ()
        body = node.child_by_field_name("body")
        qualname = qualified_name(node)
        yield Definition(
            name=node_text(node.child_by_field_name("name")),
            qualified_name=qualname,
            kind=kind(node),
            start_line=outer.start_point.row + 1,
            end_line=node.end_point.row + 1,
            code=strip_docstring(src, node, stmt) if stmt is not None else text,
            text=text,
            doc=inspect.cleandoc(value) if value is not None else None,
            body=node_text(body) if body is not None else None,
            modifiers=decorators,
            is_test=is_test(qualname),
        )


def marked_deprecated(code: str) -> bool:
    """Whether a definition's code (its doc comment removed) marks it deprecated: a
    ``@deprecated`` decorator of its own, or a body that opens with a warning call naming a
    deprecation (a stub that warns and delegates)."""
    lines = code.splitlines()
    start = next((i for i, line in enumerate(lines) if _DEF_LINE.match(line)), None)
    if start is None:
        return False
    # Only the definition's own decorators: a class with one deprecated method is not deprecated.
    if _DEPRECATED_DECORATOR.search("\n".join(lines[:start])):
        return True
    # The signature ends at the first line ending with ':'; the body's first statement follows.
    end = next((i for i in range(start, len(lines)) if lines[i].rstrip().endswith(":")), len(lines))
    body = [line for line in lines[end + 1 :] if line.strip()][:4]
    opening = "\n".join(body)
    return bool(_WARNING_CALL.match(opening)) and "eprecat" in opening


def body_statements(body: str) -> list[str]:
    """The non-blank lines of a function body (a block: no braces to drop), stripped."""
    return [line.strip() for line in body.strip().splitlines() if line.strip() not in ("", "{", "}")]
