"""Task `completion`: a window of preceding code that ends mid-line -> the code that follows.

Windows are cut from whole files in tokens of the base model's tokenizer, so that the
prefix/target boundary is a token boundary the model itself would produce (measured: a cut in
the middle of a token, or right after a stray newline, makes small models write garbage). The
alternative, token healing at generation time, would make the benchmark depend on a decoding
trick the user's editor may not do; a boundary on the tokenizer's own tokens needs nothing.

The knobs are ``task.completion.extract.window`` (``window`` below) and
``task.completion.filter``. For each file (a licence header in the language's comments removed;
files shorter than ``window.min_file_tokens`` skipped):
an anchor every ``window.stride`` tokens; the cursor is a token boundary inside the anchor's
line (after its first non-blank character, before its last), picked with a hash of
(``window.seed``, path, anchor) among that line's boundaries; the prefix is up to
``window.prefix_tokens`` tokens before the cursor, starting at a line's first token; the
target is the next ``window.target_tokens`` tokens, the rest of the line, or the rest of the
line and ``window.lines - 1`` more lines. A prefix whose re-tokenisation differs from the
file's tokens is not used (counted). No window crosses a file boundary.

Scored with exact match and edit similarity as CodeXGLUE's line-completion evaluator
computes them, and sacrebleu corpus BLEU.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from repotune.languages import Definition, module
from repotune.sections import Section
from repotune.stops import cut_at_stop

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from repotune.params import FilterParams


class WindowParams(Section):
    """Sliding windows of the completion task, in tokens of the base model's tokenizer."""

    prefix_tokens: int = Field(default=256, gt=0)
    target: Literal["tokens", "line", "lines"] = "line"
    target_tokens: int = Field(default=32, gt=0)
    lines: int = Field(default=2, gt=0)
    stride: int = Field(default=256, gt=0)
    min_file_tokens: int = Field(default=64, gt=0)
    seed: int = 42


class Extract(Section):
    """``task.completion.extract``: how windows are cut (their shape also decides generation's
    default stop and post-processing)."""

    window: WindowParams = WindowParams()


class Filter(Section):
    """``task.completion.filter``: the completion task's own reasons to drop a window."""

    max_literal_chars: int = Field(default=120, gt=0)


class Params(Section):
    """``task.completion``: this task's own knobs, each under the stage that reads it."""

    extract: Extract = Extract()
    filter: Filter = Filter()


# Windows are duplicates only when their prefixes are.
DUPLICATE_TARGETS = False
NEEDS_TOKENIZER = True
# Long prefixes are cut at the start: the code next to the cursor matters most.
KEEP_INPUT = "tail"
PROMPTS = {
    "plain": "{code}",
}
# No chat baseline: a code model completes code from the raw prefix (that is how editors call
# it); a chat request to "continue this code" is not a prompt that suits it better.
# The judge's rating prompt (stage judge, when judge.prompt is null): {code} is the code before
# the cursor, {target} the code that follows it in the repository.
JUDGE_PROMPT = (
    "Rate how well the continuation follows from the code before it and how much a developer "
    "would want it suggested, from 1 (noise: generated, boilerplate, unpredictable) to 5 (a "
    "natural, informative next step).\n\nCode before the cursor:\n{code}\n\nContinuation:\n"
    "{target}\n\nAnswer with one digit from 1 to 5."
)
CHAT_PROMPT = None
# Decoding defaults for the `decoding` keys left null: code repeats 4-grams of its own prefix
# (call chains, identifiers, argument lists), so no n-gram block and no repetition penalty:
# a 4-gram block cut SmolLM2's exact match from 37 to 26 on click (Python) and from 29 to 15 on
# react-native-screens (Kotlin), base and fine-tuned alike (docs/results.md, "Decoding per task").
DECODING = {"no_repeat_ngram_size": 0, "repetition_penalty": 1.0, "markup_guard": False}
# Training defaults for the `train` keys left null. lr 2e-4: at 1e-3 SmolLM2 fine-tuned on 160
# react-native-screens windows lost edit similarity (-7.3 [-13.4, -0.7] against the base; 2e-4:
# +0.4, n.s.) and 21% of its completions degenerated (2e-4: 7%).
TRAINING = {"lr": 2.0e-4}
# The cursor sits mid-line: a newline first means the line is complete.
STOP_AFTER_LEADING_WHITESPACE = False
# Names in repotune.metrics.METRICS, in report order (CodeXGLUE's line completion: EM, edit sim).
METRICS = ("exact_match", "edit_similarity", "bleu")
# The primary metric (verdict, `dvc exp show`, examples, per-sample histogram).
PRIMARY_METRIC = "edit_similarity"
# Targets are not doc comments: no definition lacks a target (distill.undocumented refuses).
DOC_TARGETS = False
# Retrieval (repotune.retrieval): the query is the code just before the cursor (the last
# retrieval.query_lines lines). No chunk is refused for holding the target: another file with
# the same line is what an editor's retrieval would find too; each record says instead whether
# its target stands verbatim in its context (target_in_context), for the report to split on.
RETRIEVAL_QUERY = "tail"
CONTEXT_LEAK = None

_LICENCE = re.compile(r"copyright|licen[cs]e|spdx", re.I)
_STRING = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'")
_RUN = re.compile(r"\S+")


@cache
def _header(language: str) -> re.Pattern[str]:
    """A comment block at the top of a file of `language`: its line comments (and a ``#!`` line),
    or one block comment."""
    lang = module(language)
    lines = rf"\A(?:[ \t]*(?:{re.escape(lang.LINE_COMMENT)}|#!)[^\n]*\n|[ \t]*\n)+"
    if lang.BLOCK_COMMENT is None:
        return re.compile(lines, re.S)
    start, end = map(re.escape, lang.BLOCK_COMMENT)
    return re.compile(rf"{lines}|\A[ \t\n]*{start}.*?{end}[ \t]*\n", re.S)


def strip_licence_header(text: str, language: str) -> tuple[str, int]:
    """Drop a leading comment block (in `language`'s comments) that mentions a copyright or licence.

    Returns:
        The text and the number of lines removed (to keep line numbers of the original file).
    """
    match = _header(language).match(text)
    if not match or not _LICENCE.search(match.group(0)):
        return text, 0
    return text[match.end():], match.group(0).count("\n")


def _anchor_choice(seed: int, path: str, anchor: int, n: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{path}\0{anchor}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def _target_end(text: str, cursor: int, token_end: int, window: WindowParams) -> int:
    """Character offset where the target ends (exclusive, trailing newline not included)."""
    if window.target == "tokens":
        return token_end
    end = cursor
    for _ in range(window.lines if window.target == "lines" else 1):
        newline = text.find("\n", end)
        if newline == -1:
            return len(text)
        end = newline + 1
    return end - 1


def _midline_boundaries(
    text: str, starts: list[int], clean: list[bool], begin: int, stop: int
) -> list[int]:
    """The clean token boundaries of the first line at or after token `begin` that has any
    strictly inside its content (a non-blank character before and after), up to token `stop`."""
    i = begin
    while i < stop:
        line_start = text.rfind("\n", 0, starts[i]) + 1
        line_end = text.find("\n", starts[i])
        line_end = len(text) if line_end == -1 else line_end
        line = text[line_start:line_end]
        content = line_start + len(line) - len(line.lstrip())
        last = line_start + len(line.rstrip())
        found = []
        while i < stop and starts[i] < line_end:
            if clean[i] and content < starts[i] < last:
                found.append(i)
            i += 1
        if found:
            return found
        i += 1 if i < stop and starts[i] == line_end else 0
    return []


def windows(
    text: str, path: str, tokenizer: PreTrainedTokenizerBase, window: WindowParams, counts: Counter
) -> Iterator[tuple[int, int, int]]:
    """(prefix start, cursor, target end) character offsets of the windows of one file."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    n = len(ids)
    if n < window.min_file_tokens:
        counts["files_too_short"] += 1
        return
    # Token index -> is a clean boundary: the previous token ends exactly where this one starts
    # (byte-level BPE can split a multi-byte character over two tokens).
    starts = [o[0] for o in offsets]
    clean = [i > 0 and offsets[i - 1][1] == starts[i] for i in range(n)]
    used: set[int] = set()
    for anchor in range(window.stride, n, window.stride):
        candidates = _midline_boundaries(text, starts, clean, anchor, min(n, anchor + window.stride))
        if not candidates:
            counts["anchors_without_midline_cut"] += 1
            continue
        b = candidates[_anchor_choice(window.seed, path, anchor, len(candidates))]
        if b in used:
            continue
        used.add(b)
        first = max(0, b - window.prefix_tokens)
        # Start the prefix at the first token that begins a line's content (or the file).
        for j in range(first, b):
            before = text[text.rfind("\n", 0, starts[j]) + 1:starts[j]]
            if starts[j] == 0 or (clean[j] and not before.strip()):
                first = j
                break
        cursor = starts[b]
        prefix = text[starts[first]:cursor]
        if tokenizer(prefix, add_special_tokens=False)["input_ids"] != ids[first:b]:
            counts["windows_dropped_retokenized"] += 1
            continue
        token_end = offsets[min(n, b + window.target_tokens) - 1][1]
        yield starts[first], cursor, _target_end(text, cursor, token_end, window)


def samples(
    definitions: Sequence[Definition],
    text: str,
    extract: Extract,
    counts: Counter,
    *,
    language: str,
    path: str,
    tokenizer: PreTrainedTokenizerBase,
) -> Iterator[dict[str, Any]]:
    """The windows of one file as partial records (kind ``window``, name ``line:column``)."""
    body, header_lines = strip_licence_header(text, language)
    counts["files_licence_header_stripped"] += header_lines > 0
    for start, cursor, end in windows(body, path, tokenizer, extract.window, counts):
        target = body[cursor:end].rstrip()
        if not target.strip():
            counts["windows_dropped_empty_target"] += 1
            continue
        line = body.count("\n", 0, cursor) + 1 + header_lines
        column = cursor - (body.rfind("\n", 0, cursor) + 1)
        counts["windows"] += 1
        yield {
            "kind": "window",
            "name": f"{line}:{column}",
            "start_line": body.count("\n", 0, start) + 1 + header_lines,
            "end_line": body.count("\n", 0, end) + 1 + header_lines,
            "input": body[start:cursor],
            "target": target,
            # A line target is followed by the newline that ends it (not the end of the file).
            "ends_line": extract.window.target != "tokens" and body.startswith("\n", end),
        }


def drop_reason(record: Mapping[str, Any], params: FilterParams, own: Filter) -> str | None:  # noqa: ARG001
    """Windows dominated by a long literal (an escaped-unicode blob, base64, a huge number), longer
    than ``task.completion.filter.max_literal_chars`` (`params`, the shared ``filter``: unused)."""
    window = record["input"] + record["target"]
    longest = max(
        (len(m.group(0)) for pattern in (_STRING, _RUN) for m in pattern.finditer(window)), default=0
    )
    if longest > own.max_literal_chars:
        return "long_literal"
    return None


WRONG_KIND = (
    "a reply about the code instead of the code: the model's text opens with a code fence or "
    "with a chat answer (Here is..., Sure, Certainly, The completed/next/rest ...)"
)
_REPLY = re.compile(
    r"\s*(?:```|(?:Here(?:'s| is| are)|Sure\b|Certainly\b|Of course\b|"
    r"The (?:completed|complete|next|missing|rest)\b|To complete\b))"
)


def wrong_kind(output: str, raw: str) -> bool:  # noqa: ARG001 - the cut output may hide the reply's shape
    """A reply about the code instead of the code: see :data:`WRONG_KIND`."""
    return _REPLY.match(raw) is not None


def chat_answer(raw: str) -> str:
    """Never called (no CHAT_PROMPT); the reply as written."""
    return raw


def default_stop(extract: Extract) -> list[str]:
    """A line target ends at the newline; multi-line and token targets run to their length."""
    return ["\n"] if extract.window.target == "line" else []


def prompt_input(record: Mapping[str, Any]) -> str:
    """The prefix exactly as cut: the prompt ends at the cursor, whitespace included."""
    return record["input"]


def completion(record: Mapping[str, Any]) -> str:
    """The target exactly as cut, then the newline that ends its line, if one does.

    Generation stops a line target at that newline: trained without it (the target then EOS),
    Qwen2.5-Coder learned in 20 QLoRA steps to run past the line's end (`))` became
    `)) // TODO: replace with actual color`), and exact match fell from 61% to 52% on
    React Native's Kotlin; the newline is what the file itself has there. TRL appends EOS.
    """
    return record["target"] + ("\n" if record.get("ends_line") else "")


def postprocess(raw: str, stop: Sequence[str], extract: Extract) -> str:
    """Model output -> prediction: cut at the first stop (leading whitespace kept), at most as
    many lines as the target has (``lines``: ``window.lines``; ``line``: one)."""
    window = extract.window
    text = cut_at_stop(raw, stop, skip_leading_whitespace=False)
    if window.target != "tokens":
        keep = window.lines if window.target == "lines" else 1
        text = "\n".join(text.split("\n")[:keep])
    return text.rstrip()
