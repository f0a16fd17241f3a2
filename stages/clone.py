"""Stage `clone`: check out the source repository at its pinned revision.

Reads:  params.yaml `source` (url: git URL, local path, pypi:NAME==VERSION or npm:NAME@VERSION;
        rev; submodules)
Writes: data/repo/ (the working tree at the pinned commit: regular files only, no .git)
        metrics/clone.json (url, requested rev, resolved 40-char sha, file counts; for a
        package also the archive members written and skipped by reason)
Run:    python stages/clone.py [--params params.yaml] [--out data/repo] [--metrics metrics/clone.json]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, errors, params, sources


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/repo"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/clone.json"))
    args = parser.parse_args(argv)
    source = params.load(args.params).source

    with atomic.scratch_dir(args.out) as tmp:
        checkout = tmp / "checkout"
        sha, unpacked = sources.clone(source.url, source.rev, checkout, submodules=source.submodules)
        with atomic.atomic_path(args.out) as out:
            out.mkdir()
            counts = sources.export_tree(checkout, out)

    metrics = {"url": source.url, "rev": source.rev, "sha": sha, **unpacked, **counts}
    atomic.write_json(args.metrics, metrics)
    print(f"clone: {source.url} @ {source.rev} -> {sha}, {counts['files']} files")
    if not sources.is_package(source.url) and not sha.startswith(source.rev.lower()):
        # DVC sees params and files, not a remote branch: new commits on it re-run nothing.
        print(f"clone: source.rev {source.rev!r} is a branch or tag, pinned at {sha[:12]} until the next "
              "clone; to take its newer commits: dvc repro -f clone && dvc repro")


if __name__ == "__main__":
    sys.exit(errors.run(main))
