"""What every language module shares: the :class:`Definition` they yield and tree-sitter helpers.

Apart from ``repotune.languages`` (the registry, which imports the language modules) so that a
language module imports this and not its package: no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from tree_sitter import Language, Node, Query, QueryCursor


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


@cache
def language_of(grammar: Callable[[], object]) -> Language:
    """The tree-sitter language of a language module's ``grammar`` (one object per grammar, which
    its parsers and queries share)."""
    return Language(grammar())


@cache
def query(grammar: Callable[[], object], lang: str, name: str) -> Query:
    """Compile the query file queries/<lang>_<name>.scm for `grammar`."""
    text = resources.files("repotune").joinpath("queries", f"{lang}_{name}.scm").read_text("utf-8")
    return Query(language_of(grammar), text)


def captures(grammar: Callable[[], object], lang: str, name: str, node: Node, capture: str) -> list[Node]:
    """Nodes captured as @`capture` by query `name` of `lang` (parsed with `grammar`) under
    `node`, in source order."""
    found = QueryCursor(query(grammar, lang, name)).captures(node).get(capture, [])
    return sorted(found, key=lambda n: n.start_byte)


def line_start(src: bytes, offset: int) -> int:
    """Byte offset of the start of the line holding `offset`."""
    return src.rfind(b"\n", 0, offset) + 1


def node_text(node: Node) -> str:
    return node.text.decode("utf-8")
