"""Metric definitions against hand-worked values and the libraries' own corpus scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF

from repotune import metrics
from repotune.metrics import METRICS, code_tokens

REFS = ["Return the sum of two numbers.", "Push an item onto the stack.", "Open C{path} for reading."]
PREDS = ["Return the sum.", "Pop an item from the stack.", "Open the file at C{path}."]


def test_corpus_chrf_and_bleu_equal_sacrebleu_corpus_scores():
    # Summed per-sentence statistics give the corpus score, not a mean of sentence scores.
    assert METRICS["chrf"].score(PREDS, REFS) == round(CHRF().corpus_score(PREDS, [REFS]).score, 4)
    assert METRICS["bleu"].score(PREDS, REFS) == round(BLEU().corpus_score(PREDS, [REFS]).score, 4)
    sentence_mean = np.mean(METRICS["chrf"].sample_scores(PREDS, REFS))
    assert METRICS["chrf"].score(PREDS, REFS) != pytest.approx(sentence_mean, abs=1e-3)


def test_identical_texts_score_100_and_disjoint_ones_0():
    for name in ("chrf", "bleu", "bleu_cxg", "rouge_l", "rouge_l_code", "exact_match", "edit_similarity"):
        assert METRICS[name].score(REFS, REFS) == 100.0, name
    assert METRICS["rouge_l"].score(["zzz qqq", "vvv"], REFS[:2]) == 0.0
    assert METRICS["exact_match"].score(["zzz qqq", "vvv"], REFS[:2]) == 0.0


def test_rouge_l_tokenizers_by_hand():
    pred, ref = "Return C{Deferred}.", "Return C{Deferred} now."
    # Standard: return c deferred | return c deferred now: LCS 3, P 1, R 3/4, F 6/7.
    assert METRICS["rouge_l"].score([pred], [ref]) == round(100 * 6 / 7, 4)
    # Code tokens: Return C { Deferred } . | Return C { Deferred } now . : LCS 6, P 1, R 6/7, F 12/13.
    assert code_tokens(ref) == ["Return", "C", "{", "Deferred", "}", "now", "."]
    assert METRICS["rouge_l_code"].score([pred], [ref]) == round(100 * 12 / 13, 4)
    # Case and markup count for the code tokenizer only.
    assert METRICS["rouge_l"].score(["return c deferred"], [pred]) == 100.0
    assert METRICS["rouge_l_code"].score(["return c deferred"], [pred]) == 0.0
    assert code_tokens(":param x.y: a `List[int]`") == [":", "param", "x.y", ":", "a", "`", "List", "[", "int", "]", "`"]


def test_exact_match_and_edit_similarity_by_hand():
    assert METRICS["exact_match"].score(["Return  the\nsum. "], ["Return the sum."]) == 100.0
    assert METRICS["exact_match"].score(["return the sum."], ["Return the sum."]) == 0.0
    assert METRICS["exact_match_ci"].score(["return the sum."], ["Return the sum."]) == 100.0
    # Indel similarity "abc" vs "abd": 2 edits over 6 characters -> 66.6667.
    assert METRICS["edit_similarity"].sample_scores(["abc "], ["abd"]) == [66.6667]


def test_subtoken_micro_scores_by_hand():
    # getUserName vs getName: tp 2, predicted 3, reference 2; run vs execute: tp 0, 1, 1.
    scores = metrics.score(("subtoken_precision", "subtoken_recall", "subtoken_f1"),
                           ["getUserName", "run"], ["getName", "execute"])
    assert scores["subtoken_precision"] == 50.0 and scores["subtoken_recall"] == round(200 / 3, 4)
    assert scores["subtoken_f1"] == round(100 * 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), 4)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_takes_empty_texts(name):
    for preds, refs in ((["", "x"], ["", ""]), ([""], ["Return x."]), (["Return x."], [""])):
        value = METRICS[name].score(preds, refs)
        assert math.isfinite(value) and 0 <= value <= 100, (name, preds, refs, value)


def test_mismatched_lengths_and_nothing_to_score_are_errors():
    with pytest.raises(ValueError, match="1 predictions for 2 references"):
        METRICS["chrf"].score(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no predictions"):
        METRICS["chrf"].score([], [])


def test_signatures_name_the_sacrebleu_settings():
    signatures = metrics.signatures()
    assert signatures["chrf"] == "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"
    assert signatures["bleu"] == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
