"""Stage `benchmark`: base vs fine-tuned model on the held-out test split.

Reads models/base/, models/merged/, data/split/test.jsonl and the params sections benchmark,
decoding and prompt. Both models get the same prompts and the same decoding. Writes into
metrics/:

- benchmark.json: flat corpus metrics per model and their deltas (deterministic),
- benchmark_speed.json: generated tokens/s and wall time per model (NOT deterministic),
- predictions.jsonl: per-sample outputs and chrF, sorted by id,
- benchmark_plot.json + benchmark.png: per-sample chrF base vs fine-tuned, rendered offline,
- report.md: metric table and the largest per-sample gains and losses.

    python stages/benchmark.py [--params params.yaml] [--out metrics]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from repotune import errors, io, params


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--base", default="models/base")
    parser.add_argument("--merged", default="models/merged")
    parser.add_argument("--test", default="data/split/test.jsonl")
    parser.add_argument("--out", default="metrics", help="folder for the outputs listed above")
    args = parser.parse_args(argv)
    p = params.load(args.params)

    from repotune import metrics, report
    from repotune.generation import generate_from_folder
    from repotune.modeling import resolve_device, resolve_precision, set_threads
    from repotune.prompts import build_prompt

    # Sorted by id, so that max_samples picks the same samples whatever the file order.
    records = sorted(io.read_jsonl(args.test), key=lambda r: r["id"])
    if p.benchmark.max_samples:
        records = records[: p.benchmark.max_samples]
    if not records:
        raise errors.RepotuneError(f"{args.test}: no test samples to benchmark")
    prompts = [build_prompt(p.prompt.docstring, r) for r in records]
    references = [r["target"] for r in records]

    set_threads(p.benchmark.threads)
    device = resolve_device(p.benchmark.device)
    precision = resolve_precision("auto", device)
    decoding = p.decoding.model_dump()
    runs = {
        name: generate_from_folder(folder, prompts, device=device, precision=precision, desc=name, **decoding)
        for name, folder in (("base", args.base), ("finetuned", args.merged))
    }

    summary = metrics.compare(references, runs["base"].texts, runs["finetuned"].texts)
    rows = report.prediction_rows(records, runs["base"].texts, runs["finetuned"].texts)
    speed = {"device": device, "threads": p.benchmark.threads, "batch_size": p.decoding.batch_size}
    for name, run in runs.items():
        speed[f"{name}_tokens_per_s"] = round(run.tokens_per_second, 2)
        speed[f"{name}_seconds"] = round(run.seconds, 2)
        speed[f"{name}_generated_tokens"] = sum(run.new_tokens)

    out = args.out
    io.write_json(f"{out}/benchmark.json", summary)
    io.write_json(f"{out}/benchmark_speed.json", speed)
    io.write_jsonl(f"{out}/predictions.jsonl", rows)
    io.write_json(
        f"{out}/benchmark_plot.json",
        [{"id": r["id"], "base_chrf": r["base_chrf"], "finetuned_chrf": r["finetuned_chrf"]} for r in rows],
    )
    report.write_png(report.plot_spec(summary, rows), f"{out}/benchmark.png")
    settings = {"prompt": p.prompt.docstring, **decoding, "device": device, "precision": precision}
    io.write_text(f"{out}/report.md", report.render_report(summary, rows, settings))
    print(io.dumps(summary))


if __name__ == "__main__":
    sys.exit(errors.run(main))
