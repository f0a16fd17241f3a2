"""Evaluation sets: which records every system is evaluated on, and where its outputs go.

Two sets: ``test`` (the held-out files of the training repository) and, when
``benchmark.ood`` is set, ``ood`` (samples of another repository, mined with the same task and
filters: does the adapter hurt code outside the repository?). Each set is evaluated with every
template of ``benchmark.templates``; one evaluation = one (set, template) pair, and each system's
outputs for it are one file, ``data/generations/<system>/<set>.<template>.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repotune import io
from repotune.errors import RepotuneError
from repotune.params import BenchmarkParams

def load_sets(benchmark: BenchmarkParams, test: str | Path, ood: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The records of each evaluation set, sorted by id and cut to its ``max_samples``.

    Sorting by id makes ``max_samples`` pick the same samples whatever the file order. The
    ``ood`` set is present only when ``benchmark.ood`` is set.
    """
    sets = {"test": _first(io.read_jsonl(test), benchmark.max_samples)}
    if not sets["test"]:
        raise RepotuneError(f"{test}: no test samples to evaluate")
    if benchmark.ood is not None:
        sets["ood"] = _first(io.read_jsonl(ood), benchmark.ood.max_samples)
        if not sets["ood"]:
            raise RepotuneError(f"{ood}: benchmark.ood is set but has no samples (run the ood stage)")
    return sets


def _first(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    records = sorted(records, key=lambda r: r["id"])
    return records[:limit] if limit else records


def evaluations(benchmark: BenchmarkParams) -> list[tuple[str, str]]:
    """Every (set, template) pair, headline first: the test set with the first template."""
    sets = ["test"] + (["ood"] if benchmark.ood is not None else [])
    return [(name, template) for name in sets for template in benchmark.templates]


def generation_file(folder: str | Path, set_name: str, template: str) -> Path:
    """The outputs of one system on one evaluation, inside that system's generations folder."""
    return Path(folder) / f"{set_name}.{template}.jsonl"
