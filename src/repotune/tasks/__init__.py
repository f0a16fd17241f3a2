"""Tasks: each is a module that owns everything task-specific, looked up in :data:`TASKS`.

A task module provides:

- ``samples(definitions, text, extract, counts, **context)``: partial records cut from one
  parsed file (``kind``, ``name``, ``start_line``, ``end_line``, ``input``, ``target`` and any
  fields its filters need); ``NEEDS_TOKENIZER`` says whether it needs the base model's
  tokenizer (``context``: ``path`` and ``tokenizer``);
- ``drop_reason(record, filter_params)``: its own reasons to drop a sample; ``KEEP_INPUT``
  (``head`` or ``tail``) says which end of a too-long input to keep;
- ``PROMPTS`` (named default templates, ``{code}`` = :func:`prompt_input`),
  ``prompt_input(record)``, ``completion(record)`` (the text trained to follow the prompt),
  ``default_stop(extract)`` (stop strings when ``decoding.stop`` is null),
  ``STOP_AFTER_LEADING_WHITESPACE`` and ``postprocess(raw, stop, extract)`` (model output ->
  prediction);
- ``METRICS``: names of its metrics in ``repotune.metrics.METRICS`` (report order), and
  ``SAMPLE_METRIC``: the one scored per sample in reports and plots.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from repotune.files import source_files
from repotune.languages import definitions, parser
from repotune.tasks import completion, docstring, method_name

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from repotune.params import ExtractParams

TASKS: dict[str, ModuleType] = {
    "docstring": docstring,
    "completion": completion,
    "method_name": method_name,
}


def task(name: str) -> ModuleType:
    """The module of task `name`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


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
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> tuple[list[dict[str, Any]], Counter]:
    """Mine the samples of a task from the files of `extract.languages` under `root`.

    Args:
        root: the repository's working tree.
        repo, sha: provenance written into every record.
        task_name: a key of :data:`TASKS`.
        extract: the ``extract`` params (languages, include/exclude, task-specific knobs).
        tokenizer: the base model's tokenizer, for tasks with ``NEEDS_TOKENIZER``.

    Returns:
        The records sorted by (path, start_line, name), each with its provenance (id, repo,
        sha, path, language, task, kind, name, start/end line) and input/target; and the
        counts for metrics/extract.json (files seen/parsed/skipped per reason, per language;
        definitions; samples per kind).
    """
    module = task(task_name)
    if module.NEEDS_TOKENIZER and tokenizer is None:
        raise ValueError(f"task {task_name!r} needs the base model's tokenizer")
    context = {"tokenizer": tokenizer} if module.NEEDS_TOKENIZER else {}
    counts: Counter = Counter()
    records: list[dict[str, Any]] = []
    for lang in extract.languages:
        ts_parser = parser(lang)
        files = source_files(
            root, lang, extract.include, extract.exclude, extract.max_file_bytes, counts,
            generated=extract.generated,
        )
        for source in tqdm(files, desc=f"extract {lang}", unit=" files", mininterval=1.0):
            tree = ts_parser.parse(source.data)
            if tree.root_node.has_error:
                counts["files_skipped_syntax_error"] += 1
                continue
            counts["files_parsed"] += 1
            counts[f"files_parsed_{lang}"] += 1
            text = source.data.decode("utf-8")
            found = list(definitions(lang, tree.root_node, source.data))
            if module.NEEDS_TOKENIZER:
                context["path"] = source.path
            for sample in module.samples(found, text, extract, counts, **context):
                counts[f"samples_{sample['kind']}"] += 1
                counts[f"samples_{lang}"] += 1
                records.append({
                    "id": sample_id(source.path, sample["name"], sample["start_line"]),
                    "repo": repo,
                    "sha": sha,
                    "path": source.path,
                    "language": lang,
                    "task": task_name,
                    **sample,
                })
    records.sort(key=lambda r: (r["path"], r["start_line"], r["name"]))
    counts["samples"] = len(records)
    return records, counts
