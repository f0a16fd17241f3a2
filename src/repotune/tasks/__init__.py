"""Tasks: each is a module that owns everything task-specific, looked up in :data:`TASKS`.

A task module is a :class:`Task`: the Protocol names every attribute callers use, and
tests/test_tasks.py checks that every registered task provides each, with the right kind
(function or constant). The contract, by the stage that reads it:

- params: ``Params``, the task's own knobs (a :class:`repotune.sections.Section` with two
  sections, ``extract`` and ``filter``, each read by the stage of its name): params.yaml's
  ``task.<name>`` (``task.docstring.extract.target``, ``task.completion.extract.window``); the
  schema's ``task`` section is assembled from :data:`TASKS`;
- extract: ``samples(definitions, text, extract, counts, **context)``: partial records cut from
  one parsed file (``kind``, ``name``, ``start_line``, ``end_line``, ``input``, ``target`` and
  any fields its filters need), `extract` being its ``task.<name>.extract``; ``context`` holds
  the file's ``language`` and ``path`` and, for a task with ``NEEDS_TOKENIZER``, the base
  model's ``tokenizer``; a task asks the language (:mod:`repotune.languages`) about syntax;
- filter: ``drop_reason(record, filter_params, own)``: its own reasons to drop a sample (the
  shared ``filter`` section and its ``task.<name>.filter``);
  ``DUPLICATE_TARGETS``: whether samples with the same target (and name) are duplicates too;
  ``KEEP_INPUT`` (``head`` or ``tail``) says which end of a too-long input to keep;
- prompts, train, generate: ``PROMPTS`` (named default templates, ``{code}`` =
  :func:`prompt_input`; params.yaml's ``prompt.template`` and ``benchmark.templates`` are
  checked against them when params load), ``prompt_input(record)``, ``completion(record)`` (the
  text trained to follow the prompt), ``default_stop(extract)`` (stop strings when
  ``decoding.stop`` is null; `extract`: its ``task.<name>.extract``, which decides the shape of
  a target), ``STOP_AFTER_LEADING_WHITESPACE`` and ``postprocess(raw, stop, extract)`` (model
  output -> prediction); ``DECODING``: its values for
  the ``decoding`` keys left null (see :func:`resolved_decoding`), and ``TRAINING`` for the
  ``train`` keys left null (see :func:`resolved_training`);
- ``CHAT_PROMPT``: the request put to an instruct model through its chat template, for the
  ``base_chat`` system (the base at the prompt that suits it; None: the task has none), and
  ``chat_answer(raw)``: the answer inside such a reply (unwrapped from quotes, fences);
- evaluate: ``wrong_kind(output, raw)`` and ``WRONG_KIND`` (its rule, in words): whether an
  output is not the kind the task asks for (a degenerate check, see ``repotune.degenerate``);
  ``METRICS``: names of its metrics in ``repotune.metrics.METRICS`` (report order), and
  ``PRIMARY_METRIC``: the one the verdict, the headline of metrics/evaluate.json, the
  report's examples and the per-sample histogram use (``evaluate.primary`` overrides it, checked
  against ``METRICS`` when params load);
- distill: ``DOC_TARGETS``: whether targets are the definitions' doc comments, so that a
  definition without one is an input a teacher can label (``distill.undocumented``);
- retrieve: ``RETRIEVAL_QUERY`` (``tail``: the last ``retrieval.query_lines`` lines of the
  input; ``whole``: all of it) and ``CONTEXT_LEAK``: what of the target a retrieved chunk must
  not hold (``identifier``: the target as a whole identifier; ``text``: its text, verbatim or as
  a near-duplicate; None: nothing refused), see ``repotune.retrieval``.

Adding a task: a module here and one line in :data:`TASKS` (or :func:`register`, for a task
defined elsewhere); see docs/extending.md.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pathspec
from tqdm import tqdm

from repotune.files import candidate_paths, read_source
from repotune.languages import definitions, parser, paths_of_tests
from repotune.sections import Section
from repotune.tasks import completion, docstring, method_name

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from repotune.languages import Definition
    from repotune.params import DecodingParams, ExtractParams, FilterParams, TrainParams


class Task(Protocol):
    """What a task module provides (see the module docstring for what each one means).

    Constants are annotated; functions are written as methods (a module's functions take no
    ``self``). tests/test_tasks.py checks every task of :data:`TASKS` against this list.
    """

    # params: task.<name> (its fields: extract, filter)
    Params: type[Section]

    # extract
    NEEDS_TOKENIZER: bool

    def samples(
        self, definitions: Sequence[Definition], text: str, extract: Section, counts: Counter, **context: Any,
    ) -> Iterator[dict[str, Any]]: ...

    # filter
    DUPLICATE_TARGETS: bool
    KEEP_INPUT: Literal["head", "tail"]

    def drop_reason(self, record: Mapping[str, Any], params: FilterParams, own: Section) -> str | None: ...

    # prompts, train, generate
    PROMPTS: Mapping[str, str]
    CHAT_PROMPT: str | None
    DECODING: Mapping[str, Any]
    TRAINING: Mapping[str, Any]
    STOP_AFTER_LEADING_WHITESPACE: bool

    def prompt_input(self, record: Mapping[str, Any]) -> str: ...

    def completion(self, record: Mapping[str, Any]) -> str: ...

    def default_stop(self, extract: Section) -> list[str]: ...

    def postprocess(self, raw: str, stop: Sequence[str], extract: Section) -> str: ...

    def chat_answer(self, raw: str) -> str: ...

    # evaluate
    METRICS: tuple[str, ...]
    PRIMARY_METRIC: str
    WRONG_KIND: str

    def wrong_kind(self, output: str, raw: str) -> bool: ...

    # distill
    DOC_TARGETS: bool

    # retrieve
    RETRIEVAL_QUERY: Literal["tail", "whole"]
    CONTEXT_LEAK: Literal["identifier", "text"] | None


TASKS: dict[str, Task] = {
    "docstring": docstring,
    "completion": completion,
    "method_name": method_name,
}
# Not task names: the keys of params.yaml's task section besides the tasks' own, and the parts
# of a task's params.
_RESERVED = {"name", "extract", "filter"}


def register(name: str, module: Task) -> None:
    """Add a task to :data:`TASKS` at run time: a task defined outside this package (a plugin, a
    test). params.yaml then accepts ``task.name: <name>`` and ``task.<name>.*`` (the schema is
    assembled from the registry when params load). The built-in tasks are listed in TASKS."""
    if not name.isidentifier() or name in _RESERVED:
        raise ValueError(f"{name!r} cannot name a task: an identifier, not one of {sorted(_RESERVED)}")
    fields = set(getattr(getattr(module, "Params", None), "model_fields", {}))
    if fields != {"extract", "filter"}:
        raise ValueError(f"task {name!r}: its Params must be a params section with the fields extract and filter")
    TASKS[name] = module


def task(name: str) -> Task:
    """The module of task `name`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def resolved_decoding(decoding: DecodingParams, task_name: str) -> DecodingParams:
    """`decoding` with each key left null (None) set to the task's own default (its
    ``DECODING``); a value set in params.yaml always wins. Generation takes only resolved
    settings, and the generate stage records them beside the outputs."""
    return _filled(decoding, task(task_name).DECODING)



def resolved_training(train: TrainParams, task_name: str) -> TrainParams:
    """`train` with each key left null (None) set to the task's own default (its ``TRAINING``:
    the learning rate, which differs by task); a value set in params.yaml always wins. The
    train stage records the values applied in metrics/train.json."""
    return _filled(train, task(task_name).TRAINING)


def _filled(section, defaults: dict[str, Any]):
    """`section` (a params model) with each of `defaults`' keys that it leaves None set."""
    return section.model_copy(update={key: value for key, value in defaults.items() if getattr(section, key) is None})


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
    own = own if own is not None else task(task_name).Params().extract
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


# Cuts partial records from one parsed file: (definitions, text, extract, counts, **context),
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
