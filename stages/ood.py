"""Stage `ood`: samples of a second repository, for the out-of-domain (forgetting) check.

Reads:  params.yaml `benchmark` (ood: url, rev, submodules, max_samples; null = no check),
        `task`, `extract` and `filter` (the same task, languages and filters as the training
        data), models/base/ (its tokenizer, for tasks that cut on model tokens)
Writes: data/ood.jsonl (filtered samples, sorted as extract sorts them; empty when
        benchmark.ood is null), metrics/ood.json (url, resolved sha, files, samples extracted
        and kept, drops per reason)
Run:    python stages/ood.py [--params params.yaml] [--out data/ood.jsonl]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import errors, io, params, sources
from repotune.filters import filter_samples
from repotune.tasks import extract_samples, task, worker_count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--base", type=Path, default=Path("models/base"), help="tokenizer (completion)")
    parser.add_argument("--out", type=Path, default=Path("data/ood.jsonl"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/ood.json"))
    args = parser.parse_args(argv)
    p = params.load(args.params)
    ood = p.benchmark.ood
    if ood is None:
        io.write_jsonl(args.out, [])
        io.write_json(args.metrics, {"enabled": False})
        print("ood: benchmark.ood is null, no out-of-domain check")
        return

    tokenizer = None
    if task(p.task.name).NEEDS_TOKENIZER:
        from repotune.modeling import load_tokenizer

        tokenizer = load_tokenizer(args.base)
    with io.scratch_dir(args.out) as tmp:
        checkout, tree = tmp / "checkout", tmp / "tree"
        sha, _ = sources.clone(ood.url, ood.rev, checkout, submodules=ood.submodules)
        tree.mkdir()
        files = sources.export_tree(checkout, tree)
        records, extracted = extract_samples(
            tree, repo=ood.url, sha=sha, task_name=p.task.name, extract=p.extract, tokenizer=tokenizer,
            workers=worker_count(p.extract.workers),
        )
    kept, filtered = filter_samples(records, p.filter, p.task.name)
    if not kept:
        raise errors.RepotuneError(
            f"ood: no {p.task.name} samples kept from {ood.url} ({extracted['samples']} extracted, "
            f"{extracted['files_parsed']} files parsed); choose another benchmark.ood.url or set it to null"
        )
    io.write_jsonl(args.out, kept)
    drops = {k: v for k, v in sorted(filtered.items()) if k.startswith("dropped_")}
    io.write_json(args.metrics, {
        "enabled": True, "url": ood.url, "rev": ood.rev, "sha": sha, "files": files["files"],
        "files_parsed": extracted["files_parsed"], "samples_extracted": extracted["samples"],
        "samples": len(kept), **drops,
    })
    print(f"ood: {len(kept)} of {extracted['samples']} samples kept from {ood.url} @ {sha[:12]}")


if __name__ == "__main__":
    sys.exit(errors.run(main))
