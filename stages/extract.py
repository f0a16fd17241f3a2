"""Stage `extract`: mine task samples from the checked-out repository with tree-sitter.

Reads:  data/repo/, metrics/clone.json (url and sha for provenance),
        params.yaml `task` (name, language) and `extract` (target, include, exclude, max_file_bytes)
Writes: data/extracted.jsonl (one sample per line, sorted by path and line)
        metrics/extract.json (files seen/parsed/skipped per reason, definitions, samples per kind)
Run:    python stages/extract.py [--params params.yaml] [--repo data/repo] [--out data/extracted.jsonl]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import errors, io, params
from repotune.tasks import extract_samples


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repo", type=Path, default=Path("data/repo"))
    parser.add_argument("--clone-metrics", type=Path, default=Path("metrics/clone.json"))
    parser.add_argument("--out", type=Path, default=Path("data/extracted.jsonl"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/extract.json"))
    args = parser.parse_args(argv)
    p = params.load(args.params)
    if not args.repo.is_dir():
        raise errors.RepotuneError(f"{args.repo} is not a folder: run the clone stage first")
    clone = io.read_json(args.clone_metrics)

    records, counts = extract_samples(
        args.repo,
        repo=clone["url"],
        sha=clone["sha"],
        task=p.task.name,
        lang=p.task.language,
        target=p.extract.target,
        include=p.extract.include,
        exclude=p.extract.exclude,
        max_file_bytes=p.extract.max_file_bytes,
    )
    io.write_jsonl(args.out, records)
    io.write_json(args.metrics, dict(counts))
    print(f"extract: {counts['samples']} samples from {counts['files_parsed']} files")


if __name__ == "__main__":
    sys.exit(errors.run(main))
