"""Errors that stages report as one clear line instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class RepotuneError(Exception):
    """A problem the user can fix: bad input, bad parameter, unreachable source."""


class ParamsError(RepotuneError):
    """params.yaml is invalid; the message lists every problem, one per line."""


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage's ``main``; print a :class:`RepotuneError` as ``error: ...`` and return 1."""
    try:
        main(argv)
    except RepotuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
