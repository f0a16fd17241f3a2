"""Prompts with context (repotune.prompts): how retrieved chunks and the same-budget prefix are
rendered into a prompt, where they go, what fitting to a length cuts first, and that training
rows and benchmark prompts come out of the same rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from repotune import atomic
from repotune.errors import RepotuneError
from repotune.params import PromptParams
from repotune.prompts import Prompter, context_lines, evaluation_prompts, with_context

CHUNKS = [
    {"path": "pkg/util.py", "start_line": 3, "end_line": 5, "score": 2.5,
     "text": "def helper(x):\n\n    return x + 1\n", "cut": False},
    {"path": "pkg/more.py", "start_line": 1, "end_line": 1, "score": 1.0, "text": "LIMIT = 3", "cut": True},
]
RECORD = {"id": "a", "language": "python", "input": "def add(a, b):\n    return a + b\n", "target": "Add."}
RAG = {**RECORD, "context": {"kind": "retrieval", "chunks": CHUNKS}}
# The retrieval context as the prompt shows it, written out by hand: comments of the sample's
# language, each chunk under a comment naming its path, a blank line as the bare marker.
PY_CONTEXT = ("# pkg/util.py\n# def helper(x):\n#\n#     return x + 1\n"
              "# pkg/more.py\n# LIMIT = 3\n")


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_retrieved_chunks_are_comments_of_the_samples_language_naming_their_path():
    doc = Prompter.from_params(PromptParams(), "docstring")  # plain: "{code}\nDocstring:"
    assert doc.prompt(RAG) == PY_CONTEXT + "def add(a, b):\n    return a + b\nDocstring:"
    assert doc.prompt(RECORD) == "def add(a, b):\n    return a + b\nDocstring:"  # no context: as before
    kotlin = {**RAG, "language": "kotlin"}
    assert "".join(context_lines(kotlin)) == ("// pkg/util.py\n// def helper(x):\n//\n//     return x + 1\n"
                                              "// pkg/more.py\n// LIMIT = 3\n")
    assert context_lines({**RAG, "language": "java"})[0] == "// pkg/util.py\n"
    assert context_lines({**RECORD, "context": {"kind": "retrieval", "chunks": []}}) == []


def test_a_template_places_the_context_where_it_says_and_braces_in_code_stay():
    slotted = Prompter("docstring", "Related code:\n{context}\nCode:\n{code}\nDocstring:")
    assert slotted.prompt(RAG) == "Related code:\n" + PY_CONTEXT + "\nCode:\n" + RECORD["input"].rstrip() + "\nDocstring:"
    # One pass: code that says {context} and context that says {code} are written as they are.
    tricky = {**RAG, "input": 'print(f"{context}")',
              "context": {"kind": "retrieval", "chunks": [{"path": "t.py", "text": 'x = "{code}"'}]}}
    assert slotted.prompt(tricky) == 'Related code:\n# t.py\n# x = "{code}"\n\nCode:\nprint(f"{context}")\nDocstring:'


def test_the_prefix_control_is_the_files_code_as_written_before_the_input():
    prefix = {"kind": "prefix", "chunks": [{"path": "m.py", "text": "import os\n\ndef f():\n    "}]}
    record = {"id": "w", "language": "python", "input": "return os.sep", "target": "x"}
    comp = Prompter.from_params(PromptParams(), "completion")
    assert comp.prompt({**record, "context": prefix}) == "import os\n\ndef f():\n    return os.sep"


def test_fitting_cuts_the_context_first_then_the_code(tokenizer):
    size = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    doc = Prompter.from_params(PromptParams(), "docstring")
    full, plain = doc.prompt(RAG), doc.prompt(RECORD)
    assert doc.fitted_prompt(RAG, tokenizer, size(full)) == (full, False, False)
    # One token short of the whole: the retrieval context loses its last line (the worst chunk's).
    fitted = doc.fitted_prompt(RAG, tokenizer, size(full) - 1)
    assert fitted == (PY_CONTEXT.removesuffix("# LIMIT = 3\n") + plain, False, True)
    # Room for the code alone: no context, the code whole.
    assert doc.fitted_prompt(RAG, tokenizer, size(plain)) == (plain, False, True)
    # Less: the code is cut too (its head kept), as without context.
    cut = doc.fitted_prompt(RAG, tokenizer, size(plain) - 3)
    assert cut.code_cut and cut.context_cut and cut.prompt == doc.fitted_prompt(RECORD, tokenizer, size(plain) - 3).prompt
    assert "#" not in cut.prompt

    # A prefix keeps its end, next to the input: its first lines go first.
    comp = Prompter.from_params(PromptParams(), "completion")
    lines = [f"value_{i} = {i}\n" for i in range(6)]
    record = {"id": "w", "language": "python", "input": "total = value_", "target": "5",
              "context": {"kind": "prefix", "chunks": [{"path": "m.py", "text": "".join(lines)}]}}
    budget = size("".join(lines[2:]) + "total = value_")
    assert comp.fitted_prompt(record, tokenizer, budget) == ("".join(lines[2:]) + "total = value_", False, True)


def test_training_rows_and_benchmark_prompts_are_the_same_rendering(tokenizer):
    doc = Prompter.from_params(PromptParams(), "docstring")
    records = [RAG, {**RAG, "id": "b", "language": "kotlin", "input": "fun one() = 1"}]
    rows, counts = doc.fitted_rows(records, tokenizer, 4096)
    prompts, code_cut, context_cut = evaluation_prompts({"test": records}, [("test", "plain")], lambda _: doc, tokenizer, 4096)
    assert [r["prompt"] for r in rows] == prompts["test.plain"] == [doc.prompt(r) for r in records]
    assert counts == {"fitted": 0, "context_cut": 0, "target_too_long": 0}
    assert code_cut["test.plain"] == context_cut["test.plain"] == [False, False]


def test_context_is_joined_by_id_and_a_missing_one_is_an_error(tmp_path: Path):
    path = tmp_path / "test.jsonl"
    atomic.write_jsonl(path, [{"id": "a", "chunks": CHUNKS}])
    assert with_context([RECORD], path, "retrieval") == [RAG]
    assert with_context([RECORD], tmp_path / "absent.jsonl", "none") == [RECORD]  # none reads nothing
    with pytest.raises(RepotuneError, match=r"test.jsonl: no retrieval context for 1 of 2 samples \(first: b\); run the "
                                            r"retrieve stage with retrieval.enabled: true"):
        with_context([RECORD, {**RECORD, "id": "b"}], path, "retrieval")
