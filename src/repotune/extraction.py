"""The extract engine: the samples of a task mined from a repository's files, file by file.

Selects the files of ``extract.languages`` (include/exclude, size, test layouts), parses each
with tree-sitter, hands its definitions to the task's ``samples`` (or another sampler, e.g. the
distill stage's undocumented definitions), adds the provenance (id, repo, sha, path, language,
task) and yields the records in file order, parsed by worker processes when asked, so that
the records are the same, in the same order, for any number of workers.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pathspec
from tqdm import tqdm

from repotune.files import candidate_paths, read_source
from repotune.languages import definitions, parser, paths_of_tests
from repotune.sections import Section
from repotune.tasks import task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from repotune.params import ExtractParams


def skipped_tests(extract: ExtractParams, lang: str) -> tuple[str, ...]:
    """The test-file patterns extraction skips for `lang`: its ``TEST_PATHS`` with
    ``extract.exclude_tests``, none without."""
    return paths_of_tests(lang) if extract.exclude_tests else ()


def sample_id(path: str, name: str, start_line: int) -> str:
    """A stable id: the same definition at the same place always gets the same id."""
    return hashlib.sha256(f"{path}\0{name}\0{start_line}".encode()).hexdigest()[:16]


def extract_samples(
    root: Path,
    *,
    repo: str,
    sha: str,
    task_name: str,
    extract: ExtractParams,
    own: Section | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    workers: int = 1,
) -> tuple[list[dict[str, Any]], Counter]:
    """Mine the samples of a task from the files of `extract.languages` under `root`, in memory.

    The records of :func:`iter_samples` as a list, with the counts; see there.
    """
    counts: Counter = Counter()
    records = list(iter_samples(
        root, repo=repo, sha=sha, task_name=task_name, extract=extract, own=own, counts=counts,
        tokenizer=tokenizer, workers=workers,
    ))
    return records, counts


def iter_samples(
    root: Path,
    *,
    repo: str,
    sha: str,
    task_name: str,
    extract: ExtractParams,
    counts: Counter,
    own: Section | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    workers: int = 1,
) -> Iterator[dict[str, Any]]:
    """Mine the samples of a task from the files of `extract.languages` under `root`, file by
    file, so that only the files in flight are in memory.

    Files are parsed by `workers` processes (1: in this process); results come back in file
    order, so the records are the same, in the same order, for any number of workers.

    Args:
        root: the repository's working tree.
        repo, sha: provenance written into every record.
        task_name: a key of :data:`TASKS`.
        extract: the ``extract`` params (languages, include/exclude, exclude_tests, ...).
        own: the task's own ``task.<name>.extract`` (None: its defaults).
        counts: updated in place as the records are yielded: the counts for
            metrics/extract.json (files seen/parsed/skipped per reason, per language;
            definitions; samples per kind; ``samples`` in all), complete once exhausted.
        tokenizer: the base model's tokenizer, for tasks with ``NEEDS_TOKENIZER``; handed to
            each worker once, when it starts.
        workers: processes parsing files (>= 1; see :func:`worker_count`).

    Yields:
        The records sorted by (path, start_line, name), each with its provenance (id, repo,
        sha, path, language, task, kind, name, start/end line) and input/target.
    """
    if task(task_name).NEEDS_TOKENIZER and tokenizer is None:
        raise ValueError(f"task {task_name!r} needs the base model's tokenizer")
    files = candidate_files(root, extract, counts)
    counts["samples"] += 0  # present in the metrics even when nothing is found
    yield from iter_file_samples(
        root, files, repo=repo, sha=sha, task_name=task_name, extract=extract, own=own, counts=counts,
        tokenizer=tokenizer, workers=workers,
    )


def candidate_files(root: Path, extract: ExtractParams, counts: Counter) -> list[tuple[str, str]]:
    """(path, language) of every file of `extract.languages` that extraction reads under `root`,
    the skipped ones counted in `counts` per reason.

    Files in order of their path string (not Path order, which sorts by parts, nor language
    by language), so that records of files in this order, each file's sorted by (start_line,
    name), are sorted by (path, start_line, name) with no sort over all the records.
    """
    return sorted(
        (rel, lang)
        for lang in extract.languages
        for rel in candidate_paths(
            root, lang, extract.include, extract.exclude, extract.max_file_bytes, counts,
            tests=skipped_tests(extract, lang),
        )
    )


# Cuts partial records from one parsed file: (definitions, text, own, counts, **context),
# as a task's ``samples`` does.
Sampler = Callable[..., Iterator[dict[str, Any]]]


def iter_file_samples(
    root: Path,
    files: Sequence[tuple[str, str]],
    *,
    repo: str,
    sha: str,
    task_name: str,
    extract: ExtractParams,
    counts: Counter,
    own: Section | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    workers: int = 1,
    sampler: Sampler | None = None,
) -> Iterator[dict[str, Any]]:
    """The records of `files` ((path, language) under `root`, see :func:`candidate_files`), in
    their order, each file's sorted by (start_line, name); see :func:`iter_samples`.

    `sampler` cuts the partial records from each parsed file instead of the task's ``samples``
    (a module-level function or a ``functools.partial`` of one: workers receive it pickled);
    the engine adds the provenance (id, repo, sha, path, language, task) as for any sample.
    `own`: the task's own ``task.<name>.extract`` (None: its defaults), handed to the sampler.
    """
    own = own if own is not None else task(task_name).Params().extract
    init = (root, repo, sha, task_name, extract, own, tokenizer, sampler)
    progress = {"desc": "extract", "unit": " files", "total": len(files), "mininterval": 1.0}
    if workers <= 1 or len(files) < 2:
        _init_worker(*init)
        try:
            yield from _merge(tqdm(map(_extract_file, files), **progress), counts)
        finally:
            _WORKER.clear()
        return
    # Small chunks keep both processes busy to the end and the results in flight few.
    chunksize = max(1, min(16, len(files) // (workers * 8)))
    with multiprocessing.Pool(workers, initializer=_init_worker, initargs=init) as pool:
        yield from _merge(tqdm(pool.imap(_extract_file, files, chunksize), **progress), counts)


def worker_count(workers: int) -> int:
    """`workers`, or for 0 the cores this process may run on."""
    return workers or len(os.sched_getaffinity(0))


def _merge(results: Iterator[tuple[list[dict[str, Any]], Counter]], counts: Counter) -> Iterator[dict[str, Any]]:
    for records, file_counts in results:
        counts.update(file_counts)
        counts["samples"] += len(records)
        yield from records


# What every file of one run shares, set once per worker process by _init_worker.
_WORKER: dict[str, Any] = {}


def _init_worker(
    root: Path, repo: str, sha: str, task_name: str, extract: ExtractParams, own: Section,
    tokenizer: PreTrainedTokenizerBase | None, sampler: Sampler | None = None,
) -> None:
    _WORKER.update(
        root=root, repo=repo, sha=sha, task_name=task_name, extract=extract, own=own, tokenizer=tokenizer,
        sampler=sampler or task(task_name).samples,
        generated=pathspec.PathSpec.from_lines("gitignore", extract.generated),
        parsers={lang: parser(lang) for lang in extract.languages},
    )


def _extract_file(item: tuple[str, str]) -> tuple[list[dict[str, Any]], Counter]:
    """The records of one file (path, language), sorted by (start_line, name), and its counts."""
    rel, lang = item
    w = _WORKER
    counts: Counter = Counter()
    source = read_source(w["root"], rel, w["generated"], counts)
    if source is None:
        return [], counts
    tree = w["parsers"][lang].parse(source.data)
    if tree.root_node.has_error:
        counts["files_skipped_syntax_error"] += 1
        return [], counts
    counts["files_parsed"] += 1
    counts[f"files_parsed_{lang}"] += 1
    module = task(w["task_name"])
    context = {"language": lang, "path": source.path}
    if module.NEEDS_TOKENIZER:
        context["tokenizer"] = w["tokenizer"]
    found = list(definitions(lang, tree.root_node, source.data))
    records = []
    for sample in w["sampler"](found, source.data.decode("utf-8"), w["own"], counts, **context):
        counts[f"samples_{sample['kind']}"] += 1
        counts[f"samples_{lang}"] += 1
        records.append({
            "id": sample_id(source.path, sample["name"], sample["start_line"]),
            "repo": w["repo"],
            "sha": w["sha"],
            "path": source.path,
            "language": lang,
            "task": w["task_name"],
            **sample,
        })
    records.sort(key=lambda r: (r["start_line"], r["name"]))
    return records, counts
