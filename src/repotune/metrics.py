"""Metrics: pure functions on lists of predictions and references. Tasks choose among them.

All scores are on a 0–100 scale, rounded to 4 decimals so that JSON files are stable and a
difference of identical systems is exactly 0.

- chrF: sacrebleu ``CHRF()`` defaults (character 6-grams, beta 2, no word n-grams), corpus level
  (statistics summed over all samples, not an average of sentence scores).
- BLEU: sacrebleu ``BLEU()`` defaults (13a tokenizer, case-sensitive, exponential smoothing),
  corpus level.
- ROUGE-L: mean per-sample F-measure from ``rouge_score`` with its default tokenizer, which
  lowercases and treats every non-alphanumeric character as a separator (punctuation and
  symbols are ignored), without stemming.
- exact match: percentage of predictions equal to their reference once whitespace runs are
  collapsed (CodeXGLUE's code-completion evaluator: ``pred.split() == gt.split()``);
  ``exact_match_ci`` also ignores case.
- edit similarity: mean over samples of rapidfuzz ``fuzz.ratio(pred, ref)`` (the normalised
  Indel similarity, 0–100) on both texts stripped of surrounding whitespace, as CodeXGLUE's
  line-completion evaluator computes it with fuzzywuzzy.
- sub-token precision/recall/F1: identifiers split at camelCase humps, digits and ``_``,
  lowercased; true positives, predicted and reference sub-tokens summed over the corpus
  (micro average, as code2vec/code2seq report it); a sub-token counts at most as often as it
  occurs in the reference.

``evaluate.load`` is not used: it fetches metric scripts from the Hub, which is unreachable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import re
from collections import Counter

DIGITS = 4


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0–100) of `predictions` against one reference each."""
    from sacrebleu.metrics import CHRF

    _check(predictions, references)
    return round(CHRF().corpus_score(list(predictions), [list(references)]).score, DIGITS)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0–100), sacrebleu defaults (13a tokenisation, case-sensitive)."""
    from sacrebleu.metrics import BLEU

    _check(predictions, references)
    return round(BLEU().corpus_score(list(predictions), [list(references)]).score, DIGITS)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (0–100), rouge_score's default lowercasing alphanumeric tokenizer."""
    from rouge_score.rouge_scorer import RougeScorer

    _check(predictions, references)
    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    total = sum(
        scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)
    )
    return round(100.0 * total / len(predictions), DIGITS)


def _normalise(text: str) -> str:
    return " ".join(text.split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Percentage (0–100) of predictions equal to their reference after collapsing whitespace."""
    _check(predictions, references)
    hits = sum(_normalise(p) == _normalise(r) for p, r in zip(predictions, references))
    return round(100.0 * hits / len(predictions), DIGITS)


def sentence_chrf(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """chrF (0–100) of each prediction against its reference, for per-sample comparisons."""
    from sacrebleu.metrics import CHRF

    _check(predictions, references)
    metric = CHRF()
    return [
        round(metric.sentence_score(p, [r]).score, DIGITS) for p, r in zip(predictions, references)
    ]


def exact_match_ci(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Like :func:`exact_match`, case-insensitive."""
    return exact_match([p.lower() for p in predictions], [r.lower() for r in references])


def sentence_edit_similarity(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """rapidfuzz ``fuzz.ratio`` (0–100) of each stripped prediction against its stripped reference."""
    from rapidfuzz import fuzz

    _check(predictions, references)
    return [round(fuzz.ratio(p.strip(), r.strip()), DIGITS) for p, r in zip(predictions, references)]


def edit_similarity(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean per-sample edit similarity (0–100), see :func:`sentence_edit_similarity`."""
    scores = sentence_edit_similarity(predictions, references)
    return round(sum(scores) / len(scores), DIGITS)


_SUBTOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def subtokens(name: str) -> list[str]:
    """``getHTTPResponse2_code`` -> ``['get', 'http', 'response', '2', 'code']``."""
    return [t.lower() for t in _SUBTOKEN.findall(name)]


def _subtoken_counts(prediction: str, reference: str) -> tuple[int, int, int]:
    """(true positives, predicted, reference) sub-tokens of one pair."""
    pred, ref = Counter(subtokens(prediction)), Counter(subtokens(reference))
    return sum((pred & ref).values()), sum(pred.values()), sum(ref.values())


def subtoken_prf(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Micro sub-token precision, recall and F1 (0–100) over the corpus."""
    _check(predictions, references)
    tp = n_pred = n_ref = 0
    for p, r in zip(predictions, references):
        a, b, c = _subtoken_counts(p, r)
        tp, n_pred, n_ref = tp + a, n_pred + b, n_ref + c
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "subtoken_precision": round(100 * precision, DIGITS),
        "subtoken_recall": round(100 * recall, DIGITS),
        "subtoken_f1": round(100 * f1, DIGITS),
    }


def sentence_subtoken_f1(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Sub-token F1 (0–100) of each prediction against its reference."""
    _check(predictions, references)
    scores = []
    for p, r in zip(predictions, references):
        tp, n_pred, n_ref = _subtoken_counts(p, r)
        scores.append(round(100 * 2 * tp / (n_pred + n_ref), DIGITS) if n_pred + n_ref else 0.0)
    return scores


def compare(
    references: Sequence[str],
    outputs: dict[str, Sequence[str]],
    score: Callable[[Sequence[str], Sequence[str]], dict[str, float]],
    reference_system: str = "base",
) -> dict[str, float | int]:
    """Flat comparison of named systems on the same references.

    Args:
        references: the targets.
        outputs: system name -> its predictions (same order as `references`).
        score: the task's corpus scorer, ``{"metric": value, ...}``.
        reference_system: deltas are taken against this system.

    Returns:
        ``{"samples": n, "<system>_<metric>": ..., "delta_<metric>": ...}``; with two systems the
        delta is other − reference; with more, ``delta_<system>_<metric>`` per other system.
    """
    scores = {name: score(preds, references) for name, preds in outputs.items()}
    others = [name for name in outputs if name != reference_system]
    flat: dict[str, float | int] = {"samples": len(references)}
    for name, values in scores.items():
        for metric, value in values.items():
            flat[f"{name}_{metric}"] = value
    for other in others:
        prefix = "delta" if len(others) == 1 else f"delta_{other}"
        for metric, value in scores[other].items():
            flat[f"{prefix}_{metric}"] = round(value - scores[reference_system][metric], DIGITS)
    return flat
