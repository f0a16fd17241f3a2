"""repotune.systems: whether a system runs, and the rows and summaries its outputs become."""

from __future__ import annotations

from pathlib import Path

import pytest

from repotune import atomic, evalsets, systems
from repotune.generation import Generation
from repotune.params import SystemParams


def contexts_with(tmp_path: Path, rows: list[dict]) -> dict[str, Path]:
    system = SystemParams(model="models/base", context="retrieval")
    files = systems.context_files(tmp_path / "retrieved", system)
    for path in files.values():
        atomic.write_jsonl(path, rows)
    return files


def test_a_system_runs_unless_switched_off_or_waiting_for_retrieval(tmp_path: Path):
    model = tmp_path / "models/merged_rag"
    model.mkdir(parents=True)
    with_chunks = contexts_with(tmp_path, [{"id": "a", "chunks": []}])
    on = SystemParams(model="models/base", context="retrieval", enabled="with_retrieval")
    assert systems.not_run_reason("base_rag", on, model, with_chunks) is None
    assert systems.not_run_reason("base", SystemParams(model="models/base", enabled=False), model, with_chunks) == (
        "generate.systems.base.enabled is false"
    )
    # Retrieval off: the retrieve stage wrote empty context files...
    empty = contexts_with(tmp_path, [])
    assert systems.not_run_reason("base_rag", on, model, empty) == "enabled: with_retrieval, and retrieval.enabled is false"
    # ... and train_rag a disabled marker in place of the model folder.
    atomic.write_disabled(model, "retrieval.enabled is false")
    no_context = SystemParams(model="models/merged_rag", context="none", enabled="with_retrieval")
    assert systems.not_run_reason("finetuned_rag", no_context, model, with_chunks) is not None
    # A system that is simply on runs whatever the context files hold.
    assert systems.not_run_reason("base", SystemParams(model="models/base"), tmp_path, empty) is None


def test_a_chat_system_needs_a_chat_request_and_a_chat_template(tmp_path: Path, tiny_model: Path):
    from repotune.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    assert systems.chat_unavailable("method_name", None, tokenizer, tiny_model) == "task method_name has no chat prompt"
    tokenizer.chat_template = None
    assert systems.chat_unavailable("docstring", "Write {code}", tokenizer, tiny_model) == (
        f"{tiny_model}: the tokenizer has no chat template"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert systems.chat_unavailable("docstring", "Write {code}", tokenizer, tiny_model) is None


def test_outputs_become_one_file_per_evaluation_with_their_summaries(tmp_path: Path):
    sets = {"test": [{"id": "a"}, {"id": "b"}], "ood": [{"id": "c"}]}
    runs = {
        "test.plain": Generation(texts=["x", "y"], raw_texts=[" One.\n\nmore", " Two."], new_tokens=[5, 3],
                                 prompt_tokens=[40, 50], seconds=2.0),
        "ood.plain": Generation(texts=["z"], raw_texts=[" Three."], new_tokens=[4], prompt_tokens=[30], seconds=1.0),
    }
    cut = {"test.plain": [True, False], "ood.plain": [False]}
    context_cut = {"test.plain": [False, True], "ood.plain": [True]}
    summaries = systems.write_outputs(tmp_path, sets, runs, cut, context_cut, lambda raw: raw.split("\n\n")[0].strip())

    rows = list(atomic.iter_jsonl(evalsets.generation_file(tmp_path, "test", "plain")))
    assert rows == [
        {"id": "a", "raw": " One.\n\nmore", "output": "One.", "prompt_tokens": 40, "new_tokens": 5,
         "code_cut": True, "context_cut": False},
        {"id": "b", "raw": " Two.", "output": "Two.", "prompt_tokens": 50, "new_tokens": 3,
         "code_cut": False, "context_cut": True},
    ]
    assert summaries["test.plain"] == {"samples": 2, "prompts_code_cut": 1, "prompts_context_cut": 1,
                                       "generated_tokens": 8, "seconds": 2.0, "tokens_per_s": 4.0}
    assert summaries["ood.plain"]["prompts_context_cut"] == 1
    # A system without context records no context cuts at all.
    plain = systems.write_outputs(tmp_path / "plain", sets, runs, cut, None, str.strip)
    assert "prompts_context_cut" not in plain["test.plain"]
    assert all("context_cut" not in row for row in atomic.iter_jsonl(evalsets.generation_file(tmp_path / "plain", "ood", "plain")))


def test_rows_and_generations_must_match_in_number(tmp_path: Path):
    runs = {"test.plain": Generation(texts=["x"], raw_texts=["x"], new_tokens=[1], prompt_tokens=[2], seconds=1.0)}
    with pytest.raises(ValueError):
        systems.write_outputs(tmp_path, {"test": [{"id": "a"}, {"id": "b"}]}, runs, {"test.plain": [False, False]}, None, str)
