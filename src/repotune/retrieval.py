"""Retrieval: context for every sample from the rest of its repository, without its answer.

The repository (data/repo, at the pinned commit) is cut into chunks: windows of
``window_lines`` lines every ``window_stride`` lines (RepoCoder's sliding windows), or the
innermost definitions (functions, methods, classes without nested definitions) that the
language modules find with tree-sitter. A chunk is indexed by its identifiers (keywords
included, with their counts) with BM25 (bm25s, Lucene's variant, k1 1.5, b 0.75); a query
(the last ``query_lines`` lines of a completion prefix, or the whole input of the other tasks:
the task's ``RETRIEVAL_QUERY``) is the set of its identifiers.

Why BM25 and line windows (``bench/retrieval.py quality``: every sample of a repository
retrieving from the rest of it, top 2 chunks, 300 code tokens; usefulness = the share of the
target's identifiers missing from the input that the context holds, paired bootstrap 95%
CIs; bench/results/retrieval_quality_*.json): against RepoCoder's Jaccard of identifier sets,
BM25 found +4.9 points [+2.0, +8.0] more of them on expo-modules-core's 690 Kotlin/Java
completion windows (26.0% vs 21.0%); with the first version of this module (overlapping
windows not yet passed over), +2.8 [+1.8, +3.8] on Twisted's 5,052 completion windows (19.6
vs 16.8) and +12.7 [+11.7, +13.7] on Twisted's 1,230 docstrings (21.6 vs 8.9). (Jaccard
weighs every shared identifier alike, self and return included; BM25 weighs rare ones up.)
Line windows beat definitions with BM25 by +8.7 [+4.9, +12.7] points on expo-modules-core,
+2.8 and +3.5 on Twisted, likely because a long definition spends the budget on its first
lines.

What a sample may see (no leaks):

- never a chunk of its own file (``own_file``);
- train and val samples (training prompts) see only train files: files that hold a train
  sample and no val or test sample (``not_train_file``), so no test code reaches training;
- test samples see the whole repository but their own file; out-of-domain samples come from
  another repository, and see the whole training repository (the model is meant to use the
  repository it was adapted to; their own file is not in it);
- the task's ``CONTEXT_LEAK`` refuses chunks that hold its target: ``identifier`` (the target
  as a whole identifier: a masked method's name), ``text`` (the target verbatim, whitespace
  aside, or a near-duplicate of it: the share of its code-token n-grams found in the chunk at
  or above the near-duplicate threshold, :mod:`repotune.dedup`). With None (completion), a
  chunk holding the target line stays (an editor would retrieve it too) and the record says
  whether the target stands verbatim in its context (``target_in_context``).

The same-budget control (context ``prefix``, :meth:`Retriever.prefix`): the code of the sample's
own file just before its input, cut to the same ``context_tokens`` (for a completion window,
the in-file prefix lengthened by the context budget), so that a gain from retrieval can be told
from a gain from more tokens. The task's ``CONTEXT_LEAK`` holds there too: a prefix that would
hold the target (a Kotlin or Java doc comment sits just above its definition; a call of a
masked method) loses its last lines until it does not (counted ``prefix_trimmed_<reason>``).
Out-of-domain samples come from another repository, not checked out here: no prefix
(``prefix_unavailable``).

A chunk that shares lines with one already taken (overlapping windows of one file) is passed
over too (``overlap``). Every refused candidate ranked above the last chunk taken is counted
under its reason. Only the index (identifier ids per chunk, then bm25s's sparse matrix) stays
in memory: chunk texts are read back from the files when a chunk is a candidate.
"""

from __future__ import annotations

import re
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pathspec

from repotune.codetokens import count_tokens
from repotune.dedup import containment, shingles
from repotune.files import candidate_paths, read_source
from repotune.filters import truncate_tokens
from repotune.languages import definitions, parser
from repotune.params import NearDuplicateParams, RetrievalParams
from repotune.tasks import task

SPLITS = ("train", "val", "test", "ood")
# The context kinds the retrieve stage writes, one folder each under data/retrieved: none (empty
# files: what a system without context depends on), retrieval, prefix (the same-budget control).
CONTEXTS = ("none", "retrieval", "prefix")
IDENTIFIER = re.compile(r"(?<![\w$])[A-Za-z_$][\w$]*")
_WHITESPACE = re.compile(r"\s+")
# Candidates ranked per query before the full ranking is needed (most queries take their
# top_k from the first few; a query whose best chunks are all refused sorts the rest).
_FIRST_CANDIDATES = 64
# Files whose lines are kept for reading chunks back (most recently used).
_CACHED_FILES = 256


def identifiers(text: str) -> set[str]:
    """The identifiers of `text` (keywords included: they weigh alike in every chunk)."""
    return set(IDENTIFIER.findall(text))


def line_windows(lines: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Windows (first, last line, 1-based inclusive) of `size` lines every `stride` lines over a
    file of `lines` lines; the last one ends at the last line. ``line_windows(25, 20, 10)`` ->
    ``[(1, 20), (11, 25)]``."""
    spans = []
    for start in range(1, lines + 1, stride):
        spans.append((start, min(start + size - 1, lines)))
        if start + size - 1 >= lines:
            break
    return spans


def innermost(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans (in source order, a parent before its children) that hold no other span."""
    return [
        (start, end) for i, (start, end) in enumerate(spans)
        if i + 1 == len(spans) or not (start <= spans[i + 1][0] <= end)
    ]


@dataclass
class Index:
    """The chunks of a repository and a BM25 index of their identifiers.

    Attributes:
        paths: indexed files, sorted (relative, POSIX).
        chunk_file, chunk_start, chunk_end: per chunk, its file (index into `paths`) and its
            first and last line (1-based, inclusive); chunks sorted by (path, start line).
        bm25: bm25s's index of the chunks (None when there is no chunk).
    """

    paths: list[str]
    chunk_file: np.ndarray
    chunk_start: np.ndarray
    chunk_end: np.ndarray
    bm25: Any

    def __len__(self) -> int:
        return len(self.chunk_file)

    def scores(self, query: set[str]) -> np.ndarray:
        """BM25 score of every chunk for the identifiers of `query`, each counted once (float64;
        0 where none is shared)."""
        ids = self.bm25.get_tokens_ids(sorted(query)) if self.bm25 is not None else []
        if not ids:
            return np.zeros(len(self), dtype=np.float64)
        return self.bm25.get_scores(ids).astype(np.float64)


def build_index(
    root: Path,
    *,
    languages: Sequence[str],
    retrieval: RetrievalParams,
    max_file_bytes: int,
    generated: Sequence[str],
    counts: Counter,
) -> Index:
    """Index the source files of `languages` under `root`, file by file (only the current file's
    text is in memory; each chunk is kept as the ids of its identifiers until bm25s has built
    its sparse score matrix).

    Files are those extract would read (same suffixes, size limit and generated-file rules),
    tests included (they show how the code is used), minus ``retrieval.exclude``.

    Args:
        counts: updated in place: ``files_seen``, ``files_skipped_<reason>`` (excluded,
            symlink, too_large, empty, lfs_pointer, binary, not_utf8, generated,
            syntax_error: definitions chunking only), ``files_indexed``,
            ``files_without_chunks``, ``chunks_indexed`` and ``chunks_skipped_no_identifiers``.
    """
    import bm25s

    generated_spec = pathspec.PathSpec.from_lines("gitignore", list(generated))
    files = sorted(
        (rel, lang) for lang in languages
        for rel in candidate_paths(root, lang, ["*"], list(retrieval.exclude), max_file_bytes, counts)
    )
    vocab: dict[str, int] = {}
    paths: list[str] = []
    chunk_file, chunk_start, chunk_end = [], [], []
    corpus: list[list[int]] = []  # per chunk, the ids of its identifiers, repeats included (BM25's term counts)
    for rel, lang in files:
        source = read_source(root, rel, generated_spec, counts)
        if source is None:
            continue
        text = source.data.decode("utf-8")
        lines = text.splitlines(keepends=True)
        if retrieval.chunking == "lines":
            spans = line_windows(len(lines), retrieval.window_lines, retrieval.window_stride)
        else:
            tree = parser(lang).parse(source.data)
            if tree.root_node.has_error:
                counts["files_skipped_syntax_error"] += 1
                continue
            spans = innermost([(d.start_line, d.end_line) for d in definitions(lang, tree.root_node, source.data)])
        file_id, kept = len(paths), 0
        for start, end in spans:
            names = IDENTIFIER.findall("".join(lines[start - 1:end]))
            if not names:
                counts["chunks_skipped_no_identifiers"] += 1
                continue
            # setdefault returns the dict's own int: one object per identifier, not per use.
            corpus.append([vocab.setdefault(n, len(vocab)) for n in names])
            chunk_file.append(file_id)
            chunk_start.append(start)
            chunk_end.append(end)
            kept += 1
        if kept:
            paths.append(rel)
            counts["files_indexed"] += 1
        else:
            counts["files_without_chunks"] += 1
    counts["chunks_indexed"] = len(corpus)
    model = None
    if corpus:
        # Lucene's BM25 (k1 1.5, b 0.75), bm25s's default; scores precomputed into a sparse matrix.
        model = bm25s.BM25()
        model.index((corpus, vocab), show_progress=False)
    return Index(
        paths=paths,
        chunk_file=np.array(chunk_file, dtype=np.int32),
        chunk_start=np.array(chunk_start, dtype=np.int32),
        chunk_end=np.array(chunk_end, dtype=np.int32),
        bm25=model,
    )


def train_files(splits: Mapping[str, Iterable[Mapping[str, Any]]]) -> set[str]:
    """Paths holding a train sample and no val or test sample (`splits`: name -> records)."""
    train = {r["path"] for r in splits.get("train", ())}
    held_out = {r["path"] for name in ("val", "test") for r in splits.get(name, ())}
    return train - held_out


def query_text(record: Mapping[str, Any], task_name: str, query_lines: int) -> str:
    """What a sample asks the index with: the task's ``RETRIEVAL_QUERY`` of its input."""
    text = record["input"]
    if task(task_name).RETRIEVAL_QUERY == "tail":
        return "".join(text.splitlines(keepends=True)[-query_lines:])
    return text


def leak_reason(chunk: str, target: str, kind: str | None, near: NearDuplicateParams) -> str | None:
    """Why `chunk` would give `target` away under the task's ``CONTEXT_LEAK`` `kind`, or None."""
    if kind == "identifier":
        found = re.search(rf"(?<![\w$]){re.escape(target)}(?![\w$])", chunk)
        return "target_identifier" if found else None
    if kind == "text":
        flat_target = _WHITESPACE.sub(" ", target).strip()
        if flat_target and flat_target in _WHITESPACE.sub(" ", chunk):
            return "target_text"
        if count_tokens(target) >= near.min_tokens:
            share = containment(shingles(target, near.ngram), shingles(chunk, near.ngram))
            if share >= near.threshold:
                return "target_near_duplicate"
        return None
    if kind is None:
        return None
    raise ValueError(f"unknown CONTEXT_LEAK {kind!r}")


class Retriever:
    """Retrieves the context of samples from an :class:`Index` of the repository at `root`."""

    def __init__(
        self, index: Index, root: Path, *, task_name: str, retrieval: RetrievalParams,
        near: NearDuplicateParams, train_paths: set[str], repo: str, sha: str,
    ) -> None:
        self.index, self.root, self.task_name = index, root, task_name
        self.repo, self.sha = repo, sha
        self.retrieval, self.near = retrieval, near
        self.leak = task(task_name).CONTEXT_LEAK
        self.is_train_file = np.array([p in train_paths for p in index.paths], dtype=bool)
        self._lines: OrderedDict[str, list[str]] = OrderedDict()

    def lines(self, path: str) -> list[str]:
        """The lines of an indexed file (kept for the most recently read files)."""
        if path in self._lines:
            self._lines.move_to_end(path)
        else:
            self._lines[path] = (self.root / path).read_bytes().decode("utf-8").splitlines(keepends=True)
            if len(self._lines) > _CACHED_FILES:
                self._lines.popitem(last=False)
        return self._lines[path]

    def ranked(self, scores: np.ndarray) -> Iterator[int]:
        """Chunks with a score above 0, best first, ties in index order (path, line)."""
        positive = np.flatnonzero(scores > 0)
        first = positive
        if len(positive) > _FIRST_CANDIDATES:
            # Every chunk tied with the last of the first candidates is one too, so that the
            # first candidates are exactly a prefix of the full ranking.
            kth = np.partition(scores[positive], -_FIRST_CANDIDATES)[-_FIRST_CANDIDATES]
            first = positive[scores[positive] >= kth]
        order = first[np.lexsort((first, -scores[first]))]
        yield from order.tolist()
        if len(first) < len(positive):
            rest = np.setdiff1d(positive, first, assume_unique=True)
            yield from rest[np.lexsort((rest, -scores[rest]))].tolist()

    def refusal(self, chunk: int, record: Mapping[str, Any], split: str) -> str | None:
        """Why `record` of `split` may not see `chunk` (the first reason), or None."""
        file_id = int(self.index.chunk_file[chunk])
        if split != "ood" and self.index.paths[file_id] == record["path"]:
            return "own_file"
        if split in ("train", "val") and not self.is_train_file[file_id]:
            return "not_train_file"
        return leak_reason(self.text(chunk), record["target"], self.leak, self.near)

    def overlap(self, chunk: int, taken: Sequence[int]) -> str | None:
        """``overlap`` when `chunk` shares lines with a chunk already taken (overlapping windows
        of one file: 36% of the samples of a Twisted docstring run had two), else None."""
        ix = self.index
        for other in taken:
            if ix.chunk_file[other] == ix.chunk_file[chunk] and ix.chunk_start[chunk] <= ix.chunk_end[other] \
                    and ix.chunk_start[other] <= ix.chunk_end[chunk]:
                return "overlap"
        return None

    def text(self, chunk: int) -> str:
        lines = self.lines(self.index.paths[int(self.index.chunk_file[chunk])])
        return "".join(lines[int(self.index.chunk_start[chunk]) - 1:int(self.index.chunk_end[chunk])])

    def context(self, record: Mapping[str, Any], split: str, counts: Counter) -> dict[str, Any]:
        """The retrieved context of one sample: its record for data/retrieved/<split>.jsonl."""
        r = self.retrieval
        query = identifiers(query_text(record, self.task_name, r.query_lines))
        scores = self.index.scores(query)
        taken: list[int] = []
        for chunk in self.ranked(scores):
            reason = self.refusal(chunk, record, split) or self.overlap(chunk, taken)
            if reason is not None:
                counts[f"excluded_{reason}"] += 1
                continue
            taken.append(chunk)
            if len(taken) == r.top_k:
                break
        chunks, budget = [], r.context_tokens
        for chunk in taken:
            if budget == 0:
                counts["chunks_over_budget"] += 1  # retrieved, but the budget was spent
                continue
            text, cut = truncate_tokens(self.text(chunk), budget, "head")
            budget -= count_tokens(text)
            start = int(self.index.chunk_start[chunk])
            chunks.append({
                "path": self.index.paths[int(self.index.chunk_file[chunk])],
                "start_line": start,
                "end_line": start + text.rstrip("\n").count("\n") if cut else int(self.index.chunk_end[chunk]),
                "score": round(float(scores[chunk]), 6),
                "text": text,
                "cut": cut,
            })
        target = record["target"].strip()
        in_context = bool(target) and any(target in c["text"] for c in chunks)
        counts["samples"] += 1
        counts["samples_without_context"] += not chunks
        counts["target_in_context"] += in_context
        return {
            "id": record["id"], "path": record["path"], "repo": self.repo, "sha": self.sha,
            "chunks": chunks, "target_in_context": in_context,
        }


    def prefix(self, record: Mapping[str, Any], split: str, counts: Counter) -> dict[str, Any]:
        """The same-budget control of one sample: its own file's code just before its input,
        the last ``context_tokens`` code tokens of it (from a line start), with no line that
        would leak the target (see the module docstring); a record like :meth:`context`'s."""
        chunks = []
        counts["prefix_samples"] += 1
        if split == "ood":
            counts["prefix_unavailable"] += 1
        else:
            head, trimmed = self.text_before(record), None
            while head:
                text, cut = truncate_tokens(head, self.retrieval.context_tokens, "tail")
                reason = leak_reason(text, record["target"], self.leak, self.near)
                if reason is None:
                    break
                trimmed, head = reason, _without_last_line(head)
            if trimmed is not None:
                counts[f"prefix_trimmed_{trimmed}"] += 1
            if head and text.strip():
                last = head.count("\n") + (not head.endswith("\n"))  # `head`'s last line, 1-based
                chunks.append({
                    "path": record["path"], "start_line": last - len(text.splitlines()) + 1, "end_line": last,
                    "text": text, "cut": cut,
                })
        target = record["target"].strip()
        in_context = bool(target) and any(target in c["text"] for c in chunks)
        counts["prefix_without_context"] += not chunks
        counts["prefix_target_in_context"] += in_context
        return {
            "id": record["id"], "path": record["path"], "repo": self.repo, "sha": self.sha,
            "chunks": chunks, "target_in_context": in_context,
        }

    def text_before(self, record: Mapping[str, Any]) -> str:
        """The text of `record`'s file before its input: up to its first line, and for an input
        found in the file from there (a completion window starts after its line's indentation,
        or later when the filter cut its head), up to where it starts."""
        lines = self.lines(record["path"])
        line_offset = sum(len(line) for line in lines[:record["start_line"] - 1])
        text = "".join(lines)
        found = text.find(record["input"], line_offset) if record["input"] else -1
        return text[:found] if found >= 0 else text[:line_offset]


def _without_last_line(text: str) -> str:
    """`text` without its last line (a partial one, with no newline, counts as a line)."""
    body = text[:-1] if text.endswith("\n") else text
    return body[:body.rfind("\n") + 1]


def retrieve_split(
    retriever: Retriever, records: Iterable[Mapping[str, Any]], split: str, counts: Counter
) -> Iterator[dict[str, Any]]:
    """The context records of `records` (one split, streamed, in their order); `counts` gets the
    split's counts, ``seconds`` of retrieval and ``cpu_seconds`` (this process's CPU time: the
    cost when other work shares the cores)."""
    for record in records:
        started, cpu = time.perf_counter(), time.process_time()
        out = retriever.context(record, split, counts)
        counts["seconds"] += time.perf_counter() - started
        counts["cpu_seconds"] += time.process_time() - cpu
        yield out


def summary(
    index_counts: Mapping[str, int], split_counts: Mapping[str, Counter], index_seconds: float, index_cpu_seconds: float,
    prefix_counts: Mapping[str, Counter] | None = None,
) -> dict[str, Any]:
    """metrics/retrieve.json: the index's counts and build time (wall and CPU seconds),
    retrieval time (all samples, and per sample in ms, wall and CPU), and per split and in all:
    samples, samples without context, targets standing verbatim in their context, chunks
    refused per reason, chunks over budget; under ``prefix``, the same-budget control's counts
    (:meth:`Retriever.prefix`), in all and per split."""
    total: Counter = Counter()
    splits = {}
    timings = ("seconds", "cpu_seconds")
    for name, counts in split_counts.items():
        total.update(counts)
        splits[name] = {k: v for k, v in sorted(counts.items()) if k not in timings}
    samples = total["samples"]
    return {
        "enabled": True,
        **dict(sorted(index_counts.items())),
        "seconds_index": round(index_seconds, 3),
        "cpu_seconds_index": round(index_cpu_seconds, 3),
        "seconds_retrieve": round(total["seconds"], 3),
        "cpu_seconds_retrieve": round(total["cpu_seconds"], 3),
        "ms_per_sample": round(1000 * total["seconds"] / samples, 3) if samples else 0.0,
        "cpu_ms_per_sample": round(1000 * total["cpu_seconds"] / samples, 3) if samples else 0.0,
        **{k: v for k, v in sorted(total.items()) if k not in timings},
        "splits": splits,
        **({"prefix": _prefix_summary(prefix_counts)} if prefix_counts is not None else {}),
    }


def _prefix_summary(prefix_counts: Mapping[str, Counter]) -> dict[str, Any]:
    total: Counter = Counter()
    for counts in prefix_counts.values():
        total.update(counts)
    return {**dict(sorted(total.items())), "splits": {name: dict(sorted(c.items())) for name, c in prefix_counts.items()}}
