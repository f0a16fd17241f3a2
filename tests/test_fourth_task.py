"""Adding a task is one module and one registry line (docs/extending.md), proved by a task the
package does not know: tests/fourth_task/return_type.py ("predict a Python function's return
annotation"), registered here with ``repotune.tasks.register`` and run through the stages
extract -> filter -> judge (off) -> split -> generate -> evaluate, in process, on a fixture
repository and the tiny model. No file outside tests/ names it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import git_repo, load_stage, write_params
from fourth_task import return_type

from repotune import atomic, params, tasks
from repotune.errors import ParamsError

ROOT = Path(__file__).resolve().parents[1]

# Six modules of annotated functions (and a few that are not samples: no annotation, -> None,
# a test, a Kotlin file), so that every split gets some.
MODULE = '''\
def {name}_count(items: list[str]) -> int:
    total = 0
    for item in items:
        total += len(item)
    return total


def {name}_label(value: int) -> str:
    return "{name}-" + str(value)


async def {name}_fetch(url: str) -> bytes:
    return await download(url)


def {name}_reset(state: dict) -> None:
    state.clear()


def {name}_plain(x):
    return x


class {title}Store:
    def lookup(self, key: str) -> dict[str, int]:
        return self.table.get(key, {{}})
'''
FILES = {
    **{f"pkg/{name}.py": MODULE.format(name=name, title=name.title())
       for name in ("alpha", "beta", "gamma", "delta", "omega", "sigma")},
    "pkg/test_alpha.py": "def test_count() -> None:\n    assert True\n",
    "app/Main.kt": "fun main(): Unit {\n    println(1)\n}\n",
}


@pytest.fixture
def fourth_task():
    """return_type registered for the test, and removed after it (the registry is global)."""
    tasks.register("return_type", return_type)
    try:
        yield return_type
    finally:
        del tasks.TASKS["return_type"]


def test_the_fourth_task_runs_through_every_stage(tmp_path, monkeypatch, tiny_model, fourth_task):
    source = git_repo(tmp_path / "source", FILES)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_params(
        work,
        source={"url": source.working_dir, "rev": "main"},
        task={"name": "return_type", "return_type": {"filter": {"max_target_chars": 12}}},
        extract={"languages": ["python", "kotlin"], "workers": 1, "exclude_tests": False},
        # The six modules are near-copies of each other: keep them all.
        split={"by": "sample", "train": 0.5, "val": 0.2, "test": 0.3, "near_duplicates": {"enabled": False},
               "min_test_samples": 0},
    )
    p = params.load("params.yaml")
    assert p.task.name == "return_type" and p.task.filter == return_type.Filter(max_target_chars=12)
    for name in ("clone", "extract", "filter", "judge", "split"):
        load_stage(name).main([])

    extracted = atomic.read_jsonl(work / "data/extracted.jsonl")
    # Per module: count, label, fetch, reset, lookup (plain has no annotation); plus the test.
    assert len(extracted) == 6 * 5 + 1
    assert {r["task"] for r in extracted} == {"return_type"}
    label = next(r for r in extracted if r["name"] == "alpha_label")
    assert label["target"] == "str" and label["input"].startswith("def alpha_label(value: int):\n")
    counts = atomic.read_json(work / "metrics/extract.json")
    # Not samples: per module, `plain` (no annotation) and the class.
    assert counts["files_not_python"] == 1 and counts["definitions_without_return_type"] == 6 * 2

    # The task's own reasons, with its own knob (max_target_chars: 12 drops dict[str, int]).
    filtered = atomic.read_json(work / "metrics/filter.json")
    assert (filtered["dropped_test"], filtered["dropped_none_return"], filtered["dropped_long_type"]) == (1, 6, 6)
    assert filtered["kept"] == 6 * 3
    split = {name: atomic.read_jsonl(work / f"data/split/{name}.jsonl") for name in ("train", "val", "test")}
    assert sum(map(len, split.values())) == 18 and split["test"]

    atomic.write_jsonl(work / "data/ood.jsonl", [])
    for system in ("base", "finetuned"):  # the same tiny model twice: differences are exactly 0
        load_stage("generate").main(["--system", system, "--model", str(tiny_model)])
    rows = atomic.read_jsonl(work / "data/generations/base/test.plain.jsonl")
    assert [r["id"] for r in rows] == sorted(r["id"] for r in split["test"])
    assert all("\n" not in r["output"] for r in rows)  # the task's postprocess: one line
    load_stage("evaluate").main([])
    head = json.loads((work / "metrics/evaluate.json").read_text())
    assert head["task"] == "return_type" and head["metric"] == "exact_match"
    assert head["delta"] == 0 and head["samples"] == len(split["test"])
    assert {"base_exact_match", "finetuned_edit_similarity"} <= set(head)
    assert "Primary metric: exact_match" in (work / "metrics/report.md").read_text()


def test_the_fourth_task_is_known_to_params_only_once_registered(fourth_task):
    raw = {"source": {"url": "."}, "task": {"name": "return_type", "return_type": {"filter": {"drop_none": False}}}}
    assert params.parse(raw).task.filter.drop_none is False
    with pytest.raises(ParamsError, match=r"task.return_type.filter.max_target_chars must be greater than 0, got 0"):
        params.parse({"source": {"url": "."}, "task": {"return_type": {"filter": {"max_target_chars": 0}}}})
    del tasks.TASKS["return_type"]
    try:
        with pytest.raises(ParamsError, match=r"task.name: must be one of the tasks \(docstring, completion, "
                                              r"method_name\), got 'return_type'"):
            params.parse({"source": {"url": "."}, "task": {"name": "return_type"}})
    finally:
        tasks.register("return_type", return_type)


def test_the_fourth_task_provides_the_whole_contract(fourth_task):
    constants = {name for name in tasks.Task.__annotations__}
    functions = {name for name, value in vars(tasks.Task).items() if callable(value) and not name.startswith("_")}
    assert {*constants, *functions} <= set(dir(return_type)), sorted({*constants, *functions} - set(dir(return_type)))
    with pytest.raises(ValueError, match="cannot name a task"):
        tasks.register("filter", return_type)


def test_adding_it_touched_nothing_outside_tests():
    """No code or configuration outside tests/ names the fourth task (the proof the extension steps
    hold; the docs may, and data files may hold the words)."""
    code = ["src", "stages", ".ci", "recipes", "dvc.yaml", "params.yaml", "pyproject.toml"]
    found = subprocess.run(["git", "grep", "--untracked", "-lw", "return_type", "--", *code], cwd=ROOT,
                           capture_output=True, text=True)
    assert found.stdout.split() == [], found.stdout
