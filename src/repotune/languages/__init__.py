"""Languages: each is a module that turns a parsed source file into :class:`Definition` objects.

A language module (``python``, ``kotlin``, ``java``) owns everything grammar-specific: its
tree-sitter grammar (from the PyPI wheel, never downloaded at run time), its
query files (``queries/<lang>_*.scm``), how a doc comment is found and cleaned, what a test
looks like. Tasks consume definitions and never look at a grammar's node types.

File suffixes live in ``repotune.files.EXTENSIONS`` (walking a tree needs no grammar). Each
module provides:

- ``grammar()``: the tree-sitter language pointer of its wheel;
- ``definitions(root, src)``: the definitions of a parsed file, in source order.
- ``TEST_PATHS``: gitignore-style patterns of the files that are tests by the language's
  conventions (its test folders, source sets and file names), skipped by ``extract.exclude_tests``.
- ``LINE_COMMENT``: what starts a line comment (``#``, ``//``): prompts render retrieved
  context as comments of the sample's language.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import ModuleType

from tree_sitter import Language, Node, Parser, Query, QueryCursor


@dataclass(frozen=True)
class Definition:
    """One class-like or function-like definition of a source file.

    Attributes:
        name: the simple name as written (a constructor: its class's name).
        qualified_name: dotted path through enclosing definitions (Python: ``__qualname__``,
            e.g. ``Outer.method`` or ``func.<locals>.inner``; Kotlin/Java: ``Outer.method``).
        kind: ``class``, ``interface``, ``object``, ``enum``, ``record``, ``function``,
            ``method``, ``constructor``, ``extension_function``, ``async_function`` or
            ``async_method``.
        start_line: first line (1-based) of the definition, decorators, annotations and
            modifiers included, its doc comment excluded.
        end_line: last line (1-based, inclusive).
        code: the source from the start of `start_line` (indentation kept) to the end of the
            definition, with the doc comment removed (a Python body that was only a docstring
            becomes ``...`` so it stays valid).
        text: the definition as written, doc comment included (Kotlin/Java: from the start of
            the comment's line).
        doc: the doc comment's text, markers and leading ``*`` removed, dedented and stripped
            (Python: the docstring as ``inspect.cleandoc`` gives it); None when there is none.
        body: the source of the body, or None for a definition without one (abstract or
            interface methods, ``external``/``native`` functions).
        modifiers: decorators, annotations and modifier keywords as written, e.g.
            ``("@Override", "public")``, ``("override", "suspend")``, ``("@staticmethod",)``.
        is_test: a test by the language's conventions (pytest/unittest names; ``@Test``
            annotations, ``*Test`` classes and anything inside them for Kotlin/Java).
    """

    name: str
    qualified_name: str
    kind: str
    start_line: int
    end_line: int
    code: str
    text: str
    doc: str | None
    body: str | None
    modifiers: tuple[str, ...]
    is_test: bool


def module(name: str) -> ModuleType:
    """The module of language `name` (imported here, on first use: they import this module)."""
    from repotune.languages import java, kotlin, python

    modules = {"python": python, "kotlin": kotlin, "java": java}
    if name not in modules:
        raise ValueError(f"unknown language {name!r}; known: {', '.join(modules)}")
    return modules[name]


def paths_of_tests(name: str) -> tuple[str, ...]:
    """Gitignore-style patterns of the test files of language `name` (its ``TEST_PATHS``).

    (Not named ``test_*``: pytest would collect it from a test module that imports it.)
    """
    return module(name).TEST_PATHS


def line_comment(name: str) -> str:
    """What starts a line comment in language `name` (its ``LINE_COMMENT``)."""
    return module(name).LINE_COMMENT


@cache
def language(name: str) -> Language:
    """The tree-sitter grammar of `name`, from its PyPI wheel (no run-time download)."""
    return Language(module(name).grammar())


def parser(name: str) -> Parser:
    return Parser(language(name))


def definitions(name: str, root: Node, src: bytes) -> Iterator[Definition]:
    """The definitions of a file of language `name` parsed into `root` (source order)."""
    return module(name).definitions(root, src)


@cache
def query(lang: str, name: str) -> Query:
    """Compile the query file queries/<lang>_<name>.scm."""
    text = resources.files("repotune").joinpath("queries", f"{lang}_{name}.scm").read_text("utf-8")
    return Query(language(lang), text)


def captures(lang: str, name: str, node: Node, capture: str) -> list[Node]:
    """Nodes captured as @`capture` by query `name` under `node`, in source order."""
    found = QueryCursor(query(lang, name)).captures(node).get(capture, [])
    return sorted(found, key=lambda n: n.start_byte)


def line_start(src: bytes, offset: int) -> int:
    """Byte offset of the start of the line holding `offset`."""
    return src.rfind(b"\n", 0, offset) + 1


def node_text(node: Node) -> str:
    return node.text.decode("utf-8")
