"""Smoothed sentence BLEU-4 exactly as CodeXGLUE's code-to-text evaluator computes it.

Port of microsoft/CodeXGLUE ``Code-Text/code-to-text/evaluator/bleu.py`` (itself adapted from
hieuhoang1972's MOSES ``bleu.py``; read here from two copies that agree line for line on these
functions: a fork's ``evaluator/evaluator.py`` and another's ``code/bleu.py``):
``computeMaps`` then ``bleuFromMaps(goldMap, predictionMap)[0]``, the number CodeXGLUE reports
as code-summarisation "BLEU-4" (smoothed sentence BLEU-4, Lin & Och 2004, averaged).

Per (prediction, reference) pair, with one reference:

1. ``computeMaps``: ``splitPuncts(text.strip().lower())`` - every run of word characters
   (``\\w``, so letters, digits and ``_``) is a token, every other non-space character is a
   token of its own, joined with single spaces.
2. ``normalize`` (NIST mteval-v11a rules): strip ``<skipped>``, join hyphenated line ends and
   lines, unescape ``&amp; &lt; &gt; &quot;``, lowercase, space out punctuation, split on
   whitespace. After step 1 the only rule that still changes anything is the first punctuation
   class (ASCII ranges space to ``&``, ``(`` to ``+``, ``:`` to ``@``, ``[`` to backtick, ``{``
   to ``~``, and ``/``), which contains ``_``: ``get_name`` becomes ``get _ name``.
3. n-gram counts for n = 1..4; ``correct[n]`` is the clipped match count, ``guess[n]`` the
   number of n-grams in the prediction, ``max(len - n + 1, 0)``.
4. ``log_bleu = sum_n [log(correct[n] + s_n + tiny) - log(guess[n] + s_n + tiny)] / 4`` with
   ``s_n = 0`` for unigrams and ``1`` for n >= 2 ("+1 smoothing") and ``tiny`` the smallest
   normal float (``sys.float_info.min``), which keeps ``log(0)`` finite.
5. brevity penalty (log) ``min(0, 1 - (ref_len + 1) / (pred_len + 1))`` - note the ``+ 1`` on
   both lengths, unlike standard BLEU; the reference length is the "shortest" reference,
   which with one reference is simply its length.
6. sentence score ``exp(log_bleu + penalty)``, in 0..1; ``bleuFromMaps`` sums these in order
   and returns ``sum * 100.0 / count``. The evaluator script prints that unrounded; CodeXGLUE's
   ``run.py`` logs it rounded to 2 decimals. :func:`corpus_mean_bleu` returns it unrounded.

Empty texts never raise and never give NaN, and the values are the original's (checked against
it): an empty prediction against a reference of ``r`` tokens scores ``100 * exp(-r)`` (all four
precisions are 0/0 read as 1, only the brevity penalty counts), so two empty strings score 100;
a non-empty prediction of ``c`` tokens against an empty reference scores at most
``100 * (tiny / c) ** 0.25``, about 1e-75: 0 in practice but not exactly 0. Text holding
whitespace only is empty.

Deviations, both outside what the evaluator's input format can carry: ``computeMaps`` reads
``id<TAB>text`` rows, so a tab cuts a prediction short (and breaks a reference row) and a
reference cannot hold a newline; here the whole string is scored, tabs and newlines being
whitespace. With no pairs the original divides by zero; :func:`corpus_mean_bleu` returns 0.0.
"""

from __future__ import annotations

import math
import re
import sys
import xml.sax.saxutils
from collections import Counter
from collections.abc import Sequence

MAX_ORDER = 4  # BLEU-4: n-grams of 1..4 tokens
_TINY = sys.float_info.min  # 2.2e-308, added inside every log as the original does

# normalize(): language-independent part (no-ops after splitPuncts, kept for exactness)
_NORMALIZE1 = [
    (re.compile("<skipped>"), ""),  # strip "skipped" tags
    (re.compile(r"-\n"), ""),  # strip end-of-line hyphenation and join lines
    (re.compile(r"\n"), " "),  # join lines
]
# normalize(): language-dependent part, as in NIST mteval-v11a (apostrophe and "-" missing)
_NORMALIZE2 = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation, `_` included
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period and comma unless before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]
_SPLIT_PUNCTS = re.compile(r"[\w]+|[^\s\w]")


def split_puncts(line: str) -> str:
    """CodeXGLUE's ``splitPuncts``: word runs and single punctuation marks, space-joined."""
    return " ".join(_SPLIT_PUNCTS.findall(line))


def normalize(text: str) -> list[str]:
    """CodeXGLUE's ``normalize`` (lowercasing, NIST punctuation rules): the token list."""
    for pattern, replace in _NORMALIZE1:
        text = pattern.sub(replace, text)
    text = xml.sax.saxutils.unescape(text, {"&quot;": '"'})
    text = f" {text} ".lower()
    for pattern, replace in _NORMALIZE2:
        text = pattern.sub(replace, text)
    return text.split()


def tokens(text: str) -> list[str]:
    """The tokens the evaluator scores for one prediction or reference line."""
    return normalize(split_puncts(text.strip().lower()))


def _ngram_counts(words: Sequence[str]) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, MAX_ORDER + 1):
        for i in range(len(words) - n + 1):
            counts[tuple(words[i : i + n])] += 1
    return counts


def _sentence_score(prediction: str, reference: str) -> float:
    """One pair's smoothed BLEU-4 in 0..1 (``bleu(...)[0]`` in the original)."""
    pred = tokens(prediction)
    ref = tokens(reference)
    ref_counts = _ngram_counts(ref)
    correct = [0] * MAX_ORDER
    for ngram, count in _ngram_counts(pred).items():
        correct[len(ngram) - 1] += min(ref_counts.get(ngram, 0), count)
    guess = [max(len(pred) - k, 0) for k in range(MAX_ORDER)]  # n-grams of k + 1 tokens

    # Same operations in the same order as score_cooked, so that floats agree bit for bit.
    log_bleu = 0.0
    for k in range(MAX_ORDER):
        smooth = 1 if k > 0 else 0
        log_bleu += math.log(correct[k] + smooth + _TINY) - math.log(guess[k] + smooth + _TINY)
    log_bleu /= float(MAX_ORDER)
    penalty = min(0, 1 - float(len(ref) + 1) / (len(pred) + 1))
    return math.exp(log_bleu + penalty)


def sentence_bleu(prediction: str, reference: str) -> float:
    """Smoothed BLEU-4 (0-100) of one prediction against one reference, as CodeXGLUE scores it.

    This is the per-sentence value that the evaluator averages; not rounded. An empty
    prediction scores ``100 * exp(-reference tokens)``; see the module docstring.
    """
    return _sentence_score(prediction, reference) * 100.0


def corpus_mean_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """CodeXGLUE code-to-text BLEU-4 (0-100): mean of the sentence scores, unrounded.

    ``bleuFromMaps(...)[0]`` of the original (``run.py`` logs it rounded to 2 decimals).

    Raises:
        ValueError: when the two lists differ in length.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return 0.0
    total = 0.0
    for prediction, reference in zip(predictions, references, strict=True):
        total += _sentence_score(prediction, reference)
    return total * 100.0 / float(len(predictions))
