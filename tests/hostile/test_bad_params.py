"""Bad params as a user writes them, each through a real `dvc repro`: one clear line naming the
key, exit status 1, no traceback, and nothing run on the bad value (issue 11)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import dvc_env, project_copy


# Bad params as a user would write them (issue 11's hostile probe): `dvc repro` must stop with
# one clear line naming the key, never a traceback, never a run on a bad value.
BAD_PARAMS = [
    ("train", "lr", float("inf"), "train.lr must be a finite number, got inf"),
    ("train", "lr", float("nan"), "train.lr must be a finite number, got nan"),
    ("train", "lr", -1.0, "train.lr must be greater than 0, got -1.0"),
    ("train", "lr", "fast", "train.lr must be a valid number, got 'fast'"),
    ("train", "batch_size", 0, "train.batch_size must be greater than 0, got 0"),
    ("train", "quantize", "3bit", "train.quantize must be 'none', '4bit' or '8bit', got '3bit'"),
    ("train", "device", "tpu", "train.device must be 'auto', 'cpu' or 'cuda', got 'tpu'"),
    ("lora", "r", 0, "lora.r must be greater than 0, got 0"),
    ("lora", "dropout", 1.5, "lora.dropout must be less than 1, got 1.5"),
    ("split", "train", 1.5, "split.train must be less than or equal to 1, got 1.5"),
    ("split", "by", "folder", "split.by must be 'file' or 'sample', got 'folder'"),
    ("split", "seed", "x", "split.seed must be a valid integer, got 'x'"),
    ("task", "name", "translate", "task.name: must be one of the tasks (docstring, completion, method_name), got 'translate'"),
    ("extract", "languages", ["cobol"], "extract.languages.0: must be one of the languages (python, kotlin, java), got 'cobol'"),
    ("task.docstring.extract", "target", "all", "task.docstring.extract.target must be 'summary' or 'full', got 'all'"),
    ("task.docstring.filter", "min_target_tokens", -1,
     "task.docstring.filter.min_target_tokens must be greater than or equal to 0, got -1"),
    ("extract", "target", "full", "extract.target has moved to task.docstring.extract.target: the docstring task's "
     "own knobs are under task.docstring"),
    ("decoding", "max_new_tokens", 0, "decoding.max_new_tokens must be greater than 0, got 0"),
    ("decoding", "top_p", 2.0, "decoding.top_p must be less than or equal to 1, got 2.0"),
    ("decoding", "no_repeat_ngram_size", -1, "decoding.no_repeat_ngram_size must be greater than or equal to 0, got -1"),
    ("generate", "templates", ["plain", "plain"], "generate.templates: templates listed twice: plain"),
    ("evaluate", "resamples", 10, "evaluate.resamples must be greater than or equal to 100, got 10"),
    ("evaluate", "confidence", 1.5, "evaluate.confidence must be less than 1, got 1.5"),
    ("model", "sha256", "abc", "model.sha256 string should match pattern '^[0-9a-fA-F]{64}$', got 'abc'"),
    ("source", "url", "", "source.url string should have at least 1 character, got ''"),
    ("lora", "target_modules", [], "lora.target_modules: must name at least one module (e.g. [q_proj, v_proj]) or be all-linear, got []"),
    ("model", "allow_pickle", "maybe", "model.allow_pickle must be a valid boolean, got 'maybe'"),
    ("split", "test", 0.0, "split: train + val + test must sum to 1.0, got 0.9"),
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
        node = raw
        for part in section.split("."):  # task.docstring.filter: a nested section
            node = node[part]
        node[key] = value
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        done = subprocess.run([sys.executable, "-m", "dvc", "repro", "clone"], cwd=bare_project, env=dvc_env(),
                              capture_output=True, text=True)
    finally:
        path.write_text(original)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"error: params.yaml: {message}" in output.splitlines(), output
    assert "Traceback" not in output and output.count("error: ") == 1, output
