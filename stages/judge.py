"""Stage `judge`: an instruct model rates each sample's target 1..5 (``judge``).

Reads:  data/filtered.jsonl, models/base (the judge when ``judge.model`` is null),
        data/judge/cache/ (scores of earlier runs, persisted), params.yaml `judge`
        (all but threshold: the split stage applies it) and `task`
Writes: data/judge/scores.jsonl (id, score, digit_mass, model, prompt_sha256; sorted by id;
        empty when the judge is disabled: no model is loaded), data/judge/cache/ (scores by
        sha256 of model, prompt and sample; the materialised judge model when it is not the
        base), metrics/judge.json (samples, scored, cached, mean score)
Run:    python stages/judge.py [--params params.yaml] [--max-samples N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, errors, params
from repotune.tasks import task


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--in", dest="inp", type=Path, default=Path("data/filtered.jsonl"))
    parser.add_argument("--base", type=Path, default=Path("models/base"))
    parser.add_argument("--out", type=Path, default=Path("data/judge"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/judge.json"))
    parser.add_argument("--max-samples", type=int, default=0, help="first N samples by id (measurements; 0 = all)")
    args = parser.parse_args(argv)
    p = params.load(args.params)
    enabled = p.judge.enabled

    cache_folder = args.out / "cache"
    cache_folder.mkdir(parents=True, exist_ok=True)
    cache_file = cache_folder / "scores.jsonl"
    if not enabled:
        if not cache_file.exists():
            atomic.write_jsonl(cache_file, [])
        atomic.write_jsonl(args.out / "scores.jsonl", [])
        atomic.write_json(args.metrics, {"enabled": False})
        print("judge: disabled (judge.enabled: false), nothing scored")
        return

    from repotune.judge import judge_model_folder, judge_samples, read_cache
    from repotune.modeling import peak_memory_mib, set_threads

    judge = p.judge
    template = judge.prompt if judge.prompt is not None else task(p.task.name).JUDGE_PROMPT
    set_threads(judge.threads)
    records = sorted(atomic.read_jsonl(args.inp), key=lambda r: r["id"])
    records = records[: args.max_samples] if args.max_samples else records
    folder = judge_model_folder(judge.model, args.base, cache_folder)
    cache = read_cache(cache_file)
    started = time.perf_counter()
    rows, counts = judge_samples(
        records, folder, cache, template, p.task.name,
        chat_template=judge.chat_template, max_code_tokens=judge.max_code_tokens,
        batch_size=judge.batch_size,
        trust_remote_code=judge.model.trust_remote_code if judge.model else False,
    )
    seconds = time.perf_counter() - started
    atomic.write_jsonl(cache_file, [{"key": k, **v} for k, v in sorted(cache.items())])
    atomic.write_jsonl(args.out / "scores.jsonl", rows)
    atomic.write_json(args.metrics, {"enabled": True, **counts, "peak_memory_mib": peak_memory_mib()})
    per = f", {seconds / counts['scored']:.2f} s per scored sample" if counts["scored"] else ""
    print(f"judge: {counts['samples']} samples, {counts['scored']} scored, {counts['cached']} cached{per}; "
          f"mean score {counts['mean_score']}")


if __name__ == "__main__":
    sys.exit(errors.run(main))
