"""Human-facing outputs of the benchmark: per-sample rows, a plot and a Markdown report.

Everything here is deterministic (sorted rows, no timestamps, no absolute paths), so a re-run
on the same predictions gives the same bytes. Timing figures are not part of these outputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from repotune.metrics import DIGITS

SYSTEMS = {"base": "base", "finetuned": "fine-tuned"}


def prediction_rows(
    records: Sequence[Mapping[str, Any]],
    base: Sequence[str],
    finetuned: Sequence[str],
    sample_scores: Callable[[Sequence[str], Sequence[str]], list[float]],
) -> list[dict[str, Any]]:
    """One row per test sample with both outputs and their per-sample score, sorted by id.

    Args:
        records: test records (``id``, ``target`` and provenance ``path``, ``name``, ...).
        base: the base model's output for each record, same order.
        finetuned: the fine-tuned model's output for each record, same order.
        sample_scores: the task's per-sample scorer (``SAMPLE_METRIC``).

    Returns:
        Rows with keys id, path, name, start_line, reference, base, finetuned, base_score,
        finetuned_score, delta_score.
    """
    references = [r["target"] for r in records]
    base_score = sample_scores(base, references)
    finetuned_score = sample_scores(finetuned, references)
    rows = [
        {
            "id": record["id"],
            "path": record.get("path"),
            "name": record.get("name"),
            "start_line": record.get("start_line"),
            "input": record["input"],
            "reference": record["target"],
            "base": b,
            "finetuned": f,
            "base_score": bs,
            "finetuned_score": fs,
            "delta_score": round(fs - bs, DIGITS),
        }
        for record, b, f, bs, fs in zip(records, base, finetuned, base_score, finetuned_score)
    ]
    return sorted(rows, key=lambda row: row["id"])


def plot_spec(
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    metric_names: Sequence[str],
    sample_metric: str,
) -> dict[str, Any]:
    """A Vega-Lite spec: metric bars base vs fine-tuned, and the per-sample score of each.

    Points above the diagonal of the scatter are samples the fine-tuned model does better on.
    The data is inlined, so the spec renders offline (see :func:`write_png`).
    """
    bars = [
        {"metric": name, "system": label, "score": summary[f"{key}_{name}"]}
        for name in metric_names
        for key, label in SYSTEMS.items()
    ]
    points = [
        {"id": r["id"], "name": r["name"], "base": r["base_score"], "finetuned": r["finetuned_score"]}
        for r in rows
    ]
    axis = {"scale": {"domain": [0, 100]}}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"base vs fine-tuned on {summary['samples']} test samples",
        "hconcat": [
            {
                "title": "corpus metrics",
                "data": {"values": bars},
                "mark": "bar",
                "width": 260,
                "height": 260,
                "encoding": {
                    "x": {
                        "field": "metric",
                        "type": "nominal",
                        "sort": list(metric_names),
                        "title": None,
                        "axis": {"labelAngle": 0},
                    },
                    "xOffset": {"field": "system", "sort": list(SYSTEMS.values())},
                    "y": {"field": "score", "type": "quantitative", "title": "score (0-100)", **axis},
                    "color": {"field": "system", "sort": list(SYSTEMS.values()), "title": None},
                },
            },
            {
                "title": f"per-sample {sample_metric}",
                "width": 260,
                "height": 260,
                "layer": [
                    {
                        "data": {"values": [{"x": 0, "y": 0}, {"x": 100, "y": 100}]},
                        "mark": {"type": "line", "color": "gray", "strokeDash": [4, 4]},
                        "encoding": {
                            "x": {"field": "x", "type": "quantitative"},
                            "y": {"field": "y", "type": "quantitative"},
                        },
                    },
                    {
                        "data": {"values": points},
                        "mark": {"type": "point", "filled": True, "opacity": 0.6, "color": "#e45756"},
                        "encoding": {
                            "x": {"field": "base", "type": "quantitative", "title": f"base {sample_metric}", **axis},
                            "y": {
                                "field": "finetuned",
                                "type": "quantitative",
                                "title": f"fine-tuned {sample_metric}",
                                **axis,
                            },
                            "tooltip": [{"field": "id"}, {"field": "name"}],
                        },
                    },
                ],
            },
        ],
    }


def write_png(spec: Mapping[str, Any], path: str | Path, scale: float = 2.0) -> None:
    """Render a Vega-Lite spec to PNG offline with vl-convert (no CDN, no browser); atomic."""
    import vl_convert

    from repotune.io import atomic_path

    png = vl_convert.vegalite_to_png(dict(spec), scale=scale)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


def _fenced(text: str) -> str:
    """`text` in a fenced block whose fence is longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text or '(empty)'}\n{fence}"


def _example(row: Mapping[str, Any], sample_metric: str, input_lines: int = 12) -> str:
    where = f"{row['path']}:{row['start_line']}" if row.get("path") else row["id"]
    head = (
        f"### `{row['name']}` ({where})\n\n"
        f"{sample_metric} base {row['base_score']:.1f} → fine-tuned {row['finetuned_score']:.1f} "
        f"({row['delta_score']:+.1f})\n"
    )
    lines = row["input"].splitlines()
    excerpt = "\n".join(lines[-input_lines:]) if len(lines) > input_lines else row["input"]
    parts = [
        (f"input (last {input_lines} lines)" if len(lines) > input_lines else "input", excerpt),
        ("reference", row["reference"]),
        ("base", row["base"]),
        ("fine-tuned", row["finetuned"]),
    ]
    return head + "".join(f"\n{label}:\n{_fenced(text)}\n" for label, text in parts)


def render_report(
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    metric_labels: Mapping[str, str],
    sample_metric: str,
    settings: Mapping[str, Any] | None = None,
    examples: int = 3,
) -> str:
    """The Markdown report: metric table base vs fine-tuned vs delta, then example outputs.

    Args:
        summary: the flat metrics of ``metrics.compare``.
        rows: per-sample rows of :func:`prediction_rows`.
        metric_labels: the task's metrics, name -> how it is computed (table order).
        sample_metric: the name of the per-sample score of the rows.
        settings: what to state about the run (prompt, decoding, ...), shown as a list.
        examples: how many of the largest per-sample gains and losses to show.

    Returns:
        The report text, ending in a newline.
    """
    lines = [
        "# Benchmark: base vs fine-tuned" + (f", task `{summary['task']}`" if summary.get("task") else ""),
        "",
        f"{summary['samples']} held-out test samples, same prompt and decoding for both models.",
        "",
        "| metric | base | fine-tuned | delta |",
        "|---|---:|---:|---:|",
    ]
    for name, label in metric_labels.items():
        lines.append(
            f"| {label} | {summary[f'base_{name}']:.2f} | {summary[f'finetuned_{name}']:.2f} "
            f"| {summary[f'delta_{name}']:+.2f} |"
        )
    if settings:
        lines += ["", "Settings:", ""]
        lines += [f"- {key}: `{value!r}`" for key, value in settings.items()]
    lines += [
        "",
        "Generation speed (tokens/s) is in `benchmark_speed.json`; per-sample outputs are in "
        "`predictions.jsonl`; the plot is `benchmark.png`.",
    ]
    # Ties broken by id so that the choice of examples is deterministic.
    gains = sorted((r for r in rows if r["delta_score"] > 0), key=lambda r: (-r["delta_score"], r["id"]))
    losses = sorted((r for r in rows if r["delta_score"] < 0), key=lambda r: (r["delta_score"], r["id"]))
    for title, chosen in (("Largest gains", gains), ("Largest losses", losses)):
        lines += ["", f"## {title} (per-sample {sample_metric})", ""]
        if not chosen:
            lines.append("None: no sample scores differently in this direction.")
        lines += [_example(row, sample_metric) for row in chosen[:examples]]
    return "\n".join(lines).rstrip() + "\n"
