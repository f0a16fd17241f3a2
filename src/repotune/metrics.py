"""Metrics: each defined once, as per-sample sufficient statistics and how a corpus of them
aggregates into a score, so that a bootstrap resample recomputes a corpus-level metric exactly.

All scores are on a 0–100 scale; :meth:`Metric.score` rounds to 4 decimals so that JSON files
are stable and a difference of identical systems is exactly 0. Empty predictions and references
score without errors or NaN (chrF/BLEU 0 unless both are empty, ROUGE-L 0, edit similarity
of two empty texts 100). The definitions (also in :data:`METRICS`, shown in reports):

- ``chrf``: sacrebleu ``CHRF()`` defaults (character 6-grams, beta 2, no word n-grams), corpus
  level (statistics summed over the samples, not an average of sentence scores); the exact
  sacrebleu signature is in :func:`signatures`.
- ``bleu``: sacrebleu ``BLEU()`` defaults (13a tokenizer, case-sensitive, exponential
  smoothing), corpus level.
- ``bleu_cxg``: the smoothed sentence-level BLEU-4 of CodeXGLUE's code-to-text evaluator,
  averaged over samples (``repotune.codexglue``), the number papers on docstring generation report.
- ``rouge_l``: mean per-sample ROUGE-L F-measure from ``rouge_score`` with its default
  tokenizer, which lowercases and treats every non-alphanumeric character as a separator
  (punctuation, markup and symbols are ignored), without stemming.
- ``rouge_l_code``: the same with :func:`code_tokens`: case kept, identifiers whole
  (``snake_case``, ``camelCase``, dotted names), and every other non-space character a token
  of its own, so ``C{Deferred}``, ``:param x:`` and backticks count.
- ``exact_match``: percentage of predictions equal to their reference once whitespace runs
  are collapsed (CodeXGLUE's code-completion evaluator: ``pred.split() == gt.split()``);
  ``exact_match_ci`` also ignores case.
- ``edit_similarity``: mean over samples of rapidfuzz ``fuzz.ratio(pred, ref)`` (normalised
  Indel similarity, 0–100) on both texts stripped of surrounding whitespace, as CodeXGLUE's
  line-completion evaluator computes it with fuzzywuzzy.
- ``subtoken_precision`` / ``_recall`` / ``_f1``: identifiers split at camelCase humps, digits
  and ``_``, lowercased; true positives, predicted and reference sub-tokens summed over the
  corpus (micro average, as code2vec/code2seq report it); a sub-token counts at most as often
  as it occurs in the reference.

``evaluate.load`` is not used: it fetches metric scripts from the Hub, which is unreachable.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from repotune import codexglue, compat
from repotune.codetokens import subtokens

DIGITS = 4


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


@dataclass(frozen=True)
class Metric:
    """A metric as per-sample statistics plus their aggregation.

    Attributes:
        name: the key in metrics files (``chrf``, ``edit_similarity``, ...).
        definition: one line saying exactly how it is computed (reports show it).
        sample_stats: (predictions, references) -> array ``[n, k]`` of per-sample statistics.
        aggregate: array ``[m, k]`` of rows (any subset or resample of samples) -> the score
            of that corpus, 0–100, unrounded.
    """

    name: str
    definition: str
    sample_stats: Callable[[Sequence[str], Sequence[str]], np.ndarray]
    aggregate: Callable[[np.ndarray], float]

    def stats(self, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """Per-sample statistics, float64 ``[n, k]``."""
        _check(predictions, references)
        return np.asarray(self.sample_stats(list(predictions), list(references)), dtype=np.float64)

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> float:
        """The corpus score of `predictions`, rounded to :data:`DIGITS` decimals."""
        return round(float(self.aggregate(self.stats(predictions, references))), DIGITS)

    def sample_scores(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """The score of each sample on its own (a corpus of one), rounded."""
        rows = self.stats(predictions, references)
        return [round(float(self.aggregate(rows[i : i + 1])), DIGITS) for i in range(len(rows))]


# --- sacrebleu: corpus statistics per sentence ----------------------------------------------


def _sacrebleu_metric(kind: str) -> Metric:
    scorer = compat.sacrebleu_scorer(kind)
    labels = {"chrf": "chrF (sacrebleu, corpus)", "bleu": "BLEU (sacrebleu 13a, corpus)"}
    return Metric(
        name=kind,
        definition=labels[kind],
        sample_stats=lambda p, r: compat.sacrebleu_sentence_stats(scorer, p, r),
        aggregate=lambda rows: compat.sacrebleu_score_from_stats(scorer, rows.sum(axis=0)),
    )


def signatures() -> dict[str, str]:
    """sacrebleu's signature string of each sacrebleu metric, as used here."""
    from sacrebleu.metrics import BLEU, CHRF

    found = {}
    for name, scorer in (("chrf", CHRF()), ("bleu", BLEU())):
        scorer.corpus_score(["a"], [["a"]])  # sacrebleu knows the number of references only after scoring
        found[name] = scorer.get_signature().format()
    return found


# --- per-sample metrics (score = mean over samples) ----------------------------------------


def _mean(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean()) if len(rows) else 0.0


def _per_sample(name: str, definition: str, one: Callable[[str, str], float]) -> Metric:
    return Metric(
        name=name,
        definition=definition,
        sample_stats=lambda p, r: [[one(a, b)] for a, b in zip(p, r)],
        aggregate=_mean,
    )


_CODE_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|\d+(?:\.\d+)?|\S")


def code_tokens(text: str) -> list[str]:
    """``"Return C{x.y} for :param n:"`` -> ``Return C { x.y } for : param n :``.

    Case kept; identifiers and dotted names whole; numbers whole; any other non-space
    character a token of its own.
    """
    return _CODE_TOKEN.findall(text)


class _CodeTokenizer:
    """rouge_score's tokenizer interface over :func:`code_tokens`."""

    def tokenize(self, text: str) -> list[str]:
        return code_tokens(text)


def _rouge_l(tokenizer: object | None) -> Callable[[str, str], float]:
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], use_stemmer=False, tokenizer=tokenizer)
    return lambda pred, ref: 100.0 * scorer.score(ref, pred)["rougeL"].fmeasure


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _exact(pred: str, ref: str) -> float:
    return 100.0 if _normalise(pred) == _normalise(ref) else 0.0


def _edit_similarity(pred: str, ref: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(pred.strip(), ref.strip())


def _bleu_cxg(pred: str, ref: str) -> float:
    return codexglue.sentence_bleu(pred, ref)


# --- sub-tokens of identifiers (micro P/R/F1) ------------------------------------------------

# subtokens (``getHTTPResponse2_code`` -> get, http, response, 2, code) lives with the code
# tokens: the docstring filters split names the same way.


def _subtoken_counts(predictions: Sequence[str], references: Sequence[str]) -> list[list[int]]:
    """(true positives, predicted, reference) sub-tokens of each pair."""
    rows = []
    for prediction, reference in zip(predictions, references):
        pred, ref = Counter(subtokens(prediction)), Counter(subtokens(reference))
        rows.append([sum((pred & ref).values()), sum(pred.values()), sum(ref.values())])
    return rows


def _prf(rows: np.ndarray) -> tuple[float, float, float]:
    tp, n_pred, n_ref = rows.sum(axis=0) if len(rows) else (0.0, 0.0, 0.0)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 100 * precision, 100 * recall, 100 * f1


def _subtoken(name: str, index: int, definition: str) -> Metric:
    return Metric(name, definition, _subtoken_counts, lambda rows: _prf(rows)[index])


def _build() -> dict[str, Metric]:
    metrics = [
        _sacrebleu_metric("chrf"),
        _sacrebleu_metric("bleu"),
        _per_sample("bleu_cxg", "smoothed sentence BLEU-4 of CodeXGLUE code-to-text, mean", _bleu_cxg),
        _per_sample("rouge_l", "ROUGE-L F (rouge_score, lowercased alphanumeric tokens), mean", _rouge_l(None)),
        _per_sample(
            "rouge_l_code", "ROUGE-L F (code tokens: case, identifiers, markup kept), mean",
            _rouge_l(_CodeTokenizer()),
        ),
        _per_sample("exact_match", "exact match % (whitespace-normalised)", _exact),
        _per_sample(
            "exact_match_ci", "exact match %, case-insensitive", lambda p, r: _exact(p.lower(), r.lower())
        ),
        _per_sample("edit_similarity", "edit similarity (rapidfuzz fuzz.ratio, 0-100), mean", _edit_similarity),
        _subtoken("subtoken_precision", 0, "sub-token precision (micro)"),
        _subtoken("subtoken_recall", 1, "sub-token recall (micro)"),
        _subtoken("subtoken_f1", 2, "sub-token F1 (micro)"),
    ]
    return {metric.name: metric for metric in metrics}


METRICS: dict[str, Metric] = _build()


def score(names: Sequence[str], predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``{name: corpus score}`` for each metric in `names`."""
    return {name: METRICS[name].score(predictions, references) for name in names}
