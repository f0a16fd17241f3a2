"""Evaluation sets: which records every system is evaluated on, and where its outputs go.

Two sets: ``test`` (the held-out files of the training repository) and, when
``ood`` is set and the ood stage kept samples, ``ood`` (samples of other repositories,
one per language, mined with the same task and filters: does the adapter hurt code outside the
repository?). Each set is evaluated with every
template of ``generate.templates`` (null: the trained one, :func:`templates`); one evaluation = one (set, template) pair, and each system's
outputs for it are one file, ``data/generations/<system>/<set>.<template>.jsonl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import atomic
from repotune.errors import RepotuneError

if TYPE_CHECKING:
    from repotune.params import OodParams


def load_sets(
    test: str | Path, ood: str | Path, max_samples: int, ood_params: OodParams | None
) -> dict[str, list[dict[str, Any]]]:
    """The records of each evaluation set, sorted by id and cut to its ``max_samples``.

    Sorting by id makes ``max_samples`` pick the same samples whatever the file order.

    Args:
        test, ood: the test split and the out-of-domain set (JSONL).
        max_samples: ``generate.max_samples`` (0 = all).
        ood_params: the ``ood`` section (its ``max_samples`` caps the set); None when
            ``ood`` is null (no ``ood`` set).

    There is no ``ood`` set either when the ood file is empty: the ood stage writes it empty
    when no language of the run has out-of-domain samples, and says why in metrics/ood.json.
    """
    sets = {"test": _first(atomic.read_jsonl(test), max_samples)}
    if not sets["test"]:
        raise RepotuneError(f"{test}: no test samples to evaluate")
    if ood_params is not None:
        records = _first(atomic.read_jsonl(ood), ood_params.max_samples)
        if records:
            sets["ood"] = records
    return sets


def _first(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    records = sorted(records, key=lambda r: r["id"])
    return records[:limit] if limit else records


def templates(listed: Sequence[str] | None, trained: str) -> list[str]:
    """The templates every system is evaluated with, headline first: ``generate.templates``
    (`listed`), or when that is null the template the adapter was trained with
    (``prompt.template``, `trained`), so that a run scores what it trained by default."""
    return list(listed) if listed is not None else [trained]


def evaluations(templates: Sequence[str], with_ood: bool) -> list[tuple[str, str]]:
    """Every (set, template) pair, headline first: the test set with the first template."""
    sets = ["test"] + (["ood"] if with_ood else [])
    return [(name, template) for name in sets for template in templates]


def generation_file(folder: str | Path, set_name: str, template: str) -> Path:
    """The outputs of one system on one evaluation, inside that system's generations folder."""
    return Path(folder) / f"{set_name}.{template}.jsonl"


# The marker a generate stage writes instead of outputs (see write_disabled_system).
SYSTEM_MARKER = "system.json"


def write_disabled_system(folder: str | Path, reason: str | None = None) -> None:
    """Replace `folder` with a generations folder that holds only ``system.json`` saying
    ``enabled: false`` (and why, when `reason` is given): the system exists in dvc.yaml but
    produced no outputs, and evaluate leaves it out (:func:`system_enabled`)."""
    atomic.write_disabled(folder, reason, SYSTEM_MARKER)


def system_enabled(folder: str | Path) -> bool:
    """Whether a system's generations folder holds outputs to evaluate: a generate stage that
    runs without producing outputs (base_chat's, for a model with no chat template; a system
    not enabled, or enabled with_retrieval while retrieval is off) writes ``system.json`` with
    ``enabled: false`` there, so that params can list the system whether or not it can run."""
    return disabled_system(folder) is None


def disabled_system(folder: str | Path) -> str | None:
    """Why a system's generations folder holds no outputs (see :func:`system_enabled`), or None."""
    return atomic.disabled_reason(folder, SYSTEM_MARKER)
