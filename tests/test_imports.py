"""The package's import graph is visible and has no cycles.

A cycle between modules (``filters -> tasks -> tasks.docstring -> filters``, once) hides which
module a change really reaches: every module on a cycle depends on every other, so dvc.yaml
must declare all of them for every stage that imports one, and an edit to any re-runs them all.

The graph counts every ``import repotune...`` / ``from repotune... import ...`` of a module, at
its top or inside a function (a function-level import is still a dependency: the stage runs it),
but not the imports under ``if TYPE_CHECKING:`` (they never run). An edge goes to the module
named and, for ``from repotune.a import b``, to ``repotune.a.b`` when that is a module; not to
the parent packages Python initialises on the way (a package's ``__init__`` importing its own
submodules is not a cycle by that alone).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "repotune"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return skipped


def imports(path: Path) -> dict[str, int]:
    """The package modules `path` imports (name -> line of the first import), at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name in MODULES and name != module_name(path):
                found.setdefault(name, node.lineno)
    return found


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def cycles() -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return components


def describe(component: list[str]) -> str:
    edges = [f"{a} -> {b} (line {GRAPH[a][b]})" for a in component for b in sorted(GRAPH[a]) if b in component]
    return "; ".join(edges)


def test_the_package_has_no_import_cycle() -> None:
    found = cycles()
    assert not found, "import cycles:\n" + "\n".join(describe(c) for c in found)


def test_the_cycle_finder_sees_function_level_imports(tmp_path: Path, monkeypatch) -> None:
    a = tmp_path / "repotune" / "a.py"
    b = tmp_path / "repotune" / "b.py"
    a.parent.mkdir()
    a.write_text("from repotune.b import x\n")
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from repotune.c import y\n"
                 "def f():\n    from repotune import a\n")
    (tmp_path / "repotune" / "c.py").write_text("from repotune.b import x\n")
    modules = {"repotune.a": a, "repotune.b": b, "repotune.c": tmp_path / "repotune" / "c.py"}
    monkeypatch.setitem(globals(), "MODULES", modules)
    monkeypatch.setitem(globals(), "PACKAGE", tmp_path / "repotune")
    monkeypatch.setitem(globals(), "GRAPH", {name: imports(path) for name, path in modules.items()})
    assert cycles() == [["repotune.a", "repotune.b"]]  # b -> c is TYPE_CHECKING only: no a-b-c cycle


def test_function_level_imports_of_the_package_say_why() -> None:
    """An import of the package's own modules inside a function is there for a reason that a
    comment on its line or the line above gives (a cycle, or a measured import-time cost);
    everything else is imported at the top, so that the graph is visible."""
    unexplained = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                is_own = (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "repotune") or (
                    isinstance(node, ast.Import) and any(a.name.split(".")[0] == "repotune" for a in node.names)
                )
                if is_own and "#" not in lines[node.lineno - 1] and not lines[node.lineno - 2].strip().startswith("#"):
                    unexplained.append(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, "function-level imports without a comment saying why:\n" + "\n".join(unexplained)


def test_tests_change_the_working_directory_only_through_monkeypatch() -> None:
    """A bare os.chdir in a test leaks its directory into every later test (DESIGN: Tests)."""
    offenders = [
        f"{path.name}:{number}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "os.chdir(" in line and path.name != "test_imports.py"
    ]
    assert not offenders, f"use monkeypatch.chdir: {offenders}"
