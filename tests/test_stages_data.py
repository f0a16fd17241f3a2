"""The data stages run in-process on a git repository made here with gitpython."""

from __future__ import annotations

import importlib.util
import io as stdio
import os
import sys
import tarfile
from pathlib import Path

import git
import pytest
import yaml

from repotune import io
from repotune.errors import RepotuneError, run

ROOT = Path(__file__).resolve().parents[1]


def stage(name: str):
    """Import stages/<name>.py as a module (stages are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_params(workdir: Path, url: str, rev: str = "main", **sections) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["source"] = {"url": url, "rev": rev, "submodules": False}
    raw["extract"]["exclude"] = ["tests/"]
    raw["extract"]["max_file_bytes"] = 100_000
    for key, value in sections.items():
        raw[key].update(value)
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_data_stages(workdir: Path) -> None:
    os.chdir(workdir)
    for name in ("clone", "extract", "filter", "split"):
        stage(name).main([])


def test_data_stages_end_to_end(tmp_path, source_repo, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_params(work, source_repo.working_dir, filter={"min_target_tokens": 10})
    run_data_stages(work)

    clone = io.read_json(work / "metrics/clone.json")
    assert clone["sha"] == source_repo.head.commit.hexsha and len(clone["sha"]) == 40
    assert clone["symlinks_skipped"] == 1 and not (work / "data/repo/pkg/outside.py").exists()
    assert not (work / "data/repo/.git").exists()
    assert clone["files_python"] == 8

    extracted = io.read_jsonl(work / "data/extracted.jsonl")
    assert {r["sha"] for r in extracted} == {clone["sha"]}
    assert io.read_json(work / "metrics/extract.json")["files_skipped_syntax_error"] == 1

    filtered = io.read_json(work / "metrics/filter.json")
    assert filtered["dropped_duplicate_input"] == 1  # copy_of_area.area
    assert filtered["dropped_test"] == 1 and filtered["dropped_dunder"] == 1
    split = io.read_json(work / "metrics/split.json")
    assert split["samples"] == filtered["kept"]
    total = sum(len(io.read_jsonl(work / f"data/split/{s}.jsonl")) for s in ("train", "val", "test"))
    assert total == filtered["kept"]


def test_stages_are_deterministic(tmp_path, source_repo, monkeypatch):
    outputs = []
    for attempt in ("a", "b"):
        work = tmp_path / attempt
        work.mkdir()
        write_params(work, source_repo.working_dir)
        run_data_stages(work)
        files = sorted(p for p in (work / "data").rglob("*") if p.is_file()) + sorted((work / "metrics").glob("*.json"))
        outputs.append({p.relative_to(work): p.read_bytes() for p in files})
    monkeypatch.chdir(tmp_path)
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("rev", ["v1", "feature", "main", "HEAD"])
def test_clone_resolves_tags_branches_and_shas(tmp_path, source_repo, monkeypatch, rev):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source_repo.working_dir, rev=rev)
    stage("clone").main([])
    sha = io.read_json(tmp_path / "metrics/clone.json")["sha"]
    assert sha == source_repo.commit(rev).hexsha
    assert (tmp_path / "data/repo/pkg/geometry.py").exists() == (rev in ("main", "HEAD"))
    write_params(tmp_path, source_repo.working_dir, rev=sha[:12])
    stage("clone").main([])
    assert io.read_json(tmp_path / "metrics/clone.json")["sha"] == sha


def test_unknown_rev_and_unreachable_url_are_one_line_errors(tmp_path, source_repo, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source_repo.working_dir, rev="no-such-branch")
    assert run(stage("clone").main, []) == 1
    err = capsys.readouterr().err
    assert err == "error: source.rev 'no-such-branch' is not a branch, tag or commit of the source repository\n"
    write_params(tmp_path, str(tmp_path / "missing"))
    with pytest.raises(RepotuneError, match="no such path"):
        stage("clone").main([])
    write_params(tmp_path, "https://127.0.0.1:9/nothing.git")
    assert run(stage("clone").main, []) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot clone source.url 'https://127.0.0.1:9/nothing.git': ")
    assert err.count("\n") == 1
    assert not (tmp_path / "data/repo").exists()  # nothing half-written


def test_clone_runs_no_hooks(tmp_path, source_repo, monkeypatch):
    templates = tmp_path / "templates"
    (templates / "hooks").mkdir(parents=True)
    marker = tmp_path / "hook-ran"
    hook = templates / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    monkeypatch.setenv("GIT_TEMPLATE_DIR", str(templates))
    # The template really would run a hook: a plain clone proves it.
    git.Repo.clone_from(source_repo.working_dir, tmp_path / "plain")
    assert marker.exists()
    marker.unlink()
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source_repo.working_dir)
    stage("clone").main([])
    assert not marker.exists()


def test_submodules_only_when_asked(tmp_path, source_repo, monkeypatch):
    sub = git.Repo.init(tmp_path / "sub", initial_branch="main")
    (tmp_path / "sub/lib.py").write_text("x = 1\n")
    sub.index.add(["lib.py"])
    sub.index.commit("sub")
    source_repo.git.execute(["git", "-c", "protocol.file.allow=always", "submodule", "add", str(tmp_path / "sub"), "third"])
    source_repo.index.commit("add submodule")
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source_repo.working_dir)
    stage("clone").main([])
    assert not (tmp_path / "data/repo/third/lib.py").exists()
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["source"]["submodules"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    stage("clone").main([])
    assert (tmp_path / "data/repo/third/lib.py").read_text() == "x = 1\n"


def make_sdist(folder: Path, name: str = "tinylib", version: str = "1.0") -> Path:
    """A minimal setuptools sdist, written by hand so nothing is downloaded."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
                          f'[project]\nname = "{name}"\nversion = "{version}"\n',
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}/__init__.py": 'def hello():\n    """Say hello to the whole wide world and return nothing at all."""\n',
    }
    archive = folder / f"{name}-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{rel}")
            info.size = len(data)
            tar.addfile(info, stdio.BytesIO(data))
    return archive


def test_pypi_sdist_becomes_a_git_repo_with_a_stable_sha(tmp_path, monkeypatch):
    make_sdist(tmp_path / "index")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")  # pip reads "0" as: do not isolate
    shas = []
    for attempt in ("a", "b"):
        work = tmp_path / attempt
        work.mkdir()
        monkeypatch.chdir(work)
        write_params(work, "pypi:tinylib==1.0", rev="HEAD")
        stage("clone").main([])
        shas.append(io.read_json(work / "metrics/clone.json")["sha"])
        assert (work / "data/repo/tinylib/__init__.py").exists()
    assert shas[0] == shas[1]
    write_params(tmp_path / "a", "pypi:tinylib>=1.0")
    monkeypatch.chdir(tmp_path / "a")
    with pytest.raises(RepotuneError, match="not a pinned PyPI spec"):
        stage("clone").main([])
    write_params(tmp_path / "a", "pypi:tinylib==9.9")
    with pytest.raises(RepotuneError, match="cannot download sdist tinylib==9.9 with pip"):
        stage("clone").main([])


def test_extract_without_clone_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, ".")
    with pytest.raises(RepotuneError, match="run the clone stage first"):
        stage("extract").main([])
