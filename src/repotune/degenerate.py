"""Degenerate-output checks: repeated lines, n-gram loops, repeated phrases, empty outputs, echoed
input, markup nested in markup, outputs of the wrong kind.

Pure functions on one model output (and its input where needed), plus :func:`summarise`, the
shares and lengths a benchmark report shows next to the scores. Texts are compared as written
(no model tokenizer): lines are stripped, words are whitespace tokens.

Rules and defaults, chosen from the shapes real degenerate outputs take:

- A line is *substantial* when, stripped, it holds at least ``MIN_LINE_ALNUM`` (3) letters or
  digits. Lines of punctuation and brackets (``}``, ``*/``, ``-------`` under a numpy-style
  section, code fences) and bare markup (``<p>``, ``<li>``) are not, so their repeats in a clean
  docstring or code are not flagged. A repeated section header such as ``Returns:`` is
  substantial and is flagged: a docstring that has it twice has started over.
- :func:`repeats_line`: a substantial line occurs twice (stripped, exact), or a sentence of at
  least ``MIN_SENTENCE_WORDS`` (3) words occurs twice (sentences end at ``.``, ``!`` or ``?``
  followed by whitespace; compared with whitespace collapsed, case folded and the end mark
  dropped). Code outputs legitimately repeat lines (``return null;``, ``break;``), so for
  code tasks read this as an upper bound.
- :func:`ngram_loop`: a unit of 1 to ``LOOP_MAX_N`` (8) words occurs ``LOOP_MIN_REPEATS`` (3)
  times back to back anywhere in the output, and the unit holds at least ``LOOP_MIN_LETTERS``
  (3) letters. Loops seen in practice are a word or a short phrase (``signData`` on 21 lines,
  ``open-ended socket's`` three times) until the token limit; 8 words x 3 fills most of a
  64-token budget, and longer repeated sentences are caught by :func:`repeats_line`. The letter
  floor keeps runs of braces and numbers (``} } }``, ``{0, 0, 0, 0}``) out; a call with five
  identical word arguments (``f(null, null, null, null, null)``) is still flagged.
- :func:`repeats_phrase`: a phrase of ``PHRASE_WORDS`` (6) words occurs twice, apart or
  overlapping (words: whitespace tokens, case folded, punctuation at their ends dropped). It
  catches the paraphrase loops that the two checks above let through ("a type value that is
  a type value that ...": no line twice, no unit three times back to back). Calibrated on
  real references, which should pass: 6 words flag 4 of 1,230 Twisted summaries, 1 of 124
  Kotlin (expo-modules-core) and 4 of 469 Java (react-native) ones; 5 words flagged 12, 3 and 7;
  runs of letters and digits as words (dotted names split) flagged 9, 2 and 4 at 6 words.
- :func:`is_empty`: nothing but whitespace.
- :func:`echoes_input`: at least ``ECHO_MIN_SHARE`` (half) of the output's substantial lines
  appear verbatim (stripped) among the input's lines, and the copied lines are at least
  ``ECHO_MIN_LINES`` (2) lines or ``ECHO_MIN_CHARS`` (40) characters together, so that one short
  coincidental line (``return result``) is not an echo.

- :func:`nests_markup`: inline markup opened inside another before it closes: an epytext
  ``X{`` holding another ``{`` (``L{L{bool}}``, ``C{L{C{User}}}``, ``L{TaskT{Result}}``), or a
  Javadoc ``{@tag`` holding another ``{@``. Calibrated on real references: 1 of 4,512 Twisted
  summaries (a literal of delimiters, ``C{"(),/:;<=>?@[\\]{}"}``), 0 of 170 jinja2 ones. Seen
  in the longer outputs of a small fine-tuned model (4 beams favouring length: 7 of 150
  Twisted test outputs, greedy 1), which no other check flags.
- ``wrong_kind``: not the kind of output the task asks for (code where a docstring is asked,
  prose where a name or a line of code is): each task's own rule (``wrong_kind`` and
  ``WRONG_KIND`` of its module), handed to :func:`summarise` as one flag per output.

Not a degenerate check but shown beside them: :func:`uses_markup`, whether a text uses inline
documentation markup (epytext ``C{x}``/``L{x}``, reST roles ``:class:`x``` and literals
````x````, Markdown/KDoc backticks and ``[Name]`` links, Javadoc ``{@link x}``/``{@code x}``),
for outputs and references alike: a model that learned the project's style uses it about as
often as the references do.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

DIGITS = 4  # summary values are rounded to 4 decimals, as in repotune.metrics
MIN_LINE_ALNUM = 3  # letters/digits a stripped line needs to count as substantial
MIN_SENTENCE_WORDS = 3  # whitespace words a sentence needs before its repeat counts
LOOP_MAX_N = 8  # longest loop unit, in whitespace words
LOOP_MIN_REPEATS = 3  # back-to-back occurrences of the unit that make a loop
LOOP_MIN_LETTERS = 3  # letters the loop unit needs (keeps "} } }" and "0, 0, 0" out)
PHRASE_WORDS = 6  # words in a phrase whose second occurrence flags repeats_phrase
ECHO_MIN_SHARE = 0.5  # share of substantial output lines found verbatim in the input
ECHO_MIN_LINES = 2  # copied lines needed ...
ECHO_MIN_CHARS = 40  # ... or copied characters (stripped lines, summed)

CHECKS: dict[str, str] = {
    "repeats_line_pct": (
        "% of outputs with a line (>= 3 letters/digits) or a sentence (>= 3 words) that occurs "
        "twice"
    ),
    "ngram_loop_pct": (
        "% of outputs where 1-8 words (>= 3 letters) repeat back to back >= 3 times"
    ),
    "repeats_phrase_pct": "% of outputs where a phrase of 6 words (case folded, end punctuation dropped) occurs twice",
    "empty_pct": "% of outputs that are empty or whitespace only",
    "echoes_input_pct": (
        "% of outputs whose substantial lines are >= half copied verbatim from the input "
        "(>= 2 lines or >= 40 characters copied)"
    ),
    "nests_markup_pct": "% of outputs with inline markup opened inside another before it closes (L{L{x}}, {@link {@code x}})",
    "wrong_kind_pct": "% of outputs not of the kind the task asks for (the task's own rule, stated below)",
    "degenerate_pct": "% of outputs flagged by at least one of the seven checks above",
    "output_chars_mean": "mean output length in characters, surrounding whitespace stripped",
    "output_tokens_mean": "mean output length in whitespace-separated tokens",
    "reference_chars_mean": "mean reference length in characters, surrounding whitespace stripped",
    "reference_tokens_mean": "mean reference length in whitespace-separated tokens",
    "length_ratio": "output_tokens_mean / reference_tokens_mean (0 when references are empty)",
    "markup_pct": "% of outputs using inline doc markup (C{x}, :class:`x`, ``x``, `x`, {@link x}, [Name])",
    "reference_markup_pct": "% of references using inline doc markup",
}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _alnum(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


def _substantial_lines(text: str) -> list[str]:
    """Stripped lines with at least MIN_LINE_ALNUM letters or digits, in order."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if _alnum(line) >= MIN_LINE_ALNUM]


def _has_duplicate(items: Sequence[str]) -> bool:
    return len(set(items)) < len(items)


def repeats_line(text: str) -> bool:
    """True when a substantial line or a sentence of >= 3 words occurs at least twice."""
    if _has_duplicate(_substantial_lines(text)):
        return True
    sentences = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        words = sentence.casefold().rstrip(".!?").split()
        if len(words) >= MIN_SENTENCE_WORDS:
            sentences.append(" ".join(words))
    return _has_duplicate(sentences)


def ngram_loop(text: str, n: int = LOOP_MAX_N, min_repeats: int = LOOP_MIN_REPEATS) -> bool:
    """True when 1 to `n` words repeat back to back at least `min_repeats` times.

    The repeated unit must hold at least LOOP_MIN_LETTERS letters. Words are whitespace
    tokens compared exactly, so a loop spread over lines (one word per line) counts.
    """
    words = text.split()
    for period in range(1, n + 1):
        run = 0  # consecutive positions i with words[i] == words[i - period]
        for i in range(period, len(words)):
            run = run + 1 if words[i] == words[i - period] else 0
            # the last run + period words have this period: that many // period repeats
            if run and (run + period) // period >= min_repeats:
                unit = words[i - run - period + 1 : i - run + 1]
                if sum(ch.isalpha() for word in unit for ch in word) >= LOOP_MIN_LETTERS:
                    return True
    return False


def repeats_phrase(text: str, n: int = PHRASE_WORDS) -> bool:
    """True when some `n` consecutive words occur twice (words: whitespace tokens, case folded,
    punctuation at their ends dropped; overlapping occurrences count: in "a b a b a b a",
    "a b a b a b" is at 0 and "b a b a b a" at 1, and with n=5 "a b a b a" at 0 and 2)."""
    words = [word for word in (token.strip(string.punctuation) for token in text.casefold().split()) if word]
    phrases = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return _has_duplicate(phrases)


def is_empty(text: str) -> bool:
    """True when the text holds nothing but whitespace."""
    return not text.strip()


def echoes_input(output: str, input_code: str) -> bool:
    """True when the output mostly copies lines of the input (see the module docstring)."""
    lines = _substantial_lines(output)
    if not lines:
        return False
    source = {line.strip() for line in input_code.splitlines()}
    copied = [line for line in lines if line in source]
    enough = len(copied) >= ECHO_MIN_LINES or sum(map(len, copied)) >= ECHO_MIN_CHARS
    return enough and len(copied) >= ECHO_MIN_SHARE * len(lines)


_MARKUP = re.compile(
    r"\b[BCEILMUX]\{[^{}\n]+\}"  # epytext
    r"|:[a-z]+(?::[a-z]+)?:`[^`\n]+`"  # reST role
    r"|``[^`\n]+``|`[^`\n]+`"  # reST literal, Markdown/KDoc code
    r"|\{@(?:link|linkplain|code|literal|value)\b[^}\n]*\}"  # Javadoc inline tag
    r"|\[[A-Z][\w.]*\](?!\()"  # KDoc link to a declaration
)


_NESTED_MARKUP = re.compile(
    r"\b[A-Z]\{[^{}\n]*\{"  # an epytext markup holding another opening brace
    r"|\{@\w+[^{}\n]*\{@"  # a Javadoc inline tag holding another
)


def nests_markup(text: str) -> bool:
    """True when inline markup is opened inside another before it closes (see the module docstring)."""
    return _NESTED_MARKUP.search(text) is not None


def uses_markup(text: str) -> bool:
    """True when `text` holds inline documentation markup (see the module docstring)."""
    return _MARKUP.search(text) is not None


def _mean(values: Sequence[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarise(
    outputs: Sequence[str],
    references: Sequence[str],
    inputs: Sequence[str],
    wrong_kind: Sequence[bool] | None = None,
) -> dict[str, float]:
    """Shares (percent, 0-100) of degenerate outputs and mean lengths; keys as in CHECKS.

    All values are rounded to 4 decimals; with no outputs every value is 0.0.

    Args:
        outputs, references, inputs: one per sample, same order.
        wrong_kind: per output, whether the task's own rule says it is not the kind of output
            asked for (None: no rule, 0%).

    Raises:
        ValueError: when the lists differ in length.
    """
    wrong_kind = [False] * len(outputs) if wrong_kind is None else list(wrong_kind)
    if not len(outputs) == len(references) == len(inputs) == len(wrong_kind):
        raise ValueError(
            f"{len(outputs)} outputs, {len(references)} references, {len(inputs)} inputs, "
            f"{len(wrong_kind)} wrong-kind flags"
        )
    flags = {
        "repeats_line_pct": [repeats_line(out) for out in outputs],
        "ngram_loop_pct": [ngram_loop(out) for out in outputs],
        "repeats_phrase_pct": [repeats_phrase(out) for out in outputs],
        "empty_pct": [is_empty(out) for out in outputs],
        "echoes_input_pct": [
            echoes_input(out, src) for out, src in zip(outputs, inputs, strict=True)
        ],
        "nests_markup_pct": [nests_markup(out) for out in outputs],
        "wrong_kind_pct": [bool(flag) for flag in wrong_kind],
    }
    flags["degenerate_pct"] = [any(row) for row in zip(*flags.values())]
    summary = {name: 100.0 * _mean([int(f) for f in row]) for name, row in flags.items()}
    output_tokens = _mean([len(out.split()) for out in outputs])
    reference_tokens = _mean([len(ref.split()) for ref in references])
    summary["output_chars_mean"] = _mean([len(out.strip()) for out in outputs])
    summary["output_tokens_mean"] = output_tokens
    summary["reference_chars_mean"] = _mean([len(ref.strip()) for ref in references])
    summary["reference_tokens_mean"] = reference_tokens
    summary["length_ratio"] = output_tokens / reference_tokens if reference_tokens else 0.0
    summary["markup_pct"] = 100.0 * _mean([int(uses_markup(out)) for out in outputs])
    summary["reference_markup_pct"] = 100.0 * _mean([int(uses_markup(ref)) for ref in references])
    return {name: round(summary[name], DIGITS) for name in CHECKS}
