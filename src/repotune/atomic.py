"""Atomic, deterministic writing (and reading) of the files every stage produces.

Everything is written to a temporary path in the destination's folder and moved into place
with ``os.replace``, so a crashed stage never leaves a half-written output behind. Temporary
and scratch folders are named ``.NAME.partial-PID-*`` / ``.NAME.scratch-PID-*`` beside the
output NAME (never in the system temp folder), so the next write of NAME removes what a killed
process (SIGKILL, out of memory) left there. JSON is
written with sorted keys, no ASCII escaping and a trailing newline, so identical data gives
identical bytes and DVC can stop a cascade when a re-run changes nothing.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def dumps(obj: Any) -> str:
    """Canonical one-line JSON: sorted keys, UTF-8 kept as is."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


TEMP_KINDS = ("partial", "scratch")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a killed process whose parent died too stays a zombie until init reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale(path: str | Path) -> list[Path]:
    """Remove the temporary folders beside `path` whose process is gone; return them.

    A SIGKILL skips every ``finally``: without this, each interrupted write of a model folder
    would leave its size on disk (517 MB for ``models/base``).
    """
    path = Path(path)
    removed = []
    for kind in TEMP_KINDS:
        prefix = f".{path.name}.{kind}-"
        for leftover in sorted(path.parent.glob(glob.escape(prefix) + "*")):
            pid = leftover.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    return removed


def _temp_folder(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{kind}-{os.getpid()}-", dir=path.parent))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it onto `path` (file or folder).

    On an exception the temporary file or folder is removed and `path` is left untouched.
    """
    path = Path(path)
    tmp = _temp_folder(path, "partial") / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


@contextmanager
def scratch_dir(beside: str | Path) -> Iterator[Path]:
    """Yield an empty working folder beside the output `beside`, removed afterwards.

    Downloads, checkouts and trainer scratch go here rather than into the system temp folder:
    on the same disk as the output (a final move is a rename) and cleaned by the next run if
    this one is killed.
    """
    folder = _temp_folder(Path(beside), "scratch")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def replace_folder(source: str | Path, path: str | Path) -> None:
    """Move the finished folder `source` onto `path` atomically (the old `path` goes)."""
    with atomic_path(path) as tmp:
        shutil.move(str(source), tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` as UTF-8 atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON atomically (metrics files, manifests)."""
    write_text(path, json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write one canonical JSON object per line atomically; return the number of records."""
    count = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(dumps(record) + "\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file written by :func:`write_jsonl`."""
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file one at a time (a stage that streams holds only its own)."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_disabled(folder: str | Path, reason: str | None = None, marker: str = "disabled.json") -> None:
    """Replace `folder` with one that holds only `marker`, saying ``enabled: false`` (and why):
    the output of a stage whose step is switched off (train_rag without retrieval), so that DVC
    sees its declared output and the next stage knows there is nothing in it."""
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        write_json(tmp / marker, {"enabled": False, **({"reason": reason} if reason else {})})


def disabled_reason(folder: str | Path, marker: str = "disabled.json") -> str | None:
    """Why `folder` is a :func:`write_disabled` marker (its reason, or "disabled"), or None when
    it is not one."""
    path = Path(folder) / marker
    if not path.is_file():
        return None
    found = read_json(path)
    return None if found.get("enabled", True) else found.get("reason", "disabled")
