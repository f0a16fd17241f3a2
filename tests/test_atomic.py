"""Atomic writes and the temporary folders a killed process leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repotune import atomic


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_atomic_write_leaves_no_temporary_folder(tmp_path: Path):
    atomic.write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_failed_write_keeps_the_old_output(tmp_path: Path):
    atomic.write_text(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert (tmp_path / "out.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_leftovers_of_dead_processes_are_removed_by_the_next_write(tmp_path: Path):
    dead = dead_pid()
    partial = tmp_path / f".base.partial-{dead}-abc123"
    scratch = tmp_path / f".base.scratch-{dead}-def456"
    mine = tmp_path / f".base.scratch-{os.getpid()}-ghi789"  # this process: still working
    other = tmp_path / f".basement.partial-{dead}-jkl"  # another output's
    for folder in (partial, scratch, mine, other):
        (folder / "base").mkdir(parents=True)
        (folder / "base" / "model.safetensors").write_bytes(b"\0" * 1024)
    with atomic.atomic_path(tmp_path / "base") as out:
        out.mkdir()
        (out / "config.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["base", mine.name, other.name])
    with atomic.scratch_dir(tmp_path / "basement") as work:
        assert work.is_dir() and work.parent == tmp_path
        assert work.name.startswith(f".basement.scratch-{os.getpid()}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["base", mine.name])


def test_replace_folder_moves_a_finished_folder_onto_the_old_one(tmp_path: Path):
    (tmp_path / "curves" / "old").mkdir(parents=True)
    new = tmp_path / "work" / "curves"
    (new / "plots").mkdir(parents=True)
    (new / "plots" / "loss.tsv").write_text("step\tloss\n0\t1.0\n")
    atomic.replace_folder(new, tmp_path / "curves")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "curves").rglob("*")) == [
        "curves/plots", "curves/plots/loss.tsv"
    ]
    assert not new.exists()
