"""Tasks: how samples (input, target) are cut out of the source files of a repository."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from repotune.files import source_files
from repotune.languages import parser


def sample_id(path: str, name: str, start_line: int) -> str:
    """A stable id: the same definition at the same place always gets the same id."""
    return hashlib.sha256(f"{path}\0{name}\0{start_line}".encode()).hexdigest()[:16]


def extract_samples(
    root: Path,
    *,
    repo: str,
    sha: str,
    task: str,
    lang: str,
    target: str,
    include: list[str],
    exclude: list[str],
    max_file_bytes: int,
) -> tuple[list[dict], Counter]:
    """Mine the samples of `task` from the `lang` files of the working tree at `root`.

    Returns:
        The records sorted by (path, start_line, name), each with its provenance (id, repo,
        sha, path, language, task, kind, name, start/end line) and input/target; and the
        counts for metrics/extract.json (files seen/parsed/skipped per reason, definitions,
        samples per kind).
    """
    from repotune.tasks import docstring

    counts: Counter = Counter()
    records: list[dict] = []
    ts_parser = parser(lang)
    files = source_files(root, lang, include, exclude, max_file_bytes, counts)
    for source in tqdm(files, desc="extract", unit=" files", mininterval=1.0):
        tree = ts_parser.parse(source.data)
        if tree.root_node.has_error:
            counts["files_skipped_syntax_error"] += 1
            continue
        counts["files_parsed"] += 1
        for sample in docstring.extract(tree.root_node, source.data, target, counts):
            counts[f"samples_{sample['kind']}"] += 1
            records.append({
                "id": sample_id(source.path, sample["name"], sample["start_line"]),
                "repo": repo,
                "sha": sha,
                "path": source.path,
                "language": lang,
                "task": task,
                **sample,
            })
    records.sort(key=lambda r: (r["path"], r["start_line"], r["name"]))
    counts["samples"] = len(records)
    return records, counts
