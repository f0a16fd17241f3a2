"""Deterministic train/val/test assignment of whole files (or single samples), balanced.

Grouping by file keeps every definition of a file in one split, so a test sample never has
its siblings (same helpers, same idioms) in the training data. A hash of each file's path
alone gave lumpy splits on small repositories (a 15-file library: 3 test samples of 129), so
files are taken in the order of a seeded hash of their path and each goes to the split that is
furthest below its target share of the samples assigned so far: the realised fractions come
as close to the targets as whole files allow, and the same files always land in the same
splits for the same seed and data.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from repotune.errors import RepotuneError
from repotune.params import SplitParams

SPLITS = ("train", "val", "test")


def unit_interval(key: str, seed: int) -> float:
    """A uniform number in [0, 1) from sha256(seed, key): stable across machines and runs."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_units(sizes: dict[str, int], params: SplitParams) -> dict[str, str]:
    """Unit (file path or sample id) -> split, greedily balanced on sample counts.

    Units are visited in the order of :func:`unit_interval` (ties by key); each goes to the
    split whose target share of the samples assigned so far, this unit included, exceeds what
    it holds by the most (ties: train, val, test). A split with target 0 gets nothing.
    """
    targets = {name: getattr(params, name) for name in SPLITS}
    held = dict.fromkeys(SPLITS, 0)
    assigned: dict[str, str] = {}
    for key in sorted(sizes, key=lambda k: (unit_interval(k, params.seed), k)):
        total = sum(held.values()) + sizes[key]
        name = max(SPLITS, key=lambda s: (targets[s] > 0, targets[s] * total - held[s], -SPLITS.index(s)))
        assigned[key] = name
        held[name] += sizes[key]
    return assigned


def split_samples(records: list[dict], params: SplitParams) -> tuple[dict[str, list[dict]], dict]:
    """Partition `records` into train/val/test (order kept within each split).

    Returns:
        The splits, and the counts for metrics/split.json: samples and files per split, the
        target and realised sample fractions, and files found in more than one split (0 with
        ``by: file``; ``by: sample`` splits a file's samples, which leaks its idioms).
        Near-duplicates are removed afterwards (:mod:`repotune.dedup`), then counted again
        with :func:`split_counts`.
    """
    def unit(record: dict) -> str:
        return record["path"] if params.by == "file" else record["id"]

    assigned = assign_units(Counter(unit(r) for r in records), params)
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for record in records:
        splits[assigned[unit(record)]].append(record)
    return splits, split_counts(splits, params)


def split_counts(splits: dict[str, list[dict]], params: SplitParams) -> dict:
    """Samples and files per split, target and realised fractions, files in several splits."""
    files = {name: {r["path"] for r in splits[name]} for name in SPLITS}
    total = sum(len(records) for records in splits.values())
    counts: dict = {}
    for name in SPLITS:
        counts[f"{name}_samples"] = len(splits[name])
        counts[f"{name}_files"] = len(files[name])
        counts[f"{name}_fraction"] = round(len(splits[name]) / total, 4) if total else 0.0
        counts[f"{name}_target"] = getattr(params, name)
    counts["samples"] = total
    counts["files_in_several_splits"] = len(
        (files["train"] & files["val"]) | (files["train"] & files["test"]) | (files["val"] & files["test"])
    )
    return counts


def judge_low(records: list[dict], scores: list[dict], threshold: float) -> set[str]:
    """Ids of the records the judge rated below `threshold` (``judge.threshold``); no
    scores at all (the judge is disabled) = none.

    Raises:
        RepotuneError: some record has no score while others do (scores of other data).
    """
    if not scores:
        return set()
    by_id = {row["id"]: row["score"] for row in scores}
    missing = [r["id"] for r in records if r["id"] not in by_id]
    if missing:
        raise RepotuneError(
            f"split: {len(missing)} samples have no judge score (first: {missing[0]}); "
            "data/judge/scores.jsonl is not from data/filtered.jsonl: run `dvc repro judge`"
        )
    return {r["id"] for r in records if by_id[r["id"]] < threshold}
