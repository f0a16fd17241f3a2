"""Java definitions: classes, interfaces, enums, records, annotation types, methods, constructors.

What counts, and how it is named:

- ``class``, ``interface`` (annotation types ``@interface`` too), ``enum``, ``record``;
- ``method``: every method, abstract or not, including annotation-type elements
  (``int value() default 0;``) and methods declared in anonymous classes or enum constant
  bodies; ``function`` only for a method outside any class (Java 21+ implicit classes);
- ``constructor``: constructors and compact record constructors, named after their class.

Anonymous classes and lambdas are not definitions. The methods inside an anonymous class are
yielded, qualified through whatever definitions enclose them (``A.start.run`` for a
``new Runnable() { public void run() ... }`` inside method ``A.start``); methods in an enum
constant's body are qualified through the constant (``Op.PLUS.apply``). Local classes are
qualified through their method (``A.start.Local``).

The doc comment is the last ``/** ... */`` comment before the declaration's annotations and
modifiers, with only whitespace and plain comments between (``/** Doc. */ /* package */ class
A``), as javac reads a Javadoc; a ``/** */`` comment placed after an annotation is part of the
declaration, not its doc.

A test is a definition with an annotation whose simple name ends in ``Test`` (``@Test``,
``@ParameterizedTest``, ``@org.junit.Test``, ``@SpringBootTest``), a class-like definition
named ``*Test``, ``*Tests`` or ``Test*`` (see :func:`is_test_class_name`), or anything inside
one of those. A test file is one that :data:`TEST_PATHS` matches: a Gradle or Maven test
folder or source set, or a ``*Test``/``*Tests``/``*IT`` file name.

The helpers :func:`doc_comment`, :func:`clean_doc`, :func:`code_and_text`,
:func:`is_test_class_name` and the walk itself (:func:`walk_definitions`) are shared with
``kotlin`` (KDoc has Javadoc's syntax).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator

from tree_sitter import Node

from repotune.languages.syntax import Definition, captures, line_start, node_text

_KINDS = {
    "class_declaration": "class",
    "interface_declaration": "interface",
    "annotation_type_declaration": "interface",
    "enum_declaration": "enum",
    "record_declaration": "record",
    "method_declaration": "method",
    "annotation_type_element_declaration": "method",
    "constructor_declaration": "constructor",
    "compact_constructor_declaration": "constructor",
}
_CLASS_KINDS = ("class", "interface", "enum", "record", "object")
_COMMENTS = ("line_comment", "block_comment")
_ANNOTATIONS = ("marker_annotation", "annotation")
_WHITESPACE = b" \t\r\n\f"
# `FooTest`, `FooTests`, `Test`, `TestFoo`, `Test2`; not `Testable`, `Latest`, `Contest`.
_TEST_CLASS = re.compile(r"Tests?$|^Test(?![a-z])")
# One line of a doc comment: its indentation, a `*` and one space after it.
_DOC_MARGIN = re.compile(r"^[ \t]*\* ?")

# Where Gradle and Maven keep tests, as gitignore-style patterns (see extract.exclude_tests):
# any folder named test, tests, androidTest or testFixtures (Maven's and Gradle's src/test/
# too), every source set under a src/ folder named *Test (jvmTest, commonTest, iosTest,
# androidUnitTest, androidInstrumentedTest) and the variants of test source sets (testDebug,
# androidTestRelease). A pattern with a slash inside is anchored at the repository root, hence
# `**/`: `src/*Test/` alone would miss a module's lib/src/jvmTest/. Shared with ``kotlin``.
GRADLE_TEST_FOLDERS = (
    "test/",
    "tests/",
    "androidTest/",
    "testFixtures/",
    "**/src/*Test/",
    "**/src/*Test[A-Z]*/",
    "**/src/test[A-Z]*/",
)
# Test files by name (Surefire's and Failsafe's defaults): FooTest, FooTests, FooIT. A lowercase
# letter or digit before IT, so that JIT.java is not an integration test; case-sensitive, so
# Contest.java and TestabilityHelper.java are not tests either.
TEST_PATHS = GRADLE_TEST_FOLDERS + ("*Test.java", "*Tests.java", "*[a-z0-9]IT.java")
# What starts a line comment (prompts render retrieved context as comments, see repotune.prompts).
LINE_COMMENT = "//"
# File suffixes, block comment markers, a method's receiver, a body that only calls the super
# implementation (`return super.name(...);`): see repotune.languages.
EXTENSIONS = (".java",)
BLOCK_COMMENT = ("/*", "*/")
SELF = "this"
SUPER_CALL = re.compile(r"^(return\s+)?super\.(?P<name>[\w$]+)\s*\(.*\)\s*;?$", re.S)


def grammar() -> object:
    import tree_sitter_java

    return tree_sitter_java.language()


def _skip_space(src: bytes, pos: int, floor: int = 0) -> int:
    """`pos` moved back over whitespace, not below `floor`."""
    while pos > floor and src[pos - 1] in _WHITESPACE:
        pos -= 1
    return pos


def _comment_ending_at(root: Node, pos: int) -> Node | None:
    """The comment node that ends at byte `pos`, or None."""
    if pos == 0:
        return None
    node = root.descendant_for_byte_range(pos - 1, pos)
    if node is None or node.type not in _COMMENTS or node.end_byte != pos:
        return None
    return node


def _is_doc(comment: Node) -> bool:
    """A ``/** ... */`` comment; ``/**/`` is an empty plain comment."""
    raw = comment.text
    return comment.type == "block_comment" and raw.startswith(b"/**") and raw != b"/**/"


def doc_comment(root: Node, src: bytes, node: Node) -> Node | None:
    """The ``/** ... */`` comment right before `node` (its annotations included), or None.

    Whitespace and plain comments may stand between them (``/** Doc. */ /* package */ class
    A``, a ``// note`` line), as javac reads a Javadoc; anything else (another declaration, a
    statement, ``package``) ends the search. Found by position, not by tree shape: a grammar
    attaches a comment to whatever node precedes it (Kotlin puts one that follows ``@file:``
    annotations inside the file annotation).
    """
    pos = node.start_byte
    while True:
        comment = _comment_ending_at(root, _skip_space(src, pos))
        if comment is None:
            return None
        if _is_doc(comment):
            return comment
        pos = comment.start_byte


def clean_doc(comment: str) -> str:
    """The text of a ``/** ... */`` comment: markers, each line's margin and ``*`` removed.

    Each line loses its leading whitespace, a ``*`` and one space after it (a line without a
    ``*`` keeps its indentation), then the lot is dedented and stripped like
    ``inspect.cleandoc``; trailing whitespace of each line goes too. Block tags are kept.
    """
    inner = comment[3:-2] if comment.endswith("*/") else comment[3:]
    lines = [_DOC_MARGIN.sub("", line, count=1).rstrip() for line in inner.splitlines()]
    return inspect.cleandoc("\n".join(lines))


def _span_start(root: Node, src: bytes, start: int) -> int:
    """Start of the line of byte `start` if only whitespace and plain comments precede it there.

    Otherwise `start` itself: a one-line ``class A { void f() {} }`` must not put ``class A {``
    into ``f``'s code, nor ``/** Doc. */ void f()`` its doc comment.
    """
    first = line_start(src, start)
    pos = start
    while True:
        pos = _skip_space(src, pos, first)
        if pos == first:
            return first
        comment = _comment_ending_at(root, pos)
        if comment is None or comment.start_byte < first or _is_doc(comment):
            return start
        pos = comment.start_byte


def code_and_text(root: Node, src: bytes, node: Node, doc: Node | None) -> tuple[str, str]:
    """`code` (the declaration from the start of its first line) and `text` (doc included).

    The first line's indentation (and a plain comment such as ``/* package */`` before the
    declaration on that line) is kept; see :func:`_span_start` for lines that hold more.
    """
    code = src[_span_start(root, src, node.start_byte):node.end_byte].decode("utf-8")
    if doc is None:
        return code, code
    return code, src[_span_start(root, src, doc.start_byte):node.end_byte].decode("utf-8")


def is_test_class_name(name: str) -> bool:
    """JUnit/Surefire conventions: ``*Test``, ``*Tests``, ``Test*`` (``Test`` then not a-z)."""
    return _TEST_CLASS.search(name) is not None


def _name(node: Node) -> str | None:
    name = node.child_by_field_name("name")
    if name is None or not name.text:
        return None
    return node_text(name)


def _scope_name(node: Node) -> str | None:
    """The name a non-definition ancestor adds to qualified names (enum constants), else None."""
    if node.type == "enum_constant":
        return _name(node)
    return None


def _kind(node: Node) -> str:
    kind = _KINDS[node.type]
    if kind == "method" and node.parent is not None and node.parent.type == "program":
        return "function"
    return kind


def _modifiers(node: Node) -> list[Node]:
    mods = next((c for c in node.children if c.type == "modifiers"), None)
    return [] if mods is None else [c for c in mods.children if c.type not in _COMMENTS]


def _annotation_names(modifiers: list[Node]) -> list[str]:
    """Simple names of the annotations: ``@org.junit.Test`` -> ``Test``."""
    names = []
    for mod in modifiers:
        if mod.type in _ANNOTATIONS:
            name = mod.child_by_field_name("name")
            if name is not None:
                names.append(node_text(name).rsplit(".", 1)[-1])
    return names


def walk_definitions(
    lang: str,
    root: Node,
    src: bytes,
    *,
    grammar: Callable[[], object],
    name: Callable[[Node], str | None],
    scope_name: Callable[[Node], str | None],
    kind: Callable[[Node], str],
    modifiers: Callable[[Node], list[Node]],
    annotation_names: Callable[[list[Node]], list[str]],
    body: Callable[[Node], Node | None],
    class_kinds: tuple[str, ...],
) -> Iterator[Definition]:
    """The definitions of a Java-family file (Java, Kotlin), in source order.

    The grammar-specific parts come as functions of a declaration node (and `grammar`: the
    language module's own, for its query files); naming, tests, doc comments, code and text are
    worked out the same way for both languages.
    """
    # node id -> (qualified name, is_test) of the definitions yielded so far; an enclosing
    # definition always comes first in source order.
    seen: dict[int, tuple[str, bool]] = {}
    for node in captures(grammar, lang, "definitions", root, "definition"):
        simple = name(node)
        if simple is None:
            continue
        parts, inherited_test = [simple], False
        parent = node.parent
        while parent is not None:
            if parent.id in seen:
                outer, inherited_test = seen[parent.id]
                parts.append(outer)
                break  # the enclosing definition's qualified name holds the rest
            scope = scope_name(parent)
            if scope is not None:
                parts.append(scope)
            parent = parent.parent
        qualname = ".".join(reversed(parts))
        what = kind(node)
        mods = modifiers(node)
        is_test = (
            inherited_test
            or any(a.endswith("Test") for a in annotation_names(mods))
            or (what in class_kinds and is_test_class_name(simple))
        )
        seen[node.id] = (qualname, is_test)
        doc = doc_comment(root, src, node)
        code, text = code_and_text(root, src, node, doc)
        block = body(node)
        yield Definition(
            name=simple,
            qualified_name=qualname,
            kind=what,
            start_line=node.start_point.row + 1,
            end_line=node.end_point.row + 1,
            code=code,
            text=text,
            doc=clean_doc(node_text(doc)) if doc is not None else None,
            body=node_text(block) if block is not None else None,
            modifiers=tuple(node_text(m) for m in mods),
            is_test=is_test,
        )


def definitions(root: Node, src: bytes) -> Iterator[Definition]:
    """Every class-like and method-like definition of a parsed file, in source order."""
    return walk_definitions(
        "java", root, src, grammar=grammar, name=_name, scope_name=_scope_name, kind=_kind, modifiers=_modifiers,
        annotation_names=_annotation_names, body=lambda node: node.child_by_field_name("body"),
        class_kinds=_CLASS_KINDS,
    )


def marked_deprecated(code: str) -> bool:  # noqa: ARG001 - see below
    """Whether a definition's code marks it deprecated: never looked at for Java (its doc
    comment's ``@deprecated`` is; an ``@Deprecated`` annotation is not, yet)."""
    return False


def body_statements(body: str) -> list[str]:
    """The non-blank lines of a method body without its braces, stripped."""
    text = body.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    return [line.strip() for line in text.splitlines() if line.strip() not in ("", "{", "}")]
