"""Text-similarity metrics for generated docstrings: pure functions on lists of strings.

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
  collapsed (docstrings differ in line wrapping more than in meaning).

``evaluate.load`` is not used: it fetches metric scripts from the Hub, which is unreachable.
"""

from __future__ import annotations

from collections.abc import Sequence

# Keys of :func:`score`, in report order, with a label that says how each is computed.
METRICS: dict[str, str] = {
    "chrf": "chrF (sacrebleu, corpus)",
    "rouge_l": "ROUGE-L F (rouge_score, lowercased alphanumeric tokens)",
    "bleu": "BLEU (sacrebleu 13a, corpus)",
    "exact_match": "exact match % (whitespace-normalised)",
}
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


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Every corpus metric of :data:`METRICS`: ``{"chrf": ..., "rouge_l": ..., ...}``."""
    return {
        "chrf": chrf(predictions, references),
        "rouge_l": rouge_l(predictions, references),
        "bleu": bleu(predictions, references),
        "exact_match": exact_match(predictions, references),
    }


def compare(
    references: Sequence[str], base: Sequence[str], finetuned: Sequence[str]
) -> dict[str, float | int]:
    """Flat comparison of two systems on the same references.

    Returns:
        ``{"base_chrf", "finetuned_chrf", "delta_chrf", ...}`` for every metric of
        :data:`METRICS` (delta = fine-tuned − base) and ``"samples"``.
    """
    scores = {"base": score(base, references), "finetuned": score(finetuned, references)}
    flat: dict[str, float | int] = {"samples": len(references)}
    for name in METRICS:
        flat[f"base_{name}"] = scores["base"][name]
        flat[f"finetuned_{name}"] = scores["finetuned"][name]
        flat[f"delta_{name}"] = round(scores["finetuned"][name] - scores["base"][name], DIGITS)
    return flat
