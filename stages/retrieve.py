"""Stage `retrieve`: context for every sample from the rest of the repository, without leaks.

Reads:  data/repo/, metrics/clone.json (url and sha of the chunks' repository),
        data/split/{train,val,test}.jsonl, data/ood.jsonl, params.yaml `retrieval` (enabled,
        chunking, windows, top_k, context_tokens, query_lines, exclude), `task.name` (its
        query and the leaks it refuses), `extract` languages, max_file_bytes and generated
        (which files are code), `split.near_duplicates` (what a near-duplicate target is)
Writes: data/retrieved/<context>/{train,val,test,ood}.jsonl, one folder per context kind a
        system may see (generate.systems.<name>.context; generate@<name> depends on its own):
        retrieval/: per sample, in split order: id, path, repo and sha of the context, chunks
        best first with path, start/end line, score and text cut to retrieval.context_tokens
        code tokens in all, target_in_context; prefix/ (the same-budget control): the same
        record with one chunk, the sample's own file just before its input, cut to the same
        budget (none for out-of-domain samples); none/: empty files.
        metrics/retrieve.json (files and chunks indexed, seconds, ms per sample, chunks
        refused per reason, prefixes trimmed per reason, per split). Disabled: every file
        empty, the repository is not read.
Run:    python stages/retrieve.py [--params params.yaml] [--repo data/repo] [--out data/retrieved]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, errors, params, retrieval


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repo", type=Path, default=Path("data/repo"))
    parser.add_argument("--clone-metrics", type=Path, default=Path("metrics/clone.json"))
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--ood", type=Path, default=Path("data/ood.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("data/retrieved"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/retrieve.json"))
    args = parser.parse_args(argv)
    p = params.load(args.params)
    settings = p.retrieval
    inputs = {name: args.split / f"{name}.jsonl" for name in ("train", "val", "test")} | {"ood": args.ood}

    if not settings.enabled:
        with atomic.atomic_path(args.out) as out:
            for context in retrieval.CONTEXTS:
                (out / context).mkdir(parents=True)
                for name in retrieval.SPLITS:
                    atomic.write_jsonl(out / context / f"{name}.jsonl", [])
        atomic.write_json(args.metrics, {"enabled": False})
        print("retrieve: retrieval.enabled is false, empty context files")
        return

    if not args.repo.is_dir():
        raise errors.RepotuneError(f"{args.repo} is not a folder: run the clone stage first")
    clone = atomic.read_json(args.clone_metrics)
    index_counts: Counter = Counter()
    started, cpu = time.perf_counter(), time.process_time()
    index = retrieval.build_index(
        args.repo, languages=p.extract.languages, retrieval=settings, max_file_bytes=p.extract.max_file_bytes,
        generated=p.extract.generated, counts=index_counts,
    )
    index_seconds, index_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    train_paths = retrieval.train_files({name: atomic.iter_jsonl(inputs[name]) for name in ("train", "val", "test")})
    retriever = retrieval.Retriever(
        index, args.repo, task_name=p.task.name, retrieval=settings, near=p.split.near_duplicates,
        train_paths=train_paths, repo=clone["url"], sha=clone["sha"],
    )
    split_counts = {name: Counter() for name in retrieval.SPLITS}
    prefix_counts = {name: Counter() for name in retrieval.SPLITS}
    with atomic.atomic_path(args.out) as out:
        for context in retrieval.CONTEXTS:
            (out / context).mkdir(parents=True)
        for name in retrieval.SPLITS:
            records = retrieval.retrieve_split(retriever, atomic.iter_jsonl(inputs[name]), name, split_counts[name])
            atomic.write_jsonl(out / "retrieval" / f"{name}.jsonl", records)
            atomic.write_jsonl(out / "prefix" / f"{name}.jsonl", (
                retriever.prefix(record, name, prefix_counts[name]) for record in atomic.iter_jsonl(inputs[name])
            ))
            atomic.write_jsonl(out / "none" / f"{name}.jsonl", [])
    metrics = retrieval.summary(index_counts, split_counts, index_seconds, index_cpu_seconds, prefix_counts)
    atomic.write_json(args.metrics, metrics)
    print(
        f"retrieve: {metrics['chunks_indexed']} chunks of {metrics['files_indexed']} files in "
        f"{metrics['seconds_index']:.1f} s ({metrics['cpu_seconds_index']:.1f} s CPU); {metrics['samples']} samples "
        f"at {metrics['ms_per_sample']:.1f} ms each ({metrics['cpu_ms_per_sample']:.1f} ms CPU), "
        f"{metrics['samples_without_context']} without context"
    )


if __name__ == "__main__":
    sys.exit(errors.run(main))
