"""Languages: each is a module that turns a parsed source file into :class:`Definition` objects.

A language module (``python``, ``kotlin``, ``java``) owns everything grammar-specific: its
tree-sitter grammar (from the PyPI wheel, never downloaded at run time), its
query files (``queries/<lang>_*.scm``), how a doc comment is found and cleaned, what a test
looks like. Tasks consume definitions and never look at a grammar's node types.

File suffixes live in ``repotune.files.EXTENSIONS`` (walking a tree needs no grammar). What
the modules share (:class:`Definition`, query helpers) is in ``repotune.languages.syntax``, which
they import instead of this package (that imports them: :data:`LANGUAGES`). Each module provides:

- ``grammar()``: the tree-sitter language pointer of its wheel;
- ``definitions(root, src)``: the definitions of a parsed file, in source order.
- ``TEST_PATHS``: gitignore-style patterns of the files that are tests by the language's
  conventions (its test folders, source sets and file names), skipped by ``extract.exclude_tests``.
- ``LINE_COMMENT``: what starts a line comment (``#``, ``//``): prompts render retrieved
  context as comments of the sample's language.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

from tree_sitter import Language, Node, Parser

from repotune.languages import java, kotlin, python
from repotune.languages.syntax import Definition, language_of

__all__ = ["Definition", "definitions", "language", "line_comment", "module", "parser", "paths_of_tests"]

# The languages, by the name params.yaml uses (extract.languages).
LANGUAGES: dict[str, ModuleType] = {"python": python, "kotlin": kotlin, "java": java}


def module(name: str) -> ModuleType:
    """The module of language `name`."""
    if name not in LANGUAGES:
        raise ValueError(f"unknown language {name!r}; known: {', '.join(LANGUAGES)}")
    return LANGUAGES[name]


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
