"""A hostile repository through `clone` and `extract`: every odd file is skipped or handled and
counted under its own reason in metrics/extract.json; nothing crashes, nothing outside the
repository is read, no hook or submodule is fetched, and the 5 MB line keeps memory bounded."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml

from conftest import ROOT, load_stage

from repotune import atomic
from repotune.errors import run

GOOD = 'def area(width, height):\n    """Return the area of a rectangle of the given width and height, in square units."""\n    return width * height\n'
SECRET = 'def secret():\n    """A file outside the repository, which no stage may ever read or copy."""\n'


def doc_function(name: str, newline: str = "\n") -> str:
    return newline.join([f"def {name}(x):", f'    """Return the value of {name} for x, computed the long and careful way here."""', "    return x", ""])


def deeply_nested(levels: int) -> str:
    """`levels` functions, each defined inside the previous one, each with a docstring."""
    lines = []
    for depth in range(levels):
        pad = "    " * depth
        lines += [f"{pad}def level_{depth}(x):", f'{pad}    """Return x after passing it through nesting level number {depth} of many."""']
    lines.append("    " * levels + "return x")
    return "\n".join(lines) + "\n"


def hostile_repo(path: Path, outside: Path) -> git.Repo:
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.com")
    files: dict[str, bytes] = {
        "pkg/good.py": GOOD.encode(),
        "pkg/crlf.py": doc_function("windows", "\r\n").encode(),
        "pkg/we ird näme $(touch PWNED).py": doc_function("odd_name").encode(),
        "pkg/-rf.py": doc_function("dash_name").encode(),
        "pkg/.hidden.py": doc_function("hidden").encode(),
        "pkg/deep.py": deeply_nested(200).encode(),
        # 5 MB on one line, then a real function: parsed, not a crash, not a memory blow-up.
        "pkg/long_line.py": b"DATA = '" + b"a" * 5_000_000 + b"'\n" + doc_function("after_long_line").encode(),
        "pkg/too_big.py": b"# " + b"x" * 11_000_000 + b"\n",
        "pkg/blob.py": bytes(range(256)) * 64,
        "pkg/nul.py": b'def nul():\n    """Has a NUL\x00 byte inside its docstring, which makes it binary."""\n',
        "pkg/latin1.py": 'def caf\xe9():\n    """Caf\xe9 au lait, written in Latin-1 and not in UTF-8."""\n'.encode("latin-1"),
        "pkg/mixed.py": doc_function("mixed").encode() + "# caf\xe9\n".encode("latin-1"),
        "pkg/lfs.py": b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 12345\n",
        "pkg/empty.py": b"",
        "pkg/broken.py": b'def broken(:\n    """A docstring in a file that does not parse at all."""\n',
    }
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    (path / "pkg/link_abs.py").symlink_to(outside)  # absolute, out of the repository
    (path / "pkg/link_rel.py").symlink_to(Path("../..") / outside.parent.name / outside.name)
    (path / "pkg/link_dir").symlink_to(outside.parent, target_is_directory=True)
    # A hook in the repository's own tree (git never runs those unless told) and an
    # unreachable submodule: a gitlink plus .gitmodules naming a host that does not exist.
    (path / ".githooks").mkdir()
    (path / ".githooks/post-checkout").write_text(f"#!/bin/sh\ntouch {path.parent / 'HOOK-RAN'}\n")
    (path / ".githooks/post-checkout").chmod(0o755)
    (path / ".gitmodules").write_text('[submodule "vendor/sub"]\n\tpath = vendor/sub\n\turl = https://unreachable.invalid/sub.git\n')
    repo.git.add("--all")
    repo.git.update_index("--add", "--cacheinfo", f"160000,{'1' * 40},vendor/sub")
    repo.index.commit("hostile")
    return repo


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    outside = tmp_path / "elsewhere" / "secret.py"
    outside.parent.mkdir()
    outside.write_text(SECRET)
    repo = hostile_repo(tmp_path / "elsewhere-repo" / "repo", outside)
    work = tmp_path / "work"
    work.mkdir()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["source"] = {"url": repo.working_dir, "rev": "main", "submodules": False}
    raw["extract"].update(max_file_bytes=10_000_000, exclude=[], workers=1)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(work)
    return work


def test_every_odd_file_is_counted_under_its_own_reason(hostile: Path):
    assert run(load_stage("clone").main, []) == 0
    clone = atomic.read_json(hostile / "metrics/clone.json")
    assert clone["symlinks_skipped"] == 3
    assert not any(p.is_symlink() for p in (hostile / "data/repo").rglob("*"))
    assert not (hostile / "data/repo/vendor/sub").exists() or not any((hostile / "data/repo/vendor/sub").iterdir())

    assert run(load_stage("extract").main, []) == 0
    counts = atomic.read_json(hostile / "metrics/extract.json")
    expected = {
        "symlinks_skipped_at_clone": 3,
        "files_skipped_too_large": 1,     # too_big.py (11 MB > extract.max_file_bytes)
        "files_skipped_empty": 1,         # empty.py
        "files_skipped_lfs_pointer": 1,   # lfs.py
        "files_skipped_binary": 2,        # blob.py, nul.py
        "files_skipped_not_utf8": 2,      # latin1.py, mixed.py
        "files_skipped_syntax_error": 1,  # broken.py
        "files_parsed": 7,                # good, crlf, odd name, -rf, .hidden, deep, long_line
    }
    assert {k: counts.get(k, 0) for k in expected} == expected
    assert counts["files_seen"] == sum(v for k, v in expected.items() if k != "symlinks_skipped_at_clone")

    records = atomic.read_jsonl(hostile / "data/extracted.jsonl")
    names = {r["name"] for r in records}
    assert "secret" not in names  # nothing read through a link
    assert {"area", "windows", "odd_name", "dash_name", "hidden", "after_long_line", "level_0"} <= names
    nested = [n for n in names if n.rsplit(".", 1)[-1].startswith("level_")]
    assert len(nested) == 200 and any(n.endswith("level_198.<locals>.level_199") for n in nested)
    paths = {r["name"]: r["path"] for r in records}
    assert paths["odd_name"] == "pkg/we ird näme $(touch PWNED).py"
    windows = next(r for r in records if r["name"] == "windows")
    assert "\r" not in windows["target"]
    assert not list(Path("/").glob("PWNED")) and not (hostile / "PWNED").exists()
    assert not (hostile.parent / "elsewhere-repo" / "HOOK-RAN").exists()


def test_the_5mb_line_keeps_extract_memory_bounded(hostile: Path):
    """extract runs as its own process here, so its peak resident memory can be read."""
    assert run(load_stage("clone").main, []) == 0
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([sys.executable, str(ROOT / "stages/extract.py")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    peak_mib = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    # Measured ~0.2 GiB with the 5 MB line; the bound leaves room for other pythons and torch.
    assert peak_mib < 1024, f"extract peaked at {peak_mib:.0f} MiB"


@pytest.mark.parametrize("url", [
    "ext::sh -c touch% {marker}",
    "--upload-pack=touch {marker}",
    "-oProxyCommand=touch {marker}",
    "ssh://-oProxyCommand=touch%20{marker}/x",
])
def test_urls_that_would_run_commands_are_refused(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    marker = tmp_path / "PWNED"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["source"] = {"url": url.format(marker=marker), "rev": "HEAD", "submodules": False}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert run(load_stage("clone").main, []) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not marker.exists()
    assert not (tmp_path / "data/repo").exists()
