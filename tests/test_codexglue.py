"""CodeXGLUE code-to-text smoothed BLEU-4: hand-worked cases and the original's own numbers.

Hand-worked cases spell out the n-gram counts. Notation: p1..p4 are the four precisions as the
evaluator smooths them (unigram ``correct / guess``; n >= 2 ``(correct + 1) / (guess + 1)``),
``c`` and ``r`` the prediction and reference token counts, and the score is
``100 * (p1 p2 p3 p4) ** (1/4) * exp(min(0, 1 - (r + 1) / (c + 1)))``.

``GOLDEN`` holds values printed by the original evaluator code (microsoft/CodeXGLUE
Code-Text/code-to-text/evaluator/bleu.py: ``splitPuncts(x.strip().lower())`` on both sides as
``computeMaps`` does, then ``bleuFromMaps``), run once under Python 3.11 outside this
repository; the original is not vendored here.
"""

from __future__ import annotations

import math
import sys

import pytest

from repotune.codexglue import corpus_mean_bleu, sentence_bleu, tokens

TINY = sys.float_info.min


def test_tokens_follow_split_puncts_then_normalize() -> None:
    # splitPuncts: word runs and single punctuation marks; everything lowercased.
    assert tokens("Gets the user's name.") == ["gets", "the", "user", "'", "s", "name", "."]
    # normalize's punctuation class contains `_`: splitPuncts keeps get_name, normalize splits it.
    assert tokens("get_name") == ["get", "_", "name"]
    # splitPuncts runs first, so "&amp;" is three tokens and XML unescaping never fires.
    assert tokens("a &amp; b") == ["a", "&", "amp", ";", "b"]
    # Decimal numbers and dashes are split too; newlines and tabs are whitespace.
    assert tokens("  Version 1.2-beta\n\tok ") == ["version", "1", ".", "2", "-", "beta", "ok"]
    assert tokens(" \n\t ") == []


def test_identical_sentences_score_100() -> None:
    # c = r = 4: p1 = 4/4, p2 = (3+1)/(3+1), p3 = (2+1)/(2+1), p4 = (1+1)/(1+1); penalty 0.
    assert sentence_bleu("returns the user name", "returns the user name") == pytest.approx(100.0)


def test_partial_overlap() -> None:
    # pred "returns the file name", ref "returns the user name", c = r = 4.
    # unigrams: returns, the, name match -> p1 = 3/4
    # bigrams: "returns the" matches; "the file", "file name" do not -> p2 = (1+1)/(3+1) = 1/2
    # trigrams: none of 2 -> p3 = (0+1)/(2+1) = 1/3;  4-gram: none of 1 -> p4 = 1/2
    # (3/4 * 1/2 * 1/3 * 1/2) ** (1/4) = (1/16) ** (1/4) = 1/2
    assert sentence_bleu("returns the file name", "returns the user name") == pytest.approx(50.0)


def test_short_prediction_pays_the_brevity_penalty() -> None:
    # pred "returns the" (c = 2), ref of r = 4: p1 = 2/2, p2 = (1+1)/(1+1), p3 = p4 = (0+1)/(0+1)
    # -> precisions all 1; penalty exp(1 - 5/3) = exp(-2/3).
    got = sentence_bleu("returns the", "returns the user name")
    assert got == pytest.approx(100 * math.exp(-2 / 3))  # 51.34
    # One right word against three: c = 1, r = 3 -> exp(1 - 4/2) = 1/e. Smoothing makes the
    # missing higher orders (guess 0) count as 1/1, so short outputs are cheap.
    assert sentence_bleu("a", "a b c") == pytest.approx(100 / math.e)
    assert sentence_bleu("a", "a") == pytest.approx(100.0)


def test_long_prediction_has_no_penalty_and_clipped_counts() -> None:
    # pred "the the the the" (c = 4), ref "the cat" (r = 2): "the" counts once (clipped),
    # p1 = 1/4; bigrams "the the" x3 none in ref -> p2 = (0+1)/(3+1) = 1/4; p3 = (0+1)/(2+1);
    # p4 = (0+1)/(1+1); penalty min(0, 1 - 3/5) = 0 -> (1/4 * 1/4 * 1/3 * 1/2) ** (1/4)
    assert sentence_bleu("the the the the", "the cat") == pytest.approx(100 * 96**-0.25)  # 31.95


def test_punctuation_and_case_are_tokenised_like_the_evaluator() -> None:
    assert sentence_bleu("Gets the user's name.", "gets the user ' s name .") == pytest.approx(100)
    assert sentence_bleu("Returns The NAME", "returns the name") == pytest.approx(100.0)
    # "get_name" -> get _ name (c = 3) against "get name" (r = 2): p1 = 2/3; bigrams "get _",
    # "_ name" miss -> p2 = 1/3; p3 = (0+1)/(1+1) = 1/2; p4 = (0+1)/(0+1) = 1; penalty
    # min(0, 1 - 3/4) = 0 -> (2/3 * 1/3 * 1/2) ** (1/4) = (1/9) ** (1/4) = 1/sqrt(3)
    assert sentence_bleu("get_name", "get name") == pytest.approx(100 / math.sqrt(3))  # 57.74


def test_empty_texts_give_the_originals_numbers() -> None:
    # Empty prediction: every guess is 0, every log is log(x + tiny) - log(x + tiny) = 0, so only
    # the penalty counts: 1 - (r + 1)/(0 + 1) = -r.
    assert sentence_bleu("", "a b c") == pytest.approx(100 * math.exp(-3))  # 4.98
    assert sentence_bleu("", "") == 100.0
    assert sentence_bleu(" \n ", "\t") == 100.0
    # Non-empty against empty: p1 = (0 + tiny)/(1 + tiny), p2..p4 = 1/1, no penalty (c > r):
    # 100 * tiny ** (1/4), tiny but neither 0 nor NaN.
    got = sentence_bleu("abc", "")
    assert got == pytest.approx(100 * TINY**0.25, rel=1e-12)  # 1.2e-75
    assert 0 < got < 1e-70


def test_corpus_mean_is_the_unrounded_mean_of_sentence_scores() -> None:
    # 100 (identical) and 50 (partial overlap above) -> 75
    got = corpus_mean_bleu(
        ["returns the user name", "returns the file name"],
        ["returns the user name", "returns the user name"],
    )
    assert got == pytest.approx(75.0)
    # (100 + 100 * exp(-2/3)) / 2, not rounded to 2 decimals as run.py would log it
    got = corpus_mean_bleu(["a", "returns the"], ["a", "returns the user name"])
    assert got == pytest.approx(50 + 50 * math.exp(-2 / 3), abs=1e-12)


def test_corpus_mean_of_nothing_is_zero_and_lengths_must_match() -> None:
    assert corpus_mean_bleu([], []) == 0.0
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        corpus_mean_bleu(["a", "b"], ["a"])


# (prediction, reference, original bleuFromMaps(...)[0] for that single pair)
GOLDEN: list[tuple[str, str, float]] = [
    ('Returns the user name.', 'Returns the name of the user.', 33.88267372816048),
    ('Gets the value of the property.', 'Gets the value of the name property.', 67.52918218126555),
    (
        'Sets the timeout in milliseconds',
        'Sets the read timeout, in milliseconds.',
        28.681064101319187,
    ),
    ('Creates a new instance of the class', 'Create a new instance.', 33.26509687863507),
    ('', 'Returns the list of all users.', 0.09118819655545163),
    ('', '', 100.0),
    ('   ', 'Closes the stream.', 1.8315638888734178),
    ('Closes the stream.', '', 3.9018296049478594e-76),
    ('Closes the stream.', '   \n  ', 3.9018296049478594e-76),
    ('the the the the the the', 'the cat sat on the mat', 22.95748846661433),
    ('get_name returns the name', 'Returns the name.', 39.76353643835254),
    ('getName', 'get_name', 4.493053873107152e-76),
    ('Parses 3.5 and 1,000 values', 'parses 3.5 and 1,000 values', 100.0),
    ('Range 1-2 of 10-20', 'range 1 - 2 of 10 - 20', 100.0),
    (
        'Escapes &amp; and &lt;tags&gt; and &quot;quotes&quot;',
        'Escapes & and <tags> and "quotes"',
        9.677736365399163,
    ),
    ('<skipped> text here', 'skipped text here', 37.60603093086393),
    (
        "Don't use this method; it's deprecated!",
        'Do not use this method, it is deprecated.',
        20.86130724305753,
    ),
    ('Adds two numbers: a + b.', 'Adds a and b.', 23.356898886410004),
    (
        'Computes the SHA-256 hash of the input',
        'Compute the sha256 hash of the given input bytes',
        28.517539529041496,
    ),
    (
        'Returns {@code true} if the list is empty',
        'Returns true if this list contains no elements.',
        13.843886431394772,
    ),
    ('@param key the key @return the value', 'Returns the value for the key.', 22.679164443904003),
    ('Décode les données UTF-8 reçues', 'Décode les données reçues en UTF-8', 45.62272070865922),
    ('Возвращает имя пользователя', 'Возвращает имя', 68.65890479690393),
    ('计算 两个 数 的 和', '计算两个数的和', 2.934646496212492e-76),
    ('Returns the ß and İstanbul', 'returns the ss and istanbul', 25.276007695044328),
    (
        'signData signData signData signData signData',
        'Signs the data with the private key.',
        1.7799530753711308e-76,
    ),
    ('Loads the config\nfrom disk', 'Loads the config from disk.', 84.64817248906141),
    ('Loads the con-\nfig', 'Loads the config', 33.980884896942456),
    (
        "Initialises the socket's open-ended buffer",
        'Initializes the open-ended socket buffer',
        29.847458960098226,
    ),
    ('a', 'a', 100.0),
    ('a', 'b', 1.2213386697554703e-75),
    ('a b', 'a b c d e f g h', 13.53352832366127),
    ('a b c d e f g h', 'a b', 19.640732545025653),
    ('x = foo(bar[0], baz{1})', 'x = foo ( bar [ 0 ] , baz { 1 } )', 100.0),
    ('if (a < b && c > d) return a % b;', 'return a % b when a < b and c > d', 34.926710282900494),
    (
        'Returns the 2nd element, or -1.',
        'Returns the second element or -1 if absent.',
        30.161247267865317,
    ),
    ('Version 1.2.3-beta', 'version 1.2.3 - beta', 100.0),
    ('Path /usr/local/bin is used', 'Uses the path /usr/local/bin.', 68.27027056473209),
    ('Emails a@b.com ~user ^caret `tick` |pipe|', 'emails a @ b . com', 34.01874666585601),
    ('Test method.', 'Test method.', 100.0),
    ('Test method', 'Test method.', 71.65313105737893),
    ('TEST METHOD.', 'test method.', 100.0),
    (
        'Builds the request URL from the base URL and the query parameters',
        'Build the request URL from base URL and query params.',
        39.45881255591767,
    ),
    (
        'Checks whether the given string is a valid email address according to RFC 5322',
        'Validates an email address.',
        10.694730137685541,
    ),
    (
        'Returns a copy of this list with the element at the index removed',
        'Returns a new list without the element at the given index.',
        32.20606398856832,
    ),
    (
        'Writes the bytes to the output stream and flushes it',
        'Writes all bytes to the stream, then flushes.',
        26.59147948472494,
    ),
    (
        'Converts the Kotlin data class to JSON',
        'Serializes this data class to a JSON string.',
        27.838758034235468,
    ),
    ('\xa0Non-breaking\xa0space\u2003em', 'non-breaking space em', 100.0),
    ('Tabs\tinside\tthe text', 'tabs inside the text', 100.0),
    (
        'Returns null if not found , otherwise the value .',
        'Returns null if not found, otherwise the value.',
        100.0,
    ),
    ('++i -- j ** k', 'i j k', 16.036590969929357),
    ('one one one two two two', 'one two one two one two', 35.93041119630843),
]
# The original's bleuFromMaps(...)[0] over all GOLDEN pairs at once.
GOLDEN_CORPUS = 42.95268692944897


@pytest.mark.parametrize(("prediction", "reference", "expected"), GOLDEN)
def test_sentence_bleu_equals_the_original(
    prediction: str, reference: str, expected: float
) -> None:
    assert sentence_bleu(prediction, reference) == pytest.approx(expected, rel=0, abs=1e-9)


def test_corpus_mean_equals_the_original() -> None:
    predictions = [prediction for prediction, _, _ in GOLDEN]
    references = [reference for _, reference, _ in GOLDEN]
    assert corpus_mean_bleu(predictions, references) == pytest.approx(GOLDEN_CORPUS, abs=1e-9)
