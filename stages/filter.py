"""Stage `filter`: drop short, excluded and duplicate samples; truncate long inputs.

Reads:  data/extracted.jsonl, params.yaml `filter` and `task` (name, and the knobs of the task's own drop
        reasons, `task.<name>.filter`)
Writes: data/filtered.jsonl, metrics/filter.json (seen, kept, dropped per reason, truncated)
Run:    python stages/filter.py [--params params.yaml] [--in data/extracted.jsonl] [--out data/filtered.jsonl]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, errors, params
from repotune.filters import filter_samples


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--in", dest="inp", type=Path, default=Path("data/extracted.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("data/filtered.jsonl"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/filter.json"))
    args = parser.parse_args(argv)
    p = params.load(args.params)

    kept, counts = filter_samples(atomic.iter_jsonl(args.inp), p.filter, p.task.name, p.task.filter)
    if not kept:
        dropped = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in sorted(counts.items()) if k.startswith("dropped_"))
        raise errors.RepotuneError(
            f"filter: none of {counts['seen']} samples kept (dropped: {dropped or 'none'}); "
            "loosen the filter params behind the largest reason (filter.*, task.<name>.filter.*)"
        )
    atomic.write_jsonl(args.out, kept)
    atomic.write_json(args.metrics, dict(counts))
    print(f"filter: kept {counts['kept']} of {counts['seen']} samples")


if __name__ == "__main__":
    sys.exit(errors.run(main))
