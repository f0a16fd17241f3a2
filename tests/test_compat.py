"""Each private-API shim in repotune.compat behaves as the public API it stands in for."""

from __future__ import annotations

import pytest
from sacrebleu.metrics import BLEU, CHRF

from repotune import compat
from repotune.errors import RepotuneError

PREDS = ["Return the sum.", "Pop an item from the stack.", "", "Open the file."]
REFS = ["Return the sum of two numbers.", "Push an item onto the stack.", "Close it.", "Open the file."]


@pytest.mark.parametrize(("kind", "public"), [("chrf", CHRF), ("bleu", BLEU)])
def test_sacrebleu_statistics_give_the_public_corpus_and_sentence_scores(kind, public):
    scorer = compat.sacrebleu_scorer(kind)
    rows = compat.sacrebleu_sentence_stats(scorer, PREDS, REFS)
    assert rows.shape[0] == len(PREDS)
    assert compat.sacrebleu_score_from_stats(scorer, rows.sum(axis=0)) == public().corpus_score(PREDS, [REFS]).score
    # A subset of rows scores as that subset's corpus (what a bootstrap resample relies on).
    subset = [0, 3, 3]
    expected = public().corpus_score([PREDS[i] for i in subset], [[REFS[i] for i in subset]]).score
    assert compat.sacrebleu_score_from_stats(scorer, rows[subset].sum(axis=0)) == pytest.approx(expected)


def test_a_different_sacrebleu_version_is_refused(monkeypatch):
    monkeypatch.setattr(compat, "version", lambda package: "3.0.0")
    with pytest.raises(RepotuneError, match="sacrebleu 3.0.0 is installed, but repotune uses its private"):
        compat.sacrebleu_scorer("chrf")
