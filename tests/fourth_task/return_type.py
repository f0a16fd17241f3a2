"""Task `return_type` (a test-only task): a Python function with its return annotation removed
-> the annotation.

Defined in the test suite only and registered at test time (``repotune.tasks.register``), so
that tests/test_fourth_task.py proves a task is one module plus one registry line: nothing under
src/, stages/ or dvc.yaml names it. It provides every attribute of ``repotune.tasks.Task``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import Field

from repotune.languages import Definition
from repotune.params import FilterParams
from repotune.sections import NoParams, Section
from repotune.stops import truncate_at_stop


class Filter(Section):
    """``task.return_type.filter``: this task's own reasons to drop a sample."""

    drop_none: bool = True  # `-> None` is the answer a model guesses without reading the body
    max_target_chars: int = Field(default=40, gt=0)


class Params(Section):
    """``task.return_type``: no extract knobs; its filter knobs."""

    extract: NoParams = NoParams()
    filter: Filter = Filter()


NEEDS_TOKENIZER = False
DUPLICATE_TARGETS = False
DOC_TARGETS = False  # a type annotation, not a doc comment: distill.undocumented does not apply
KEEP_INPUT = "head"
PROMPTS = {"plain": "{code}\nReturn type:"}
JUDGE_PROMPT = "Rate the return type {target} of:\n{code}\nAnswer with one digit from 1 to 5."
CHAT_PROMPT = None
DECODING = {"no_repeat_ngram_size": 0, "repetition_penalty": 1.0, "markup_guard": False}
TRAINING = {"lr": 1.0e-3}
STOP_AFTER_LEADING_WHITESPACE = True
METRICS = ("exact_match", "edit_similarity")
PRIMARY_METRIC = "exact_match"
WRONG_KIND = "more than one line: a type is one line"
RETRIEVAL_QUERY = "whole"
CONTEXT_LEAK = None

_FUNCTIONS = {"function", "method", "async_function", "async_method"}
# The definition's own signature comes first in its code: `) -> X:` ending a line.
_RETURN = re.compile(r"\)\s*->\s*(?P<type>[^\n]+?)\s*:[ \t]*(?:#[^\n]*)?\n")


def samples(
    definitions: Sequence[Definition], text: str, extract: NoParams, counts: Counter, **context: Any
) -> Iterator[dict[str, Any]]:
    """One partial record per annotated Python function: its code with ``-> X`` removed, and X."""
    if context["language"] != "python":  # the annotation syntax below is Python's
        counts["files_not_python"] += 1
        return
    for d in definitions:
        counts["definitions"] += 1
        match = _RETURN.search(d.code) if d.kind in _FUNCTIONS else None
        if match is None:
            counts["definitions_without_return_type"] += 1
            continue
        start, end = match.span()
        yield {
            "kind": d.kind, "name": d.qualified_name, "start_line": d.start_line, "end_line": d.end_line,
            "input": d.code[:start] + "):\n" + d.code[end:], "target": match.group("type"), "is_test": d.is_test,
        }


def drop_reason(record: Mapping[str, Any], params: FilterParams, own: Filter) -> str | None:
    if params.drop_tests and record.get("is_test"):
        return "test"
    if own.drop_none and record["target"] == "None":
        return "none_return"
    if len(record["target"]) > own.max_target_chars:
        return "long_type"
    return None


def prompt_input(record: Mapping[str, Any]) -> str:
    return record["input"].rstrip()


def completion(record: Mapping[str, Any]) -> str:
    return " " + record["target"] + "\n"


def default_stop(extract: NoParams) -> list[str]:  # noqa: ARG001
    return ["\n"]


def postprocess(raw: str, stop: Sequence[str], extract: NoParams) -> str:  # noqa: ARG001
    """The first line, stripped."""
    return truncate_at_stop(raw, stop).strip().split("\n", 1)[0].strip()


def chat_answer(raw: str) -> str:
    return raw


def wrong_kind(output: str, raw: str) -> bool:  # noqa: ARG001
    return len([line for line in raw.splitlines() if line.strip()]) > 1
