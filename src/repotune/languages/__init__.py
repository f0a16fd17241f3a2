"""Languages: each is a module that turns a parsed source file into :class:`Definition` objects.

A language module (``python``, ``kotlin``, ``java``) owns everything grammar- and
syntax-specific: its file suffixes, its tree-sitter grammar (from the PyPI wheel, never
downloaded at run time), its query files (``queries/<lang>_*.scm``), how a doc comment is found
and cleaned, what a test looks like, its comment markers and the shapes of a body the tasks
ask about. Tasks consume definitions and ask the language (through the functions here); they
never look at a grammar's node types nor spell a language's syntax.

:data:`LANGUAGES` is the one registry: the names params.yaml accepts (``extract.languages``),
the suffixes :mod:`repotune.files` walks, the grammars, the test layouts. What the modules share
(:class:`Definition`, query helpers) is in ``repotune.languages.syntax``, which they import
instead of this package (that imports them). Each module provides (see :class:`Language`):

- ``EXTENSIONS``: its file suffixes (``.kt``, ``.kts``);
- ``grammar()``: the tree-sitter language pointer of its wheel;
- ``definitions(root, src)``: the definitions of a parsed file, in source order.
- ``TEST_PATHS``: gitignore-style patterns of the files that are tests by the language's
  conventions (its test folders, source sets and file names), skipped by ``extract.exclude_tests``.
- ``LINE_COMMENT``: what starts a line comment (``#``, ``//``): prompts render retrieved
  context as comments of the sample's language; ``BLOCK_COMMENT``: (start, end) or None;
- ``SELF``: a method's receiver in its body (``self``, ``this``); ``SUPER_CALL``: a regex
  matching a statement that only calls the super implementation (group ``name``);
  ``body_statements(body)``: the non-blank lines of a body without its braces;
  ``marked_deprecated(code)``: whether a definition's code marks it deprecated.

Adding a language: a module here, its query file under ``queries/``, one line in
:data:`LANGUAGES` (or :func:`register`); see docs/extending.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Protocol

from tree_sitter import Language, Node, Parser

from repotune.languages import java, kotlin, python
from repotune.languages.syntax import Definition, language_of

__all__ = [
    "Definition", "LANGUAGES", "body_statements", "definitions", "extensions", "language", "line_comment",
    "marked_deprecated", "module", "parser", "paths_of_tests", "register",
]


class LanguageModule(Protocol):
    """What a language module provides (see the module docstring); tests/test_languages.py checks
    every registered language against it."""

    EXTENSIONS: tuple[str, ...]
    TEST_PATHS: tuple[str, ...]
    LINE_COMMENT: str
    BLOCK_COMMENT: tuple[str, str] | None
    SELF: str
    SUPER_CALL: re.Pattern[str]
    grammar: Callable[[], object]

    def definitions(self, root: Node, src: bytes) -> Iterator[Definition]: ...

    def body_statements(self, body: str) -> list[str]: ...

    def marked_deprecated(self, code: str) -> bool: ...


# The languages, by the name params.yaml uses (extract.languages): the one list of them.
LANGUAGES: dict[str, LanguageModule] = {"python": python, "kotlin": kotlin, "java": java}


def register(name: str, language_module: LanguageModule) -> None:
    """Add a language to :data:`LANGUAGES` at run time (a plugin, a test); the built-in ones are
    listed there directly. Its suffixes must not be another language's."""
    taken = {suffix: lang for lang, m in LANGUAGES.items() if lang != name for suffix in m.EXTENSIONS}
    clash = sorted(s for s in language_module.EXTENSIONS if s in taken)
    if clash:
        raise ValueError(f"language {name!r}: suffixes {clash} are already {taken[clash[0]]}'s")
    LANGUAGES[name] = language_module


def module(name: str) -> LanguageModule:
    """The module of language `name`."""
    if name not in LANGUAGES:
        raise ValueError(f"unknown language {name!r}; known: {', '.join(LANGUAGES)}")
    return LANGUAGES[name]


def extensions(name: str) -> tuple[str, ...]:
    """The file suffixes of language `name` (its ``EXTENSIONS``)."""
    return module(name).EXTENSIONS


def body_statements(name: str, body: str) -> list[str]:
    """The non-blank lines of a function body of language `name`, without its braces."""
    return module(name).body_statements(body)


def marked_deprecated(name: str, code: str) -> bool:
    """Whether a definition's code (language `name`) marks it deprecated."""
    return module(name).marked_deprecated(code)


def paths_of_tests(name: str) -> tuple[str, ...]:
    """Gitignore-style patterns of the test files of language `name` (its ``TEST_PATHS``).

    (Not named ``test_*``: pytest would collect it from a test module that imports it.)
    """
    return module(name).TEST_PATHS


def line_comment(name: str) -> str:
    """What starts a line comment in language `name` (its ``LINE_COMMENT``)."""
    return module(name).LINE_COMMENT


def language(name: str) -> Language:
    """The tree-sitter grammar of `name`, from its PyPI wheel (no run-time download)."""
    return language_of(module(name).grammar)


def parser(name: str) -> Parser:
    return Parser(language(name))


def definitions(name: str, root: Node, src: bytes) -> Iterator[Definition]:
    """The definitions of a file of language `name` parsed into `root` (source order)."""
    return module(name).definitions(root, src)
