"""Cleaning extracted samples: the task's own reasons, exact-duplicate removal, length bounds.

Tokens here are code tokens (:mod:`repotune.codetokens`), not a model's sub-words: the data
stages stay model-free.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from repotune.codetokens import TOKEN as _TOKEN
from repotune.codetokens import count_tokens
from repotune.params import FilterParams
from repotune.sections import Section
from repotune.tasks import task

__all__ = ["count_tokens", "filter_samples", "truncate_tokens"]

_WHITESPACE = re.compile(r"\s+")


def truncate_tokens(text: str, limit: int, keep: str = "head") -> tuple[str, bool]:
    """Keep the first (`keep` 'head') or last ('tail') `limit` tokens of `text`.

    Returns:
        The text and whether it was cut. A head is cut right after its last token; a tail
        starts at the beginning of the line of its first token, so a code prefix keeps whole
        lines (and its end, where a completion starts, byte-identical).
    """
    tokens = list(_TOKEN.finditer(text))
    if len(tokens) <= limit:
        return text, False
    if keep == "head":
        return text[: tokens[limit - 1].end()], True
    start = tokens[len(tokens) - limit].start()
    line_start = text.rfind("\n", 0, start) + 1
    if count_tokens(text[line_start:]) > limit:
        line_start = text.find("\n", start) + 1 or start
    return text[line_start:], True


def _short_name(record: dict) -> str:
    return record["name"].rsplit(".", 1)[-1]


def filter_samples(
    records: Iterable[dict], params: FilterParams, task_name: str, own: Section | None = None
) -> tuple[list[dict], Counter]:
    """Keep the samples that pass every filter, in the order given; truncate long inputs.

    Kinds not in ``params.kinds`` (when given) go first, then the task's ``drop_reason`` (with
    `own`, its ``task.<name>.filter``; None: its defaults). Of exact duplicates (same whitespace-normalised
    input; for tasks with ``DUPLICATE_TARGETS``, also the same target and name) the first is
    kept. Inputs longer than ``max_input_tokens`` are cut, marked ``input_truncated``.

    Returns:
        The kept records and the counts for metrics/filter.json: ``seen``, ``kept``,
        ``dropped_<reason>`` and ``truncated_input``.
    """
    module = task(task_name)
    own = own if own is not None else module.Params().filter
    counts: Counter = Counter()
    kept: list[dict] = []
    inputs: set[str] = set()
    targets: set[tuple[str, str]] = set()
    for record in records:
        counts["seen"] += 1
        if params.kinds and record["kind"] not in params.kinds:
            reason = "kind"
        else:
            reason = module.drop_reason(record, params, own)
        if reason is None and params.drop_duplicates:
            normalised = _WHITESPACE.sub(" ", record["input"]).strip()
            key = (record["target"], _short_name(record))
            if normalised in inputs:
                reason = "duplicate_input"
            elif module.DUPLICATE_TARGETS and key in targets:
                reason = "duplicate_target_name"
            inputs.add(normalised)
            targets.add(key)
        if reason is not None:
            counts[f"dropped_{reason}"] += 1
            continue
        text, truncated = truncate_tokens(record["input"], params.max_input_tokens, module.KEEP_INPUT)
        counts["truncated_input"] += truncated
        kept.append({**record, "input": text, "input_truncated": truncated})
    counts["kept"] = len(kept)
    return kept, counts
