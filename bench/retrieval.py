"""The retrieve stage: which retriever and chunking find more useful context, and what it costs.

quality: mines a task's samples from a checked-out repository (`--repo`, e.g. data/repo) with
the pipeline's own extract, filter and split, then retrieves every sample's context (as a test sample's: the whole repository but its own
file) with
each retriever (bm25: the library's, bm25s over each chunk's identifiers; jaccard: RepoCoder's
Jaccard of identifier sets over the same chunks, the alternative it was chosen against) and each chunking (lines, definitions), at
the same budget (retrieval defaults: top 2, 300 code tokens). Model-free usefulness: of the
identifiers of a sample's target that its input lacks (what the model cannot copy from its own
prompt), the share found in its context (micro-averaged: found / sought over all samples); the
share of samples whose target stands verbatim in the context; ms per sample.

    python bench/retrieval.py quality --repo data/repo [--task completion --base models/base]
        [--out bench/results/retrieval_quality.json]

cost: builds a git repository from `--source` (default: the running Python's standard library,
~2,000 .py files), runs clone, extract, filter, judge, split (docstring samples, no model) and
retrieve (enabled) as `python stages/<stage>.py` in a work folder, and reports the retrieve
stage's index build seconds, retrieval ms per sample (metrics/retrieve.json) and peak RSS (GNU
time, of the stage's process).

    python bench/retrieval.py cost [--source DIR] [--chunking lines definitions]
        [--out bench/results/retrieval_cost.json]

Wall times include anything else running on the machine: the load average is recorded.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from data_scale import build_repo, python_files, run_stage  # bench/data_scale.py
from flops import write_result  # bench/flops.py

from repotune import io, retrieval
from repotune.filters import filter_samples
from repotune.params import ExtractParams, FilterParams, NearDuplicateParams, RetrievalParams, SplitParams
from repotune.split import split_samples
from repotune.stats import paired_difference
from repotune.tasks import extract_samples

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class JaccardIndex(retrieval.Index):
    """The library's chunks, scored by RepoCoder's Jaccard similarity of identifier sets
    (|query & chunk| / |query | chunk|) instead of BM25: the alternative it was measured against."""

    matrix: Any = None  # chunks x identifiers, 1 where the chunk holds the identifier (CSC)
    vocab: Any = None
    sizes: Any = None

    @classmethod
    def of(cls, index: retrieval.Index, texts: list[str]) -> JaccardIndex:
        from scipy import sparse

        vocab: dict[str, int] = {}
        rows, cols = [], []
        for row, text in enumerate(texts):
            for name in retrieval.identifiers(text):
                rows.append(row)
                cols.append(vocab.setdefault(name, len(vocab)))
        matrix = sparse.csc_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), len(vocab)))
        sizes = np.asarray(matrix.sum(axis=1)).ravel()
        return cls(**{f.name: getattr(index, f.name) for f in fields(retrieval.Index)}, matrix=matrix,
                   vocab=vocab, sizes=sizes)

    def scores(self, query: set[str]) -> np.ndarray:
        ids = sorted(self.vocab[t] for t in query if t in self.vocab)
        if not ids:
            return np.zeros(len(self), dtype=np.float64)
        shared = np.asarray(self.matrix[:, ids].sum(axis=1)).ravel()
        return shared / (self.sizes + len(query) - shared)


def mine(repo: Path, task_name: str, languages: list[str], base: Path | None) -> dict[str, list[dict]]:
    """The repository's samples of `task_name`, filtered and split as the pipeline's defaults do."""
    tokenizer = None
    if base is not None:
        from repotune.modeling import load_tokenizer

        tokenizer = load_tokenizer(base)
    records, _ = extract_samples(repo, repo="bench", sha="0" * 40, task_name=task_name, extract=ExtractParams(languages=languages),
                                 tokenizer=tokenizer, workers=1)
    kept, _ = filter_samples(records, FilterParams(), task_name)
    splits, _ = split_samples(kept, SplitParams())
    return splits


def usefulness(record: dict, context: dict) -> tuple[int, int]:
    """(identifiers of the target missing from the input, how many of them the context holds)."""
    sought = retrieval.identifiers(record["target"]) - retrieval.identifiers(record["input"])
    held = retrieval.identifiers("".join(c["text"] for c in context["chunks"]))
    return len(sought), len(sought & held)


def quality(repo: Path, task_name: str, languages: list[str], base: Path | None) -> dict:
    started = time.perf_counter()
    splits = mine(repo, task_name, languages, base)
    result: dict = {
        "repo": str(repo), "task": task_name, "samples": {k: len(v) for k, v in splits.items()},
        "mine_seconds": round(time.perf_counter() - started, 1), "load_before": [round(x, 2) for x in os.getloadavg()],
        "runs": [],
    }
    train_paths = retrieval.train_files(splits)
    # Every sample, as a test sample sees the repository (all of it but its own file): more
    # samples than the test split alone, for the comparison's power; nothing is trained here.
    samples = [r for name in ("train", "val", "test") for r in splits[name]]
    rows: dict[tuple[str, str], np.ndarray] = {}
    for chunking in ("lines", "definitions"):
        settings = RetrievalParams(enabled=True, chunking=chunking)
        counts: Counter = Counter()
        started = time.perf_counter()
        index = retrieval.build_index(repo, languages=languages, retrieval=settings,
                                      max_file_bytes=1_000_000, generated=[], counts=counts)
        index_seconds = time.perf_counter() - started
        for name in ("jaccard", "bm25"):
            kwargs = dict(task_name=task_name, retrieval=settings, near=NearDuplicateParams(), train_paths=train_paths,
                          repo="bench", sha="0" * 40)
            retriever = retrieval.Retriever(index, repo, **kwargs)
            seconds = index_seconds  # jaccard: its own index of the same chunks (texts read back)
            if name == "jaccard":
                started = time.perf_counter()
                retriever = retrieval.Retriever(JaccardIndex.of(index, [retriever.text(c) for c in range(len(index))]),
                                                repo, **kwargs)
                seconds = time.perf_counter() - started
            split_counts: Counter = Counter()
            per_sample = np.array([
                usefulness(record, context)
                for record, context in zip(samples, retrieval.retrieve_split(retriever, samples, "test", split_counts))
            ])
            sought, found = (int(x) for x in per_sample.sum(axis=0))
            rows[(name, chunking)] = per_sample
            n = split_counts["samples"]
            result["runs"].append({
                "retriever": name, "chunking": chunking, "chunks": len(index), "index_seconds": round(seconds, 2),
                "ms_per_sample": round(1000 * split_counts["seconds"] / n, 2),
                "new_target_identifiers_found_pct": round(100 * found / sought, 2) if sought else None,
                "sought": sought, "found": found,
                "target_in_context_pct": round(100 * split_counts["target_in_context"] / n, 2),
                "without_context": split_counts["samples_without_context"],
                "excluded": {k: v for k, v in sorted(split_counts.items()) if k.startswith("excluded_")},
            })
            print(result["runs"][-1], file=sys.stderr)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    # Paired over the same test samples: found / sought (pct), other minus reference, 95% CI.
    pairs = {"bm25_vs_jaccard_lines": (("jaccard", "lines"), ("bm25", "lines")),
             "bm25_vs_jaccard_definitions": (("jaccard", "definitions"), ("bm25", "definitions")),
             "lines_vs_definitions_bm25": (("bm25", "definitions"), ("bm25", "lines")),
             "lines_vs_definitions_jaccard": (("jaccard", "definitions"), ("jaccard", "lines"))}
    result["paired"] = {}
    for label, (ref, other) in pairs.items():
        diff = paired_difference(rows[ref][:, [1, 0]], rows[other][:, [1, 0]],
                                 lambda r: 100 * r[:, 0].sum() / max(r[:, 1].sum(), 1),
                                 resamples=1000, confidence=0.95, seed=42)
        result["paired"][label] = {"delta": diff.delta, "low": diff.low, "high": diff.high, "p": diff.p_value}
    return result


def cost(source: Path, chunkings: Sequence[str], workdir: Path) -> dict:
    files = python_files(source)
    repo = workdir / "repo"
    build_repo(source, files, repo)
    result: dict = {"source": str(source), "py_files": len(files), "cpus": os.cpu_count(), "runs": []}
    for chunking in chunkings:
        work = workdir / f"work_{chunking}"
        work.mkdir()
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["source"].update(url=str(repo), rev="main")
        raw["extract"]["workers"] = 1
        raw["benchmark"]["ood"] = None
        raw["benchmark"]["min_samples"] = 0
        raw["retrieval"].update(enabled=True, chunking=chunking)
        (work / "params.yaml").write_text(yaml.safe_dump(raw))
        for name in ("clone", "extract", "filter", "judge", "split", "ood"):
            run_stage(name, work, None)
        load_before = [round(x, 2) for x in os.getloadavg()]
        seconds, peak = run_stage("retrieve", work, None)
        metrics = io.read_json(work / "metrics/retrieve.json")
        result["runs"].append({
            "chunking": chunking, "stage_seconds": round(seconds, 2), "peak_rss_mib": round(peak, 1),
            "files_indexed": metrics["files_indexed"], "chunks_indexed": metrics["chunks_indexed"],
            "seconds_index": metrics["seconds_index"], "samples": metrics["samples"],
            "ms_per_sample": metrics["ms_per_sample"], "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
        })
        print(result["runs"][-1], file=sys.stderr)
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--repo", type=Path, default=Path("data/repo"))
    q.add_argument("--task", default="completion")
    q.add_argument("--languages", nargs="+", default=["python"])
    q.add_argument("--base", type=Path, default=None, help="model folder (completion: its tokenizer)")
    q.add_argument("--out", default=None)
    c = sub.add_parser("cost")
    c.add_argument("--source", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    c.add_argument("--chunking", nargs="+", default=["lines", "definitions"])
    c.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.command == "quality":
        result = quality(args.repo, args.task, args.languages, args.base)
    else:
        with tempfile.TemporaryDirectory(prefix="retrieval_cost.") as tmp:
            result = cost(args.source, args.chunking, Path(tmp))
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
