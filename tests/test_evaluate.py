"""Stages ood -> generate -> evaluate on the tiny model and on hand-made generations."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import assert_not_blank, load_stage, make_source_repo, png_rows, write_params

from repotune import atomic

CODE = [
    "def add(a, b):\n    return a + b",
    "def read(path):\n    return Path(path).read_text()",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)",
    "def f():\n    pass",
    "def read(path):\n    return os.path",
]


def records(n: int, prefix: str = "s") -> list[dict]:
    return [
        {
            "id": f"{prefix}{i:02d}", "input": CODE[i % len(CODE)], "target": f"Return item number {i} of the list.",
            "repo": "r", "sha": "0" * 40, "path": f"pkg/m{i}.py", "language": "python",
            "kind": "function", "name": f"f{i}", "start_line": 1, "end_line": 3,
        }
        for i in range(n)
    ]


# base_chat as params.yaml lists it: the base model, asked through its chat template.
WITH_CHAT = {"base": {"model": "models/base"}, "base_chat": {"model": "models/base", "prompt": "chat"},
             "finetuned": {"model": "models/merged"}}


def run_generate(root: Path, params: Path, system: str, model: Path) -> None:
    load_stage("generate").main([
        "--system", system, "--model", str(model), "--params", str(params),
        "--test", str(root / "data/split/test.jsonl"), "--ood", str(root / "data/ood.jsonl"),
        "--out", str(root / "data/generations" / system), "--metrics", str(root / f"metrics/generate/{system}.json"),
    ])


def run_evaluate(root: Path, params: Path, out: str = "metrics") -> Path:
    load_stage("evaluate").main([
        "--params", str(params), "--generations", str(root / "data/generations"),
        "--test", str(root / "data/split/test.jsonl"), "--ood", str(root / "data/ood.jsonl"),
        "--stage-metrics", str(root / "metrics"), "--out", str(root / out),
        "--retrieved", str(root / "data/retrieved/retrieval/test.jsonl"),
    ])
    return root / out


def test_two_templates_and_an_ood_set_through_generate_and_evaluate(tmp_path, lively_model):
    source = make_source_repo(tmp_path / "other")
    params = write_params(
        tmp_path,
        generate={"templates": ["plain", "verbose"], "device": "cpu", "threads": 1},
        ood={"sources": {"python": {"url": source.working_dir, "rev": "main"}}, "max_samples": 3},
        **{"task.docstring.filter": {"min_target_tokens": 5}},
    )
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", records(5)[::-1])
    load_stage("ood").main([
        "--params", str(params), "--base", str(lively_model),
        "--out", str(tmp_path / "data/ood.jsonl"), "--metrics", str(tmp_path / "metrics/ood.json"),
    ])
    ood = json.loads((tmp_path / "metrics/ood.json").read_text())
    assert ood["enabled"] and ood["samples"] >= 3 and len(ood["languages"]["python"]["sha"]) == 40
    # The same model twice: every difference must be exactly 0 and not significant.
    for system in ("base", "finetuned"):
        run_generate(tmp_path, params, system, lively_model)
    generated = sorted(p.name for p in (tmp_path / "data/generations/base").iterdir())
    assert generated == ["ood.plain.jsonl", "ood.verbose.jsonl", "test.plain.jsonl", "test.verbose.jsonl"]
    speed = json.loads((tmp_path / "metrics/generate/base.json").read_text())
    assert speed["test.plain"]["samples"] == 5 and speed["ood.verbose"]["samples"] == 3
    # The tiny Llama: per layer attention 32x32 (q, o) + 32x16 (k, v) = 3072, MLP 3 x 32x64 =
    # 6144, two norms 64; 2 layers, the tied 300 x 32 embedding once, the final norm 32.
    assert speed["parameters"] == 2 * (3072 + 6144 + 64) + 300 * 32 + 32

    out = run_evaluate(tmp_path, params)
    head = json.loads((out / "evaluate.json").read_text())
    assert head["samples"] == 5 and head["ood_samples"] == 3 and head["template"] == "plain"
    # The primary metric and its difference lead the file (dvc exp show's first columns).
    assert list(head)[:5] == ["metric", "delta", "low", "high", "p"]
    assert (head["metric"], head["delta"], head["low"], head["high"], head["p"]) == ("rouge_l", 0, 0, 0, 1.0)
    for metric in ("chrf", "rouge_l", "rouge_l_code", "bleu", "bleu_cxg", "exact_match"):
        assert head[f"delta_{metric}"] == 0 and head[f"ood_delta_{metric}"] == 0
        assert head[f"delta_{metric}_low"] == 0 == head[f"delta_{metric}_high"]
        assert head[f"delta_{metric}_p"] == 1.0
    details = json.loads((out / "evaluate_details.json").read_text())
    assert [(e["set"], e["template"]) for e in details["evaluations"]] == [
        ("test", "plain"), ("test", "verbose"), ("ood", "plain"), ("ood", "verbose"),
    ]
    assert details["signatures"]["chrf"].startswith("nrefs:1|case:mixed")
    rows = atomic.read_jsonl(out / "predictions.jsonl")
    assert len(rows) == 2 * 5 + 2 * 3
    report = (out / "report.md").read_text()
    assert report.count("## test, template") == 2 and report.count("## ood, template") == 2
    python = ood["languages"]["python"]
    assert (f"- ood, python: `{source.working_dir}` @ `{python['sha'][:12]}`, {python['samples']} of "
            f"{python['samples_extracted']} samples kept\n") in report
    assert "finetuned against base, not significant at 95%: chrf, rouge_l" in report
    assert "## Degenerate outputs" in report and "![differences with paired intervals](plots/scores.png)" in report
    # The first lines: what was compared, then one verdict per evaluation on the primary metric.
    lines = report.splitlines()
    assert lines[2] == ("Base model `models/base`; adapter LoRA r 16, alpha 32 on q_proj, k_proj, v_proj, o_proj, "
                        "lr 0.001; training summary not found. Primary metric: rouge_l.")
    assert lines[4] == ("- **test · plain, 5 samples:** finetuned cannot be told apart from base: +0.00 rouge_l "
                        "(95% CI [+0.00, +0.00], p = 1.000), not significant at 95%.")
    assert sum(line.startswith("- **") for line in lines[4:9]) == 4
    assert "per-sample rouge_l" in report
    # The same model twice: scores.png draws zero differences (axes and a line at 0, nearly
    # blank; the next test draws real ones), the histogram one bar at 0.
    assert len(png_rows(out / "plots/scores.png")) > 150
    assert_not_blank(out / "plots/sample_deltas.png")

    # evaluate alone is deterministic to the byte.
    again = run_evaluate(tmp_path, params, "metrics2")
    for name in ("evaluate.json", "evaluate_details.json", "predictions.jsonl", "report.md",
                 "plots/scores.png", "plots/sample_deltas.png"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def write_generations(root: Path, system: str, outputs: list[str], recs: list[dict], template: str = "plain") -> None:
    rows = [{"id": r["id"], "output": o, "raw": o, "prompt_tokens": 1, "new_tokens": 1, "code_cut": False}
            for r, o in zip(recs, outputs)]
    atomic.write_jsonl(root / f"data/generations/{system}/test.{template}.jsonl", rows)


def test_a_real_difference_is_significant_and_said_in_words(tmp_path):
    recs = records(40)
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", recs)
    params = write_params(tmp_path, evaluate={"resamples": 1000})
    # The fine-tuned system gets 30 of 40 exactly right; the base none (and loops on 8).
    write_generations(tmp_path, "base", ["Item item item item item." if i < 8 else "Something else." for i in range(40)], recs)
    write_generations(tmp_path, "finetuned", [r["target"] if i < 30 else "No." for i, r in enumerate(recs)], recs)
    out = run_evaluate(tmp_path, params)
    head = json.loads((out / "evaluate.json").read_text())
    assert head["base_exact_match"] == 0 and head["finetuned_exact_match"] == 75.0
    assert head["delta_exact_match"] == 75.0
    # 75% of 40: binomial standard error sqrt(.75*.25/40) = 6.8 points, so the 95% interval
    # is about 75 +- 13.4.
    assert 58 <= head["delta_exact_match_low"] <= 65 and 85 <= head["delta_exact_match_high"] <= 90
    assert head["delta_exact_match_p"] < 0.01 and head["delta_chrf"] > 0
    assert head["base_degenerate_pct"] == 20.0 and head["finetuned_degenerate_pct"] == 0.0
    report = (out / "report.md").read_text()
    assert "finetuned is better than base on chrf (+" in report
    assert "### largest gain" in report and "### largest loss" in report


def test_evaluate_refuses_generations_of_other_samples(tmp_path):
    import pytest

    from repotune.errors import RepotuneError

    recs = records(4)
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", recs)
    params = write_params(tmp_path)
    write_generations(tmp_path, "base", ["a"] * 4, recs)
    write_generations(tmp_path, "finetuned", ["a"] * 3, recs[:3])
    with pytest.raises(RepotuneError, match="its samples are not those of test"):
        run_evaluate(tmp_path, params)


def test_the_trained_template_is_scored_by_default_and_leaving_it_out_is_said(tmp_path):
    import pytest

    from repotune.errors import RepotuneError

    recs = records(6)
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", recs)
    # The base writes code twice ("return a + b", an assignment) where a docstring is asked.
    base = ["return a + b", "x = read(path)"] + [r["target"] for r in recs[2:]]
    for system, outputs in (("base", base), ("finetuned", [r["target"] for r in recs])):
        write_generations(tmp_path, system, outputs, recs, "verbose")

    # generate.templates null (the default): the template trained on, and only it.
    trained = write_params(tmp_path, prompt={"template": "verbose"})
    head = json.loads((run_evaluate(tmp_path, trained) / "evaluate.json").read_text())
    assert head["template"] == "verbose" and head["trained_template"] == "verbose"
    assert head["trained_template_evaluated"] is True
    assert head["base_wrong_kind_pct"] == pytest.approx(100 * 2 / 6, abs=1e-4)
    assert head["finetuned_wrong_kind_pct"] == 0.0
    report = (tmp_path / "metrics/report.md").read_text()
    assert "Warning" not in report
    assert "wrong kind, for this task: code where a docstring is asked" in report

    # An explicit list wins; one that leaves the trained template out is flagged.
    with pytest.raises(RepotuneError, match="test.plain.jsonl: no outputs of 'base'"):
        run_evaluate(tmp_path, write_params(tmp_path, prompt={"template": "verbose"}, generate={"templates": ["plain"]}))
    for system in ("base", "finetuned"):
        write_generations(tmp_path, system, [r["target"] for r in recs], recs)
    out = run_evaluate(tmp_path, write_params(tmp_path, prompt={"template": "verbose"}, generate={"templates": ["plain"]}))
    head = json.loads((out / "evaluate.json").read_text())
    assert head["template"] == "plain" and head["trained_template_evaluated"] is False
    report = (out / "report.md").read_text()
    assert "> **Warning:** the adapter was trained with template `verbose` (prompt.template)" in report


def test_best_base_is_the_base_at_its_better_prompt_and_deltas_keep_their_names(tmp_path):
    recs = records(6)
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", recs)
    targets = [r["target"] for r in recs]
    write_generations(tmp_path, "base", ["No."] * 6, recs)  # the plain prompt: useless
    write_generations(tmp_path, "base_chat", targets[:3] + ["No."] * 3, recs)  # the chat prompt: half right
    write_generations(tmp_path, "finetuned", targets[:5] + ["No."], recs)
    head = json.loads((run_evaluate(tmp_path, write_params(tmp_path, generate={"systems": WITH_CHAT})) /
                       "evaluate.json").read_text())
    assert head["reference"] == "base_chat"  # evaluate.reference: best_base (the default)
    # delta_<metric> is the fine-tuned system's whatever else is compared: 5 of 6 against 3 of 6.
    assert head["delta_exact_match"] == round(100 * 2 / 6, 4)
    assert head["delta_base_exact_match"] == -50.0  # the other base: 0 of 6 against 3 of 6
    report = (tmp_path / "metrics/report.md").read_text()
    # By the primary metric (docstring: rouge_l): base 0, base_chat 3 of 6 targets word for word.
    assert ("The reference is the base model at its best prompt: base_chat scored higher on rouge_l on the headline "
            "evaluation (base 0.00, base_chat 50.00)") in report
    # scores.png: the paired differences from base_chat (finetuned +33, base -50) with their intervals.
    assert_not_blank(tmp_path / "metrics/plots/scores.png")
    assert ("`base` is prompted with the trained template, `base_chat` is prompted with the task's request "
            "through the model's chat template.") in report
    assert "the same prompts but for base_chat (the task's request through the model's chat template)" in report

    # An explicit reference still wins.
    out = run_evaluate(tmp_path, write_params(tmp_path, generate={"systems": WITH_CHAT},
                                              evaluate={"resamples": 200, "reference": "base"}), "metrics2")
    head = json.loads((out / "evaluate.json").read_text())
    assert head["reference"] == "base" and head["delta_exact_match"] == round(100 * 5 / 6, 4)
    assert head["delta_base_chat_exact_match"] == 50.0


def test_systems_are_named_in_params_and_the_roles_follow_their_models(tmp_path):
    """Any names: two systems on the base model (the better one is the reference, ties go to
    the first listed), the fine-tuned model's system owns the unprefixed delta_ keys."""
    recs = records(4)
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", recs)
    targets = [r["target"] for r in recs]
    write_generations(tmp_path, "plain", ["No."] * 4, recs)  # exact match 0
    write_generations(tmp_path, "plain_again", ["No."] * 4, recs)  # 0: a tie with plain
    write_generations(tmp_path, "tuned", targets[:3] + ["No."], recs)  # 75
    systems = {"plain": {"model": "models/base"}, "tuned": {"model": "models/merged"},
               "plain_again": {"model": "models/base"}}
    head = json.loads((run_evaluate(tmp_path, write_params(tmp_path, generate={"systems": systems})) /
                       "evaluate.json").read_text())
    assert head["reference"] == "plain"
    assert (head["plain_exact_match"], head["tuned_exact_match"], head["plain_again_exact_match"]) == (0, 75.0, 0)
    assert head["delta_exact_match"] == 75.0 and head["delta_plain_again_exact_match"] == 0
    report = (tmp_path / "metrics/report.md").read_text()
    assert report.startswith("# Evaluation, task `docstring`: plain vs tuned vs plain_again\n")
    assert ("Every system gets the same decoding (Settings, below), and the same prompts. Differences are taken "
            "against plain:") in report

    # A system listed but disabled (its folder says so) is left out; the reference must be one left.
    atomic.write_json(tmp_path / "data/generations/plain/system.json", {"enabled": False, "reason": "test"})
    head = json.loads((run_evaluate(tmp_path, write_params(tmp_path, generate={"systems": systems})) /
                       "evaluate.json").read_text())
    assert head["reference"] == "plain_again" and "plain_exact_match" not in head


def test_the_chat_baseline_asks_through_the_chat_template_or_says_why_not(tmp_path, lively_model):
    import shutil

    recs = records(3)
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", recs)
    params = write_params(tmp_path, decoding={"max_new_tokens": 4, "batch_size": 2}, generate={"systems": WITH_CHAT})
    # The tiny model has no chat template: base_chat is disabled with the reason, nothing generated.
    run_generate(tmp_path, params, "base_chat", lively_model)
    marker = json.loads((tmp_path / "data/generations/base_chat/system.json").read_text())
    assert marker == {"enabled": False, "reason": f"{lively_model}: the tokenizer has no chat template"}
    assert sorted(p.name for p in (tmp_path / "data/generations/base_chat").iterdir()) == ["system.json"]

    chatty = tmp_path / "chatty"
    shutil.copytree(lively_model, chatty)
    (chatty / "chat_template.jinja").write_text(
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    run_generate(tmp_path, params, "base_chat", chatty)
    rows = atomic.read_jsonl(tmp_path / "data/generations/base_chat/test.plain.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in recs]
    speed = json.loads((tmp_path / "metrics/generate/base_chat.json").read_text())
    assert speed["prompt"] == "chat" and speed["test.plain"]["samples"] == 3
    assert (speed["model"], speed["context"]) == ("models/base", "none")
    # The chat request is longer than the plain template around the same code.
    run_generate(tmp_path, params, "base", chatty)
    base_rows = atomic.read_jsonl(tmp_path / "data/generations/base/test.plain.jsonl")
    assert all(c["prompt_tokens"] > b["prompt_tokens"] + 20 for c, b in zip(rows, base_rows))


def test_a_system_with_decoding_of_its_own_decodes_with_it_and_the_report_says_so(tmp_path, lively_model):
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", records(4))
    beams = {"docstring": {"num_beams": 2, "length_penalty": 2.0}, "completion": {"num_beams": 3}}
    params = write_params(tmp_path, decoding={"max_new_tokens": 5, "batch_size": 4}, generate={"systems": {
        "base": {"model": "models/base"}, "finetuned": {"model": "models/merged", "decoding": beams}}})
    for system in ("base", "finetuned"):
        run_generate(tmp_path, params, system, lively_model)
    applied = {s: json.loads((tmp_path / f"metrics/generate/{s}.json").read_text())["decoding"]
               for s in ("base", "finetuned")}
    # The task's keys in place (not the completion ones), the rest from decoding.
    assert (applied["finetuned"]["num_beams"], applied["finetuned"]["length_penalty"]) == (2, 2.0)
    assert (applied["base"]["num_beams"], applied["base"]["length_penalty"]) == (1, 1.0)
    assert applied["finetuned"]["max_new_tokens"] == applied["base"]["max_new_tokens"] == 5
    rows = atomic.read_jsonl(tmp_path / "data/generations/finetuned/test.plain.jsonl")
    assert len(rows) == 4 and all(r["new_tokens"] <= 5 for r in rows)
    report = (run_evaluate(tmp_path, params) / "report.md").read_text()
    assert "Every system gets the same decoding (Settings, below) but for finetuned (num_beams 2, " \
           "length_penalty 2.0), and the same prompts." in report


def test_chat_answers_are_unwrapped_by_the_task():
    from repotune.tasks import docstring, method_name

    assert docstring.chat_answer('```python\ndef f(x):\n    """\n    Return x twice.\n    """\n```') == "Return x twice."
    assert docstring.chat_answer("/**\n * Returns the count.\n * @return the count\n */") == (
        "Returns the count.\n@return the count")
    assert docstring.chat_answer("```\nReturn the sum.\n```") == "Return the sum.\n"
    assert docstring.chat_answer("Return the sum.") == "Return the sum."
    assert method_name.chat_answer("The original name is `getFoo`.") == "getFoo"
    assert method_name.chat_answer("**readAll**") == "readAll"
    assert method_name.chat_answer("readAll") == "readAll"


def test_a_p_value_at_the_permutation_floor_prints_as_at_most_and_the_verdict_says_which_way():
    from repotune import report

    # 1000 permutations: no permutation as extreme gives two-sided p = 2 / 1001, printed 0.002.
    result = {"samples": 121, "p_min": round(2 / 1001, 4), "differences": {"finetuned": {
        "rouge_l": {"delta": 9.3754, "low": 7.7018, "high": 11.1703, "p": 0.002, "significant": True},
        "bleu": {"delta": -0.75, "low": -1.42, "high": -0.06, "p": 0.04, "significant": True},
        "chrf": {"delta": 0.2538, "low": -1.9, "high": 2.4, "p": 0.8012, "significant": False},
    }}}
    assert report.p_text(0.002, result) == "≤ 0.002" and report.p_text(0.012, result) == "0.012"
    ev = {"set": "test", "template": "plain", "result": result}
    assert report.verdict(ev, "rouge_l", "base", "finetuned", 0.95) == (
        "**test · plain, 121 samples:** finetuned is better than base: +9.38 rouge_l "
        "(95% CI [+7.70, +11.17], p ≤ 0.002).")
    assert report.verdict(ev, "bleu", "base", "finetuned", 0.95) == (
        "**test · plain, 121 samples:** finetuned is worse than base: -0.75 bleu "
        "(95% CI [-1.42, -0.06], p = 0.040).")
    assert report.verdict(ev, "chrf", "base", "finetuned", 0.95) == (
        "**test · plain, 121 samples:** finetuned cannot be told apart from base: +0.25 chrf "
        "(95% CI [-1.90, +2.40], p = 0.801), not significant at 95%.")


def test_scores_png_draws_the_paired_differences_with_their_intervals():
    from repotune import report

    ev = {"set": "ood", "template": "plain", "result": {"differences": {"finetuned": {
        "bleu": {"delta": 0.98, "low": 0.37, "high": 1.64}, "chrf": {"delta": 3.23, "low": 1.23, "high": 5.34}}}}}
    spec = report.differences_spec([ev], ["chrf", "bleu"], "base", 0.95)
    assert spec["title"] == "difference from base, with 95% paired bootstrap intervals"
    assert spec["data"]["values"] == [
        {"evaluation": "ood · plain", "metric": "bleu", "comparison": "finetuned − base", "delta": 0.98, "low": 0.37, "high": 1.64},
        {"evaluation": "ood · plain", "metric": "chrf", "comparison": "finetuned − base", "delta": 3.23, "low": 1.23, "high": 5.34},
    ]
    assert [layer["mark"] if isinstance(layer["mark"], str) else layer["mark"]["type"] for layer in spec["spec"]["layer"]] == [
        "bar", "rule", "rule"]


def test_pairs_of_evaluate_comparisons_are_compared_with_each_other_and_pairs_that_did_not_run_are_left_out(tmp_path):
    """evaluate.comparisons: [system, against] gets the paired difference system − against
    (not against the reference) in evaluate.json and the report; a pair naming a system that
    is not there is skipped, not an error."""
    recs = records(40)
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", recs)
    targets = [r["target"] for r in recs]
    write_generations(tmp_path, "base", ["No."] * 40, recs)  # exact match 0
    write_generations(tmp_path, "base_rag", targets[:10] + ["No."] * 30, recs)  # 25
    write_generations(tmp_path, "finetuned_rag", targets[:30] + ["No."] * 10, recs)  # 75
    systems = {"base": {"model": "models/base"}, "base_rag": {"model": "models/base"},
               "finetuned_rag": {"model": "models/merged"}}
    params = write_params(tmp_path, generate={"systems": systems}, evaluate={
        "reference": "base", "comparisons": [["finetuned_rag", "base_rag"], ["base_rag", "base"], ["finetuned_rag", "finetuned"]]})
    head = json.loads((run_evaluate(tmp_path, params) / "evaluate.json").read_text())
    assert head["finetuned_rag_vs_base_rag_exact_match"] == 50.0  # 75 − 25, not 75 − 0
    assert head["base_rag_vs_base_exact_match"] == 25.0
    assert head["finetuned_rag_vs_base_rag_exact_match_low"] > 0 and head["finetuned_rag_vs_base_rag_exact_match_p"] <= 0.01
    assert not any(key.startswith("finetuned_rag_vs_finetuned_") for key in head)  # finetuned did not run
    report = (tmp_path / "metrics/report.md").read_text()
    assert "| finetuned_rag − base_rag | " in report and "| base_rag − base | " in report
    assert "finetuned_rag − finetuned" not in report

    # Not a pair of two different systems: a params error before anything is read.
    import pytest
    from repotune.params import ParamsError, parse

    with pytest.raises(ParamsError, match="two different systems"):
        parse({"source": {"url": "."}, "evaluate": {"comparisons": [["base", "base"]]}})


def test_scores_are_split_by_whether_the_target_stands_in_the_retrieved_context(tmp_path):
    """A system that gains only where the retrieved context holds the answer is seen copying:
    the split in evaluate_details.json and the report puts the whole gain on those samples."""
    recs = records(40)
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", recs)
    targets = [r["target"] for r in recs]
    # The first 12 targets stand in their context; base_rag copies them and nothing else.
    atomic.write_jsonl(tmp_path / "data/retrieved/retrieval/test.jsonl", [
        {"id": r["id"], "chunks": [], "target_in_context": i < 12} for i, r in enumerate(recs)])
    write_generations(tmp_path, "base", ["No."] * 40, recs)
    write_generations(tmp_path, "base_rag", targets[:12] + ["No."] * 28, recs)
    write_generations(tmp_path, "base_prefix", ["No."] * 40, recs)
    systems = {"base": {"model": "models/base"}, "base_rag": {"model": "models/base", "context": "retrieval"},
               "base_prefix": {"model": "models/base", "context": "prefix"}}
    params = write_params(tmp_path, task={"name": "method_name"}, generate={"systems": systems}, retrieval={"enabled": True},
                          evaluate={"reference": "base", "comparisons": [["base_rag", "base_prefix"]]})
    out = run_evaluate(tmp_path, params)
    split = json.loads((out / "evaluate_details.json").read_text())["by_target_in_context"]
    assert split["metric"] == "exact_match"
    inside, outside = split["in_context"], split["not_in_context"]
    assert (inside["samples"], outside["samples"]) == (12, 28)
    assert inside["scores"] == {"base": 0.0, "base_rag": 100.0, "base_prefix": 0.0}
    assert inside["differences"]["base_rag - base"]["delta"] == 100.0
    assert inside["differences"]["base_rag - base"]["significant"]
    assert inside["differences"]["base_rag - base_prefix"]["delta"] == 100.0  # the extra pair, once
    assert outside["differences"]["base_rag - base"]["delta"] == 0.0
    assert not outside["differences"]["base_rag - base"]["significant"]
    report = (out / "report.md").read_text()
    section = report.split("## Copied or not")[1].split("\n## ")[0]
    assert "target in the retrieved context (n=12) | target not in it (n=28)" in section
    assert "| base_rag | 100.00 | 0.00 |" in section
    assert "| base_rag - base | **+100.00" in section and "+0.00 [+0.00, +0.00], p 1.000 n.s. |" in section

    # No system with context: no split, no section.
    params = write_params(tmp_path, task={"name": "method_name"},
                          generate={"systems": {"base": {"model": "models/base"}, "base_rag": {"model": "models/base"}}},
                          evaluate={"reference": "base", "comparisons": []})
    out = run_evaluate(tmp_path, params, out="plain")
    assert "by_target_in_context" not in json.loads((out / "evaluate_details.json").read_text())
    assert "## Copied or not" not in (out / "report.md").read_text()
