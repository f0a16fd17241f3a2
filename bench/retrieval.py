"""The retrieve stage: which retriever and chunking find more useful context, and what it costs.

quality: mines a task's samples from a checked-out repository (`--repo`, e.g. data/repo) with
the pipeline's own extract, filter and split, then retrieves every sample's context (as a test sample's: the whole repository but its own
file) with
each retriever (bm25: the library's, bm25s over each chunk's identifiers; jaccard: RepoCoder's
Jaccard of identifier sets over the same chunks, the alternative it was chosen against) and each chunking (lines, definitions), at
the same budget (retrieval defaults: top 2, 300 code tokens). Model-free usefulness: of the
identifiers of a sample's target that its input lacks (what the model cannot copy from its own
prompt), the share found in its context (micro-averaged: found / sought over all samples); the
share of samples whose target stands verbatim in the context; CPU seconds of the index and CPU ms
per sample (this process's CPU time: other work may share the cores).

    python bench/retrieval.py quality --repo data/repo [--task completion --base models/base]
        [--out bench/results/retrieval_quality.json]

cost: for each size N, N .py files of `--source` (default: the running Python's standard
library, its site-packages left out: ~1,800 files; the venv's site-packages for 10,000) spread
evenly, copied where the clone stage would put them; one completion-like query per `--every`
files (the 20 lines before a file's middle line), split 8:1:1 over train, val and test; then
`python stages/retrieve.py` (enabled) timed under GNU time: wall and CPU seconds of the stage,
peak RSS, and from metrics/retrieve.json the index build and per-sample retrieval times.

    python bench/retrieval.py cost [--source DIR] [--sizes 2000] [--chunking lines definitions]
        [--every 5] [--out bench/results/retrieval_cost.json]

Wall times include anything else running on the machine: the load average is recorded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
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
from data_scale import evenly, python_files  # bench/data_scale.py
from flops import write_result  # bench/flops.py

from repotune import atomic, retrieval
from repotune.filters import filter_samples
from repotune.params import ExtractParams, FilterParams, NearDuplicateParams, RetrievalParams, SplitParams
from repotune.split import split_samples
from repotune.stats import paired_difference
from repotune.extraction import extract_samples

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
        started = time.process_time()  # CPU seconds: other work may share the cores
        index = retrieval.build_index(repo, languages=languages, retrieval=settings,
                                      max_file_bytes=1_000_000, generated=[], counts=counts)
        index_seconds = time.process_time() - started
        for name in ("jaccard", "bm25"):
            kwargs = dict(task_name=task_name, retrieval=settings, near=NearDuplicateParams(), train_paths=train_paths,
                          repo="bench", sha="0" * 40)
            retriever = retrieval.Retriever(index, repo, **kwargs)
            seconds = index_seconds  # jaccard: its own index of the same chunks (texts read back)
            if name == "jaccard":
                started = time.process_time()
                retriever = retrieval.Retriever(JaccardIndex.of(index, [retriever.text(c) for c in range(len(index))]),
                                                repo, **kwargs)
                seconds = time.process_time() - started
            split_counts: Counter = Counter()
            per_sample = np.array([
                usefulness(record, context)
                for record, context in zip(samples, retrieval.retrieve_split(retriever, samples, "test", split_counts))
            ])
            sought, found = (int(x) for x in per_sample.sum(axis=0))
            rows[(name, chunking)] = per_sample
            n = split_counts["samples"]
            result["runs"].append({
                "retriever": name, "chunking": chunking, "chunks": len(index), "index_cpu_seconds": round(seconds, 2),
                "cpu_ms_per_sample": round(1000 * split_counts["cpu_seconds"] / n, 2),
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


def completion_queries(repo: Path, files: list[str], every: int, lines: int) -> dict[str, list[dict]]:
    """Completion-like records without a tokenizer: for every `every`-th file (sorted) of at least
    2 x `lines` lines, the `lines` lines before its middle line as input and that line as target;
    those files go to train, val and test 8:1:1 in turn (cost only: what a query reads)."""
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    order = ["train"] * 8 + ["val", "test"]
    for rel in files[::every]:
        text = (repo / rel).read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        if len(text) < 2 * lines:
            continue
        middle = len(text) // 2
        record = {"id": f"{rel}:{middle + 1}", "path": rel, "input": "".join(text[middle - lines:middle]),
                  "target": text[middle].strip(), "task": "completion", "start_line": middle + 1}
        splits[order[sum(map(len, splits.values())) % len(order)]].append(record)
    return splits


def run_timed(argv: list[str], cwd: Path) -> dict:
    """Run `argv` in `cwd` under GNU time: wall, user and system seconds, peak RSS (MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "time"
        done = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(report), *argv], cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise SystemExit(f"{argv} failed in {cwd}:\n{done.stderr[-2000:]}")
        wall, user, system, peak = report.read_text().split()[-4:]
    return {"wall_seconds": float(wall), "cpu_seconds": round(float(user) + float(system), 2),
            "peak_rss_mib": round(int(peak) / 1024, 1)}


def cost(source: Path, sizes: Sequence[int], chunkings: Sequence[str], every: int, workdir: Path) -> dict:
    """Per size: N .py files of `source` (site-packages left out) spread evenly, copied into
    data/repo; completion queries (:func:`completion_queries`), then the retrieve stage
    (enabled) timed, per chunking."""
    files = [f for f in python_files(source) if not f.startswith("site-packages/")]
    result: dict = {"source": str(source), "py_files": len(files), "cpus": os.cpu_count(), "runs": []}
    for size in sizes:
        chosen = evenly(files, size)
        work = workdir / f"work{size}"
        # The files copied where the clone stage would check them out (what clone costs is
        # not measured here: its url and sha are only written into the records).
        for rel in chosen:
            (work / "data/repo" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, work / "data/repo" / rel)
        atomic.write_json(work / "metrics/clone.json", {"url": str(source), "sha": "0" * 40})
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["source"].update(url=str(source))
        raw["task"]["name"] = "completion"
        for name, records in completion_queries(work / "data/repo", chosen, every, 20).items():
            atomic.write_jsonl(work / "data/split" / f"{name}.jsonl", records)
        atomic.write_jsonl(work / "data/ood.jsonl", [])
        for chunking in chunkings:
            raw["retrieval"].update(enabled=True, chunking=chunking)
            (work / "params.yaml").write_text(yaml.safe_dump(raw))
            load_before = [round(x, 2) for x in os.getloadavg()]
            timed = run_timed([sys.executable, str(ROOT / "stages/retrieve.py")], work)
            metrics = atomic.read_json(work / "metrics/retrieve.json")
            result["runs"].append({
                "files": len(chosen), "chunking": chunking, **timed,
                **{k: metrics[k] for k in ("files_indexed", "chunks_indexed", "seconds_index", "cpu_seconds_index",
                                           "samples", "ms_per_sample", "cpu_ms_per_sample")},
                "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
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
    c.add_argument("--sizes", type=int, nargs="+", default=[2000])
    c.add_argument("--chunking", nargs="+", default=["lines", "definitions"])
    c.add_argument("--every", type=int, default=5, help="one query per this many files")
    c.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.command == "quality":
        result = quality(args.repo, args.task, args.languages, args.base)
    else:
        with tempfile.TemporaryDirectory(prefix="retrieval_cost.") as tmp:
            result = cost(args.source, args.sizes, args.chunking, args.every, Path(tmp))
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
