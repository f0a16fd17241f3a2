"""Task `method_name`: a function whose own name is masked everywhere in it -> the name.

The input is the function as written (its doc comment kept with
``task.method_name.extract.keep_doc``), with every whole-word occurrence of its name, in the
declaration, in recursive calls and in comments alike, replaced by
``task.method_name.extract.mask``. Functions and methods only (not constructors, whose name is
their class's, nor classes).

Filters (reference setup): bodiless/abstract functions (always: nothing to read the name from),
test functions, bodies of fewer than ``task.method_name.filter.min_body_lines`` non-blank lines,
overrides whose body only calls the super implementation, trivial getters and setters (the
shapes of a body, its braces, ``super`` and ``this``/``self``, are the language's).

Scored with exact match, case-insensitive exact match, sub-token precision/recall/F1 and edit
similarity.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import Field

from repotune.languages import Definition, body_statements, module
from repotune.sections import Section
from repotune.stops import truncate_at_stop

if TYPE_CHECKING:
    from repotune.params import FilterParams


class Extract(Section):
    """``task.method_name.extract``: how a function becomes an input."""

    mask: str = Field(default="<MASK>", min_length=1)
    keep_doc: bool = False


class Filter(Section):
    """``task.method_name.filter``: the method-name task's own reasons to drop a sample."""

    min_body_lines: int = Field(default=3, ge=0)
    drop_accessors: bool = True
    drop_super_calls: bool = True


class Params(Section):
    """``task.method_name``: this task's own knobs, each under the stage that reads it."""

    extract: Extract = Extract()
    filter: Filter = Filter()


# Many functions share a name (toString, run): only identical inputs are duplicates.
DUPLICATE_TARGETS = False
NEEDS_TOKENIZER = False
KEEP_INPUT = "head"
PROMPTS = {
    "plain": "{code}\nThe name of the masked function is:",
    "instruct": (
        "The name of the following function was replaced by a mask. Answer with the original "
        "name only.\n\n{code}\n\nName:"
    ),
}
# The request put to an instruct model through its chat template (system `base_chat`).
# The judge's rating prompt (stage judge, when judge.prompt is null): {code} is the function
# with its name masked, {target} the name.
JUDGE_PROMPT = (
    "Rate how well the name fits what the function does, from 1 (misleading or meaningless) to "
    "5 (precise and idiomatic for this code base).\n\nFunction, its name masked:\n{code}\n\n"
    "Name:\n{target}\n\nAnswer with one digit from 1 to 5."
)
CHAT_PROMPT = (
    "The name of the following function was replaced by a mask. Reply with the original name "
    "only.\n\n{code}"
)
# Decoding defaults for the `decoding` keys left null: a name is made of the identifiers of
# its body, which a repetition penalty or an n-gram block over prompt + output would forbid
# (measured on two libraries, the block changed 0-10 of 45-59 outputs and no score).
DECODING = {"no_repeat_ngram_size": 0, "repetition_penalty": 1.0, "markup_guard": False}
# Training defaults for the `train` keys left null. lr 1e-3: on rich (160 train functions, 20
# updates) SmolLM2 went from sub-token F1 4.8 and 58% wrong-kind answers at 2e-4 to F1 18.8
# [+11.0, +26.1 over the base] and none.
TRAINING = {"lr": 1.0e-3}
# Answers start after blank lines: stops count only once text has begun.
STOP_AFTER_LEADING_WHITESPACE = True
# Names in repotune.metrics.METRICS, in report order.
METRICS = (
    "exact_match", "exact_match_ci", "subtoken_precision", "subtoken_recall", "subtoken_f1", "edit_similarity",
)
# The primary metric (verdict, `dvc exp show`, examples, per-sample histogram): the name, exactly.
PRIMARY_METRIC = "exact_match"
# Targets are not doc comments: no definition lacks a target (distill.undocumented refuses).
DOC_TARGETS = False
# Retrieval (repotune.retrieval): the query is the whole (masked) input; no context chunk may
# hold the target name as an identifier (a call of the function would give its name away).
RETRIEVAL_QUERY = "whole"
CONTEXT_LEAK = "identifier"

_FUNCTION_KINDS = {"function", "method", "extension_function", "async_function", "async_method"}
_IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]*")
_ACCESSOR_NAME = re.compile(r"^(get|set|is)([A-Z_]|$)")


@cache
def _accessor_bodies(receiver: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Trivial getter and setter bodies, with the language's receiver (`this`, `self`): `return
    x`, `return this.x`; `self.x = x`, `this.x = value`, `field = x`."""
    own = rf"({re.escape(receiver)}\.)?"
    return (re.compile(rf"^(return\s+)?{own}[\w$]+\s*;?$"), re.compile(rf"^{own}[\w$]+\s*=\s*[\w$]+\s*;?$"))


def mask_name(code: str, name: str, mask: str) -> str:
    """`code` with every whole-word occurrence of `name` replaced by `mask`."""
    return re.sub(rf"(?<![\w$]){re.escape(name)}(?![\w$])", lambda _: mask, code)


def samples(
    definitions: Sequence[Definition], text: str, extract: Extract, counts: Counter, **context: Any
) -> Iterator[dict[str, Any]]:
    """One partial record per function or method of a file (`extract`: ``task.method_name.extract``;
    `context`: the file's ``language`` and ``path``, unused here)."""
    for d in definitions:
        counts["definitions"] += 1
        if d.kind not in _FUNCTION_KINDS:
            counts["definitions_not_functions"] += 1
            continue
        code = d.text if extract.keep_doc else d.code
        yield {
            "kind": d.kind,
            "name": d.qualified_name,
            "start_line": d.start_line,
            "end_line": d.end_line,
            "input": mask_name(code, d.name, extract.mask),
            "target": d.name,
            "body": d.body,
            "modifiers": list(d.modifiers),
            "is_test": d.is_test,
        }


def drop_reason(record: Mapping[str, Any], params: FilterParams, own: Filter) -> str | None:
    """The method-name task's reasons to drop a sample, or None (`params`: the shared ``filter``
    section; `own`: ``task.method_name.filter``)."""
    body = record.get("body")
    if body is None:
        return "no_body"
    if params.drop_tests and record.get("is_test"):
        return "test"
    name = record["target"]
    if params.drop_dunder and len(name) > 4 and name.startswith("__") and name.endswith("__"):
        return "dunder"
    language = record["language"]
    statements = body_statements(language, body)
    joined = " ".join(statements)
    if own.drop_super_calls:
        call = module(language).SUPER_CALL.match(joined)
        if call and call.group("name") == name:
            return "super_call"
    if own.drop_accessors and _ACCESSOR_NAME.match(name) and len(statements) <= 1:
        getter, setter = _accessor_bodies(module(language).SELF)
        if getter.match(joined) or setter.match(joined):
            return "accessor"
    if len(statements) < own.min_body_lines:
        return "short_body"
    return None


WRONG_KIND = (
    "not one name: the first non-blank line the model wrote, quotes, backticks, a trailing () "
    "and a final . or ; aside, is not a single identifier"
)
_ONE_NAME = re.compile(r"[`'\"]*[A-Za-z_$][\w$]*(?:\(\))?[`'\"]*[.;]?")


def wrong_kind(output: str, raw: str) -> bool:  # noqa: ARG001 - the post-processed output is always a name
    """Not one name: see :data:`WRONG_KIND`. Judged on the raw text: post-processing keeps the
    first identifier of anything ("The name is getX" -> "The")."""
    first = next((line.strip() for line in raw.splitlines() if line.strip()), "")
    return _ONE_NAME.fullmatch(first) is None


_QUOTED_NAME = re.compile(r"`([A-Za-z_$][\w$]*)(?:\(\))?`|\*\*([A-Za-z_$][\w$]*)\*\*")


def chat_answer(raw: str) -> str:
    """The name in an instruct model's reply: the first name in backticks or in bold ("The name
    is getFoo" in backticks), else the reply as written (post-processing takes its first
    identifier)."""
    match = _QUOTED_NAME.search(raw)
    return next(group for group in match.groups() if group) if match else raw


def default_stop(extract: Extract) -> list[str]:  # noqa: ARG001 - the same for every setting
    return ["\n"]


def prompt_input(record: Mapping[str, Any]) -> str:
    return record["input"].rstrip()


def completion(record: Mapping[str, Any]) -> str:
    return " " + record["target"] + "\n"


def postprocess(raw: str, stop: Sequence[str], extract: Extract) -> str:  # noqa: ARG001
    """Model output -> the first identifier of its first non-blank line ('' if none)."""
    match = _IDENTIFIER.search(truncate_at_stop(raw, stop).strip("`'\" "))
    return match.group(0) if match else ""
