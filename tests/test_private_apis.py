"""No private name of a third-party library outside repotune/compat.py.

A private name can vanish or change meaning in any release; compat.py checks each one against
the version it was written for and fails loudly (see its docstring). This test finds a new one
elsewhere before it ships. Python has no types at this level, so the scan is a heuristic, kept
precise by knowing the package's own private names:

- an attribute read or written as ``x._name`` (one leading underscore: ``__dunder__`` names are
  public protocol, ``__mangled`` ones are the class's own), where ``_name`` is not one of the
  package's own private names. Own names: those the package itself binds outside compat.py:
  ``def _name``/``class _Name``, a module- or class-level ``_name = ...``, an import ``as
  _name``, and ``self._name = ...`` (a plain assignment: ``self._name += 1`` on a subclass of a
  library class is the library's counter, not ours). So ``model.config._attn_implementation``
  is found, ``self._lines`` of a repotune class is not;
- ``getattr``/``hasattr``/``setattr``/``delattr`` with a literal ``"_name"`` (same rule);
- ``from lib._private import x`` / ``from lib.mod import _x`` / ``import lib._private`` for a
  pinned dependency (pyproject.toml), and a string naming one of its private modules
  (``"bitsandbytes.autograd._functions"``, a logger's name).

The standard library's private names count too (none is used); a deliberate exception would be
listed in ALLOWED with its reason.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "repotune"
COMPAT = PACKAGE / "compat.py"

# Import names of the pinned dependencies whose distribution name is not their import name.
IMPORT_NAMES = {"gitpython": "git", "pyyaml": "yaml", "huggingface-hub": "huggingface_hub",
                "vl-convert-python": "vl_convert", "rouge-score": "rouge_score"}
# (file relative to src/repotune, private name) -> why it is fine outside compat.py. Empty.
ALLOWED: dict[tuple[str, str], str] = {}


def pinned_packages() -> set[str]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[=<>!~\[ ]", d, maxsplit=1)[0].lower() for d in dependencies}
    return {IMPORT_NAMES.get(n, n.replace("-", "_")) for n in names}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name != "_"


def own_private_names(files: list[Path]) -> set[str]:
    """Private names the package binds itself (see the module docstring)."""
    own: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                own.add(node.name)
            elif isinstance(node, ast.alias) and node.asname:
                own.add(node.asname)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    for part in ast.walk(target):
                        if isinstance(part, ast.Name):
                            own.add(part.id)
                        elif (isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name)
                              and part.value.id == "self"):
                            own.add(part.attr)
    return {name for name in own if _is_private(name)}


def private_uses(path: Path, own: set[str], pinned: set[str]) -> list[tuple[int, str]]:
    """(line, what) for each private name of a library used in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in own:
            found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _is_private(node.args[1].value) and node.args[1].value not in own):
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in pinned:
            if any(_is_private(p) for p in node.module.split(".")) or any(_is_private(a.name) for a in node.names):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in pinned and any(_is_private(p) for p in parts):
                    found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            parts = node.value.split(".")
            if len(parts) > 1 and parts[0] in pinned and all(p.isidentifier() for p in parts) \
                    and any(_is_private(p) for p in parts):
                found.append((node.lineno, repr(node.value)))
    return found


def test_no_private_library_name_outside_compat():
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if p != COMPAT]
    own = own_private_names(files)
    pinned = pinned_packages()
    problems = [
        f"{path.relative_to(PACKAGE)}:{line}: {what}"
        for path in files
        for line, what in private_uses(path, own, pinned)
        if (path.relative_to(PACKAGE).as_posix(), what) not in ALLOWED
    ]
    assert not problems, "private names of libraries outside compat.py (put a version-checked shim there):\n" + \
        "\n".join(problems)


def test_the_scan_finds_each_form_and_spares_the_package_own(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import logging\n"
        "from trl.trainer.utils import _use_triton\n"
        "import torch._dynamo\n"
        "class Trainer(SFTTrainer):\n"
        "    def __init__(self):\n"
        "        self._cache = {}\n"
        "    def step(self, model):\n"
        "        self._total_train_tokens += 1\n"
        "        self._cache.clear()\n"
        "        name = model.config._attn_implementation\n"
        "        flag = getattr(model.config, '_attn_implementation', None)\n"
        "        logging.getLogger('bitsandbytes.autograd._functions')\n"
        "        return model.__class__, _helper(), self.__dict__, 'see ._here'\n"
        "def _helper():\n"
        "    return torch.ops.mkldnn._linear_pointwise\n"
    )
    own = own_private_names([module])
    assert own == {"_cache", "_helper"}
    assert sorted(line for line, _ in private_uses(module, own, {"trl", "torch", "bitsandbytes"})) == [
        2, 3, 8, 10, 11, 12, 15,
    ]


def test_every_pinned_library_is_known_by_its_import_name():
    pinned = pinned_packages()
    assert {"torch", "transformers", "trl", "peft", "bitsandbytes", "git", "yaml", "vl_convert", "tree_sitter",
            "tree_sitter_kotlin", "sacrebleu", "dvclive"} <= pinned
