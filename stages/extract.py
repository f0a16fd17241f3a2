"""Stage `extract`: mine task samples from the checked-out repository with tree-sitter.

Reads:  data/repo/, metrics/clone.json (url and sha for provenance), models/base/ (its
        tokenizer, for tasks that cut on model tokens: completion),
        params.yaml `task` (name, and the task's own `task.<name>.extract`) and `extract`
        (languages, include/exclude/exclude_tests, generated, max_file_bytes)
Writes: data/extracted.jsonl (one sample per line, sorted by path and line)
        metrics/extract.json (files seen/parsed/skipped per reason: test, excluded, ...;
        definitions, samples per kind)
Run:    python stages/extract.py [--params params.yaml] [--repo data/repo] [--out data/extracted.jsonl]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, errors, params
from repotune.extraction import iter_samples, worker_count
from repotune.tasks import task


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repo", type=Path, default=Path("data/repo"))
    parser.add_argument("--base", type=Path, default=Path("models/base"), help="tokenizer (completion)")
    parser.add_argument("--clone-metrics", type=Path, default=Path("metrics/clone.json"))
    parser.add_argument("--out", type=Path, default=Path("data/extracted.jsonl"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/extract.json"))
    args = parser.parse_args(argv)
    p = params.load(args.params)
    if not args.repo.is_dir():
        raise errors.RepotuneError(f"{args.repo} is not a folder: run the clone stage first")
    clone = atomic.read_json(args.clone_metrics)

    tokenizer = None
    if task(p.task.name).NEEDS_TOKENIZER:
        # Completion windows are cut on the base model's own token boundaries.
        if not (args.base / "config.json").is_file():
            raise errors.RepotuneError(f"{args.base}: no model folder (run the base stage first)")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.base)

    # Records go to disk file by file as the workers return them (memory stays flat); the
    # check for none raises inside the write, so an empty run leaves the old output in place.
    counts: Counter = Counter()
    records = iter_samples(
        args.repo, repo=clone["url"], sha=clone["sha"], task_name=p.task.name, extract=p.extract,
        own=p.task.extract, counts=counts, tokenizer=tokenizer, workers=worker_count(p.extract.workers),
    )
    atomic.write_jsonl(args.out, _none_is_an_error(records, counts, p, args.repo))
    # clone copies no symbolic link (one could point outside the repository): say so here too.
    counts["symlinks_skipped_at_clone"] = clone.get("symlinks_skipped", 0)
    atomic.write_json(args.metrics, dict(counts))
    print(f"extract: {counts['samples']} samples from {counts['files_parsed']} files")


def _none_is_an_error(records, counts: Counter, p: params.Params, repo: Path):
    yield from records
    if not counts["samples"]:
        raise errors.RepotuneError(
            f"extract: no {p.task.name} samples in {repo} for languages {p.extract.languages} "
            f"({counts['files_seen']} files of them seen, {counts['files_parsed']} parsed, "
            f"{counts['files_skipped_test']} skipped as tests, {counts['files_skipped_excluded']} excluded); "
            "check extract.languages, extract.include/exclude/exclude_tests and source.url"
        )


if __name__ == "__main__":
    sys.exit(errors.run(main))
