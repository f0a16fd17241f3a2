"""`dvc repro` of the data stages in a temporary copy of the project, on a fixture repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml

from conftest import make_source_repo

from repotune import io

ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ["clone", "extract", "filter", "judge", "split"]
MODEL_STAGES = ["train", "merge", "generate@base", "generate@finetuned", "evaluate"]
ALL_STAGES = ["base", *DATA_STAGES, "ood", *MODEL_STAGES]


def project_copy(dest: Path) -> git.Repo:
    """Copy the project's tracked files (not data/, models/) into `dest` as a fresh git repo."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for rel in tracked.stdout.splitlines():
        if rel == "dvc.lock" or not (ROOT / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    repo = git.Repo.init(dest, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.com")
    return repo


def dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def set_params(project: Path, **sections: dict) -> None:
    path = project / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def ran(output: str) -> list[str]:
    return [s for s in ALL_STAGES if f"Running stage '{s}'" in output]


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path) -> Path:
    source = make_source_repo(tmp_path / "source")
    project = tmp_path / "project"
    repo = project_copy(project)
    # extract depends on models/base (completion windows are cut on its tokenizer's tokens).
    set_params(
        project,
        source={"url": source.working_dir, "rev": "main"},
        filter={"min_target_tokens": 10},
        model={"base": str(tiny_model), "file": None, "sha256": None},
        # A dozen samples: too few to mean anything, on purpose; no out-of-domain download.
        benchmark={"min_samples": 0, "ood": None},
        # Ten samples, nine of them in one file: whole files cannot give every split some,
        # so split per sample here (tests of the file grouping are in test_filter_split.py).
        split={"by": "sample", "train": 0.4, "val": 0.3, "test": 0.3},
    )
    repo.git.add("--all")
    repo.index.commit("project")
    return project


def test_dvc_repro_data_stages_is_reproducible_and_granular(project: Path):
    first = dvc(project, "repro", *DATA_STAGES)
    assert ran(first) == ["base", *DATA_STAGES]
    lock = (project / "dvc.lock").read_text()
    metrics = {p.name: p.read_bytes() for p in (project / "metrics").glob("*.json")}
    assert set(metrics) >= {"clone.json", "extract.json", "filter.json", "split.json"}

    second = dvc(project, "repro", *DATA_STAGES)
    assert ran(second) == []
    assert (project / "dvc.lock").read_text() == lock

    # A split parameter re-runs split only.
    set_params(project, split={"seed": 7})
    third = dvc(project, "repro", *DATA_STAGES)
    assert ran(third) == ["split"]

    # A filter parameter that changes nothing in the output stops the cascade after filter.
    set_params(project, filter={"drop_private": True})
    fourth = dvc(project, "repro", *DATA_STAGES)
    assert "Running stage 'filter'" in fourth
    assert "Running stage 'split'" not in fourth

    shown = json.loads(dvc(project, "metrics", "show", "--json"))
    assert shown  # metrics are declared and readable by dvc


def test_judge_scores_once_and_its_threshold_reruns_split_only(project: Path):
    """filter.judge on the tiny model: the judge scores every sample once; a new threshold
    re-runs split alone (filter too: it declares the whole filter section, and stops the
    cascade with identical output); a judge re-run finds every score in its cache."""
    # DVC wants every key the judge stage declares in params.yaml: change some, keep the rest.
    judge = {**yaml.safe_load((project / "params.yaml").read_text())["filter"]["judge"],
             "enabled": True, "chat_template": False, "batch_size": 4, "threads": 1, "threshold": 1.0}
    set_params(project, filter={"min_target_tokens": 10, "judge": judge})
    first = dvc(project, "repro", *DATA_STAGES)
    assert ran(first) == ["base", *DATA_STAGES]
    kept = json.loads((project / "metrics/filter.json").read_text())["kept"]
    metrics = json.loads((project / "metrics/judge.json").read_text())
    assert (metrics["samples"], metrics["scored"], metrics["cached"]) == (kept, kept, 0)
    scores = io.read_jsonl(project / "data/judge/scores.jsonl")
    assert [r["id"] for r in scores] == sorted(r["id"] for r in io.read_jsonl(project / "data/filtered.jsonl"))
    assert all(1.0 <= r["score"] <= 5.0 and 0.0 < r["digit_mass"] <= 1.0 for r in scores)
    # Every score is >= 1: threshold 1.0 drops nothing.
    assert json.loads((project / "metrics/split.json").read_text())["dropped_judge_low"] == 0

    # A threshold between the scores: the samples under it leave the split, the judge stays.
    values = sorted(r["score"] for r in scores)
    threshold = values[len(values) // 2]
    below = sum(v < threshold for v in values)
    assert 0 < below < kept  # the tiny model's scores differ from sample to sample
    set_params(project, filter={"judge": {**judge, "threshold": threshold}})
    second = dvc(project, "repro", *DATA_STAGES)
    assert ran(second) == ["filter", "split"]
    split = json.loads((project / "metrics/split.json").read_text())
    assert (split["dropped_judge_low"], split["samples"]) == (below, kept - below)

    # A judge param that changes no score (batch size) re-runs the judge: nothing is re-scored.
    set_params(project, filter={"judge": {**judge, "threshold": threshold, "batch_size": 3}})
    third = dvc(project, "repro", *DATA_STAGES)
    assert ran(third) == ["filter", "judge"]  # same scores: split does not run
    metrics = json.loads((project / "metrics/judge.json").read_text())
    assert (metrics["scored"], metrics["cached"]) == (0, kept)


# A budget that makes the model stages take seconds on the tiny model.
TINY_BUDGET = {
    "train": {"max_steps": 3, "batch_size": 2, "eval_steps": 2, "max_length": 128, "max_samples": 8},
    "benchmark": {"max_samples": 3, "ood": None},
    "evaluate": {"resamples": 200},
    "decoding": {"max_new_tokens": 8, "batch_size": 2},
}


def test_model_stages_rerun_only_what_a_param_touches(project: Path, tiny_model: Path):
    set_params(project, **TINY_BUDGET)
    first = dvc(project, "repro")
    assert ran(first) == ALL_STAGES
    bench = json.loads((project / "metrics/evaluate.json").read_text())
    assert {"base_chrf", "finetuned_chrf", "delta_chrf", "delta_chrf_low", "delta_chrf_p"} <= set(bench)
    assert bench["task"] == "docstring"

    # Statistics and the report re-run evaluate alone; decoding both generations; a new adapter
    # the fine-tuned generation only (the base model's outputs stay).
    set_params(project, evaluate={"resamples": 300})
    assert ran(dvc(project, "repro")) == ["evaluate"]

    set_params(project, decoding={"max_new_tokens": 6})
    assert ran(dvc(project, "repro")) == ["generate@base", "generate@finetuned", "evaluate"]

    set_params(project, lora={"r": 8})
    assert ran(dvc(project, "repro")) == ["train", "merge", "generate@finetuned", "evaluate"]

    assert ran(dvc(project, "repro")) == []


def add_kotlin_and_java(project: Path) -> None:
    """Commit the Kotlin and Java fixture files into the project's source repository."""
    source = Path(yaml.safe_load((project / "params.yaml").read_text())["source"]["url"])
    fixtures = Path(__file__).parent / "fixtures"
    for rel in ("kotlin/Shapes.kt", "java/Cart.java"):
        dest = source / "android/src/main" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fixtures / rel, dest)
    repo = git.Repo(source)
    repo.git.add("--all")
    repo.index.commit("android sources")


def test_new_tasks_on_kotlin_and_java_and_switching_task_reruns_from_extract(project: Path):
    add_kotlin_and_java(project)
    split = {"by": "sample", "train": 0.4, "val": 0.3, "test": 0.3}
    set_params(
        project, split=split, **TINY_BUDGET,
        task={"name": "method_name"},
        extract={"languages": ["kotlin", "java"]},
        filter={"min_body_lines": 1},
    )
    assert ran(dvc(project, "repro")) == ALL_STAGES
    extracted = io.read_json(project / "metrics/extract.json")
    assert extracted["files_parsed_kotlin"] == 1 and extracted["files_parsed_java"] == 1
    bench = io.read_json(project / "metrics/evaluate.json")
    assert bench["task"] == "method_name"
    assert {"base_subtoken_f1", "finetuned_exact_match_ci", "delta_edit_similarity"} <= set(bench)
    assert "chrf" not in " ".join(bench)

    # Another task: everything from extract on re-runs (ood too: it mines the same task); base
    # and clone do not.
    set_params(project, task={"name": "completion"}, extract={"window": {"stride": 48, "prefix_tokens": 64}})
    assert ran(dvc(project, "repro")) == ["extract", "filter", "judge", "split", "ood", *MODEL_STAGES]
    bench = io.read_json(project / "metrics/evaluate.json")
    assert bench["task"] == "completion"
    completion_metrics = ("exact_match", "edit_similarity", "bleu")
    assert set(bench) == {"task", "template", "samples", "reference_markup_pct"} | {
        f"{s}_{share}" for s in ("base", "finetuned") for share in ("degenerate_pct", "markup_pct")
    } | {
        f"{s}_{m}" for s in ("base", "finetuned") for m in completion_metrics
    } | {f"delta_{m}{end}" for m in completion_metrics for end in ("", "_low", "_high", "_p")}
    for row in io.read_jsonl(project / "metrics/predictions.jsonl"):
        assert all("\n" not in text for text in row["outputs"].values())  # one line each


def test_comparing_runs_across_branches(project: Path):
    """The README's comparison workflow: a run on main, one with other params on a branch;
    `dvc params diff`, `dvc metrics diff` and `dvc exp show` show what changed."""
    set_params(project, **TINY_BUDGET)
    repo = git.Repo(project)
    dvc(project, "repro")
    on_main = io.read_json(project / "metrics/evaluate.json")
    repo.git.add("--all")
    repo.index.commit("run: default lora")
    repo.git.checkout("-b", "rank8")
    set_params(project, lora={"r": 8})
    assert ran(dvc(project, "repro")) == ["train", "merge", "generate@finetuned", "evaluate"]
    repo.git.add("--all")
    repo.index.commit("run: lora.r 8")

    params_diff = json.loads(dvc(project, "params", "diff", "main", "--json"))
    assert params_diff == {"params.yaml": {"lora.r": {"old": 16, "new": 8, "diff": -8}}}

    metrics_diff = json.loads(dvc(project, "metrics", "diff", "main", "--all", "--json",
                                  "--targets", "metrics/evaluate.json"))["metrics/evaluate.json"]
    # The base model's outputs are the same on both branches: its scores do not move.
    assert metrics_diff["base_chrf"]["diff"] == 0
    on_branch = io.read_json(project / "metrics/evaluate.json")
    for key in ("finetuned_chrf", "delta_chrf", "delta_chrf_low"):
        assert (metrics_diff[key]["old"], metrics_diff[key]["new"]) == (on_main[key], on_branch[key]), key
    assert {"delta_chrf", "delta_chrf_low", "delta_chrf_high", "delta_chrf_p", "samples"} <= set(metrics_diff)

    shown = json.loads(dvc(project, "exp", "show", "--all-branches", "--json"))
    by_rev = {}
    for entry in shown:
        data = entry.get("data") or {}
        by_rev[entry.get("name") or entry.get("rev")] = data
    assert {"main", "rank8"} <= set(by_rev)
    for name, r in (("main", 16), ("rank8", 8)):
        data = by_rev[name]
        assert data["params"]["params.yaml"]["data"]["lora"]["r"] == r
        assert "finetuned_chrf" in data["metrics"]["metrics/evaluate.json"]["data"]


# Bad params as a user would write them (issue 11's hostile probe): `dvc repro` must stop with
# one clear line naming the key, never a traceback, never a run on a bad value.
BAD_PARAMS = [
    ("train", "lr", float("inf"), "train.lr must be a finite number, got inf"),
    ("train", "lr", float("nan"), "train.lr must be a finite number, got nan"),
    ("train", "lr", -1.0, "train.lr must be greater than 0, got -1.0"),
    ("train", "lr", "fast", "train.lr must be a valid number, got 'fast'"),
    ("train", "batch_size", 0, "train.batch_size must be greater than 0, got 0"),
    ("train", "quantize", "8bit", "train.quantize must be 'none' or '4bit', got '8bit'"),
    ("train", "device", "tpu", "train.device must be 'auto', 'cpu' or 'cuda', got 'tpu'"),
    ("lora", "r", 0, "lora.r must be greater than 0, got 0"),
    ("lora", "dropout", 1.5, "lora.dropout must be less than 1, got 1.5"),
    ("split", "train", 1.5, "split.train must be less than or equal to 1, got 1.5"),
    ("split", "by", "folder", "split.by must be 'file' or 'sample', got 'folder'"),
    ("split", "seed", "x", "split.seed must be a valid integer, got 'x'"),
    ("task", "name", "translate", "task.name must be 'docstring', 'completion' or 'method_name', got 'translate'"),
    ("extract", "languages", ["cobol"], "extract.languages.0 must be 'python', 'kotlin' or 'java', got 'cobol'"),
    ("extract", "target", "all", "extract.target must be 'summary' or 'full', got 'all'"),
    ("filter", "min_target_tokens", -1, "filter.min_target_tokens must be greater than or equal to 0, got -1"),
    ("decoding", "max_new_tokens", 0, "decoding.max_new_tokens must be greater than 0, got 0"),
    ("decoding", "top_p", 2.0, "decoding.top_p must be less than or equal to 1, got 2.0"),
    ("decoding", "no_repeat_ngram_size", -1, "decoding.no_repeat_ngram_size must be greater than or equal to 0, got -1"),
    ("benchmark", "templates", ["plain", "plain"], "benchmark.templates: templates listed twice: plain"),
    ("evaluate", "resamples", 10, "evaluate.resamples must be greater than or equal to 100, got 10"),
    ("evaluate", "confidence", 1.5, "evaluate.confidence must be less than 1, got 1.5"),
    ("model", "sha256", "abc", "model.sha256 string should match pattern '^[0-9a-fA-F]{64}$', got 'abc'"),
    ("source", "url", "", "source.url string should have at least 1 character, got ''"),
]


@pytest.fixture(scope="module")
def bare_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's files in a fresh git repository, untouched params (nothing is run)."""
    project = tmp_path_factory.mktemp("hostile") / "project"
    project_copy(project)
    return project


@pytest.mark.parametrize(("section", "key", "value", "message"), BAD_PARAMS, ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD_PARAMS])
def test_bad_params_stop_dvc_repro_with_one_clear_line(bare_project: Path, section, key, value, message):
    path = bare_project / "params.yaml"
    original = path.read_text()
    try:
        raw = yaml.safe_load(original)
        raw[section][key] = value
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "DVC_NO_ANALYTICS": "1"}
        done = subprocess.run([sys.executable, "-m", "dvc", "repro", "clone"], cwd=bare_project, env=env,
                              capture_output=True, text=True)
    finally:
        path.write_text(original)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"error: params.yaml: {message}" in output.splitlines(), output
    assert "Traceback" not in output and output.count("error: ") == 1, output


def test_a_run_pushed_to_a_remote_is_pulled_into_a_fresh_clone_up_to_date(project: Path, tmp_path: Path):
    """Artifacts survive the machine: push a finished run to a local-directory remote, clone the
    git repository afresh, `dvc pull`, and nothing needs to run again."""
    set_params(project, **TINY_BUDGET)
    dvc(project, "repro")
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "--default", "store", str(remote))
    repo = git.Repo(project)
    repo.git.add("--all")
    repo.index.commit("run, with its remote")
    dvc(project, "push")
    assert any(remote.rglob("*")), "nothing was pushed"

    clone = tmp_path / "clone"
    git.Repo.clone_from(project, clone)
    assert not (clone / "models").exists() and not (clone / "data").exists()
    dvc(clone, "pull")
    for path in ("models/merged/model.safetensors", "data/split/test.jsonl", "data/generations/finetuned/test.plain.jsonl"):
        assert (clone / path).read_bytes() == (project / path).read_bytes(), path
    assert "Data and pipelines are up to date" in dvc(clone, "status")
    assert ran(dvc(clone, "repro")) == []
