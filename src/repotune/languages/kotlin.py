"""Kotlin definitions: classes, interfaces, objects, enums, functions, methods, constructors.

What counts, and how it is named:

- ``class`` (``data``, ``sealed``, ``annotation``, ``inner`` ... classes), ``interface``
  (``fun interface`` and ``sealed interface`` too), ``enum`` (``enum class``), ``object``
  (object declarations and companion objects; an unnamed companion is ``Companion``);
- ``method``: a function declared directly in a class, interface, object or enum body,
  including the body of an enum entry or of an ``object :`` expression; ``function``: a
  top-level or local function; ``extension_function``: any function with a receiver type
  (``fun String.shout()`` is named ``shout``; the receiver is in no name). A backquoted
  name loses its backquotes: ``fun `adds two numbers`()`` is named ``adds two numbers``;
- ``constructor``: a secondary ``constructor(...)``, named after its class. A primary
  constructor is part of its class.

Qualified names go through every enclosing definition and enum entry: ``Outer.Inner.method``,
``Outer.Companion.create``, ``Color.RED.label``, ``Outer.method.localFun``. Object expressions
(``object : Runnable { ... }``), lambdas, anonymous functions, accessors and ``init`` blocks
are not definitions; functions inside an object expression are qualified through the
definitions around it.

``modifiers`` holds the ``modifiers`` node's annotations and keywords as written, plus the
``fun`` of a ``fun interface`` and the ``companion`` of a companion object (both are
modifiers in Kotlin's own terms). The KDoc is the last ``/** ... */`` comment before the
declaration's annotations and modifiers, with only whitespace and plain comments between (see
``java.doc_comment``); one placed after an annotation stays inside the declaration's code and
is not its doc. Tests are recognised as in ``java`` (``@Test``-like annotations, ``*Test``
classes and objects, anything inside them); test files as in ``java`` (:data:`TEST_PATHS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from tree_sitter import Node

from repotune.languages.syntax import Definition, node_text
from repotune.languages.java import GRADLE_TEST_FOLDERS, walk_definitions

_CLASS_KINDS = ("class", "interface", "enum", "object")
_CLASS_BODIES = ("class_body", "enum_class_body")
_COMMENTS = ("line_comment", "block_comment")
# Children of a function_declaration that come before its name and are not its receiver.
_NOT_RECEIVER = ("modifiers", "type_parameters", "line_comment", "block_comment")
# Test files: Gradle's test folders and source sets (see ``java``), FooTest.kt, FooTests.kt, FooIT.kt.
TEST_PATHS = GRADLE_TEST_FOLDERS + ("*Test.kt", "*Tests.kt", "*[a-z0-9]IT.kt")
# What starts a line comment (prompts render retrieved context as comments, see repotune.prompts).
LINE_COMMENT = "//"
# File suffixes, block comment markers, a method's receiver, a body that only calls the super
# implementation (`super.name(...)`, `super<Base>.name(...)`): see repotune.languages.
EXTENSIONS = (".kt", ".kts")
BLOCK_COMMENT = ("/*", "*/")
SELF = "this"
SUPER_CALL = re.compile(r"^(return\s+)?super(<[^>]*>)?\.(?P<name>[\w$]+)\s*\(.*\)\s*;?$", re.S)


def grammar() -> object:
    import tree_sitter_kotlin

    return tree_sitter_kotlin.language()


def _child(node: Node, *types: str) -> Node | None:
    return next((c for c in node.children if c.type in types), None)


def _name(node: Node) -> str | None:
    """The simple name; a secondary constructor's is its class's; None when there is none."""
    if node.type == "secondary_constructor":
        parent = node.parent
        while parent is not None and parent.type not in ("class_declaration", "object_declaration"):
            parent = parent.parent
        return _name(parent) if parent is not None else None
    name = node.child_by_field_name("name")
    if name is None:
        return "Companion" if node.type == "companion_object" else None
    # A MISSING name node has no text; `fun \`does a thing\`()` is named `does a thing`.
    return node_text(name).strip("`") or None


def _has_receiver(node: Node) -> bool:
    """A function_declaration with a receiver type before its name (an extension function)."""
    for child in node.named_children:
        if child.type == "identifier":  # the name: no receiver came before it
            return False
        if child.type not in _NOT_RECEIVER:
            return True
    return False


def _kind(node: Node) -> str:
    if node.type in ("object_declaration", "companion_object"):
        return "object"
    if node.type == "secondary_constructor":
        return "constructor"
    if node.type == "class_declaration":
        if any(c.type == "interface" for c in node.children):
            return "interface"
        mods = _child(node, "modifiers")
        is_enum = mods is not None and any(
            c.type == "class_modifier" and node_text(c) == "enum" for c in mods.children
        )
        return "enum" if is_enum else "class"
    if _has_receiver(node):
        return "extension_function"
    parent = node.parent
    return "method" if parent is not None and parent.type in _CLASS_BODIES else "function"


def _scope_name(node: Node) -> str | None:
    """The name a non-definition ancestor adds to qualified names (enum entries), else None."""
    if node.type == "enum_entry":
        name = _child(node, "identifier")
        return node_text(name) if name is not None else None
    return None


def _modifiers(node: Node) -> list[Node]:
    mods = _child(node, "modifiers")
    found = [] if mods is None else [c for c in mods.children if c.type not in _COMMENTS]
    if node.type == "class_declaration":
        found += [c for c in node.children if c.type == "fun"]  # `fun interface`
    elif node.type == "companion_object":
        found += [c for c in node.children if c.type == "companion"]
    return found


def _annotation_names(modifiers: list[Node]) -> list[str]:
    """Simple names of the annotations: ``@org.junit.Test``, ``@get:Test``, ``@[A Test]``."""
    names = []
    for mod in modifiers:
        if mod.type != "annotation":
            continue
        for child in mod.named_children:
            if child.type == "constructor_invocation":  # `@Ann(args)`
                child = _child(child, "user_type")
            if child is not None and child.type == "user_type":
                parts = [c for c in child.children if c.type == "identifier"]
                if parts:
                    names.append(node_text(parts[-1]))
    return names


def _body(node: Node) -> Node | None:
    """The `{ ... }` of a class or function, or the expression of `= expr`; None if none."""
    if node.type == "function_declaration":
        body = _child(node, "function_body")
        if body is None:
            return None
        block = _child(body, "block")
        if block is not None:
            return block
        return next((c for c in body.named_children if c.type not in _COMMENTS), None)
    if node.type == "secondary_constructor":
        return _child(node, "block")
    return _child(node, *_CLASS_BODIES)


def definitions(root: Node, src: bytes) -> Iterator[Definition]:
    """Every class-like and function-like definition of a parsed file, in source order."""
    return walk_definitions(
        "kotlin", root, src, grammar=grammar, name=_name, scope_name=_scope_name, kind=_kind, modifiers=_modifiers,
        annotation_names=_annotation_names, body=_body, class_kinds=_CLASS_KINDS,
    )


def marked_deprecated(code: str) -> bool:  # noqa: ARG001 - see below
    """Whether a definition's code marks it deprecated: never looked at for Kotlin (its KDoc's
    ``@deprecated`` is; a ``@Deprecated`` annotation is not, yet)."""
    return False


def body_statements(body: str) -> list[str]:
    """The non-blank lines of a function body without its braces, or of an expression body
    without its ``=``, stripped."""
    text = body.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    elif text.startswith("="):
        text = text[1:]
    return [line.strip() for line in text.splitlines() if line.strip() not in ("", "{", "}")]
