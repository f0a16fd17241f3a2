"""Deterministic train/val/test assignment by a hash of the file path (or of the sample id).

Grouping by file keeps every definition of a file in one split, so a test sample never has
its siblings (same helpers, same idioms) in the training data.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

from repotune.params import SplitParams

SPLITS = ("train", "val", "test")


def unit_interval(key: str, seed: int) -> float:
    """A uniform number in [0, 1) from sha256(seed, key): stable across machines and runs."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(key: str, params: SplitParams) -> str:
    u = unit_interval(key, params.seed)
    if u < params.train:
        return "train"
    if u < params.train + params.val:
        return "val"
    return "test"


def split_samples(records: list[dict], params: SplitParams) -> tuple[dict[str, list[dict]], dict]:
    """Partition `records` into train/val/test (order kept within each split).

    Returns:
        The splits, and the counts for metrics/split.json: samples and files per split and
        the realised sample fractions (file grouping makes them approximate).
    """
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    files: dict[str, set[str]] = defaultdict(set)
    for record in records:
        key = record["path"] if params.by == "file" else record["id"]
        name = assign(key, params)
        splits[name].append(record)
        files[name].add(record["path"])
    total = len(records)
    counts: Counter = Counter()
    for name in SPLITS:
        counts[f"{name}_samples"] = len(splits[name])
        counts[f"{name}_files"] = len(files[name])
        counts[f"{name}_fraction"] = round(len(splits[name]) / total, 4) if total else 0.0
    counts["samples"] = total
    # With file grouping no file may appear in two splits; by sample it may.
    counts["files_in_several_splits"] = len(
        (files["train"] & files["val"]) | (files["train"] & files["test"]) | (files["val"] & files["test"])
    )
    return splits, dict(counts)
