"""The data stages run in-process on a git repository made here with gitpython."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git
import re

import pytest
import yaml
from conftest import load_stage

from repotune import atomic, sources
from repotune.errors import RepotuneError, run

ROOT = Path(__file__).resolve().parents[1]


def write_params(workdir: Path, url: str, rev: str = "main", **sections) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["source"] = {"url": url, "rev": rev, "submodules": False}
    raw["extract"]["exclude"] = ["tests/"]
    raw["extract"]["max_file_bytes"] = 100_000
    raw["split"]["min_test_samples"] = 0  # the fixture repository has a dozen samples
    raw["split"].update(train=0.5, val=0.2, test=0.3)  # ... in a few files: room for each split
    for key, value in sections.items():
        node = raw
        for part in key.split("."):  # task.docstring.filter: a nested section
            node = node[part]
        node.update(value)
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_data_stages(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the data stages in `workdir` (the working directory is restored after the test)."""
    monkeypatch.chdir(workdir)
    for name in ("clone", "extract", "filter", "judge", "split"):
        load_stage(name).main([])


def test_data_stages_end_to_end(tmp_path, source_repo, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_params(work, source_repo.working_dir, **{"task.docstring.filter": {"min_target_tokens": 10}})
    run_data_stages(work, monkeypatch)

    clone = atomic.read_json(work / "metrics/clone.json")
    assert clone["sha"] == source_repo.head.commit.hexsha and len(clone["sha"]) == 40
    assert clone["symlinks_skipped"] == 1 and not (work / "data/repo/pkg/outside.py").exists()
    assert not (work / "data/repo/.git").exists()
    assert clone["files_python"] == 8

    extracted = atomic.read_jsonl(work / "data/extracted.jsonl")
    assert {r["sha"] for r in extracted} == {clone["sha"]}
    assert atomic.read_json(work / "metrics/extract.json")["files_skipped_syntax_error"] == 1

    filtered = atomic.read_json(work / "metrics/filter.json")
    assert filtered["dropped_duplicate_input"] == 1  # copy_of_area.area
    assert filtered["dropped_test"] == 1 and filtered["dropped_dunder"] == 1
    split = atomic.read_json(work / "metrics/split.json")
    assert split["samples"] == filtered["kept"]
    total = sum(len(atomic.read_jsonl(work / f"data/split/{s}.jsonl")) for s in ("train", "val", "test"))
    assert total == filtered["kept"]


def test_stages_are_deterministic(tmp_path, source_repo, monkeypatch):
    outputs = []
    for attempt in ("a", "b"):
        work = tmp_path / attempt
        work.mkdir()
        write_params(work, source_repo.working_dir)
        run_data_stages(work, monkeypatch)
        files = sorted(p for p in (work / "data").rglob("*") if p.is_file()) + sorted((work / "metrics").glob("*.json"))
        outputs.append({p.relative_to(work): p.read_bytes() for p in files})
    monkeypatch.chdir(tmp_path)
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("rev", ["v1", "feature", "main", "HEAD"])
def test_clone_resolves_tags_branches_and_shas(tmp_path, source_repo, monkeypatch, rev):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source_repo.working_dir, rev=rev)
    load_stage("clone").main([])
    sha = atomic.read_json(tmp_path / "metrics/clone.json")["sha"]
    assert sha == source_repo.commit(rev).hexsha
    assert (tmp_path / "data/repo/pkg/geometry.py").exists() == (rev in ("main", "HEAD"))
    write_params(tmp_path, source_repo.working_dir, rev=sha[:12])
    load_stage("clone").main([])
    assert atomic.read_json(tmp_path / "metrics/clone.json")["sha"] == sha


def test_unknown_rev_and_unreachable_url_are_one_line_errors(tmp_path, source_repo, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source_repo.working_dir, rev="no-such-branch")
    assert run(load_stage("clone").main, []) == 1
    err = capsys.readouterr().err
    assert err == "error: source.rev 'no-such-branch' is not a branch, tag or commit of the source repository\n"
    write_params(tmp_path, str(tmp_path / "missing"))
    with pytest.raises(RepotuneError, match="no such path"):
        load_stage("clone").main([])
    write_params(tmp_path, "https://127.0.0.1:9/nothing.git")
    assert run(load_stage("clone").main, []) == 1
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
    load_stage("clone").main([])
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
    load_stage("clone").main([])
    assert not (tmp_path / "data/repo/third/lib.py").exists()
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["source"]["submodules"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    load_stage("clone").main([])
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
            tar.addfile(info, io.BytesIO(data))
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
        load_stage("clone").main([])
        shas.append(atomic.read_json(work / "metrics/clone.json")["sha"])
        assert (work / "data/repo/tinylib/__init__.py").exists()
    assert shas[0] == shas[1]
    write_params(tmp_path / "a", "pypi:tinylib>=1.0")
    monkeypatch.chdir(tmp_path / "a")
    with pytest.raises(RepotuneError, match="not a pinned PyPI spec"):
        load_stage("clone").main([])
    write_params(tmp_path / "a", "pypi:tinylib==9.9")
    with pytest.raises(RepotuneError, match="cannot download sdist tinylib==9.9 with pip"):
        load_stage("clone").main([])


def test_extract_without_clone_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, ".")
    with pytest.raises(RepotuneError, match="run the clone stage first"):
        load_stage("extract").main([])


# --- npm: sources, fetched by the real npm from a local registry made here ------------------

needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")


def tar_member(tar: tarfile.TarFile, name: str, data: bytes = b"", mode: int = 0o644, **kind) -> None:
    """Add one member to `tar`: a file with `data`, or (via `kind`) a link, fifo or device."""
    info = tarfile.TarInfo(name)
    info.mode = mode
    for key, value in kind.items():
        setattr(info, key, value)
    info.size = len(data) if info.isfile() else 0
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def npm_tarball(files: dict[str, bytes], extra=None) -> bytes:
    """An npm package tarball: every file under package/, as npm pack writes it; `extra(tar)`
    may add hostile members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel, data in files.items():
            tar_member(tar, f"package/{rel}", data, mode=0o755 if rel.startswith("bin/") else 0o644)
        if extra is not None:
            extra(tar)
    return buffer.getvalue()


@pytest.fixture
def npm_registry(tmp_path, monkeypatch):
    """A local npm registry (http.server on 127.0.0.1): the real `npm pack` resolves, downloads
    and integrity-checks from it, with no network. Fill the returned dict with
    {name: {version: tarball bytes}}."""
    packages: dict[str, dict[str, bytes]] = {}

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            path = urllib.parse.unquote(self.path).lstrip("/")
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if path.startswith("-/tarballs/"):
                name, _, file = path.removeprefix("-/tarballs/").rpartition("/")
                body = packages.get(name, {}).get(file.removesuffix(".tgz"))
            elif path in packages:
                versions = {
                    version: {"name": path, "version": version, "dist": {
                        "tarball": f"{base}/-/tarballs/{urllib.parse.quote(path, safe='')}/{version}.tgz",
                        "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
                    }}
                    for version, data in packages[path].items()
                }
                latest = sorted(versions)[-1]
                body = json.dumps({"name": path, "dist-tags": {"latest": latest}, "versions": versions}).encode()
            else:
                body = None
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_noproxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield packages
    server.shutdown()
    thread.join()


WIDGETS = {
    "package.json": b'{"name": "@acme/widgets", "version": "1.2.3", "license": "MIT"}\n',
    "android/src/main/java/com/acme/Widget.kt": b"package com.acme\n\nclass Widget {\n    fun draw() = Unit\n}\n",
    "android/src/main/java/com/acme/Legacy.java": b"package com.acme;\n\npublic class Legacy {\n    void run() {}\n}\n",
    "bin/widgets": b"#!/usr/bin/env node\n",
}


@needs_npm
def test_npm_package_becomes_a_git_repo_with_a_stable_sha(tmp_path, monkeypatch, npm_registry):
    npm_registry["@acme/widgets"] = {"1.2.3": npm_tarball(WIDGETS), "1.3.0": npm_tarball({"package.json": b"{}"})}
    url = "npm:@acme/widgets@1.2.3"
    sha, counts = sources.clone(url, "HEAD", tmp_path / "checkout")
    repo = git.Repo(tmp_path / "checkout")
    commit = repo.commit(sha)
    assert (commit.author.name, commit.author.email) == ("repotune", "repotune@localhost")
    assert commit.authored_datetime.isoformat() == "2000-01-01T00:00:00+00:00"
    assert commit.message == f"{url} (unpacked npm package)\n"
    listing = repo.git.ls_tree("-r", "--format=%(objectmode) %(path)", sha).splitlines()
    assert sorted(listing) == sorted(f"{'100755' if p.startswith('bin/') else '100644'} {p}" for p in WIDGETS)
    assert counts["archive_files"] == 4 and sum(counts.values()) == 4  # nothing skipped

    shas = []
    for attempt in ("a", "b"):
        work = tmp_path / attempt
        work.mkdir()
        monkeypatch.chdir(work)
        write_params(work, url, rev="HEAD")
        load_stage("clone").main([])
        metrics = atomic.read_json(work / "metrics/clone.json")
        shas.append(metrics["sha"])
        assert (work / "data/repo/android/src/main/java/com/acme/Widget.kt").read_bytes() == WIDGETS[
            "android/src/main/java/com/acme/Widget.kt"]
        assert not (work / "data/repo/package").exists()  # the tarball's top folder is stripped
    assert shas == [sha, sha]
    assert (metrics["files"], metrics["files_kotlin"], metrics["files_java"]) == (4, 1, 1)
    assert metrics["archive_files"] == 4 and metrics["archive_skipped_link"] == 0


@pytest.mark.parametrize(
    "url", ["npm:react-native", "npm:x@^1.0", "npm:x@latest", "npm:x@1.0", "npm:@scope/x", "npm:x@>=1.2.3", "npm:x@1.2.3 || 2"]
)
def test_unpinned_npm_spec_is_one_line_error(tmp_path, monkeypatch, capsys, url):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, url, rev="HEAD")
    assert run(load_stage("clone").main, []) == 1
    assert capsys.readouterr().err == (
        f"error: source.url {url!r} is not a pinned npm spec; expected npm:NAME@VERSION or "
        "npm:@SCOPE/NAME@VERSION with an exact version such as 1.2.3 (no range or tag)\n"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [("npm:react-native@0.76.9", ("react-native", "0.76.9")),
     ("npm:@scope/name@1.2.3", ("@scope/name", "1.2.3")),
     ("npm:x@1.0.0-rc.1+build.5", ("x", "1.0.0-rc.1+build.5"))],
)
def test_pinned_npm_specs(url, expected):
    assert sources.parse_npm_spec(url) == expected


@needs_npm
def test_unknown_npm_package_or_version_is_one_line_error(tmp_path, monkeypatch, capsys, npm_registry):
    npm_registry["@acme/widgets"] = {"1.2.3": npm_tarball(WIDGETS)}
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "npm:@acme/widgets@9.9.9", rev="HEAD")
    assert run(load_stage("clone").main, []) == 1
    assert capsys.readouterr().err == (
        "error: cannot fetch npm package @acme/widgets@9.9.9 with npm pack: "
        "No matching version found for @acme/widgets@9.9.9.\n"
    )
    write_params(tmp_path, "npm:no-such-package@1.0.0", rev="HEAD")
    assert run(load_stage("clone").main, []) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot fetch npm package no-such-package@1.0.0 with npm pack: Not Found")
    assert err.count("\n") == 1
    assert not (tmp_path / "data/repo").exists()


@needs_npm
def test_npm_tarball_cannot_write_outside_or_plant_links(tmp_path, monkeypatch, npm_registry):
    outside = tmp_path / "outside"
    outside.mkdir()

    def hostile(tar):
        tar_member(tar, "../evil.txt", b"climbs out")
        tar_member(tar, "package/../../evil-too.txt", b"climbs out from inside")
        tar_member(tar, str(outside / "absolute-evil.txt"), b"absolute")
        tar_member(tar, "package/.git/config", b"[core]\n\tfsmonitor = touch hacked\n")
        tar_member(tar, "package/link-out", type=tarfile.SYMTYPE, linkname=str(outside))
        tar_member(tar, "package/hard", type=tarfile.LNKTYPE, linkname="package/package.json")
        tar_member(tar, "package/fifo", type=tarfile.FIFOTYPE)
        tar_member(tar, "package/tty", type=tarfile.CHRTYPE, devmajor=5, devminor=0)

    npm_registry["evil"] = {"1.0.0": npm_tarball({"package.json": b"{}", "src/Ok.kt": b"class Ok\n"}, hostile)}
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_params(work, "npm:evil@1.0.0", rev="HEAD")
    load_stage("clone").main([])

    metrics = atomic.read_json(work / "metrics/clone.json")
    assert metrics["archive_files"] == 2
    assert metrics["archive_skipped_unsafe_path"] == 4  # two '..', one absolute, one .git
    assert metrics["archive_skipped_link"] == 2  # symbolic and hard
    assert metrics["archive_skipped_special"] == 2  # fifo and character device
    assert sorted(p.relative_to(work / "data/repo").as_posix() for p in (work / "data/repo").rglob("*")) == [
        "package.json", "src", "src/Ok.kt"]
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.rglob("*evil*")) == []
    assert not list(tmp_path.rglob("hacked"))


@pytest.mark.parametrize(
    ("sections", "failing", "message"),
    [
        ({"extract": {"languages": ["kotlin"]}}, "extract",
         r"^extract: no docstring samples in data/repo for languages \['kotlin'\] \(0 files of them seen"),
        ({"task.docstring.filter": {"min_target_tokens": 100000}}, "filter",
         r"^filter: none of \d+ samples kept \(dropped: .*short_target \d+.*\); loosen"),
        ({"split": {"train": 1.0, "val": 0.0, "test": 0.0}}, "split",
         r"^split: the test split is empty \(train \d+, val 0, test 0 samples\); raise split.test \(now 0.0\)"),
    ],
)
def test_a_stage_that_produces_nothing_fails_there_with_counts(
    tmp_path, source_repo, monkeypatch, capsys, sections, failing, message
):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source_repo.working_dir, **sections)
    for name in ("clone", "extract", "filter", "judge", "split"):
        if name == failing:
            assert run(load_stage(name).main, []) == 1
            # One line, after the progress bars on stderr.
            errs = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
            assert len(errs) == 1 and re.search(message, errs[0].removeprefix("error: ")), errs
            break
        load_stage(name).main([])


def test_a_test_split_under_split_min_test_samples_stops_at_split_unless_overridden(
    tmp_path, source_repo, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source_repo.working_dir, split={"min_test_samples": 30},
                 **{"task.docstring.filter": {"min_target_tokens": 10}})
    for name in ("clone", "extract", "filter", "judge"):
        load_stage(name).main([])
    assert run(load_stage("split").main, []) == 1
    errs = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errs) == 1
    assert re.search(r"the test split has \d+ samples, fewer than split.min_test_samples=30 \(train \d+, val \d+, "
                     r"test \d+\).*Raise split.test.*split.min_test_samples: 0 goes on anyway$", errs[0])
    assert not (tmp_path / "data/split").exists()
    write_params(tmp_path, source_repo.working_dir, split={"min_test_samples": 0},
                 **{"task.docstring.filter": {"min_target_tokens": 10}})
    load_stage("split").main([])  # the explicit override goes on
    assert (tmp_path / "data/split/test.jsonl").is_file()


def test_extract_writes_the_same_bytes_with_1_and_2_workers_sorted_by_path_string(tmp_path, monkeypatch):
    # Path order (by parts) walks a/b.py before a-b.py, and each language is walked on its own;
    # the output is sorted by the path *string* across languages: '-' (0x2d) < '.' (0x2e) < '/'.
    doc = '"""Return the value of {0}, documented at length for the docstring task here."""'
    files = {
        "a/b.py": f"def in_folder():\n    {doc.format('in_folder')}\n    return 1\n",
        "a-b.py": f"def dashed():\n    {doc.format('dashed')}\n    return 2\n",
        "a.kt": "/** Return the value of kotlin, documented at length for the docstring task. */\nfun kotlin() = 3\n",
        # Two functions, the later one first in name order: records follow lines, not names.
        "z.py": f"def zeta():\n    {doc.format('zeta')}\n    return 4\n\n\ndef alpha():\n    {doc.format('alpha')}\n    return 5\n",
    }
    # Enough files that two workers both get chunks.
    files.update({f"many/m{i:02d}.py": f"def f{i:02d}():\n    {doc.format(i)}\n    return {i}\n" for i in range(40)})
    source = tmp_path / "source"
    for rel, text in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(text)
    repo = git.Repo.init(source, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.com")
    repo.git.add("--all")
    repo.index.commit("files")
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for workers in (1, 2):
        write_params(tmp_path, str(source), extract={"languages": ["python", "kotlin"], "workers": workers})
        if workers == 1:
            load_stage("clone").main([])
        load_stage("extract").main([])
        outputs[workers] = ((tmp_path / "data/extracted.jsonl").read_bytes(), (tmp_path / "metrics/extract.json").read_bytes())
    assert outputs[1] == outputs[2]
    records = atomic.read_jsonl(tmp_path / "data/extracted.jsonl")
    assert [(r["path"], r["name"]) for r in records[:5]] == [
        ("a-b.py", "dashed"), ("a.kt", "kotlin"), ("a/b.py", "in_folder"), ("many/m00.py", "f00"), ("many/m01.py", "f01"),
    ]
    assert [(r["path"], r["name"]) for r in records[-2:]] == [("z.py", "zeta"), ("z.py", "alpha")]
    metrics = atomic.read_json(tmp_path / "metrics/extract.json")
    assert (metrics["samples"], metrics["files_parsed_python"], metrics["files_parsed_kotlin"]) == (45, 43, 1)
