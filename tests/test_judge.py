"""The model judge: prompt rendering, batching independence, the score cache, the threshold."""

from __future__ import annotations

from pathlib import Path

import pytest

from repotune.errors import ParamsError, RepotuneError
from repotune.split import judge_low


def record(i: int, target: str, code: str = "def add(a, b):\n    return a + b\n") -> dict:
    return {"id": f"s{i}", "kind": "function", "input": code, "target": target}


def test_render_fills_code_and_target_in_one_pass_and_cuts_long_code(tiny_model: Path) -> None:
    from repotune.judge import render
    from repotune.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    # A docstring that says "{code}" must stay as written, not get the code pasted in.
    text = render(record(1, "Format {code} blocks."), "C:{code}|T:{target}", "docstring", tokenizer, 400, False)
    assert text == "C:def add(a, b):\n    return a + b|T:Format {code} blocks."  # the task strips the input
    code = "x = 1\n" * 50
    cut = render(record(2, "t", code), "{code}{target}", "docstring", tokenizer, 4, False)[:-1]
    assert code.startswith(cut) and len(tokenizer(cut, add_special_tokens=False)["input_ids"]) == 4


def test_chat_template_missing_names_the_judge_param(tiny_model: Path) -> None:
    from repotune.judge import render
    from repotune.modeling import load_tokenizer

    with pytest.raises(RepotuneError, match="^judge.chat_template is true but"):
        render(record(1, "t"), "{code}{target}", "docstring", load_tokenizer(tiny_model), 10, True)


def test_scores_do_not_depend_on_batching(lively_model: Path) -> None:
    """Left padding with position ids that skip it: a prompt scores the same alone or batched
    with longer ones."""
    from repotune.judge import rate
    from repotune.modeling import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(lively_model).eval(), load_tokenizer(lively_model)
    prompts = ["def add(a, b):", "import os\nfrom pathlib import Path\n\ndef read(path):\n    return 1", "x"]
    alone = [rate(model, tokenizer, [p], 1)[0] for p in prompts]
    batched = rate(model, tokenizer, prompts, 3)
    for (s1, m1), (s2, m2) in zip(alone, batched, strict=True):
        assert abs(s1 - s2) <= 2e-4 and abs(m1 - m2) <= 2e-4
    assert all(1.0 <= s <= 5.0 for s, _ in batched)
    assert len({s for s, _ in batched}) == 3  # the prompts get different scores


def test_a_second_run_scores_nothing_and_a_changed_target_only_itself(lively_model: Path) -> None:
    from repotune.judge import judge_samples

    records = [record(i, f"Return the sum number {i}.") for i in range(3)]
    cache: dict = {}
    kwargs = {"chat_template": False, "max_code_tokens": 64, "batch_size": 2}
    rows, counts = judge_samples(records, lively_model, cache, "{code}\n{target}\nRating:", "docstring", **kwargs)
    assert (counts["samples"], counts["scored"], counts["cached"]) == (3, 3, 0)
    assert [r["id"] for r in rows] == ["s0", "s1", "s2"] and len(cache) == 3

    again, counts = judge_samples(records, lively_model, cache, "{code}\n{target}\nRating:", "docstring", **kwargs)
    assert (counts["scored"], counts["cached"]) == (0, 3)
    assert again == rows

    records[1] = record(1, "Something else entirely.")
    _, counts = judge_samples(records, lively_model, cache, "{code}\n{target}\nRating:", "docstring", **kwargs)
    assert (counts["scored"], counts["cached"]) == (1, 2)
    # Another prompt is another key: everything is scored anew.
    _, counts = judge_samples(records, lively_model, cache, "{target}\n{code}\nRating:", "docstring", **kwargs)
    assert (counts["scored"], counts["cached"]) == (3, 0)


def test_judge_low_drops_below_the_threshold_and_nothing_without_scores() -> None:
    records = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    scores = [{"id": "a", "score": 2.4}, {"id": "b", "score": 2.5}, {"id": "c", "score": 4.0}]
    assert judge_low(records, scores, 2.5) == {"a"}
    assert judge_low(records, [], 5.0) == set()
    with pytest.raises(RepotuneError, match="1 samples have no judge score .first: c."):
        judge_low(records, scores[:2], 2.5)


@pytest.mark.parametrize(("judge", "message"), [
    ({"prompt": "Rate {code}"}, "judge.prompt: must contain the placeholders {code} and {target}, missing {target}"),
    ({"threshold": 6.0}, "judge.threshold must be less than or equal to 5, got 6.0"),
    ({"model": {"base": ""}}, "judge.model.base: must be a non-empty string"),
])
def test_bad_judge_params_are_one_line(judge: dict, message: str) -> None:
    from repotune import params

    with pytest.raises(ParamsError) as info:
        params.parse({"source": {"url": "."}, "judge": judge})
    assert str(info.value).startswith(f"params.yaml: {message}")


def test_a_judge_model_source_is_materialised_once_and_reused(tiny_model: Path, tmp_path: Path) -> None:
    from repotune.judge import judge_model_folder
    from repotune.params import ModelParams

    base = tmp_path / "base"  # not used: the judge has its own source
    source = ModelParams(base=str(tiny_model))
    folder = judge_model_folder(source, base, tmp_path / "cache")
    assert folder == tmp_path / "cache/model" and (folder / "model.safetensors").is_file()
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert judge_model_folder(source, base, tmp_path / "cache") == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp  # not materialised again
    assert judge_model_folder(None, base, tmp_path / "cache") == base


@pytest.mark.parametrize("task_name", ["docstring", "completion", "method_name"])
def test_with_judge_prompt_null_each_task_is_rated_with_its_own_prompt(task_name: str, tiny_model: Path, tmp_path: Path) -> None:
    """judge.prompt: null (the default) rates a docstring, a continuation or a name with the
    task's JUDGE_PROMPT; an explicit judge.prompt still wins."""
    import hashlib
    import json

    from conftest import load_stage, write_params
    from repotune import atomic
    from repotune.tasks import task

    own = task(task_name).JUDGE_PROMPT
    assert "{code}" in own and "{target}" in own
    other = [name for name in ("docstring", "name", "continuation") if name not in own.lower()]
    assert len(other) == 2  # each prompt speaks of its own kind of target only
    atomic.write_jsonl(tmp_path / "filtered.jsonl", [record(i, f"target {i}") for i in range(3)])
    for prompt, expected in ((None, own), ("Rate {target} for {code}: ", "Rate {target} for {code}: ")):
        judge = {"enabled": True, "chat_template": False, "prompt": prompt}
        params = write_params(tmp_path, task={"name": task_name}, judge=judge)
        out = tmp_path / f"judge-{prompt is None}"
        load_stage("judge").main(["--params", str(params), "--in", str(tmp_path / "filtered.jsonl"),
                                  "--base", str(tiny_model), "--out", str(out), "--metrics", str(out / "judge.json")])
        rows = atomic.read_jsonl(out / "scores.jsonl")
        assert {r["prompt_sha256"] for r in rows} == {hashlib.sha256(expected.encode()).hexdigest()}
        assert json.loads((out / "judge.json").read_text())["scored"] == 3
