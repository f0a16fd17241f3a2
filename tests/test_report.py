"""repotune.report on small hand-made evaluations: tables, sentences, sections and plots.

The evaluation below is written by hand (two systems, two metrics, three samples), and so is
every expected line: a change in how the report reads shows here as a diff of text.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_not_blank, png_rows

from repotune import report
from repotune.evaluation import Scored
from repotune.metrics import METRICS
from repotune.params import EvaluateParams


def _diff(delta: float, low: float, high: float, p: float, significant: bool) -> dict:
    return {"delta": delta, "low": low, "high": high, "p": p, "significant": significant}


def _degenerate(ngram: float, wrong: float) -> dict:
    return {"repeats_line_pct": 0.0, "ngram_loop_pct": ngram, "repeats_phrase_pct": 0.0, "empty_pct": 0.0,
            "echoes_input_pct": 0.0, "nests_markup_pct": 0.0, "wrong_kind_pct": wrong, "degenerate_pct": max(ngram, wrong),
            "output_tokens_mean": 12.3, "reference_tokens_mean": 10.0, "length_ratio": 1.23,
            "markup_pct": 0.0, "reference_markup_pct": 100 / 3}


def evaluation(set_name: str = "test") -> dict:
    """One (set, template) evaluation as repotune.evaluation.evaluate_generations gives it."""
    records = [
        {"id": "a", "path": "pkg/m.py", "start_line": 1, "name": "fa", "input": "\n".join(f"x{i}" for i in range(14)),
         "target": "Return a."},
        {"id": "b", "path": "pkg/m.py", "start_line": 11, "name": "fb", "input": "def fb(): ...", "target": "Return b."},
        {"id": "c", "path": "pkg/m.py", "start_line": 21, "name": "fc", "input": "def fc(): ...",
         "target": "Use ``` fences."},
    ]
    return {
        "set": set_name, "template": "plain", "records": records,
        "outputs": {"base": ["Return x.", "Return b.", ""], "finetuned": ["Return a.", "Return c.", "Use ``` fences."]},
        "result": {
            "samples": 3, "p_min": 0.002,
            "scores": {
                "base": {"chrf": {"score": 40.0, "low": 35.5, "high": 44.25}, "bleu": {"score": 10.0, "low": 8.0, "high": 12.0}},
                "finetuned": {"chrf": {"score": 50.0, "low": 45.0, "high": 55.0},
                              "bleu": {"score": 9.5, "low": 7.0, "high": 12.5}},
            },
            "differences": {"finetuned": {"chrf": _diff(10.0, 5.0, 15.0, 0.002, True),
                                          "bleu": _diff(-0.5, -2.25, 1.0, 0.5, False)}},
            "comparisons": {"finetuned_rag - finetuned": {"chrf": _diff(2.0, 0.5, 3.5, 0.01, True),
                                                          "bleu": _diff(-1.0, -3.0, 1.0, 0.3, False)}},
            "sample_scores": {"base": [10.0, 50.0, 90.0], "finetuned": [60.0, 40.0, 90.0]},
            "degenerate": {"base": _degenerate(100 / 3, 200 / 3), "finetuned": _degenerate(0.0, 0.0)},
        },
    }


def test_score_table_has_scores_with_intervals_and_the_difference_with_p():
    assert report._score_table(evaluation(), ["chrf", "bleu"], "base", 0.95) == [
        "| metric | base | finetuned | finetuned − base | 95% CI | p |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {METRICS['chrf'].definition} | 40.00 [35.50, 44.25] | 50.00 [45.00, 55.00] | **+10.00** | [+5.00, +15.00] "
        "| ≤ 0.002 |",
        f"| {METRICS['bleu'].definition} | 10.00 [8.00, 12.00] | 9.50 [7.00, 12.50] | -0.50 (n.s.) | [-2.25, +1.00] "
        "| 0.500 |",
    ]


def test_comparison_table_lists_each_pair_and_is_empty_without_pairs():
    ev = evaluation()
    assert report._comparison_table(ev, ["chrf", "bleu"], 0.9) == [
        "Pairs compared with each other (90% paired intervals, as above):",
        "",
        "| comparison | chrf | bleu |",
        "|---|---:|---:|",
        "| finetuned_rag − finetuned | **+2.00** [+0.50, +3.50], p = 0.010 | -1.00 [-3.00, +1.00], p = 0.300 |",
    ]
    ev["result"]["comparisons"] = {}
    assert report._comparison_table(ev, ["chrf", "bleu"], 0.9) == []
    del ev["result"]["comparisons"]
    assert report._comparison_table(ev, ["chrf", "bleu"], 0.9) == []


def test_in_words_says_what_changed_and_what_cannot_be_told_from_no_change():
    ev = evaluation()
    assert report._in_words(ev, ["chrf", "bleu"], "base", 0.95) == [
        "finetuned is better than base on chrf (+10.00, 95% CI [+5.00, +15.00], p ≤ 0.002). "
        "finetuned against base, not significant at 95%: bleu: on these 3 samples the difference cannot be "
        "told from no change."
    ]
    ev["result"]["differences"]["finetuned"]["bleu"] = _diff(-1.5, -2.5, -0.5, 0.03, True)
    assert report._in_words(ev, ["chrf", "bleu"], "base", 0.95) == [
        "finetuned is better than base on chrf (+10.00, 95% CI [+5.00, +15.00], p ≤ 0.002). "
        "finetuned is worse than base on bleu (-1.50, 95% CI [-2.50, -0.50], p = 0.030)."
    ]


def test_verdict_of_a_worse_system_and_setup_lines_name_the_run():
    ev = evaluation()
    assert report.verdict(ev, "chrf", "base", "finetuned", 0.95) == (
        "**test · plain, 3 samples:** finetuned is better than base: +10.00 chrf (95% CI [+5.00, +15.00], p ≤ 0.002).")
    setup = report.Setup(base="HuggingFaceTB/SmolLM2-135M", lora_r=8, lora_alpha=16, lora_targets=["q_proj", "v_proj"],
                         lr=1.0e-3, finetuned="finetuned")
    train = {"train_samples": 120, "steps": 30, "train_seconds": 90.0}
    assert report._setup_lines([ev, evaluation("ood")], "chrf", "base", 0.95, setup, train) == [
        "Base model `HuggingFaceTB/SmolLM2-135M`; adapter LoRA r 8, alpha 16 on q_proj, v_proj, lr 0.001; "
        "120 train samples, 30 steps in 1.5 min. Primary metric: chrf.",
        "",
        "- **test · plain, 3 samples:** finetuned is better than base: +10.00 chrf (95% CI [+5.00, +15.00], p ≤ 0.002).",
        "- **ood · plain, 3 samples:** finetuned is better than base: +10.00 chrf (95% CI [+5.00, +15.00], p ≤ 0.002).",
    ]


def test_degenerate_table_one_row_per_evaluation_and_system():
    lines = report._degenerate_table([evaluation()])
    assert lines[1] == "|---|---" + "|---:" * 11 + "|"
    assert lines[2:] == [
        "| test · plain | base | 0.0% | 33.3% | 0.0% | 0.0% | 0.0% | 0.0% | 66.7% | 66.7% | 12.3 (10.0) | 1.23 | 0.0% (33.3%) |",
        "| test · plain | finetuned | 0.0% | 0.0% | 0.0% | 0.0% | 0.0% | 0.0% | 0.0% | 0.0% | 12.3 (10.0) | 1.23 | 0.0% (33.3%) |",
    ]


def test_examples_are_the_largest_gain_the_median_and_the_largest_loss():
    lines = report._examples(evaluation(), "chrf", "base", 1)
    # Per-sample differences: a +50, b -10, c 0.
    assert [line for line in lines if line.startswith("###")] == [
        "### largest gain: `fa` (pkg/m.py:1)", "### median: `fc` (pkg/m.py:21)", "### largest loss: `fb` (pkg/m.py:11)",
    ]
    gain = lines[: lines.index("### median: `fc` (pkg/m.py:21)")]
    assert gain[2] == "chrf: base 10.0 → finetuned 60.0 (+50.00)"
    assert "input (last 12 lines):" in gain and "```text\n" + "\n".join(f"x{i}" for i in range(2, 14)) + "\n```" in gain
    median = lines[lines.index("### median: `fc` (pkg/m.py:21)"):]
    # A fence longer than any backtick run inside; an empty output says so.
    assert "````text\nUse ``` fences.\n````" in median and "```text\n(empty)\n```" in median
    assert report._examples(evaluation(), "chrf", "base", 0) == []


def test_data_summary_reads_the_stage_metrics():
    stage_metrics = {
        "clone": {"url": "pypi:attrs==25.3.0", "sha": "0123456789abcdef0123", "files": 12},
        "filter": {"seen": 10, "kept": 7, "dropped_short": 2, "dropped_duplicate": 1},
        "split": {"train_samples": 5, "train_files": 2, "val_samples": 1, "val_files": 1, "test_samples": 1,
                  "test_files": 1},
        "ood": {"enabled": False},
    }
    assert report._data_summary(stage_metrics) == [
        "- clone: `pypi:attrs==25.3.0` @ `0123456789ab`, 12 files",
        "- filter: kept 7 of 10 (dropped: duplicate 1, short 2)",
        "- split: train 5 samples / 2 files, val 1 samples / 1 files, test 1 samples / 1 files",
        "- ood: no out-of-domain check: ood is null",
    ]


def test_prediction_rows_are_sorted_by_id_with_every_output_and_score():
    ev = evaluation()
    ev["records"] = ev["records"][::-1]  # c, b, a
    ev["outputs"] = {k: v[::-1] for k, v in ev["outputs"].items()}
    ev["result"]["sample_scores"] = {k: v[::-1] for k, v in ev["result"]["sample_scores"].items()}
    rows = report.prediction_rows(ev, "chrf")
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0] == {"set": "test", "template": "plain", "id": "a", "path": "pkg/m.py", "name": "fa", "start_line": 1,
                       "reference": "Return a.", "outputs": {"base": "Return x.", "finetuned": "Return a."},
                       "chrf": {"base": 10.0, "finetuned": 60.0}}


def test_render_report_puts_the_sections_in_order():
    scored = Scored(
        systems={}, not_run={"base_rag": "retrieval.enabled is false"},
        evaluations=[evaluation(), evaluation("ood")],
        params=EvaluateParams(reference="base", primary="chrf", confidence=0.95, resamples=1000, examples=1),
        base_scores={}, finetuned="finetuned", teacher=None,
    )
    text = report.render_report(
        "docstring", scored, ["chrf", "bleu"],
        stage_metrics={"clone": {"url": "u", "sha": "0123456789abcdef", "files": 3}},
        settings={"decoding.max_new_tokens": 64}, signatures={"chrf": "nrefs:1|case:mixed"},
        warnings=["only 3 test samples"], wrong_kind_rule="code, not prose",
        setup=report.Setup(base="m", lora_r=8, lora_alpha=16, lora_targets="all-linear", lr=2.0e-4,
                           finetuned="finetuned"),
    )
    assert text.startswith("# Evaluation, task `docstring`: base vs finetuned\n\nBase model `m`; adapter LoRA r 8, "
                           "alpha 16 on all-linear, lr 0.0002; training summary not found. Primary metric: chrf.\n")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## test, template `plain`: 3 samples (held-out files of the training repository)",
        "## ood, template `plain`: 3 samples (another repository, out of domain)",
        "## Degenerate outputs", "## Data and training", "## Plots", "## Examples: test · plain, per-sample chrf",
        "## Definitions",
    ]
    assert "> **Warning:** only 3 test samples\n" in text
    assert "\nNot run: base_rag (retrieval.enabled is false).\n" in text
    assert text.count("| finetuned_rag − finetuned | **+2.00**") == 2  # one comparison table per evaluation
    assert "- `chrf` signature: `nrefs:1|case:mixed`" in text and "- wrong kind, for this task: code, not prose" in text
    assert text.endswith("- decoding.max_new_tokens: `64`\n\nPer-sample outputs are in `predictions.jsonl`; all numbers "
                         "in `evaluate_details.json`; generation speed in `generate/<system>.json`.\n")
    # No teacher among the systems: no teacher section.
    assert "Teacher and student" not in text


def test_sample_deltas_spec_holds_each_samples_difference():
    spec = report.sample_deltas_spec([evaluation()], "chrf", "base")
    assert spec["title"] == "per-sample difference in chrf"
    assert [v["delta"] for v in spec["data"]["values"]] == [50.0, -10.0, 0.0]
    assert {v["comparison"] for v in spec["data"]["values"]} == {"finetuned − base"}


@pytest.mark.parametrize("name", ["differences", "sample_deltas"])
def test_plots_render_offline_to_a_png_that_is_not_blank(name, tmp_path: Path):
    evaluations = [evaluation(), evaluation("ood")]
    spec = {
        "differences": lambda: report.differences_spec(evaluations, ["chrf", "bleu"], "base", 0.95),
        "sample_deltas": lambda: report.sample_deltas_spec(evaluations, "chrf", "base"),
    }[name]()
    path = tmp_path / f"{name}.png"
    report.write_png(spec, path)
    assert_not_blank(path)
    # Two rows of panels (test, ood): taller than one.
    one = tmp_path / "one.png"
    report.write_png({**spec, "data": {"values": [v for v in spec["data"]["values"] if v["evaluation"] == "test · plain"]}},
                     one)
    assert len(png_rows(path)) > len(png_rows(one))
