"""Task `docstring`: a definition without its doc comment -> the doc comment.

A sample's input is a class or function as written (decorators, annotations and the first
line's indentation included) with its docstring / KDoc / Javadoc removed; the target is the
doc text (Python: as ``__doc__`` holds it, cleaned with ``inspect.cleandoc``; Kotlin/Java:
comment markers and leading ``*`` removed). ``extract.target: summary`` keeps the first
paragraph (Kotlin/Java: the part before the first block tag, first paragraph of that);
``extract.doc_tags: strip`` removes block tags (``@param``, ``@return``, ``@throws``, ...).

Scored with chrF and BLEU (sacrebleu, corpus level), ROUGE-L F and exact match.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from repotune.languages import Definition

if TYPE_CHECKING:
    from repotune.params import ExtractParams, FilterParams

# The same docstring on a definition of the same name is a copy (overloads, re-exports).
DUPLICATE_TARGETS = True
NEEDS_TOKENIZER = False
# Long inputs are cut at the end: the signature and the first lines say the most.
KEEP_INPUT = "head"
PROMPTS = {
    "plain": "{code}\nDocstring:",
    "verbose": (
        "Write the documentation comment of the following code, in the style of its "
        "project.\n\n{code}\n\nDocumentation:"
    ),
}
# Answers start after blank lines: stops count only once text has begun.
STOP_AFTER_LEADING_WHITESPACE = True
# Names in repotune.metrics.METRICS, in report order.
METRICS = ("chrf", "rouge_l", "rouge_l_code", "bleu", "bleu_cxg", "exact_match")
# The per-sample score shown in the report and plotted.
SAMPLE_METRIC = "chrf"

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# A block tag starts a line: `@param x ...` (Javadoc/KDoc/epytext) or `:param x:` (reST).
_BLOCK_TAG = re.compile(r"^[ \t]*(@[A-Za-z]+\b|:(param|type|return|returns|rtype|raises|raise)\b)", re.M)


def clean(doc: str, target: str, doc_tags: str) -> str:
    """The target text of a doc comment: 'summary' keeps the first paragraph before any block
    tag; 'full' keeps everything, block tags kept or stripped.

    Args:
        doc: the cleaned doc text of a definition (see ``languages.Definition.doc``).
        target: 'summary' (first paragraph) or 'full'.
        doc_tags: 'keep' or 'strip' (drop everything from the first block-tag line on).
    """
    text = doc
    if doc_tags == "strip" or target == "summary":
        # A summary never runs into the tag section, even without a blank line before it.
        tag = _BLOCK_TAG.search(text)
        text = text[: tag.start()] if tag else text
    if target == "summary":
        text = _PARAGRAPH_BREAK.split(text.strip(), maxsplit=1)[0]
    return text.strip()


def samples(
    definitions: Sequence[Definition], text: str, extract: ExtractParams, counts: Counter
) -> Iterator[dict[str, Any]]:
    """One partial record per definition with a doc comment.

    Args:
        definitions: the file's definitions (source order).
        text: the whole file (unused here: docstrings are cut from definitions).
        extract: target and doc_tags decide the target text.
        counts: updated in place: definitions, definitions_without_doc, definitions_empty_target
            (a doc whose target is empty, e.g. a summary of a doc that is only @param tags).
    """
    for d in definitions:
        counts["definitions"] += 1
        if d.doc is None:
            counts["definitions_without_doc"] += 1
            continue
        target = clean(d.doc, extract.target, extract.doc_tags)
        if not target:
            counts["definitions_empty_target"] += 1
            continue
        yield {
            "kind": d.kind,
            "name": d.qualified_name,
            "start_line": d.start_line,
            "end_line": d.end_line,
            "input": d.code,
            "target": target,
            "is_test": d.is_test,
        }


def _short_name(record: Mapping[str, Any]) -> str:
    return record["name"].rsplit(".", 1)[-1]


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def drop_reason(record: Mapping[str, Any], params: FilterParams) -> str | None:
    """The docstring task's reasons to drop a sample, or None."""
    from repotune.filters import count_tokens

    name = _short_name(record)
    if count_tokens(record["target"]) < params.min_target_tokens:
        return "short_target"
    if params.drop_dunder and _is_dunder(name) and name != "__init__":
        return "dunder"
    if params.drop_tests and record.get("is_test"):
        return "test"
    if params.drop_private and name.startswith("_") and not _is_dunder(name):
        return "private"
    return None


def default_stop(extract: ExtractParams) -> list[str]:  # noqa: ARG001 - same for every extract
    return ["\n\n"]


def prompt_input(record: Mapping[str, Any]) -> str:
    """The code put into the prompt: trailing whitespace dropped, so that the prompt does not
    depend on whether the extractor kept the final newline."""
    return record["input"].rstrip()


def completion(record: Mapping[str, Any]) -> str:
    """The text trained to follow the prompt: ``" " + target + "\\n"``.

    The leading space separates the answer from the prompt's final ``:``, so byte-level BPE
    tokenizes the prompt identically alone and followed by the completion; TRL appends EOS.
    """
    return " " + record["target"].strip() + "\n"


def postprocess(raw: str, stop: Sequence[str], extract: ExtractParams) -> str:  # noqa: ARG001
    """Model output -> prediction: cut at the first stop after leading whitespace, stripped."""
    from repotune.stops import truncate_at_stop

    return truncate_at_stop(raw, stop)
