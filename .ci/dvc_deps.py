"""Write the project-module deps of every dvc.yaml stage from the modules its script imports.

    python .ci/dvc_deps.py            # rewrite dvc.yaml in place
    python .ci/dvc_deps.py --check    # exit 1 (listing the stages) when dvc.yaml is out of date

A stage's deps under ``src/`` must be exactly the modules its script imports, transitively
(:func:`closure`; tests/test_dvc_deps.py checks it and runs :func:`rewrite` to check that this
script would change nothing). The rewrite is textual, so comments and every other dep stay as
they are: declared ``src/`` entries the stage still imports keep their place, the others go, and
missing modules are added after the last ``src/`` entry (a whole package folder when the stage
imports every module in it). ``src/repotune/queries`` (the languages' query files) goes with
``repotune.languages``.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "repotune"
QUERIES = "src/repotune/queries"


def module_file(name: str) -> Path | None:
    """The file of module `repotune.x.y` (a module or a package's __init__), if it exists."""
    path = PACKAGE.joinpath(*name.split(".")[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def direct_imports(path: Path) -> set[Path]:
    """Project modules `path` imports anywhere (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "repotune":
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "repotune")
    # Importing repotune.a.b runs repotune/a/__init__.py first.
    for name in list(names):
        parts = name.split(".")
        names.update(".".join(parts[:i]) for i in range(2, len(parts)))
    # An empty package __init__ runs no code: nothing to declare.
    return {
        f for name in names
        if (f := module_file(name)) is not None and f.read_text(encoding="utf-8").strip()
    }


def closure(script: Path) -> set[Path]:
    """Every project module `script` imports, transitively."""
    seen: set[Path] = set()
    todo = list(direct_imports(script))
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(direct_imports(path))
    return seen


def script_of(stage: dict) -> Path:
    return ROOT / next(word for word in stage["cmd"].split() if word.endswith(".py"))


def _covers(dep: str, module: str) -> bool:
    return module == dep or module.startswith(dep.rstrip("/") + "/")


def module_deps(stage: dict, declared: list[str]) -> list[str]:
    """The ``src/`` deps `stage` should declare, keeping the order of those in `declared`."""
    imported = {p.relative_to(ROOT).as_posix() for p in closure(script_of(stage))}
    uses_languages = any(m.startswith("src/repotune/languages/") for m in imported)

    def needed(dep: str) -> bool:
        if dep == QUERIES:
            return uses_languages
        path = ROOT / dep
        if path.is_dir():  # a folder is right only when the stage imports every module in it
            return all(f.relative_to(ROOT).as_posix() in imported
                       for f in path.rglob("*.py") if "__pycache__" not in f.parts)
        return dep in imported

    kept = [d for d in declared if needed(d)]
    missing = sorted(m for m in imported if not any(_covers(d, m) for d in kept))
    added: list[str] = []
    for module in missing:
        folder = (ROOT / module).parent
        rel = folder.relative_to(ROOT).as_posix()
        if folder != PACKAGE and needed(rel):
            if rel not in added:
                added.append(rel)
        else:
            added.append(module)
    if uses_languages and QUERIES not in kept:
        added.append(QUERIES)
    return kept + added


def rewrite(text: str) -> str:
    """dvc.yaml `text` with each stage's ``src/`` deps replaced by :func:`module_deps`."""
    stages = yaml.safe_load(text)["stages"]
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    current: str | None = None
    while i < len(lines):
        line = lines[i]
        if m := re.fullmatch(r"  ([\w-]+):\s*", line):
            current = m[1]
        if current and re.fullmatch(r"\s+deps:\s*", line):
            out.append(line)
            i += 1
            block: list[str] = []
            while i < len(lines) and re.match(r"\s+- ", lines[i]) or (i < len(lines) and lines[i].strip().startswith("#")
                                                                          and block):
                block.append(lines[i])
                i += 1
            stage = stages[current].get("do", stages[current])
            src = [ln.split("- ", 1)[1].strip() for ln in block if ln.strip().startswith("- src/")]
            want = module_deps(stage, src)
            indent = next((ln[: ln.index("-")] for ln in block), " " * 6)
            positions = [k for k, ln in enumerate(block) if ln.strip().startswith("- src/")]
            last = positions[-1] if positions else 0
            new_src = [f"{indent}- {d}" for d in want]
            block = ([ln for k, ln in enumerate(block[: last + 1]) if k not in positions]
                     + new_src + block[last + 1:]) if positions else block[:1] + new_src + block[1:]
            out.extend(block)
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = ROOT / "dvc.yaml"
    text = path.read_text(encoding="utf-8")
    new = rewrite(text)
    if new == text:
        return 0
    if "--check" in args:
        print("dvc.yaml: module deps out of date; run python .ci/dvc_deps.py", file=sys.stderr)
        return 1
    path.write_text(new, encoding="utf-8")
    print("dvc.yaml: module deps rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
