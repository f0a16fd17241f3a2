"""Degenerate-output checks on real-looking model outputs, and a hand-counted summary."""

from __future__ import annotations

import pytest

from repotune.degenerate import (
    CHECKS,
    echoes_input,
    is_empty,
    ngram_loop,
    nests_markup,
    repeats_line,
    repeats_phrase,
    summarise,
    uses_markup,
)

KOTLIN = """\
class Signer(private val key: PrivateKey) {
    fun signData(data: ByteArray): ByteArray {
        val signature = Signature.getInstance("SHA256withRSA")
        signature.initSign(key)
        signature.update(data)
        return signature.sign()
    }
}
"""

CLEAN_DOCSTRING = (
    "Signs the given data with this signer's private key.\n"
    "\n"
    "The signature uses SHA-256 with RSA. Returns the raw signature bytes."
)


def test_a_clean_docstring_is_not_flagged() -> None:
    assert not repeats_line(CLEAN_DOCSTRING)
    assert not ngram_loop(CLEAN_DOCSTRING)
    assert not is_empty(CLEAN_DOCSTRING)
    assert not echoes_input(CLEAN_DOCSTRING, KOTLIN)


def test_a_repeated_sentence_is_a_repeat_but_not_a_loop() -> None:
    # 9 words, twice on one line: longer than the 8-word loop unit and only 2 occurrences.
    out = (
        "Returns the number of elements in this list. "
        "Returns the number of elements in this list."
    )
    assert repeats_line(out)
    assert not ngram_loop(out)
    # Case, spacing and a missing final period do not hide the repeat.
    assert repeats_line("Closes the stream.\ncloses  the   stream")


def test_sentences_under_three_words_and_distinct_sentences_are_not_repeats() -> None:
    assert not repeats_line("Done. Done. Returns nothing.")
    assert not repeats_line("Returns the key. Returns the value.")


def test_signdata_on_21_lines_is_a_loop_and_a_repeated_line() -> None:
    out = "\n".join(["signData"] * 21)
    assert ngram_loop(out)
    assert repeats_line(out)


def test_a_phrase_loop_cut_by_the_token_limit() -> None:
    # 2-word unit 4 times, the 5th cut short by max_new_tokens; one line, one sentence.
    out = (
        "Opens the open-ended socket's open-ended socket's open-ended socket's "
        "open-ended socket's open-ended"
    )
    assert ngram_loop(out)
    assert not repeats_line(out)
    # A loop in the middle counts as well as one at the end.
    assert ngram_loop("Sets the value value value of the field.")


def test_runs_of_braces_numbers_and_short_units_are_not_loops() -> None:
    assert not ngram_loop("        }\n    }\n}\n}")  # no letters in the unit
    assert not ngram_loop("val zeros = intArrayOf(0, 0, 0, 0, 0)")  # "0," has no letters
    assert not ngram_loop("x x x")  # 1 letter
    assert not ngram_loop("very very good")  # only twice
    assert ngram_loop("the the the")  # 3 letters, 3 times


def test_loop_parameters() -> None:
    out = "foo bar foo bar"
    assert not ngram_loop(out)  # 2 repeats < 3
    assert ngram_loop(out, min_repeats=2)
    out = "read the file read the file read the file"
    assert ngram_loop(out, n=3)
    assert not ngram_loop(out, n=2)  # 3-word unit longer than n


def test_repeated_punctuation_and_markup_lines_are_not_repeats() -> None:
    numpy_style = (
        "Load the table.\n\nReturns\n-------\nTable\n    The rows.\n\n"
        "Example\n-------\n>>> load('a.csv')"
    )
    javadoc = "Parses the header.\n<p>\nThe name is required.\n<p>\nThe value is optional."
    assert not repeats_line(numpy_style)  # "-------" twice: no letters
    assert not repeats_line(javadoc)  # "<p>" twice: 1 letter


def test_a_repeated_section_header_is_a_repeat() -> None:
    # Decision (module docstring): "Returns:" twice means the docstring started over.
    out = "Get the user.\n\nReturns:\n    The user.\n\nReturns:\n    The user or None."
    assert repeats_line(out)


def test_is_empty() -> None:
    assert is_empty("")
    assert is_empty(" \n\t ")
    assert not is_empty(" x ")


def test_kotlin_code_echoed_instead_of_a_docstring() -> None:
    out = (
        "fun signData(data: ByteArray): ByteArray {\n"
        "    val signature = Signature.getInstance(\"SHA256withRSA\")\n"
        "    signature.initSign(key)\n"
        "    // sign it\n"
        "}"
    )
    # substantial lines 4 ("}" is not), 3 copied (re-indented lines still match once stripped)
    assert echoes_input(out, KOTLIN)


def test_echo_needs_half_the_lines_and_two_lines_or_40_characters() -> None:
    # One copied line of 23 characters: too little to be an echo.
    assert not echoes_input("return signature.sign()", KOTLIN)
    # One copied line of 54 characters: an echo.
    assert echoes_input('val signature = Signature.getInstance("SHA256withRSA")', KOTLIN)
    # 2 copied of 5 substantial lines: under half.
    out = (
        "Signs data.\n"
        "signature.update(data)\n"
        "return signature.sign()\n"
        "Uses the key.\n"
        "Returns the bytes."
    )
    assert not echoes_input(out, KOTLIN)
    assert not echoes_input("}\n}", KOTLIN)  # nothing substantial
    assert not echoes_input("return signature.sign()\nsignature.update(data)", "")


def test_summarise_counts_by_hand() -> None:
    echoed = "fun add(a: Int, b: Int): Int {\n    return a + b\n}"
    outputs = [
        "Returns the sum of a and b.",  # clean: 7 tokens, 27 chars
        "",  # empty: 0 tokens, 0 chars
        "signData\nsignData\nsignData",  # repeat + loop: 3 tokens, 3 * 8 + 2 = 26 chars
        echoed,  # echo: 12 tokens, 30 + 1 + 4 + 12 + 1 + 1 = 49 chars
    ]
    references = [
        "Returns the sum of a and b.",  # 7 tokens, 27 chars
        "Closes the stream.",  # 3 tokens, 18 chars
        "Signs the data.",  # 3 tokens, 15 chars
        "Adds two integers.",  # 3 tokens, 18 chars
    ]
    inputs = [
        "def add(a, b):\n    return a + b",
        "def close(self):\n    self.stream.close()",
        "fun signData(data: ByteArray): ByteArray = sign(data)",
        echoed,
    ]
    # The task's rule called the first output the wrong kind (say, prose where a name is asked).
    assert summarise(outputs, references, inputs, [True, False, False, False]) == {
        "repeats_line_pct": 25.0,
        "ngram_loop_pct": 25.0,
        "repeats_phrase_pct": 0.0,  # no 6 words twice anywhere
        "empty_pct": 25.0,
        "echoes_input_pct": 25.0,
        "nests_markup_pct": 0.0,
        "wrong_kind_pct": 25.0,
        "degenerate_pct": 100.0,  # output 1 (wrong kind), 2, 3 and 4
        "output_chars_mean": 25.5,  # (27 + 0 + 26 + 49) / 4
        "output_tokens_mean": 5.5,  # (7 + 0 + 3 + 12) / 4
        "reference_chars_mean": 19.5,  # (27 + 18 + 15 + 18) / 4
        "reference_tokens_mean": 4.0,  # (7 + 3 + 3 + 3) / 4
        "length_ratio": 1.375,  # 5.5 / 4
        "markup_pct": 0.0,  # none uses doc markup
        "reference_markup_pct": 0.0,
    }


def test_summarise_rounds_to_4_decimals_and_handles_empty_references() -> None:
    got = summarise(["a b", "", "c"], ["", "", ""], ["", "", ""])
    assert got["empty_pct"] == 33.3333  # 1 of 3
    assert got["degenerate_pct"] == 33.3333
    assert got["output_tokens_mean"] == 1.0  # (2 + 0 + 1) / 3
    assert got["output_chars_mean"] == 1.3333  # (3 + 0 + 1) / 3
    assert got["reference_tokens_mean"] == 0.0
    assert got["length_ratio"] == 0.0


def test_summarise_of_nothing_is_all_zeros_with_every_key() -> None:
    got = summarise([], [], [])
    assert list(got) == list(CHECKS)
    assert all(value == 0.0 for value in got.values())


def test_summarise_rejects_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="2 outputs, 1 references, 2 inputs, 2 wrong-kind flags"):
        summarise(["a", "b"], ["a"], ["x", "y"])
    with pytest.raises(ValueError, match="2 outputs, 2 references, 2 inputs, 1 wrong-kind flags"):
        summarise(["a", "b"], ["a", "b"], ["x", "y"], [True])


def test_repeats_phrase_catches_paraphrase_loops_the_other_checks_miss() -> None:
    loop = "A type value that is a type value that is a type"
    assert repeats_phrase(loop)  # "a type value that is a" twice
    assert not repeats_line(loop) and not ngram_loop(loop)  # one line; the unit is there 2.2 times
    # Case and the punctuation around words do not hide a repeat; overlapping occurrences count.
    assert repeats_phrase("Stop the main reactor, then exit. STOP THE MAIN REACTOR THEN (exit) now")
    assert repeats_phrase("a b a b a b a b")  # (a b a b a b) at 0 and 2
    # Five shared words, or a dotted name that shares its parts, is ordinary prose.
    assert not repeats_phrase("Return the value of the key, or else the value of the default.")
    assert not repeats_phrase("Return a twisted.conch.ssh.transport.SSHServerTransport or "
                              "twisted.conch.ssh.transport.SSHClientTransport instance.")
    assert not repeats_phrase("one two three four five six")
    assert not repeats_phrase("")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Return a L{Deferred} that fires with C{None}.", True),  # epytext
        ("Return the :class:`Template` for ``name``.", True),  # reST role and literal
        ("Returns the `Context` of this call.", True),  # Markdown/KDoc code
        ("Returns the {@link View} to draw into.", True),  # Javadoc
        ("Creates a [Shape] with the given sides.", True),  # KDoc link
        ("Return the sum of two numbers (see notes).", False),
        ("Compute x[i] for every i in C.", False),
        ("", False),
    ],
)
def test_uses_markup(text, expected):
    assert uses_markup(text) is expected


def test_summarise_reports_markup_of_outputs_and_references():
    summary = summarise(["Return C{x}.", "Return x.", "Return y."], ["Return C{x}.", "Use L{y}.", "No."], ["", "", ""])
    assert summary["markup_pct"] == round(100 / 3, 4) and summary["reference_markup_pct"] == round(200 / 3, 4)


def test_nests_markup_catches_markup_opened_inside_markup() -> None:
    # Seen in beam-searched Twisted summaries of the 135M adapter; no reference has them.
    assert nests_markup("A L{Cooperator} is a L{L{Deferred}} with a list.")
    assert nests_markup("The server will respond with a C{L{C{User}}} message.")
    assert nests_markup("This L{TaskT{TaskResultT}} is a task.")  # not at the opener: still inside
    assert nests_markup("See {@link Foo {@code bar}}.")
    # Markup side by side, closed before the next opens, and braces that are not markup.
    assert not nests_markup("Return a L{Deferred} that fires with C{None}.")
    assert not nests_markup("See {@link Foo} and {@code bar}.")
    assert not nests_markup("Format the {name: value} mapping as C{key=value}.")
    assert not nests_markup("L{Foo}{bar}")  # closed before the next brace opens
