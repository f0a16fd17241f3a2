"""Stage `ood`: samples of other repositories, for the out-of-domain (forgetting) check.

Reads:  params.yaml `ood` (sources, one pinned source per language, and max_samples;
        null = no check), `task` (name and the task's own knobs), `extract` and
        `filter` (the same task, languages and filters as the training data), models/base/ (its tokenizer, for tasks that cut on
        model tokens)
Writes: data/ood.jsonl (filtered samples: each language of extract.languages mined from its
        own source, languages in name order; empty when there is none), metrics/ood.json
        (per language: url, resolved sha, files, samples extracted and kept, drops per reason,
        or why it was skipped; `enabled: false` and a one-line `skipped` when no sample is kept)
Run:    python stages/ood.py [--params params.yaml] [--out data/ood.jsonl]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, errors, ood, params
from repotune.extraction import worker_count
from repotune.tasks import task


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--base", type=Path, default=Path("models/base"), help="tokenizer (completion)")
    parser.add_argument("--out", type=Path, default=Path("data/ood.jsonl"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/ood.json"))
    args = parser.parse_args(argv)
    p = params.load(args.params)
    if p.ood is None:
        atomic.write_jsonl(args.out, [])
        atomic.write_json(args.metrics, {"enabled": False, "skipped": "ood is null"})
        print("ood: ood is null, no out-of-domain check")
        return

    sources = p.ood.sources
    tokenizer = None
    if task(p.task.name).NEEDS_TOKENIZER and any(lang in sources for lang in p.extract.languages):
        from repotune.modeling import load_tokenizer

        tokenizer = load_tokenizer(args.base)
    with atomic.scratch_dir(args.out) as tmp:
        kept, metrics = ood.mine(
            sources, task_name=p.task.name, extract=p.extract, filter_params=p.filter,
            own_extract=p.task.extract, own_filter=p.task.filter, scratch=tmp,
            tokenizer=tokenizer, workers=worker_count(p.extract.workers),
        )
    atomic.write_jsonl(args.out, kept)
    atomic.write_json(args.metrics, metrics)
    for language, m in metrics["languages"].items():
        if "sha" in m:
            print(f"ood: {language}: {m['samples']} of {m['samples_extracted']} samples kept from {m['url']} @ {m['sha'][:12]}")
        if "skipped" in m:
            print(f"ood: {language} skipped: {m['skipped']}")
    if not kept:
        print("ood: no out-of-domain samples, no out-of-domain check")


if __name__ == "__main__":
    sys.exit(errors.run(main))
