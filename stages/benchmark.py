"""Stage `benchmark`: base vs fine-tuned model on the held-out test split.

Reads models/base/, models/merged/, data/split/test.jsonl and the params sections benchmark,
decoding, prompt, task, extract (a completion target's shape decides its stops) and
train.max_length (long code is cut to fit it, as in training). Both models get the same prompts and the same decoding. Writes into
metrics/:

- benchmark.json: flat corpus metrics per model and their deltas (deterministic),
- benchmark_speed.json: generated tokens/s and wall time per model (NOT deterministic),
- predictions.jsonl: per-sample outputs and the task's per-sample score, sorted by id,
- benchmark_plot.json + benchmark.png: per-sample score base vs fine-tuned, rendered offline,
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
    from repotune.modeling import load_tokenizer, resolve_device, resolve_precision, set_threads
    from repotune.prompts import Prompter
    from repotune.tasks import task

    module = task(p.task.name)
    # Sorted by id, so that max_samples picks the same samples whatever the file order.
    records = sorted(io.read_jsonl(args.test), key=lambda r: r["id"])
    if p.benchmark.max_samples:
        records = records[: p.benchmark.max_samples]
    if not records:
        raise errors.RepotuneError(f"{args.test}: no test samples to benchmark")
    prompter = Prompter.from_params(p.prompt, p.task.name)
    tokenizer = load_tokenizer(args.base)  # the merged model keeps the base's tokenizer
    # As in training, long code is cut to fit train.max_length, here with room for the longest
    # answer allowed (decoding.max_new_tokens), so no reference length leaks into the prompt.
    budget = max(1, p.train.max_length - p.decoding.max_new_tokens)
    fitted = [prompter.fitted_prompt(r, tokenizer, budget) for r in records]
    prompts = [f[0] if f is not None else prompter.prompt(r, tokenizer) for f, r in zip(fitted, records)]
    references = [r["target"] for r in records]

    set_threads(p.benchmark.threads)
    device = resolve_device(p.benchmark.device)
    precision = resolve_precision("auto", device)
    stop = p.decoding.stop if p.decoding.stop is not None else module.default_stop(p.extract)
    decoding = {**p.decoding.model_dump(), "stop": stop}
    runs = {
        name: generate_from_folder(
            folder, prompts, device=device, precision=precision, desc=name,
            skip_leading_whitespace=module.STOP_AFTER_LEADING_WHITESPACE, **decoding,
        )
        for name, folder in (("base", args.base), ("finetuned", args.merged))
    }
    outputs = {
        name: [module.postprocess(raw, stop, p.extract) for raw in run.raw_texts]
        for name, run in runs.items()
    }

    summary = {"task": p.task.name, **metrics.compare(references, outputs, module.score)}
    rows = report.prediction_rows(records, outputs["base"], outputs["finetuned"], module.sample_scores)
    summary["prompts_code_cut"] = sum(1 for f in fitted if f is not None and f[1])
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
        [{"id": r["id"], "base_score": r["base_score"], "finetuned_score": r["finetuned_score"]} for r in rows],
    )
    report.write_png(
        report.plot_spec(summary, rows, list(module.METRICS), module.SAMPLE_METRIC), f"{out}/benchmark.png"
    )
    settings = {
        "task": p.task.name, "languages": p.extract.languages, "prompt": prompter.template,
        "chat_template": prompter.chat_template, **decoding, "device": device, "precision": precision,
    }
    text = report.render_report(summary, rows, module.METRICS, module.SAMPLE_METRIC, settings)
    io.write_text(f"{out}/report.md", text)
    print(io.dumps(summary))


if __name__ == "__main__":
    sys.exit(errors.run(main))
