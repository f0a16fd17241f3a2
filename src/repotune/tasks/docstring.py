"""Task `docstring`: a definition without its doc comment -> the doc comment.

A sample's input is a class or function as written (decorators, annotations and the first
line's indentation included) with its docstring / KDoc / Javadoc removed; the target is the
doc text (Python: as ``__doc__`` holds it, cleaned with ``inspect.cleandoc``; Kotlin/Java:
comment markers and leading ``*`` removed). ``task.docstring.extract.target: summary`` keeps
the first paragraph (Kotlin/Java: the part before the first block tag, first paragraph of that);
``task.docstring.extract.doc_tags: strip`` removes block tags (``@param``, ``@return``,
``@throws``, ...). Its own filters (``task.docstring.filter``) drop short, placeholder,
code-like, name-only, non-English and deprecated targets.

Scored with chrF and BLEU (sacrebleu, corpus level), ROUGE-L F and exact match.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from repotune.codetokens import count_tokens, subtokens
from repotune.languages import Definition, marked_deprecated
from repotune.sections import Section
from repotune.stops import truncate_at_stop

if TYPE_CHECKING:
    from repotune.params import FilterParams


class Extract(Section):
    """``task.docstring.extract``: which part of a doc comment is the target."""

    target: Literal["summary", "full"] = "summary"
    doc_tags: Literal["keep", "strip"] = "keep"


class Filter(Section):
    """``task.docstring.filter``: the docstring task's own reasons to drop a sample (one reason
    each in metrics/filter.json)."""

    min_target_tokens: int = Field(default=8, ge=0)
    drop_private: bool = False
    drop_placeholder_docs: bool = True
    max_url_code_share: float = Field(default=0.4, gt=0, le=1)
    drop_name_only_docs: bool = True
    drop_non_english_docs: bool = True
    drop_deprecated: bool = True


class Params(Section):
    """``task.docstring``: this task's own knobs, each under the stage that reads it."""

    extract: Extract = Extract()
    filter: Filter = Filter()


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
# The judge's rating prompt (stage judge, when judge.prompt is null): {code} is the prompt
# input, {target} the sample's docstring.
JUDGE_PROMPT = (
    "Rate how well the docstring describes the code, from 1 (wrong or useless) to 5 "
    "(accurate, clear and informative).\n\nCode:\n{code}\n\nDocstring:\n{target}\n\n"
    "Answer with one digit from 1 to 5."
)
# The request put to an instruct model through its chat template (system `base_chat`: the base
# at the prompt that suits an instruct model); its answer goes through chat_answer first.
CHAT_PROMPT = (
    "Write the first paragraph of the documentation comment (docstring, KDoc or Javadoc) of the "
    "following code, in the style of its project. Reply with that text only, without comment "
    "markers or code.\n\n{code}"
)
# Decoding defaults for the `decoding` keys left null: prose loops on short phrases, and a
# 4-gram block ends those loops (fine-tuned 8.9% -> 0% degenerate on Twisted, chrF unchanged).
# The markup guard keeps longer summaries from opening markup inside markup (L{L{bool}}: 7 of
# 150 Twisted outputs with 4 beams -> 0; repotune.markup_guard).
DECODING = {"no_repeat_ngram_size": 4, "repetition_penalty": 1.0, "markup_guard": True}
# Training defaults for the `train` keys left null. lr 1e-3: one epoch of ~120 updates at 2e-4 left
# SmolLM2 answering in one short sentence (Twisted: chrF +1.07 n.s., length ratio 0.61); 1e-3
# gave chrF +4.22 [+2.41, +6.10], length ratio 0.72 (5e-4: +3.03).
TRAINING = {"lr": 1.0e-3}
# Answers start after blank lines: stops count only once text has begun.
STOP_AFTER_LEADING_WHITESPACE = True
# Names in repotune.metrics.METRICS, in report order.
METRICS = ("chrf", "rouge_l", "rouge_l_code", "bleu", "bleu_cxg", "exact_match")
# The per-sample score shown in the report and plotted.
# The primary metric (verdict, `dvc exp show`, examples, per-sample histogram): ROUGE-L, the
# word-overlap measure that moves with what a docstring says; chrF also rewards copied identifiers.
PRIMARY_METRIC = "rouge_l"
# Targets are doc comments: a definition without one is an input a teacher can label
# (distill.undocumented).
DOC_TARGETS = True
# Retrieval (repotune.retrieval): the query is the whole input; no context chunk may hold the
# target's text, verbatim or as a near-duplicate (a copied docstring would be the answer).
RETRIEVAL_QUERY = "whole"
CONTEXT_LEAK = "text"

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
    definitions: Sequence[Definition], text: str, extract: Extract, counts: Counter, **context: Any
) -> Iterator[dict[str, Any]]:
    """One partial record per definition with a doc comment.

    Args:
        definitions: the file's definitions (source order).
        text: the whole file (unused here: docstrings are cut from definitions).
        extract: ``task.docstring.extract``: target and doc_tags decide the target text.
        counts: updated in place: definitions, definitions_without_doc, definitions_empty_target
            (a doc whose target is empty, e.g. a summary of a doc that is only @param tags).
        context: the file's ``language`` and ``path`` (unused here).
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


# --- quality of the target: placeholders, URLs/code, the name again, non-English, deprecated --
_PLACEHOLDER = re.compile(
    r"""^(?:
        (?:todo|fixme|xxx|tbd|tba)\b                                   # TODO: write this
      | docstring\s+(?:for|of)\b                                       # "Docstring for Foo." (IDE stubs)
      | (?:insert|add|write|put|enter)\s+(?:a\s+|the\s+|your\s+)?
        (?:short\s+)?(?:description|docstring|documentation|summary)\b  # "Insert description here"
      | (?:this\s+\w+\s+(?:was|is)\s+)?(?:auto-?generated|automatically\s+generated)\b
      | created\s+on\b | @author\b                                    # editor file templates
      | (?:short\s+|one[-\s]line\s+)?(?:summary|description)(?:\s+here)?[.:]?\s*$
      | (?:no\s+description|undocumented|not\s+(?:yet\s+)?documented|docstring|documentation)[.:]?\s*$
      | (?:\.\.\.|pass|none|n/a|-+)\s*$
    )""",
    re.I | re.X,
)
# A target whose first line opens a parameter/returns section, or is a block tag, has no summary:
# it is a copied parameter list or an empty template (":param x:\n:return:").
_SECTION_FIRST = re.compile(
    r"^\s*(?:(?:args|arguments|parameters|params|keyword\s+arguments|kwargs|returns?|yields?|raises|"
    r"attributes|other\s+parameters)\s*:?\s*$|[@:](?:param|type|keyword|kwarg|arg|return|returns|rtype|"
    r"raise|raises|ivar|cvar|var|yield|yields|throws|exception)\b)",
    re.I | re.M,
)
_URL = re.compile(r"(?:https?|ftp)://\S+|\bwww\.\S+")
_CODE_LINE = re.compile(
    r"^\s*(?:>>>|\.\.\.\s|(?:async\s+)?def\s|class\s+\w+.*:$|import\s+[\w.]+\s*$|from\s+\S+\s+import\s|"
    r"[\w.\[\]]+\s*[-+*/]?=\s*\S|[\w.]+\(.*\)\s*$|[{}()\[\];]+\s*$)"
)
# Whole words of letters only: the "y" of "y1" is no word (nor Spanish "and").
_WORD = re.compile(r"\b[^\W\d_]+\b")
# Three words in a row: a sentence, so a line like "y = yc*10**ye, compute x**y. Returns a pair
# of ..." is prose with a formula in it, not a code line.
_PROSE = re.compile(r"\b[A-Za-z]+ [a-z]+ [a-z]+\b")
# Words that add nothing to a definition's name ("Return the foo bar." on foo_bar).
_FILLER = frozenset(
    "a an the this that these those of for to from in on at by with and or is are be it its "
    "function method class object instance constructor initializer initialize initialise init "
    "helper wrapper property attribute value values return returns get gets set sets new create "
    "creates make makes do does".split()
)
# Stopwords: a Latin-script text with more of another language's than of English's is not English.
# Words shared with English ("a", "in", "die", "also", "was") are left out of the others.
_ENGLISH = frozenset(
    "the of and to is that for it with as be this are by or an not which from on if at you can "
    "will all has have should must when its their there into than these then been".split()
)
_FOREIGN = frozenset(
    "der das und ist nicht ein eine mit für auf dem den zu von wird werden sich oder wenn "
    "le la les est une pour dans du qui que sur pas avec sont cette "
    "el los las es para por una del como más está "
    "il di che è non gli della sono questo "
    "uma não são "
    "het een van niet voor zijn met wordt".split()
)
# Left out as they read as English or code: do, per, con, op, os, com, et (al.), se, te, en, ...


def _stem(word: str) -> str:
    """Plural / third person off: fetches -> fetch, names -> name, class stays."""
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def is_placeholder(target: str) -> bool:
    """TODO / "Docstring for ..." / an empty template / only a parameter list, no summary."""
    text = target.strip()
    return not text or bool(_PLACEHOLDER.match(text) or _SECTION_FIRST.match(text))


def url_code_share(target: str) -> float:
    """Share of the target's words (runs of non-space) that are URLs or code: a URL counts as
    one word, a code line (statement-like; a doctest with its output), fenced or ``::`` literal
    block line as all its words. Inline code (``x``, C{x}) is prose here: it names things the sentence is about."""
    words = code = 0
    fenced = literal = doctest = False
    literal_indent = 0
    for line in target.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        n = len(stripped.split())
        words += n
        if literal and stripped and indent <= literal_indent:
            literal = False
        # A doctest's output runs from its >>> line to the next blank line.
        doctest = bool(stripped) and (doctest or stripped.startswith(">>>"))
        if stripped.startswith("```"):
            fenced = not fenced
            code += n
        elif fenced or doctest or (literal and stripped) or (_CODE_LINE.match(line) and not _PROSE.search(line)):
            code += n
        else:
            code += sum(1 for word in stripped.split() if _URL.search(word))
        if stripped.endswith("::") and not literal:
            literal, literal_indent = True, indent
    return code / words if words else 0.0


def is_name_only(target: str, name: str) -> bool:
    """The target's words (fillers aside) are all parts of the definition's qualified name."""
    words = {_stem(w.lower()) for w in _WORD.findall(target)} - _FILLER
    # ``Deferred.addCallback`` -> deferred, add, callback
    return words <= {_stem(w) for w in subtokens(name)}


def is_non_english(target: str) -> bool:
    """Library-free: under 90% of the letters are ASCII (another script), or more stopwords of
    German/French/Spanish/Italian/Portuguese/Dutch than of English (at least 3; one-letter
    words such as Spanish "y" are left out: they are variables in docstrings)."""
    letters = [c for c in target if c.isalpha()]
    if letters and sum(c.isascii() for c in letters) / len(letters) < 0.9:
        return True
    words = [w.lower() for w in _WORD.findall(target)]
    foreign = sum(w in _FOREIGN for w in words)
    return foreign >= 3 and foreign > sum(w in _ENGLISH for w in words)


_DEPRECATED_DOC = re.compile(
    r"^(?:\.\.\s+deprecated::|deprecated\b|@deprecated\b|"
    r"(?:this|the)\s+(?:\w+\s+){0,2}(?:is|has\s+been)\s+deprecated\b)",
    re.I,
)


def is_deprecated(target: str, code: str, language: str) -> bool:
    """A deprecated definition: the doc says so first thing (``Deprecated``, ``.. deprecated::``,
    "This method is deprecated"), or its code marks it so in the way of its language (Python: a
    ``@deprecated`` decorator of its own, or a body opening with a warning call that names a
    deprecation; see :func:`repotune.languages.marked_deprecated`)."""
    return bool(_DEPRECATED_DOC.match(target.strip())) or marked_deprecated(language, code)


def drop_reason(record: Mapping[str, Any], params: FilterParams, own: Filter) -> str | None:
    """The docstring task's reasons to drop a sample, or None (first reason wins, in this order).

    Args:
        record: an extracted sample.
        params: the shared ``filter`` section (drop_dunder, drop_tests).
        own: ``task.docstring.filter``.
    """
    name = _short_name(record)
    target = record["target"]
    if count_tokens(target) < own.min_target_tokens:
        return "short_target"
    if params.drop_dunder and _is_dunder(name) and name != "__init__":
        return "dunder"
    if params.drop_tests and record.get("is_test"):
        return "test"
    if own.drop_private and name.startswith("_") and not _is_dunder(name):
        return "private"
    if own.drop_placeholder_docs and is_placeholder(target):
        return "placeholder_doc"
    if url_code_share(target) > own.max_url_code_share:
        return "url_or_code_doc"
    if own.drop_name_only_docs and is_name_only(target, record["name"]):
        return "name_only_doc"
    if own.drop_non_english_docs and is_non_english(target):
        return "non_english_doc"
    if own.drop_deprecated and is_deprecated(target, record["input"], record["language"]):
        return "deprecated"
    return None


WRONG_KIND = (
    "code where a docstring is asked: more than half of the output's non-blank lines are code, inline "
    "doc markup (C{x}, {@link x}, `x`) aside (a "
    "statement, call, assignment or definition; a keyword such as if/return/val with code "
    "punctuation or an operator; a line ending in {, ; or ):)"
)
# A statement keyword followed, somewhere on the line, by code punctuation or an attribute
# access: `if not self.lazy: return super()...` is code, "return the value of the key." is prose.
_KEYWORD_STATEMENT = re.compile(
    r"^\s*(?:if|elif|else|for|while|return|raise|yield|try|except|finally|with|assert|pass|break|"
    r"continue|del|await|lambda|throw|val|var|fun|override|public|private|protected|internal|"
    r"static|final|void|package|import)\b.*(?:[(){}\[\];=]|\w\.\w|:\s*$|\s[-+*/%<>]\s|&&|\|\|)"
)
_CODE_END = re.compile(r"(?:[{;]|\):)\s*$")
# Inline doc markup names code inside prose: "return L{None}." and "see {@link Foo#bar()}" are
# sentences. Without this, 6 of 1,230 Twisted summaries and 5 of 469 React Native Javadoc
# summaries (references!) counted as code; with it, none do.
_INLINE_MARKUP = re.compile(r"\b[BCEILMUX]\{[^{}\n]*\}|\{@\w+[^}\n]*\}|:[a-z]+(?::[a-z]+)?:`[^`\n]+`|``?[^`\n]+``?")


def is_code_line(line: str) -> bool:
    """A line of code rather than prose (see :data:`WRONG_KIND`)."""
    line = _INLINE_MARKUP.sub("x", line)
    if _KEYWORD_STATEMENT.match(line) or _CODE_END.search(line):
        return True
    return bool(_CODE_LINE.match(line)) and not _PROSE.search(line)


def wrong_kind(output: str, raw: str) -> bool:  # noqa: ARG001 - the cut output is what is scored
    """Code where a docstring is asked: see :data:`WRONG_KIND`."""
    lines = [line for line in output.splitlines() if line.strip()]
    return 2 * sum(map(is_code_line, lines)) > len(lines)


# What instruct models wrap their answer in: a Python docstring, a /** */ comment, a fence.
_TRIPLE_QUOTED = re.compile(r"(\"\"\"|''')(.*?)(?:\1|\Z)", re.S)
_DOC_COMMENT = re.compile(r"/\*\*(.*?)(?:\*/|\Z)", re.S)
_FENCED = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)


def chat_answer(raw: str) -> str:
    """The docstring in an instruct model's reply: the first triple-quoted string, else the
    first ``/** */`` comment (its ``*`` margins dropped), else the first fenced block, else the
    reply as written. A fenced block of bare code stays code (and counts as the wrong kind)."""
    import inspect

    if match := _TRIPLE_QUOTED.search(raw):
        return inspect.cleandoc(match.group(2))
    if match := _DOC_COMMENT.search(raw):
        return "\n".join(re.sub(r"^\s*\*\s?", "", line) for line in match.group(1).strip().splitlines())
    if match := _FENCED.search(raw):
        return match.group(1)
    return raw


def default_stop(extract: Extract) -> list[str]:  # noqa: ARG001 - the same for every setting
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


def postprocess(raw: str, stop: Sequence[str], extract: Extract) -> str:  # noqa: ARG001
    """Model output -> prediction: cut at the first stop after leading whitespace, stripped."""
    return truncate_at_stop(raw, stop)
