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
    except FileNotFoundError as exc:
        if exc.filename is None:
            raise
        # An input another stage writes (data/split/train.jsonl, models/adapter/...), when the
        # stage is run on its own before them: one line, not a traceback.
        print(
            f"error: {exc.filename}: no such file or folder; it is an input of this stage, "
            "written by an earlier one: run `dvc repro` (or that stage) first",
            file=sys.stderr,
        )
        return 1
    return 0
