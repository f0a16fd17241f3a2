"""Private APIs of pinned libraries that repotune relies on, each behind a version check.

A private name can vanish or change meaning in any release. Every use of one lives here, is
checked against the version it was written for, and fails loudly when that version is not the
one installed (tests/test_compat.py checks each shim's behaviour against the public API, so an
upstream change breaks a test rather than a number).

- sacrebleu: ``Metric._extract_corpus_statistics`` (per-sentence sufficient statistics) and
  ``Metric._compute_score_from_stats`` (the corpus score from summed statistics), the pair
  sacrebleu's own significance tests use; with them a bootstrap resample recomputes corpus
  chrF/BLEU exactly from summed statistics instead of re-reading every sentence.
- transformers: ``GenerationMixin._get_logits_processor`` (the processors ``generate`` builds
  from a ``GenerationConfig``), so the continuous-batching loop applies exactly transformers'
  own repetition penalty, n-gram blocking, temperature and nucleus warpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import numpy as np

from repotune.errors import RepotuneError

SACREBLEU = "2.6."
TRANSFORMERS = "5.23."


def _require(package: str, prefix: str, what: str) -> None:
    found = version(package)
    if not found.startswith(prefix):
        raise RepotuneError(
            f"{package} {found} is installed, but repotune uses its private {what}, checked only "
            f"with {package} {prefix}x: install the version pinned in pyproject.toml"
        )


def sacrebleu_scorer(kind: str) -> Any:
    """A fresh sacrebleu ``CHRF()`` (``kind='chrf'``) or ``BLEU()`` with default settings."""
    from sacrebleu.metrics import BLEU, CHRF

    _require("sacrebleu", SACREBLEU, "Metric._extract_corpus_statistics/_compute_score_from_stats")
    return {"chrf": CHRF, "bleu": BLEU}[kind]()


def sacrebleu_sentence_stats(scorer: Any, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sentence sufficient statistics ``[n, k]`` of `predictions` against one reference each."""
    return np.asarray(scorer._extract_corpus_statistics(list(predictions), [list(references)]), dtype=np.float64)


def sacrebleu_score_from_stats(scorer: Any, summed: np.ndarray) -> float:
    """The corpus score (0–100) from statistics summed over sentences."""
    return float(scorer._compute_score_from_stats(summed.tolist()).score)


def logits_processors(model: Any, config: Any) -> Any:
    """The ``LogitsProcessorList`` that ``model.generate`` would build from `config`."""
    import warnings

    _require("transformers", TRANSFORMERS, "GenerationMixin._get_logits_processor")
    with warnings.catch_warnings():
        # Without a prompt length transformers warns that the repetition penalty and n-gram
        # blocking will skip the prompt; here each row's processors get its prompt + output
        # ids (repotune.generation), so they do not (tested against model.generate).
        warnings.filterwarnings("ignore", message=r"Passing `(repetition_penalty|no_repeat_ngram_size)` with `inputs_embeds`")
        return model._get_logits_processor(config, device=str(model.device))
