"""Cleaning extracted samples: length bounds, exclusions and exact-duplicate removal.

Tokens here are code tokens, not a model's sub-words: a run of word characters or a single
other non-space character (``self.x = 1`` is 5 tokens). The data stages stay model-free.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from repotune.params import FilterParams

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WHITESPACE = re.compile(r"\s+")


def count_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def truncate_tokens(text: str, limit: int) -> tuple[str, bool]:
    """Cut `text` right after its `limit`-th token; return (text, whether it was cut)."""
    for i, match in enumerate(_TOKEN.finditer(text), start=1):
        if i == limit:
            cut = text[: match.end()]
            return cut, cut.rstrip() != text.rstrip()
    return text, False


def _short_name(record: dict) -> str:
    return record["name"].rsplit(".", 1)[-1]


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def is_test(record: dict) -> bool:
    """pytest/unittest conventions: test* functions, Test* classes (or anything inside one)."""
    parts = record["name"].split(".")
    return parts[-1].startswith("test") or any(p.startswith("Test") for p in parts)


def drop_reason(record: dict, params: FilterParams) -> str | None:
    """The first reason to drop `record` that does not depend on other records, or None."""
    name = _short_name(record)
    if count_tokens(record["target"]) < params.min_target_tokens:
        return "short_target"
    if params.drop_dunder and is_dunder(name) and name != "__init__":
        return "dunder"
    if params.drop_tests and is_test(record):
        return "test"
    if params.drop_private and name.startswith("_") and not is_dunder(name):
        return "private"
    return None


def filter_samples(records: Iterable[dict], params: FilterParams) -> tuple[list[dict], Counter]:
    """Keep the samples that pass every filter, in the order given; truncate long inputs.

    Of exact duplicates (same whitespace-normalised input, or same target and name) the first
    is kept. Inputs longer than ``max_input_tokens`` are cut, marked ``input_truncated``.

    Returns:
        The kept records and the counts for metrics/filter.json: ``seen``, ``kept``,
        ``dropped_<reason>`` and ``truncated_input``.
    """
    counts: Counter = Counter()
    kept: list[dict] = []
    inputs: set[str] = set()
    targets: set[tuple[str, str]] = set()
    for record in records:
        counts["seen"] += 1
        reason = drop_reason(record, params)
        if reason is None and params.drop_duplicates:
            normalised = _WHITESPACE.sub(" ", record["input"]).strip()
            key = (record["target"], _short_name(record))
            if normalised in inputs:
                reason = "duplicate_input"
            elif key in targets:
                reason = "duplicate_target_name"
            inputs.add(normalised)
            targets.add(key)
        if reason is not None:
            counts[f"dropped_{reason}"] += 1
            continue
        text, truncated = truncate_tokens(record["input"], params.max_input_tokens)
        counts["truncated_input"] += truncated
        kept.append({**record, "input": text, "input_truncated": truncated})
    counts["kept"] = len(kept)
    return kept, counts
