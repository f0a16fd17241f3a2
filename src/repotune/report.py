"""Human-facing outputs of the evaluate stage: per-sample rows, plots and a Markdown report.

Everything here is deterministic (sorted rows, no timestamps, no absolute paths), so the same
generations give the same bytes. Plots are Vega-Lite specs with their data inlined, rendered
to PNG offline by vl-convert (no CDN, no browser), so they read on a machine with no network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune.degenerate import CHECKS
from repotune.evaluation import Scored, gain_kept
from repotune.atomic import atomic_path, read_json
from repotune.metrics import METRICS

if TYPE_CHECKING:
    from repotune.params import SystemParams

# The reference system grey, the others in Tableau colours.
PALETTE = ["#9d9d9d", "#4c78a8", "#f58518", "#54a24b", "#e45756"]
# How each prompt kind of generate.systems is described in the report.
PROMPT_WORDS = {"trained": "the trained template", "chat": "the task's request through the model's chat template"}
# How each context kind of generate.systems is described in the report.
CONTEXT_WORDS = {
    "none": "its own code only",
    "retrieval": "chunks of other files of the repository (stage retrieve), as comments naming their path",
    "prefix": "as many more code tokens of its own file, just before its input (the same-budget control)",
}


def evaluation_title(set_name: str, template: str) -> str:
    return f"{set_name} · {template}"


def prediction_rows(evaluation: Mapping[str, Any], sample_metric: str) -> list[dict[str, Any]]:
    """One row per sample of one evaluation: provenance, reference, every system's output and
    its per-sample score, sorted by id."""
    result = evaluation["result"]
    rows = []
    for i, record in enumerate(evaluation["records"]):
        rows.append({
            "set": evaluation["set"],
            "template": evaluation["template"],
            "id": record["id"],
            "path": record.get("path"),
            "name": record.get("name"),
            "start_line": record.get("start_line"),
            "reference": record["target"],
            "outputs": {name: texts[i] for name, texts in evaluation["outputs"].items()},
            sample_metric: {name: scores[i] for name, scores in result["sample_scores"].items()},
        })
    return sorted(rows, key=lambda row: row["id"])


# --- plots ---------------------------------------------------------------------------------


def _by_evaluation(
    evaluations: Sequence[Mapping[str, Any]], title: str, values: list[dict[str, Any]], spec: dict[str, Any]
) -> dict[str, Any]:
    """A Vega-Lite spec of `values` (each with an ``evaluation`` field) drawn by `spec`, one row
    of panels per evaluation, in the order of `evaluations` (the headline first)."""
    order = [evaluation_title(ev["set"], ev["template"]) for ev in evaluations]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title,
        "data": {"values": values},
        "facet": {"row": {"field": "evaluation", "type": "nominal", "title": None, "sort": order}},
        "spec": spec,
    }


def differences_spec(
    evaluations: Sequence[Mapping[str, Any]], metric_names: Sequence[str], reference: str, confidence: float,
) -> dict:
    """Each other system's paired difference from `reference` per metric, with its paired
    bootstrap interval (what a significance claim rests on; the systems' own intervals may
    overlap while the paired one excludes 0) and a line at 0; one row of panels per evaluation."""
    values = [
        {
            "evaluation": evaluation_title(ev["set"], ev["template"]), "metric": metric,
            "comparison": f"{system} − {reference}", "delta": d["delta"], "low": d["low"], "high": d["high"],
        }
        for ev in evaluations
        for system, by_metric in ev["result"]["differences"].items()
        for metric, d in by_metric.items()
        if metric in metric_names
    ]
    comparisons = list(dict.fromkeys(v["comparison"] for v in values))
    x = {"field": "metric", "type": "nominal", "sort": list(metric_names), "title": None, "axis": {"labelAngle": -30}}
    offset = {"field": "comparison", "sort": comparisons}
    return _by_evaluation(
        evaluations, f"difference from {reference}, with {round(confidence * 100)}% paired bootstrap intervals",
        values,
        {
            "width": 80 * len(metric_names) + 40,
            "height": 220,
            "layer": [
                {
                    "mark": "bar",
                    "encoding": {
                        "x": x, "xOffset": offset,
                        "y": {"field": "delta", "type": "quantitative", "title": f"difference from {reference} (points)"},
                        "color": {"field": "comparison", "type": "nominal", "sort": comparisons, "title": None,
                                  "scale": {"range": PALETTE[1:]}},
                    },
                },
                {
                    "mark": {"type": "rule", "color": "black"},
                    "encoding": {
                        "x": x, "xOffset": offset,
                        "y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"},
                    },
                },
                {
                    "mark": {"type": "rule", "color": "gray", "strokeDash": [4, 4]},
                    "encoding": {"y": {"datum": 0, "type": "quantitative"}},
                },
            ],
        },
    )


def sample_deltas_spec(evaluations: Sequence[Mapping[str, Any]], sample_metric: str, reference: str) -> dict:
    """Histogram of per-sample differences (other system − reference) of `sample_metric`."""
    values = []
    for ev in evaluations:
        per_sample = ev["result"]["sample_scores"]
        for system, scores in per_sample.items():
            if system == reference:
                continue
            values += [
                {
                    "evaluation": evaluation_title(ev["set"], ev["template"]),
                    "comparison": f"{system} − {reference}",
                    "delta": round(score - base, 4),
                }
                for score, base in zip(scores, per_sample[reference])
            ]
    return _by_evaluation(
        evaluations, f"per-sample difference in {sample_metric}", values,
        {
            "width": 420,
            "height": 160,
            "layer": [
                {
                    "mark": "bar",
                    "encoding": {
                        "x": {"field": "delta", "bin": {"maxbins": 40}, "type": "quantitative",
                              "title": f"{sample_metric} difference per sample"},
                        "y": {"aggregate": "count", "type": "quantitative", "title": "samples"},
                        "color": {"field": "comparison", "type": "nominal", "title": None,
                                  "scale": {"range": PALETTE[1:]}},
                    },
                },
                {
                    "mark": {"type": "rule", "color": "gray", "strokeDash": [4, 4]},
                    "encoding": {"x": {"datum": 0, "type": "quantitative"}},
                },
            ],
        },
    )


def write_png(spec: Mapping[str, Any], path: str | Path, scale: float = 2.0) -> None:
    """Render a Vega-Lite spec to PNG offline with vl-convert (no CDN, no browser); atomic."""
    import vl_convert

    png = vl_convert.vegalite_to_png(dict(spec), scale=scale)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


# --- the Markdown report -------------------------------------------------------------------


def write_plots(
    evaluations: Sequence[Mapping[str, Any]], metric_names: Sequence[str], sample_metric: str,
    reference: str, confidence: float, folder: Path,
) -> None:
    """The report's two plots: `folder`/scores.png (every difference with its paired interval)
    and `folder`/sample_deltas.png (the per-sample differences on `sample_metric`)."""
    write_png(differences_spec(evaluations, metric_names, reference, confidence), folder / "scores.png")
    write_png(sample_deltas_spec(evaluations, sample_metric, reference), folder / "sample_deltas.png")


# The stages whose metrics the report's data summary reads, in the order it names them.
SUMMARISED_STAGES = ("clone", "extract", "filter", "split", "train", "ood")


def read_stage_metrics(folder: Path) -> dict[str, dict[str, Any]]:
    """metrics/<stage>.json of every stage of :data:`SUMMARISED_STAGES` that wrote one."""
    return {
        name: read_json(folder / f"{name}.json")
        for name in SUMMARISED_STAGES
        if (folder / f"{name}.json").is_file()
    }


def system_costs(systems: Sequence[str], generate_metrics: Path, head: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Parameters and generation tokens/s of each system on the headline evaluation, where
    known: ``metrics/generate/<system>.json`` (under `generate_metrics`), which generate@<system>
    writes. Timings are measured, so not deterministic; only the report shows them."""
    key = f"{head['set']}.{head['template']}"
    costs: dict[str, dict[str, Any]] = {s: {"parameters": None, "tokens_per_s": None} for s in systems}
    for system in systems:
        path = Path(generate_metrics) / f"{system}.json"
        if path.is_file():
            measured = read_json(path)
            costs[system] = {"parameters": measured.get("parameters"),
                             "tokens_per_s": measured.get(key, {}).get("tokens_per_s")}
    return costs


def _distillation(
    ev: Mapping[str, Any], metric_names: Sequence[str], reference: str, teacher: str,
    costs: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """How much of the `teacher` system's gain each other system kept, and at what cost."""
    scores = ev["result"]["scores"]
    students = [s for s in scores if s not in (teacher, reference)]
    head = ["metric", reference, teacher, *students, f"{teacher} gain",
            *(f"{s} gain (kept)" for s in students)]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for metric in metric_names:
        ref = scores[reference][metric]["score"]
        cells = [metric, f"{ref:.2f}", f"{scores[teacher][metric]['score']:.2f}"]
        cells += [f"{scores[s][metric]['score']:.2f}" for s in students]
        cells.append(_signed(scores[teacher][metric]["score"] - ref))
        for s in students:
            kept = gain_kept(scores, s, reference, metric, teacher)
            cells.append(f"{_signed(scores[s][metric]['score'] - ref)} ({'n/a' if kept is None else f'{kept:.0f}%'})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| system | parameters | generated tokens/s |", "|---|---:|---:|"]
    for system in scores:
        c = costs.get(system, {})
        params = f"{c['parameters'] / 1e6:.1f} M" if c.get("parameters") else "?"
        speed = f"{c['tokens_per_s']:.1f}" if c.get("tokens_per_s") else "?"
        lines.append(f"| {system} | {params} | {speed} |")
    return lines


def _fenced(text: str) -> str:
    """`text` in a fenced block whose fence is longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text or '(empty)'}\n{fence}"


def _signed(value: float) -> str:
    return f"{value:+.2f}"


def _score_table(ev: Mapping[str, Any], metric_names: Sequence[str], reference: str, confidence: float) -> list[str]:
    result = ev["result"]
    systems = list(result["scores"])
    others = [s for s in systems if s != reference]
    level = f"{round(confidence * 100)}%"
    head = ["metric", *systems]
    for other in others:
        head += [f"{other} − {reference}", f"{level} CI", "p"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for metric in metric_names:
        cells = [METRICS[metric].definition]
        for system in systems:
            s = result["scores"][system][metric]
            cells.append(f"{s['score']:.2f} [{s['low']:.2f}, {s['high']:.2f}]")
        for other in others:
            d = result["differences"][other][metric]
            mark = "" if d["significant"] else " (n.s.)"
            cells += [f"**{_signed(d['delta'])}**{mark}" if d["significant"] else f"{_signed(d['delta'])}{mark}",
                      f"[{_signed(d['low'])}, {_signed(d['high'])}]", p_text(d["p"], result)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _comparison_table(ev: Mapping[str, Any], metric_names: Sequence[str], confidence: float) -> list[str]:
    """The pairs of ``evaluate.comparisons`` on one evaluation: per pair and metric the paired
    difference, its interval and p (bold = significant); [] when there are none."""
    result = ev["result"]
    if not result.get("comparisons"):
        return []
    level = f"{round(confidence * 100)}%"
    lines = [f"Pairs compared with each other ({level} paired intervals, as above):", "",
             "| comparison | " + " | ".join(metric_names) + " |", "|---" + "|---:" * len(metric_names) + "|"]
    for name, by_metric in result["comparisons"].items():
        cells = []
        for metric in metric_names:
            d = by_metric[metric]
            delta = f"**{_signed(d['delta'])}**" if d["significant"] else _signed(d["delta"])
            cells.append(f"{delta} [{_signed(d['low'])}, {_signed(d['high'])}], p {_p_words(d['p'], result)}")
        lines.append(f"| {name.replace(' - ', ' − ')} | " + " | ".join(cells) + " |")
    return lines


def _in_words(ev: Mapping[str, Any], metric_names: Sequence[str], reference: str, confidence: float) -> list[str]:
    """One sentence per compared system: what changed significantly, what did not."""
    level = f"{round(confidence * 100)}%"
    sentences = []
    for other, diffs in ev["result"]["differences"].items():
        up = [m for m in metric_names if diffs[m]["significant"] and diffs[m]["delta"] > 0]
        down = [m for m in metric_names if diffs[m]["significant"] and diffs[m]["delta"] < 0]
        flat = [m for m in metric_names if not diffs[m]["significant"]]

        def listed(names: list[str]) -> str:
            return ", ".join(
                f"{n} ({_signed(diffs[n]['delta'])}, {level} CI [{_signed(diffs[n]['low'])}, "
                f"{_signed(diffs[n]['high'])}], p {_p_words(diffs[n]['p'], ev['result'])})" for n in names
            )

        parts = []
        if up:
            parts.append(f"{other} is better than {reference} on {listed(up)}.")
        if down:
            parts.append(f"{other} is worse than {reference} on {listed(down)}.")
        if flat:
            # Named in its own sentence: with no significant change it is the only one said.
            parts.append(
                f"{other} against {reference}, not significant at {level}: {', '.join(flat)}: on these "
                f"{ev['result']['samples']} samples the difference cannot be told from no change."
            )
        sentences.append(" ".join(parts))
    return sentences


def _context_split_table(split: Mapping[str, Any], confidence: float, result: Mapping[str, Any]) -> list[str]:
    """The headline metric on the samples whose target stands verbatim in the retrieved context
    and on the rest, every difference on each part: a gain only where the answer was in the
    context is a gain from copying. `result`: the whole evaluation's (its smallest p-value)."""
    parts = [("in_context", "target in the retrieved context"), ("not_in_context", "target not in it")]
    level = f"{round(confidence * 100)}%"
    lines = [f"{split['metric']} per part, each difference with its {level} paired interval and p-value.", "",
             "| | " + " | ".join(f"{words} (n={split[part]['samples']})" for part, words in parts) + " |",
             "|---|" + "---:|" * len(parts)]
    present = [part for part, _ in parts if split[part]["samples"]]
    if not present:
        return lines
    first = split[present[0]]
    for system in first["scores"]:
        lines.append(f"| {system} | " + " | ".join(
            f"{split[part]['scores'][system]:.2f}" if split[part]["samples"] else "–" for part, _ in parts) + " |")
    for name in first["differences"]:
        cells = []
        for part, _ in parts:
            d = split[part].get("differences", {}).get(name)
            if d is None:
                cells.append("–")
                continue
            text = f"{_signed(d['delta'])} [{_signed(d['low'])}, {_signed(d['high'])}], p {p_text(d['p'], result)}"
            cells.append(f"**{text}**" if d["significant"] else f"{text} n.s.")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _degenerate_table(evaluations: Sequence[Mapping[str, Any]]) -> list[str]:
    shares = ["repeats_line_pct", "ngram_loop_pct", "repeats_phrase_pct", "empty_pct", "echoes_input_pct",
              "nests_markup_pct", "wrong_kind_pct", "degenerate_pct"]
    head = ["evaluation", "system", "repeats a line", "n-gram loop", "repeats a phrase", "empty", "echoes input",
            "markup in markup", "wrong kind", "any",
            "mean tokens (reference)", "length ratio", "uses markup (reference)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---" + "|---:" * (len(head) - 2) + "|"]
    for ev in evaluations:
        for system, d in ev["result"]["degenerate"].items():
            cells = [evaluation_title(ev["set"], ev["template"]), system]
            cells += [f"{d[name]:.1f}%" for name in shares]
            cells += [f"{d['output_tokens_mean']:.1f} ({d['reference_tokens_mean']:.1f})", f"{d['length_ratio']:.2f}",
                      f"{d['markup_pct']:.1f}% ({d['reference_markup_pct']:.1f}%)"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _examples(ev: Mapping[str, Any], sample_metric: str, reference: str, count: int, input_lines: int = 12) -> list[str]:
    """Best, median and worst per-sample difference of the first other system (ties by id)."""
    result = ev["result"]
    others = [s for s in result["sample_scores"] if s != reference]
    if not others or count == 0:
        return []
    other = others[0]
    base, mine = result["sample_scores"][reference], result["sample_scores"][other]
    order = sorted(range(len(base)), key=lambda i: (mine[i] - base[i], ev["records"][i]["id"]))
    n = len(order)
    picks = {
        "largest gain": order[::-1][:count],
        "median": order[max(0, n // 2 - count // 2):][:count],
        "largest loss": order[:count],
    }
    lines = []
    for kind, indices in picks.items():
        for i in indices:
            record = ev["records"][i]
            where = f"{record.get('path')}:{record.get('start_line')}" if record.get("path") else record["id"]
            lines += [
                f"### {kind}: `{record.get('name')}` ({where})", "",
                f"{sample_metric}: {reference} {base[i]:.1f} → {other} {mine[i]:.1f} "
                f"({_signed(mine[i] - base[i])})", "",
            ]
            text = record["input"].splitlines()
            excerpt = "\n".join(text[-input_lines:]) if len(text) > input_lines else record["input"]
            parts = [(f"input (last {input_lines} lines)" if len(text) > input_lines else "input", excerpt),
                     ("reference", record["target"])]
            parts += [(s, outs[i]) for s, outs in ev["outputs"].items()]
            for part_label, part in parts:
                lines += [f"{part_label}:", _fenced(part), ""]
    return lines


def _data_summary(stage_metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = []
    clone = stage_metrics.get("clone")
    if clone:
        lines.append(f"- clone: `{clone['url']}` @ `{clone['sha'][:12]}`, {clone['files']} files")
    extract = stage_metrics.get("extract")
    if extract:
        lines.append(f"- extract: {extract['samples']} samples from {extract['files_parsed']} parsed files "
                     f"({extract.get('files_skipped_test', 0)} test files skipped, "
                     f"{extract.get('files_skipped_excluded', 0)} excluded)")
    filtered = stage_metrics.get("filter")
    if filtered:
        drops = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in sorted(filtered.items()) if k.startswith("dropped_"))
        lines.append(f"- filter: kept {filtered['kept']} of {filtered['seen']} (dropped: {drops or 'none'})")
    split = stage_metrics.get("split")
    if split:
        lines.append("- split: " + ", ".join(
            f"{n} {split[f'{n}_samples']} samples / {split[f'{n}_files']} files" for n in ("train", "val", "test")
        ))
    train = stage_metrics.get("train")
    if train:
        lines.append(
            f"- train: {train['train_samples']} samples ({train.get('samples_code_cut', 0)} with code cut to fit, "
            f"{train.get('samples_target_too_long', 0)} dropped), {train['steps']} steps, "
            f"{train['train_tokens']} tokens in {train['train_seconds']:.0f} s; train loss "
            f"{train['train_loss']:.3f}, eval loss {train['eval_loss']:.3f}"
        )
    ood = stage_metrics.get("ood")
    if ood and ood.get("enabled"):
        for language, m in ood.get("languages", {}).items():
            if "sha" in m:
                lines.append(f"- ood, {language}: `{m['url']}` @ `{m['sha'][:12]}`, {m['samples']} of "
                             f"{m['samples_extracted']} samples kept")
            else:
                lines.append(f"- ood, {language}: skipped ({m['skipped']})")
    elif ood:
        lines.append(f"- ood: no out-of-domain check: {ood.get('skipped', 'ood is null')}")
    return lines


def template_warnings(trained: str, templates: Sequence[str]) -> list[str]:
    """The report's warning when the evaluated `templates` (``generate.templates``) leave out
    the one the adapter was `trained` with (``prompt.template``); [] otherwise."""
    if trained in templates:
        return []
    return [
        f"the adapter was trained with template `{trained}` (prompt.template), which "
        f"generate.templates ({', '.join(templates)}) leaves out: every score here is of a prompt "
        "it never saw in training"
    ]


@dataclass(frozen=True)
class Setup:
    """What the report's first lines name: the base model (``model.base``), the adapter's LoRA
    settings and learning rate as applied, and the fine-tuned system (None: there is none)."""

    base: str
    lora_r: int
    lora_alpha: int
    lora_targets: Sequence[str] | str
    lr: float
    finetuned: str | None


def p_text(p: float, result: Mapping[str, Any]) -> str:
    """A p-value as printed: "≤ 0.002" at the smallest value the permutations can give
    (``p_min`` of the evaluation's result), where the true one may be lower; else 3 decimals."""
    floor = result.get("p_min")
    return f"≤ {floor:.3f}" if floor is not None and p <= floor else f"{p:.3f}"


def _p_words(p: float, result: Mapping[str, Any]) -> str:
    """``= 0.012`` or ``≤ 0.002``, to follow a "p"."""
    text = p_text(p, result)
    return text if text.startswith("≤") else f"= {text}"


def verdict(ev: Mapping[str, Any], metric: str, reference: str, system: str, confidence: float) -> str:
    """One sentence: how `system` compares with `reference` on `metric` in evaluation `ev`."""
    result = ev["result"]
    d = result["differences"][system][metric]
    level = f"{round(confidence * 100)}%"
    numbers = (f"{_signed(d['delta'])} {metric} ({level} CI [{_signed(d['low'])}, {_signed(d['high'])}], "
               f"p {_p_words(d['p'], result)})")
    where = f"{ev['set']} · {ev['template']}, {result['samples']} samples"
    if not d["significant"]:
        return f"**{where}:** {system} cannot be told apart from {reference}: {numbers}, not significant at {level}."
    word = "better" if d["delta"] > 0 else "worse"
    return f"**{where}:** {system} is {word} than {reference}: {numbers}."


def _setup_lines(
    evaluations: Sequence[Mapping[str, Any]], metric: str, reference: str, confidence: float,
    setup: Setup, train: Mapping[str, Any] | None,
) -> list[str]:
    """The report's first lines: what was compared (base, adapter, training budget) and one
    verdict per evaluation on the primary `metric`."""
    targets = setup.lora_targets if isinstance(setup.lora_targets, str) else ", ".join(setup.lora_targets)
    trained = (f"{train['train_samples']} train samples, {train['steps']} steps in "
               f"{train['train_seconds'] / 60:.1f} min" if train else "training summary not found")
    lines = [f"Base model `{setup.base}`; adapter LoRA r {setup.lora_r}, alpha {setup.lora_alpha} on "
             f"{targets}, lr {setup.lr:g}; {trained}. Primary metric: {metric}."]
    system = setup.finetuned
    others = list(evaluations[0]["result"]["differences"])
    if system not in others:
        system = others[0] if len(others) == 1 else None
    if system is not None:
        lines += [""] + [f"- {verdict(ev, metric, reference, system, confidence)}" for ev in evaluations]
    return lines


def own_decoding_words(systems: Mapping[str, SystemParams], task_name: str) -> str:
    """The systems that decode task `task_name` with keys of their own, in words
    (``generate.systems.<name>.decoding.<task>``): "finetuned (num_beams 4, length_penalty 1.5)";
    empty when none does."""
    own = {name: s.decoding[task_name].model_dump(exclude_none=True) for name, s in systems.items()
           if task_name in s.decoding}
    return "; ".join(f"{name} ({', '.join(f'{key} {value}' for key, value in keys.items())})"
                     for name, keys in own.items() if keys)


# long: the report's sections in the order they are printed, each a few lines over helpers
# that do the work; read top to bottom it is the report's outline.
def render_report(
    task_name: str,
    scored: Scored,
    metric_names: Sequence[str],
    *,
    stage_metrics: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
    signatures: Mapping[str, str],
    costs: Mapping[str, Mapping[str, Any]] | None = None,
    warnings: Sequence[str] = (),
    wrong_kind_rule: str = "",
    setup: Setup | None = None,
    by_context: Mapping[str, Any] | None = None,
) -> str:
    """The Markdown report of the evaluate stage (see the module docstring of stages/evaluate.py)
    on what :func:`repotune.evaluation.score_systems` `scored`.

    A table says what each system is (model, context, prompt), one line why each listed system
    that did not run did not, and one how the reference was chosen when it is the base at its
    best prompt. With a teacher among the systems, a section says how much of its gain the
    others kept and at what cost (`costs`: see :func:`system_costs`). Each of `warnings` (a
    setting that makes the numbers mean less than they seem) is one line right under the title.
    `by_context`: the headline split by whether the target stands in the retrieved context (see
    :func:`repotune.evaluation.split_by_context`)."""
    evaluations, sample_metric, reference = scored.evaluations, scored.params.primary, scored.params.reference
    confidence, resamples, examples = scored.params.confidence, scored.params.resamples, scored.params.examples
    base_scores, teacher, not_run, systems = scored.base_scores, scored.teacher, scored.not_run, scored.systems
    systems_listed = list(evaluations[0]["result"]["scores"])
    prompt_of = {s: systems[s].prompt if s in systems else "trained" for s in systems_listed}
    chat = [s for s in systems_listed if prompt_of[s] == "chat"]
    level = f"{round(confidence * 100)}%"
    own_decoding = own_decoding_words(systems, task_name)
    lines = [
        f"# Evaluation, task `{task_name}`: " + " vs ".join(systems_listed),
        "",
        *(_setup_lines(evaluations, sample_metric, reference, confidence, setup, stage_metrics.get("train"))
          + [""] if setup is not None else []),
        *[f"> **Warning:** {warning}\n" for warning in warnings],
        "Every system gets the same decoding (Settings, below)"
        + (f" but for {own_decoding}" if own_decoding else "")
        + ", and the same prompts"
        + (f" but for {', '.join(chat)} ({PROMPT_WORDS['chat']}). " if chat else ". ")
        + "Differences are taken against "
        f"{reference}: {level} paired bootstrap intervals ({resamples} resamples of the "
        f"samples, corpus metrics recomputed on each, percentile method) and two-sided p-values "
        f"of a paired approximate-randomization test ({resamples} permutations); **bold** = "
        f"significant at {level}, n.s. = not. Scores show their own {level} interval in brackets.",
    ]
    if systems:
        lines += ["", "| system | model | context | prompt |", "|---|---|---|---|"]
        lines += [f"| {s} | `{systems[s].model}` | {systems[s].context}: {CONTEXT_WORDS[systems[s].context]} "
                  f"| {PROMPT_WORDS[prompt_of[s]]} |" for s in systems_listed if s in systems]
    if not_run:
        lines += ["", "Not run: " + "; ".join(f"{s} ({why})" for s, why in not_run.items()) + "."]
    if base_scores and len(base_scores) > 1:
        compared = ", ".join(f"{s} {score:.2f}" for s, score in base_scores.items())
        lines += ["", f"The reference is the base model at its best prompt: {reference} scored higher on "
                      f"{sample_metric} on the headline evaluation ({compared}); "
                      + ", ".join(f"`{s}` is prompted with {PROMPT_WORDS[prompt_of.get(s, 'trained')]}"
                                  for s in base_scores) + "."]
    for ev in evaluations:
        where = "held-out files of the training repository" if ev["set"] == "test" else "another repository, out of domain"
        lines += ["", f"## {ev['set']}, template `{ev['template']}`: {ev['result']['samples']} samples ({where})", ""]
        lines += _score_table(ev, metric_names, reference, confidence)
        lines += [""] + _in_words(ev, metric_names, reference, confidence)
        comparisons = _comparison_table(ev, metric_names, confidence)
        lines += [""] + comparisons if comparisons else []
    head = evaluations[0]
    if by_context:
        lines += ["", f"## Copied or not: {evaluation_title(head['set'], head['template'])}, by whether the target "
                      "stands in the retrieved context", ""] + _context_split_table(by_context, confidence, head["result"])
    if teacher in head["result"]["scores"] and reference != teacher:
        lines += ["", f"## Teacher and student: {evaluation_title(head['set'], head['template'])}", "",
                  f"The gain over {reference} of each system, and the share of the teacher's ({teacher}) gain it "
                  "kept (100% = as good as the teacher), then what each costs to run: parameters and "
                  "generated tokens/s on this evaluation (measured, same decoding settings; the machine "
                  "may have been shared).", ""]
        lines += _distillation(head, metric_names, reference, teacher, costs or {})
    lines += ["", "## Degenerate outputs", "",
              "Share of outputs per check (see Definitions); a model that learned the project's "
              "style should not trade it for loops or copies of the input, and should use the "
              "project's markup about as often as the references do.", ""]
    lines += _degenerate_table(evaluations)
    summary = _data_summary(stage_metrics)
    if summary:
        lines += ["", "## Data and training", ""] + summary
    lines += ["", "## Plots", "", "![differences with paired intervals](plots/scores.png)", "",
              "![per-sample differences](plots/sample_deltas.png)"]
    lines += ["", f"## Examples: {evaluation_title(head['set'], head['template'])}, per-sample {sample_metric}", ""]
    lines += _examples(head, sample_metric, reference, examples) or ["(none)"]

    lines += ["", "## Definitions", ""]
    lines += [f"- `{name}`: {METRICS[name].definition}" for name in metric_names]
    lines += [f"- `{name}` signature: `{sig}`" for name, sig in signatures.items() if name in metric_names]
    lines += [f"- degenerate `{name}`: {text}" for name, text in CHECKS.items()]
    if wrong_kind_rule:
        lines.append(f"- wrong kind, for this task: {wrong_kind_rule}")
    lines += ["", "Settings:", ""] + [f"- {key}: `{value!r}`" for key, value in settings.items()]
    lines += ["", "Per-sample outputs are in `predictions.jsonl`; all numbers in `evaluate_details.json`; "
              "generation speed in `generate/<system>.json`."]
    return "\n".join(lines).rstrip() + "\n"
