"""Stage `split`: deterministic train/val/test split, grouped by file (or by sample).

Reads:  data/filtered.jsonl, data/judge/scores.jsonl (empty when the judge is disabled),
        params.yaml `split` (by, seed, train, val, test, near_duplicates, and
        min_test_samples: a test split smaller than that stops the pipeline here) and
        `judge.threshold` (samples rated below it are dropped)
Writes: data/split/{train,val,test}.jsonl, metrics/split.json (samples and files per split,
        after near-duplicate removal; near-duplicates found, leaked from train, removed;
        dropped_judge_low)
Run:    python stages/split.py [--params params.yaml] [--in data/filtered.jsonl] [--out data/split]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, errors, params
from repotune.dedup import remove_near_duplicates
from repotune.split import judge_low, split_counts, split_samples


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--in", dest="inp", type=Path, default=Path("data/filtered.jsonl"))
    parser.add_argument("--scores", type=Path, default=Path("data/judge/scores.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("data/split"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/split.json"))
    args = parser.parse_args(argv)
    p = params.load(args.params)
    split_params = p.split

    records = atomic.read_jsonl(args.inp)
    low = judge_low(records, atomic.read_jsonl(args.scores), p.judge.threshold)
    splits, counts = split_samples([r for r in records if r["id"] not in low], split_params)
    near = split_params.near_duplicates
    if near.enabled:
        started = time.perf_counter()
        splits, near_counts = remove_near_duplicates(
            splits, fields=near.fields, threshold=near.threshold, num_perm=near.num_perm, ngram=near.ngram,
            min_tokens=near.min_tokens, cross_split=near.cross_split, within_train=near.within_train,
            seed=split_params.seed,
        )
        counts = {**split_counts(splits, split_params), **near_counts}
        print(f"split: near-duplicates in {time.perf_counter() - started:.1f} s: " + ", ".join(
            f"{k} {v}" for k, v in sorted(near_counts.items())))
    counts["dropped_judge_low"] = len(low)
    empty = [name for name in ("train", "test") if not splits[name]]
    if empty:
        sizes = ", ".join(f"{name} {len(records)}" for name, records in splits.items())
        raise errors.RepotuneError(
            f"split: the {' and '.join(empty)} split is empty ({sizes} samples); raise "
            f"split.{empty[0]} (now {getattr(split_params, empty[0])}) or use more of the repository"
        )
    minimum = split_params.min_test_samples
    if len(splits["test"]) < minimum:
        sizes = ", ".join(f"{name} {len(records)}" for name, records in splits.items())
        raise errors.RepotuneError(
            f"split: the test split has {len(splits['test'])} samples, fewer than "
            f"split.min_test_samples={minimum} ({sizes}): scores on so few mean little. Raise "
            "split.test, keep more samples (loosen filter and task.<name>.filter, e.g. "
            "task.docstring.filter.min_target_tokens), or "
            "point source.url at more of the repository; split.min_test_samples: 0 goes on anyway"
        )
    with atomic.atomic_path(args.out) as out:
        out.mkdir()
        for name, records in splits.items():
            atomic.write_jsonl(out / f"{name}.jsonl", records)
    atomic.write_json(args.metrics, counts)
    print("split: " + ", ".join(f"{name} {len(records)}" for name, records in splits.items()))


if __name__ == "__main__":
    sys.exit(errors.run(main))
