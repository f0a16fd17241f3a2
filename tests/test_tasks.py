"""Tasks `completion` and `method_name`: samples, filters, post-processing and metrics."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections import Counter
from pathlib import Path

import pytest

from repotune import metrics
from repotune.languages import definitions, parser
from repotune.params import ExtractParams, FilterParams
from repotune.extraction import extract_samples
from repotune.tasks import completion, method_name
from repotune.tasks.completion import WindowParams

MODULE = '''\
# Copyright 2024 Example Corp.
# Licensed under the Apache License, Version 2.0.

import os


def read_all(paths):
    """Read every file."""
    texts = []
    for path in paths:
        with open(path) as handle:
            texts.append(handle.read())
    return texts


def count_words(text):
    words = text.split()
    return len(words)


class Counter:
    def __init__(self, start=0):
        self.value = start

    def increment(self, step=1):
        self.value = self.value + step
        return self.value

    def factorial(self, n):
        if n <= 1:
            return 1
        return n * self.factorial(n - 1)
'''


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def window_samples(
    text: str, tokenizer, path: str = "m.py", language: str = "python", **window
) -> tuple[list[dict], Counter]:
    counts: Counter = Counter()
    own = completion.Extract(window=WindowParams(**{"min_file_tokens": 8, **window}))
    found = list(completion.samples([], text, own, counts, language=language, path=path, tokenizer=tokenizer))
    return found, counts


# --- completion -----------------------------------------------------------------------------


def test_licence_header_is_stripped_and_other_headers_kept():
    body, lines = completion.strip_licence_header(MODULE, "python")
    assert lines == 3 and body.startswith("import os\n")
    plain = "# A helper module.\n\nimport os\n"
    assert completion.strip_licence_header(plain, "python") == (plain, 0)
    java = "/*\n * Copyright (c) Meta.\n */\npackage x;\n"
    assert completion.strip_licence_header(java, "java") == ("package x;\n", 3)
    # Each language's own comments: // lines in Kotlin (a script's #! line too), never in Python.
    kotlin = "#!/usr/bin/env kotlin\n// Copyright 2024 Example.\n// SPDX-License-Identifier: MIT\nval x = 1\n"
    assert completion.strip_licence_header(kotlin, "kotlin") == ("val x = 1\n", 3)
    assert completion.strip_licence_header(java.replace("/*", "//", 1), "python")[1] == 0


@pytest.mark.parametrize("target", ["line", "lines", "tokens"])
def test_windows_end_mid_line_on_a_token_boundary_inside_one_file(tokenizer, target):
    records, counts = window_samples(MODULE, tokenizer, prefix_tokens=40, stride=30, target=target, lines=2)
    assert len(records) >= 4 and counts["windows"] == len(records)
    body, header = completion.strip_licence_header(MODULE, "python")
    enc = tokenizer(body, add_special_tokens=False, return_offsets_mapping=True)
    starts = [o[0] for o in enc["offset_mapping"]]
    for r in records:
        prefix, target_text = r["input"], r["target"]
        # The window is a piece of the file, prefix then target, nothing added or lost.
        start = body.index(prefix + target_text)
        cursor = start + len(prefix)
        line_before = body[body.rfind("\n", 0, cursor) + 1:cursor]
        assert line_before.strip(), "the cursor has code before it on its line"
        assert not prefix.endswith("\n")
        # Prefix and cursor sit on token boundaries of the whole file, and the prefix alone
        # tokenizes to exactly the file's tokens between them.
        assert start in starts and cursor in starts
        file_ids = enc["input_ids"][starts.index(start):starts.index(cursor)]
        assert tokenizer(prefix, add_special_tokens=False)["input_ids"] == file_ids
        assert 0 < len(file_ids) <= 40
        if target == "line":
            assert "\n" not in target_text and target_text.strip()
        elif target == "lines":
            assert target_text.count("\n") <= 1
        line, column = map(int, r["name"].split(":"))
        assert MODULE.splitlines()[line - 1][column:].startswith(target_text.split("\n")[0])
        assert r["start_line"] > header  # the licence lines are never part of a window


def test_windows_are_deterministic_and_seeded(tokenizer):
    first, _ = window_samples(MODULE, tokenizer, prefix_tokens=40, stride=30)
    again, _ = window_samples(MODULE, tokenizer, prefix_tokens=40, stride=30)
    other, _ = window_samples(MODULE, tokenizer, prefix_tokens=40, stride=30, seed=7)
    assert first == again
    assert [r["name"] for r in first] != [r["name"] for r in other]


def test_short_files_are_counted_not_windowed(tokenizer):
    records, counts = window_samples("x = 1\n", tokenizer)
    assert records == [] and counts["files_too_short"] == 1


def test_completion_extract_keeps_windows_inside_their_file(tokenizer, tmp_path: Path):
    (tmp_path / "a.py").write_text(MODULE)
    (tmp_path / "b.py").write_text(MODULE.replace("count_words", "count_lines"))
    extract = ExtractParams()
    own = completion.Extract(window=WindowParams(prefix_tokens=40, stride=30, min_file_tokens=8))
    records, counts = extract_samples(
        tmp_path, repo="r", sha="0" * 40, task_name="completion", extract=extract, own=own, tokenizer=tokenizer
    )
    texts = {"a.py": (tmp_path / "a.py").read_text(), "b.py": (tmp_path / "b.py").read_text()}
    assert {r["path"] for r in records} == {"a.py", "b.py"}
    for r in records:
        assert r["input"] + r["target"] in texts[r["path"]]
        assert r["task"] == "completion" and r["kind"] == "window"
    assert counts["samples_window"] == len(records)
    # Two worker processes, each handed the tokenizer once: the same windows, in the same order.
    assert extract_samples(
        tmp_path, repo="r", sha="0" * 40, task_name="completion", extract=extract, own=own, tokenizer=tokenizer,
        workers=2,
    ) == (records, counts)
    with pytest.raises(ValueError, match="needs the base model's tokenizer"):
        extract_samples(tmp_path, repo="r", sha="0" * 40, task_name="completion", extract=extract)


def test_windows_with_long_literals_are_dropped():
    shared, own = FilterParams(), completion.Filter(max_literal_chars=20)
    blob = {"input": 'const val S = "' + "\\uD83C" * 10 + '"\nval x = ', "target": "1"}
    assert completion.drop_reason(blob, shared, own) == "long_literal"
    assert completion.drop_reason({"input": "val x = listOf(1, 2)\nval y = ", "target": "x"}, shared, own) is None


def test_completion_postprocess_keeps_indentation_and_cuts_lines():
    line = completion.Extract()
    assert completion.default_stop(line) == ["\n"]
    assert completion.postprocess("  x + 1)\nmore", ["\n"], line) == "  x + 1)"
    assert completion.postprocess("\nnext line", ["\n"], line) == ""
    two = completion.Extract(window=WindowParams(target="lines", lines=2))
    assert completion.default_stop(two) == []
    assert completion.postprocess(" a\n    b\n    c", [], two) == " a\n    b"


def test_completion_metrics_match_hand_computed_values():
    # rapidfuzz ratio = 2 * matches / total length: "abc" vs "abd" -> 2*2/6.
    assert metrics.METRICS["edit_similarity"].score(["abc", "x = 1"], ["abd", "x = 1"]) == pytest.approx(
        (66.6667 + 100) / 2, abs=1e-3
    )
    assert metrics.METRICS["exact_match"].score(["return  x\n"], ["return x"]) == 100.0
    scores = metrics.score(completion.METRICS, ["return x", "foo"], ["return x", "bar(1)"])
    assert scores["exact_match"] == 50.0
    assert set(scores) == set(completion.METRICS)


# --- method_name ----------------------------------------------------------------------------


def python_samples(code: str, **extract) -> dict[str, dict]:
    tree = parser("python").parse(code.encode())
    found = list(definitions("python", tree.root_node, code.encode()))
    counts: Counter = Counter()
    return {s["name"]: s for s in method_name.samples(found, code, method_name.Extract(**extract), counts)}


def test_name_is_masked_everywhere_but_not_inside_other_words():
    code = "def fact(n):\n    # fact of n, see factorial\n    return 1 if n < 2 else n * fact(n - 1)\n"
    assert method_name.mask_name(code, "fact", "<MASK>") == (
        "def <MASK>(n):\n    # <MASK> of n, see factorial\n    return 1 if n < 2 else n * <MASK>(n - 1)\n"
    )


def test_method_name_samples_are_functions_with_masked_input():
    samples = python_samples(MODULE)
    assert set(samples) == {"read_all", "count_words", "Counter.__init__", "Counter.increment", "Counter.factorial"}
    fact = samples["Counter.factorial"]
    assert fact["target"] == "factorial"
    assert "factorial" not in fact["input"] and fact["input"].count("<MASK>") == 2
    assert '"""Read every file."""' not in samples["read_all"]["input"]
    assert '"""Read every file."""' in python_samples(MODULE, keep_doc=True)["read_all"]["input"]


def record(name: str, body: str | None, language: str = "kotlin", **extra) -> dict:
    return {"name": name, "target": name.rsplit(".", 1)[-1], "body": body, "input": "x", "language": language,
            **extra}


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (record("Shape.area", None), "no_body"),
        (record("test_area", "{\n  a()\n  b()\n  c()\n}", is_test=True), "test"),
        (record("Shape.draw", "{\n    super.draw(canvas)\n}"), "super_call"),
        (record("Shape.draw", "= super.draw(canvas)"), "super_call"),
        (record("Shape.draw", "= super<Base>.draw(canvas)"), "super_call"),
        (record("Shape.draw", "{\n    super.draw(canvas);\n}", "java"), "super_call"),
        (record("Shape.draw", "return super().draw(canvas)", "python"), "super_call"),
        (record("Shape.getWidth", "{\n    return this.width;\n}", "java"), "accessor"),
        (record("Shape.setWidth", "{ this.width = width; }", "java"), "accessor"),
        (record("Shape.getWidth", "return self.width", "python"), "accessor"),
        (record("Shape.area", "{\n    return w * h;\n}", "java"), "short_body"),
        (record("Shape.__repr__", "a = 1\n    b = 2\n    return a", "python"), "dunder"),
        (record("Shape.render", "{\n    val a = 1\n    val b = 2\n    draw(a, b)\n}"), None),
        (record("Shape.getArea", "{\n    val a = w\n    val b = h\n    return a * b\n}"), None),
    ],
)
def test_method_name_drop_reasons(sample, reason):
    assert method_name.drop_reason(sample, FilterParams(), method_name.Filter()) == reason


def test_method_name_postprocess_takes_the_first_identifier():
    window = method_name.Extract()
    assert method_name.postprocess("  `getName`()\nmore", ["\n"], window) == "getName"
    assert method_name.postprocess("\n\n  compute_total\n", ["\n"], window) == "compute_total"
    assert method_name.postprocess("   ", ["\n"], window) == ""


def test_method_name_metrics_match_hand_computed_values():
    # getUserName vs getName: predicted {get, user, name}, reference {get, name}:
    # tp 2, precision 2/3, recall 2/2; second pair: "run" vs "execute" tp 0 (1 predicted, 1 ref).
    scores = metrics.score(method_name.METRICS, ["getUserName", "run"], ["getName", "execute"])
    assert scores["subtoken_precision"] == pytest.approx(100 * 2 / 4)
    assert scores["subtoken_recall"] == pytest.approx(100 * 2 / 3)
    p, r = 0.5, 2 / 3
    assert scores["subtoken_f1"] == pytest.approx(round(100 * 2 * p * r / (p + r), 4))
    assert metrics.score(method_name.METRICS, ["GETNAME"], ["getName"])["exact_match_ci"] == 100.0
    assert metrics.score(method_name.METRICS, ["GETNAME"], ["getName"])["exact_match"] == 0.0
    assert metrics.METRICS["subtoken_f1"].sample_scores(["getUserName"], ["getName"]) == [80.0]
    assert metrics.subtokens("parseHTTPResponse_v2") == ["parse", "http", "response", "v", "2"]


# --- docstring on Kotlin and Java -----------------------------------------------------------


def test_docstring_samples_from_kotlin_and_java_fixtures(tmp_path: Path):
    import shutil

    fixtures = Path(__file__).parent / "fixtures"
    shutil.copytree(fixtures / "kotlin", tmp_path / "kt")
    shutil.copytree(fixtures / "java", tmp_path / "java")
    records, counts = extract_samples(
        tmp_path, repo="r", sha="0" * 40, task_name="docstring",
        extract=ExtractParams(languages=["kotlin", "java"]),
    )
    assert counts["files_parsed_kotlin"] == 1 and counts["files_parsed_java"] == 1
    assert {r["language"] for r in records} == {"kotlin", "java"}
    for r in records:
        assert not r["input"].lstrip().startswith("/**") and "*/" not in r["target"]  # its own doc is gone
        assert "@param" not in r["target"] and "@return" not in r["target"]
        assert not r["target"].startswith("*")


def test_summary_stops_at_the_first_block_tag():
    from repotune.tasks.docstring import clean

    doc = "Adds an item to the cart.\n@param item the item\n@return the new size"
    assert clean(doc, "summary", "keep") == "Adds an item to the cart."
    assert clean(doc, "full", "keep") == doc
    assert clean(doc, "full", "strip") == "Adds an item to the cart."
    assert clean("First.\n\nSecond.", "summary", "keep") == "First."


# --- prompts ---------------------------------------------------------------------------------


def test_prompter_renders_named_templates_and_the_chat_template(tokenizer):
    from repotune.errors import RepotuneError
    from repotune.params import PromptParams
    from repotune.prompts import Prompter

    record = {"input": "fun <MASK>(x: Int) = x * 2\n", "target": "double"}
    plain = Prompter.from_params(PromptParams(), "method_name")
    assert plain.prompt(record) == "fun <MASK>(x: Int) = x * 2\nThe name of the masked function is:"
    assert plain.completion(record) == " double\n"
    custom = PromptParams(template="short", templates={"method_name": {"short": "{code}\nName:"}})
    assert Prompter.from_params(custom, "method_name").prompt(record).endswith("x * 2\nName:")
    with pytest.raises(RepotuneError, match="prompt template 'short' is not defined for task 'docstring'"):
        Prompter.from_params(custom, "docstring")

    chat = PromptParams(template="instruct", chat_template=True, system="You name Kotlin functions.")
    prompter = Prompter.from_params(chat, "method_name")
    with pytest.raises(RepotuneError, match="has no chat template"):
        prompter.prompt(record, tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    try:
        text = prompter.prompt(record, tokenizer)
    finally:
        tokenizer.chat_template = None
    assert text.startswith("<|im_start|>system\nYou name Kotlin functions.\n<|im_start|>user\nThe name of")
    assert text.endswith("Name:\n<|im_start|>assistant\n")
    assert prompter.completion(record) == "double"  # the answer alone after the assistant cue


def test_line_targets_are_trained_with_the_newline_that_ends_them(tokenizer):
    records, _ = window_samples(MODULE, tokenizer, prefix_tokens=40, stride=30, target="line")
    assert records and all(r["ends_line"] for r in records)
    assert all(completion.completion(r) == r["target"] + "\n" for r in records)
    tokens, _ = window_samples(MODULE, tokenizer, prefix_tokens=40, stride=30, target="tokens")
    assert not any(r["ends_line"] for r in tokens)
    assert all(completion.completion(r) == r["target"] for r in tokens)


def test_fitting_cuts_the_code_never_the_instruction_or_the_target(tokenizer):
    from repotune.params import PromptParams
    from repotune.prompts import Prompter

    size = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    code = "def add(a, b):\n" + "    a = a + b\n" * 40 + "    return a\n"
    record = {"input": code, "target": "Add b to a forty times and return it."}
    doc = Prompter.from_params(PromptParams(), "docstring")
    full = doc.prompt(record, tokenizer)
    prompt, cut, _ = doc.fitted_prompt(record, tokenizer, 60)
    assert cut and size(prompt) <= 60 and prompt.endswith("\nDocstring:")
    assert code.startswith(prompt.removesuffix("\nDocstring:"))  # the head of the code is kept
    assert doc.fitted_prompt(record, tokenizer, size(full)) == (full, False, False)
    assert doc.fitted_prompt(record, tokenizer, 2) is None  # not even the instruction fits

    rows, counts = doc.fitted_rows([record, {**record, "target": "word " * 200}], tokenizer, 80)
    assert counts == {"fitted": 1, "context_cut": 0, "target_too_long": 1} and len(rows) == 1
    assert size(rows[0]["prompt"] + rows[0]["completion"]) + 1 <= 80
    assert rows[0]["completion"] == " Add b to a forty times and return it.\n"  # whole

    # A completion prefix keeps its end: the cursor.
    prefix = {"input": code + "    print(a", "target": ")"}
    comp = Prompter.from_params(PromptParams(), "completion")
    prompt, cut, _ = comp.fitted_prompt(prefix, tokenizer, 30)
    assert cut and prompt.endswith("    print(a") and (code + "    print(a").endswith(prompt)


# --- what every task provides ---------------------------------------------------------------

def _contract() -> tuple[dict[str, object], dict[str, inspect.Signature]]:
    """The Task protocol's constants (name -> type) and functions (name -> signature, no self)."""
    from repotune.tasks import Task

    constants = typing.get_type_hints(Task)
    functions = {
        name: inspect.signature(value).replace(parameters=list(inspect.signature(value).parameters.values())[1:])
        for name, value in vars(Task).items() if inspect.isfunction(value) and not name.startswith("_")
    }
    return constants, functions


def _has_type(value: object, annotation: object) -> bool:
    """`value` fits `annotation` (the few forms the Task protocol uses)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return True
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is type:  # type[Section]
        return isinstance(value, type) and issubclass(value, args[0])
    if origin is tuple:  # tuple[str, ...]
        return isinstance(value, tuple) and all(_has_type(v, args[0]) for v in value)
    if origin is collections.abc.Mapping:
        return isinstance(value, collections.abc.Mapping) and all(
            _has_type(k, args[0]) and _has_type(v, args[1]) for k, v in value.items())
    return isinstance(value, annotation)  # bool, str


def test_the_task_contract_lists_every_attribute_callers_use():
    """The Protocol names the 23 attributes read of a task module across src/ and stages/."""
    constants, functions = _contract()
    assert set(constants) == {
        "Params", "NEEDS_TOKENIZER", "DUPLICATE_TARGETS", "KEEP_INPUT", "PROMPTS", "JUDGE_PROMPT", "CHAT_PROMPT", "DECODING", "TRAINING",
        "STOP_AFTER_LEADING_WHITESPACE", "METRICS", "PRIMARY_METRIC", "WRONG_KIND", "RETRIEVAL_QUERY",
        "CONTEXT_LEAK", "DOC_TARGETS",
    }
    assert set(functions) == {
        "samples", "drop_reason", "prompt_input", "completion", "default_stop", "postprocess", "chat_answer",
        "wrong_kind",
    }


def _contract_problems(module: object) -> list[str]:
    """What `module` lacks of the Task protocol: a missing attribute, a function where a
    constant belongs (or the reverse), a value of the wrong type, a signature callers cannot use."""
    constants, functions = _contract()
    problems = []
    for attr, annotation in constants.items():
        if not hasattr(module, attr):
            problems.append(f"no {attr}")
        elif callable(value := getattr(module, attr)) and not isinstance(value, type):
            problems.append(f"{attr} is a constant of the contract, got a function")
        elif not _has_type(value, annotation):
            problems.append(f"{attr} = {value!r} is not a {annotation}")
    for attr, signature in functions.items():
        if not callable(function := getattr(module, attr, None)):
            problems.append(f"{attr} must be a function")
            continue
        got = inspect.signature(function).parameters
        # The positional parameters, by name; ``samples``' **context (the language, the path and,
        # for tasks with NEEDS_TOKENIZER, the tokenizer) may be taken as keywords.
        want = [p for p in signature.parameters if signature.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]
        if list(got)[: len(want)] != want:
            problems.append(f"{attr}{inspect.signature(function)}: its parameters must start with {want}")
        context = {"language", "path"} if attr == "samples" else set()
        context |= {"tokenizer"} if attr == "samples" and getattr(module, "NEEDS_TOKENIZER", False) else set()
        extra = [p for p in list(got)[len(want):] if got[p].default is inspect.Parameter.empty
                 and got[p].kind is not inspect.Parameter.VAR_KEYWORD and p not in context]
        if extra:
            problems.append(f"{attr} requires parameters callers never pass: {extra}")
    return problems


@pytest.mark.parametrize("name", ["docstring", "completion", "method_name"])
def test_every_registered_task_provides_the_contract(name):
    from repotune.tasks import TASKS

    assert sorted(TASKS) == ["completion", "docstring", "method_name"]  # the parametrisation is all of them
    module = TASKS[name]
    assert _contract_problems(module) == [], name
    # Values the rest of the pipeline relies on, beyond their type.
    assert module.PRIMARY_METRIC in module.METRICS
    assert set(module.METRICS) <= set(metrics.METRICS)
    assert module.PROMPTS and all("{code}" in text for text in module.PROMPTS.values())
    # Its own knobs: a section for the extract stage and one for the filter stage, all defaulted.
    assert list(module.Params.model_fields) == ["extract", "filter"]
    assert module.Params() == module.Params.model_validate({})


def test_a_task_short_of_the_contract_is_told_what_it_lacks():
    from repotune.tasks import docstring

    constants, functions = _contract()
    broken = types.SimpleNamespace(**{a: getattr(docstring, a) for a in [*constants, *functions]})
    del broken.postprocess
    broken.KEEP_INPUT = "middle"
    broken.METRICS = ("chrf", 1)
    broken.WRONG_KIND = docstring.wrong_kind
    broken.chat_answer = lambda text: text
    assert _contract_problems(broken) == [
        "KEEP_INPUT = 'middle' is not a typing.Literal['head', 'tail']",
        "METRICS = ('chrf', 1) is not a tuple[str, ...]",
        "WRONG_KIND is a constant of the contract, got a function",
        "postprocess must be a function",
        "chat_answer(text): its parameters must start with ['raw']",
    ]


def test_every_task_owns_its_decoding_defaults_and_wrong_kind_rule():
    from repotune.params import DecodingParams
    from repotune.tasks import TASKS, resolved_decoding

    for name, module in TASKS.items():
        assert set(module.DECODING) == {"no_repeat_ngram_size", "repetition_penalty", "markup_guard"}, name
        assert isinstance(module.WRONG_KIND, str) and module.WRONG_KIND, name
        assert callable(module.wrong_kind), name
    # Left null, the task decides: a 4-gram block for prose, none for code.
    unset = DecodingParams()
    assert resolved_decoding(unset, "docstring").no_repeat_ngram_size == 4
    assert resolved_decoding(unset, "completion").no_repeat_ngram_size == 0
    assert resolved_decoding(unset, "method_name").no_repeat_ngram_size == 0
    assert {resolved_decoding(unset, t).repetition_penalty for t in TASKS} == {1.0}
    # The markup guard for prose only: code opens braces after capitals (Foo{).
    assert {t: resolved_decoding(unset, t).markup_guard for t in TASKS} == {
        "docstring": True, "completion": False, "method_name": False}
    assert resolved_decoding(DecodingParams(markup_guard=False), "docstring").markup_guard is False
    # Set explicitly, the user's value wins, even where it equals another task's default.
    explicit = DecodingParams(no_repeat_ngram_size=3, repetition_penalty=1.2, max_new_tokens=9)
    for name in TASKS:
        got = resolved_decoding(explicit, name)
        assert (got.no_repeat_ngram_size, got.repetition_penalty, got.max_new_tokens) == (3, 1.2, 9)
    assert resolved_decoding(DecodingParams(no_repeat_ngram_size=0), "docstring").no_repeat_ngram_size == 0


def test_every_task_owns_its_learning_rate_and_an_explicit_one_wins():
    from repotune.params import TrainParams
    from repotune.tasks import TASKS, resolved_training

    for name, module in TASKS.items():
        assert set(module.TRAINING) == {"lr"}, name
    # Left null, the task decides: 1e-3 for prose and names, 2e-4 for code completion (measured).
    assert TrainParams().lr is None
    assert {t: resolved_training(TrainParams(), t).lr for t in TASKS} == {
        "docstring": 1.0e-3, "completion": 2.0e-4, "method_name": 1.0e-3}
    # Set explicitly, the user's value wins; the other keys are left as they are.
    explicit = TrainParams(lr=5.0e-5, max_steps=3)
    for name in TASKS:
        got = resolved_training(explicit, name)
        assert (got.lr, got.max_steps) == (5.0e-5, 3)


def test_generation_refuses_unresolved_decoding(tiny_model):
    from repotune.generation import generate_from_folder
    from repotune.params import DecodingParams

    with pytest.raises(ValueError, match="decoding.repetition_penalty, decoding.no_repeat_ngram_size, "
                                         "decoding.markup_guard unresolved"):
        generate_from_folder(tiny_model, {"x": ["a"]}, DecodingParams(), stop=[], skip_leading_whitespace=False,
                             device="cpu", precision="fp32")


@pytest.mark.parametrize(("output", "wrong"), [
    ("Return the value of the key.", False),
    ("return the value of the key.", False),  # prose that opens with a keyword
    ("Start a L{Deferred} (see C{self.run}).", False),
    ("Stop the service.\n\n:param x: the value", False),
    ("if not self.lazy: return super().__init__()", True),  # the base continuing the code
    ("return a + b", True),
    ("self._reactor.callLater(0, self._flush)", True),
    ("x = read(path)\nreturn x + 1", True),
    ("def stop(self):", True),
    ("x = 1\nSet the value.\nself.value = value", True),  # most lines are code
    ("Set the value.\nself.value = value", False),  # half: a sentence with its example
    ("Return a L{Key} from C{self.blobs}, if any, or\nreturn L{None}.", False),  # markup is prose
    ("Returns a {@link Manager}. Will\nreturn null if the {@link Context} is gone", False),
])
def test_docstring_wrong_kind_is_code_where_prose_is_asked(output, wrong):
    from repotune.tasks import docstring

    assert docstring.wrong_kind(output, output) is wrong


@pytest.mark.parametrize(("raw", "wrong"), [
    ("getFoo", False), (" `getFoo`\n", False), ("\n\n  getFoo()", False), ("get_foo;", False),
    ("The name is getFoo", True), ("fun getFoo() {", True), ("", True), ("get foo", True),
])
def test_method_name_wrong_kind_is_judged_on_what_the_model_wrote(raw, wrong):
    assert method_name.wrong_kind(method_name.postprocess(raw, ["\n"], method_name.Extract()), raw) is wrong


@pytest.mark.parametrize(("raw", "wrong"), [
    ("foo(bar))\n", False), ("  return x", False), (" // Here is why", False), ("Hereafter.x", False),
    ("```kotlin\nval x = 1", True), ("Here is the completed line: foo()", True), ("Sure! foo()", True),
])
def test_completion_wrong_kind_is_a_reply_instead_of_code(raw, wrong):
    assert completion.wrong_kind(raw, raw) is wrong
