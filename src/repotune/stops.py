"""Stop sequences: where a generated text ends.

Two conventions, chosen by the task: docstring-like answers ignore leading whitespace when
looking for a stop (SmolLM2 completions start with blank lines, so a ``"\\n\\n"`` stop must not
end an answer that has not started yet); code completion does not (the cursor sits mid-line,
and a newline first means the line is complete).
"""

from __future__ import annotations

from collections.abc import Sequence


def _body_start(text: str, skip_leading_whitespace: bool) -> int:
    return len(text) - len(text.lstrip()) if skip_leading_whitespace else 0


def cut_at_stop(text: str, stop: Sequence[str], skip_leading_whitespace: bool = True) -> str:
    """`text` up to (not including) its first stop sequence; nothing is stripped.

    Args:
        text: a raw completion (the decoded new tokens).
        stop: stop sequences; empty strings are ignored.
        skip_leading_whitespace: look for stops only after the first non-blank character.
    """
    start = _body_start(text, skip_leading_whitespace)
    cut = min((i for s in stop if s and (i := text.find(s, start)) >= 0), default=len(text))
    return text[:cut]


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the first stop sequence that follows its first non-blank character; strip.

    ``"\\n\\nReturn x.\\n\\nMore"`` with stop ``["\\n\\n"]`` gives ``"Return x."``, not ``""``.
    """
    return cut_at_stop(text, stop, skip_leading_whitespace=True).strip()


def is_stopped(text: str, stops: Sequence[str], skip_leading_whitespace: bool = True) -> bool:
    """Whether `text` holds one of `stops` (non-empty strings) where :func:`cut_at_stop` looks."""
    body = text[_body_start(text, skip_leading_whitespace):]
    return any(s and s in body for s in stops)
