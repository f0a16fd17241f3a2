"""dvc.yaml declares exactly what each stage reads: its project modules and params sections.

DVC re-runs a stage only when something it declares changes. A module a stage imports but does
not declare (the 4-bit loading fix in modeling.py did not mark `train` stale) silently keeps an
old output; a params section it reads but does not declare does the same, and one it declares
but never reads re-runs it for nothing. Both directions are checked.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import typing
from pathlib import Path

import pytest
import yaml
from conftest import SPEED_KEYS
from pydantic import BaseModel

from repotune.params import Params
from repotune.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
# The closure of a stage's imports is computed by the script that writes dvc.yaml's module deps.
_spec = importlib.util.spec_from_file_location("dvc_deps", ROOT / ".ci" / "dvc_deps.py")
dvc_deps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dvc_deps)
closure = dvc_deps.closure
# A `foreach` stage (generate@base, generate@finetuned) declares once, in its `do` body.
STAGES = {
    name: stage.get("do", stage) for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()
}


def params_sections(script: Path) -> set[str]:
    """Top-level params.yaml sections a stage script reads.

    Recognises ``params.load(...).section`` and ``p = params.load(...)`` followed by
    ``p.section``: the two forms the stage scripts use.
    """
    tree = ast.parse(script.read_text(encoding="utf-8"))

    def is_load(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "params"
        )

    holders = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and is_load(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    sections = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if is_load(node.value) or (isinstance(node.value, ast.Name) and node.value.id in holders):
                sections.add(node.attr)
    return sections


def params_reads(script: Path) -> set[str]:
    """The params a stage script reads, as dotted keys (``filter.judge.threshold``).

    Follows the forms of :func:`params_sections` and aliases of a part of them
    (``judge = p.filter.judge`` then ``judge.model`` reads ``filter.judge.model``). A chain is
    read as far as it is spelled: an alias passed whole to a function reads all of it. One
    entry of a mapping (``p.generate.systems[args.system]``) reads ``generate.systems.*``,
    which a templated key of a `foreach` stage declares (``generate.systems.${key}``).
    """
    tree = ast.parse(script.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    aliases: dict[str, str] = {}  # variable -> dotted key it holds ("" = all of params)

    def chain(node: ast.AST) -> str | None:
        """The dotted key `node` spells, or None when it is not rooted in params."""
        attrs: list[str] = []
        while isinstance(node, ast.Attribute | ast.Subscript):
            attrs.append(node.attr if isinstance(node, ast.Attribute) else "*")
            node = node.value
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "params":
            root = ""
        elif isinstance(node, ast.Name) and node.id in aliases:
            root = aliases[node.id]
        else:
            return None
        return ".".join([root, *reversed(attrs)] if root else reversed(attrs))

    assigns = [n for n in ast.walk(tree) if isinstance(n, ast.Assign)]
    while True:  # until every alias of an alias is known
        found = {
            t.id: key for n in assigns for t in n.targets
            if isinstance(t, ast.Name) and (key := chain(n.value)) is not None
        }
        if found == aliases:
            break
        aliases = found
    alias_values = {id(n.value) for n in assigns if any(isinstance(t, ast.Name) and t.id in aliases for t in n.targets)}
    reads = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute | ast.Name | ast.Subscript):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Attribute) or (isinstance(parent, ast.Subscript) and parent.value is node):
            continue  # only whole chains; `p.a.b` is read once, as a.b
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            continue
        if isinstance(parent, ast.Compare) and all(isinstance(op, ast.Is | ast.IsNot) for op in parent.ops):
            continue  # `p.model is not None` asks whether the section is there: any declared key of it says
        key = chain(node)
        if key and id(node) not in alias_values:
            head, _, last = key.rpartition(".")
            key = head if last in WHOLE_READS and head else key  # p.train.model_dump() reads all of train
            reads.update(PROPERTIES.get(key, (key,)))
    return reads


# Pydantic methods that read the whole of the params they are called on.
WHOLE_READS = {"model_dump", "model_dump_json", "model_copy"}


# Computed properties of params, as the keys they are computed from: `p.task.extract` is the
# ``task.<name>.extract`` of the task named by task.name, so a stage reading it declares
# task.name and that part of every registered task (dvc.yaml cannot name the one task.name picks).
PROPERTIES = {
    "model.label": ("model.base",),
    **{f"task.{part}": ("task.name", *(f"task.{name}.{part}" for name in TASKS)) for part in ("extract", "filter")},
    "task.own": ("task.name", *(f"task.{name}" for name in TASKS)),
}


def fields(key: str) -> list[str] | None:
    """The keys one level under dotted `key` of params.yaml (its pydantic model's fields), or
    None when it is a value, not a section."""
    model: typing.Any = Params
    for part in key.split("."):
        annotation = model.model_fields[part].annotation
        # `ModelParams | None` and the like: the section's model
        model = next((a for a in (annotation, *typing.get_args(annotation))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return [f"{key}.{name}" for name in model.model_fields]


def without_speed_keys(reads: set[str]) -> set[str]:
    """`reads` with every speed or bookkeeping key (SPEED_KEYS) left out: a read of a whole
    section that holds one becomes a read of each of its other keys, which the stage declares
    one by one (DVC cannot declare a section minus a key)."""
    out: set[str] = set()
    todo = list(reads)
    while todo:
        key = todo.pop()
        if key in SPEED_KEYS:
            continue
        if any(speed.startswith(key + ".") for speed in SPEED_KEYS) and (sub := fields(key)) is not None:
            todo.extend(sub)
        else:
            out.add(key)
    return out


def script_of(stage: dict) -> Path:
    return ROOT / next(word for word in stage["cmd"].split() if word.endswith(".py"))


def cmd_reads(stage: dict) -> set[str]:
    """Params the stage's command passes to its script (``--max-length ${retrieval.max_length}``):
    read by the stage although its script never loads them."""
    return {key for key in re.findall(r"\$\{([a-z_.]+)\}", stage["cmd"]) if key != "key" and not key.startswith("item.")}


def declared_deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_every_module_it_imports(name: str) -> None:
    stage = STAGES[name]
    deps = declared_deps(stage)
    imported = {p.relative_to(ROOT).as_posix() for p in closure(script_of(stage))}

    def covered(module: str) -> bool:
        return any(module == d or module.startswith(d.rstrip("/") + "/") for d in deps)

    missing = sorted(m for m in imported if not covered(m))
    assert not missing, f"stage {name!r} imports but does not declare: {missing}"

    # And nothing declared under src/ that the stage never imports (it would re-run for nothing).
    # A declared folder must hold only modules the stage imports; query files count as part of
    # repotune.languages, which loads them.
    for dep in (d for d in deps if d.startswith("src/")):
        path = ROOT / dep
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in (f for f in files if f.is_file() and "__pycache__" not in f.parts):
            rel = file.relative_to(ROOT).as_posix()
            if file.suffix == ".py":
                assert rel in imported, f"stage {name!r} declares {rel} but never imports it"
            else:
                assert any(m.startswith("src/repotune/languages") for m in imported), (
                    f"stage {name!r} declares data file {rel} but does not import repotune.languages"
                )
    assert script_of(stage).relative_to(ROOT).as_posix() in deps, f"{name}: its own script is not a dep"


def test_dvc_yaml_module_deps_are_what_the_script_writes() -> None:
    """`python .ci/dvc_deps.py` would leave dvc.yaml as it is (run it after changing imports)."""
    text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
    assert dvc_deps.rewrite(text) == text, "dvc.yaml module deps are out of date: run python .ci/dvc_deps.py"


def test_the_deps_script_drops_stale_modules_and_adds_missing_ones(monkeypatch) -> None:
    text = (
        "stages:\n"
        "  filter:\n"
        "    cmd: python stages/filter.py\n"
        "    deps:\n"
        "      - stages/filter.py\n"
        "      - src/repotune/tasks\n"
        "      - src/repotune/report.py\n"
        "      - data/extracted.jsonl\n"
        "    params:\n"
        "      - filter\n"
    )
    out = dvc_deps.rewrite(text)
    deps = yaml.safe_load(out)["stages"]["filter"]["deps"]
    assert deps[:2] == ["stages/filter.py", "src/repotune/tasks"]  # kept in place
    assert "src/repotune/report.py" not in deps  # filter never imports it
    assert {"src/repotune/filters.py", "src/repotune/languages", "src/repotune/queries"} <= set(deps)
    assert deps[-1] == "data/extracted.jsonl" and out.endswith("    params:\n      - filter\n")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_exactly_the_params_sections_it_reads(name: str) -> None:
    stage = STAGES[name]
    declared = {p.split(".")[0] for p in stage.get("params", [])}
    assert declared == params_sections(script_of(stage)) | {k.split('.')[0] for k in cmd_reads(stage)}, f"stage {name!r}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_every_key_it_reads_and_reads_every_key_it_declares(name: str) -> None:
    """Key level: a stage that declares `filter.judge.threshold` must read nothing else of
    `filter` (a read outside the declared keys would not re-run it), and every declared key is
    read (a stage declaring a key it never reads re-runs for nothing)."""
    stage = STAGES[name]
    # generate@<system> declares its own entry of generate.systems: generate.systems.${key}.
    declared = {key.replace("${key}", "*") for key in stage.get("params", [])}
    reads = without_speed_keys(params_reads(script_of(stage)) | cmd_reads(stage))

    def under(key: str, prefix: str) -> bool:
        return key == prefix or key.startswith(prefix + ".")

    unseen = sorted(r for r in reads if not any(under(r, d) for d in declared))
    assert not unseen, f"stage {name!r} reads params it does not declare: {unseen}"
    unread = sorted(d for d in declared if not any(under(r, d) or under(d, r) for r in reads))
    assert not unread, f"stage {name!r} declares params it never reads: {unread}"
    # No speed or bookkeeping key is declared, alone or inside a section (it would re-run the
    # stage for output bytes that cannot change).
    speed = sorted(k for k in SPEED_KEYS for d in declared if under(k, d))
    assert not speed, f"stage {name!r} declares speed/bookkeeping keys {speed} (see conftest.SPEED_KEYS)"


def test_speed_keys_exist_in_params() -> None:
    """Every SPEED_KEYS entry is a real key of the schema (a typo would exempt nothing)."""
    for key in SPEED_KEYS:
        section, _, name = key.rpartition(".")
        assert key in (fields(section) or []), key


def test_a_whole_section_read_is_each_key_but_the_speed_ones(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text(
        "def main():\n"
        "    p = params.load('x')\n"
        "    run(p.extract, p.extract.workers, p.train.threads, p.train.lr)\n"
        "    if p.model is not None:\n"
        "        print(p.model.label)\n"
    )
    reads = without_speed_keys(params_reads(script))
    assert "extract.workers" not in reads and "train.threads" not in reads
    assert {"extract.languages", "extract.include", "train.lr", "model.base"} <= reads
    assert "extract" not in reads and "model" not in reads


def test_params_reads_follows_aliases_and_whole_reads(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text(
        "def main():\n"
        "    p = params.load('x')\n"
        "    judge = p.filter.judge\n"
        "    model = judge.model\n"
        "    print(judge.prompt, model.base, p.split.seed)\n"
        "    run(p.generate)\n"
        "    q = params.load('x').task.name\n"
        "    print(q)\n"
    )
    assert params_reads(script) == {
        "filter.judge.prompt", "filter.judge.model.base", "split.seed", "generate", "task.name"
    }


def test_params_reads_sees_one_entry_of_a_mapping_apart_from_all_of_it(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text(
        "def main():\n"
        "    p = params.load('x')\n"
        "    system = p.generate.systems[args.system]\n"
        "    print(system.model, system.prompt, p.extract.languages[0])\n"
        "    q = params.load('x')\n"
        "    print(list(q.evaluate.systems))\n"
    )
    assert params_reads(script) == {
        "generate.systems.*.model", "generate.systems.*.prompt", "extract.languages.*", "evaluate.systems"
    }


def test_closure_follows_imports_inside_functions(tmp_path: Path) -> None:
    """The generate stage imports its model modules inside main(); they must still count."""
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from repotune.generation import generate\n")
    found = {p.relative_to(ROOT).as_posix() for p in closure(script)}
    assert "src/repotune/generation.py" in found
    assert "src/repotune/slot_cache.py" in found  # imported by generation, transitively


def test_params_sections_sees_both_forms(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text(
        "def main():\n"
        "    p = params.load('x')\n"
        "    print(p.train.lr, p.model.base)\n"
        "    q = params.load('x').split\n"
    )
    assert params_sections(script) == {"train", "model", "split"}
