"""Languages: file extensions, tree-sitter parsers and the queries shipped as .scm files."""

from __future__ import annotations

from functools import cache
from importlib import resources

from tree_sitter import Language, Node, Parser, Query, QueryCursor

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "python": (".py",),
    "kotlin": (".kt", ".kts"),
    "java": (".java",),
}


@cache
def language(name: str) -> Language:
    """The tree-sitter grammar of `name`, from its PyPI wheel (no run-time download)."""
    if name == "python":
        import tree_sitter_python as grammar
    elif name == "kotlin":
        import tree_sitter_kotlin as grammar
    elif name == "java":
        import tree_sitter_java as grammar
    else:
        raise ValueError(f"unknown language {name!r}; known: {', '.join(EXTENSIONS)}")
    return Language(grammar.language())


def parser(name: str) -> Parser:
    return Parser(language(name))


@cache
def query(lang: str, name: str) -> Query:
    """Compile the query file queries/<lang>_<name>.scm."""
    text = resources.files("repotune").joinpath("queries", f"{lang}_{name}.scm").read_text("utf-8")
    return Query(language(lang), text)


def captures(lang: str, name: str, node: Node, capture: str) -> list[Node]:
    """Nodes captured as @`capture` by query `name` under `node`, in source order."""
    found = QueryCursor(query(lang, name)).captures(node).get(capture, [])
    return sorted(found, key=lambda n: n.start_byte)
