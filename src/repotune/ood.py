"""The out-of-domain set: each language mined from another repository of that language.

``ood.sources`` names one pinned source per language. Each language of
``extract.languages`` that has one is cloned and mined for that language only (same task,
filters and extract settings otherwise), so a Kotlin run is checked on Kotlin code and a
Python run never downloads the Kotlin corpus. A language without a source, or whose source
gives no sample, is skipped with a reason in the metrics; the run goes on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import sources as code_sources
from repotune.filters import filter_samples
from repotune.params import ExtractParams, FilterParams, SourceParams
from repotune.sections import Section
from repotune.extraction import extract_samples

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

NO_SOURCE = "no source in ood.sources"


def mine(
    sources: Mapping[str, SourceParams],
    *,
    task_name: str,
    extract: ExtractParams,
    filter_params: FilterParams,
    scratch: Path,
    own_extract: Section | None = None,
    own_filter: Section | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    workers: int = 1,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Mine the out-of-domain samples of every language of `extract.languages` from its source.

    Languages go in name order (the output does not depend on the order of
    ``extract.languages``); each one's kept samples are in the order extract gives them.

    Args:
        sources: ``ood.sources`` (language -> source).
        task_name, extract, filter_params: the run's ``task.name``, ``extract`` and ``filter``.
        own_extract, own_filter: the task's ``task.<name>.extract`` and ``.filter`` (None: its defaults).
        scratch: an empty folder for the checkouts.
        tokenizer: the base model's tokenizer, for tasks that cut on model tokens.
        workers: processes parsing files.

    Returns:
        The kept samples, and the metrics for metrics/ood.json: ``enabled`` (any sample kept),
        ``samples`` and ``samples_extracted`` in all, ``languages`` (per language: url, rev,
        sha, files, files_parsed, samples_extracted, samples, ``dropped_<reason>``, or
        ``skipped`` with the reason) and, when nothing is kept, a one-line ``skipped``.
    """
    kept: list[dict[str, Any]] = []
    languages: dict[str, dict[str, Any]] = {}
    for language in sorted(extract.languages):
        source = sources.get(language)
        if source is None:
            languages[language] = {"skipped": NO_SOURCE}
            continue
        checkout, tree = scratch / language / "checkout", scratch / language / "tree"
        sha, _ = code_sources.clone(source.url, source.rev, checkout, submodules=source.submodules)
        tree.mkdir(parents=True)
        files = code_sources.export_tree(checkout, tree)
        records, extracted = extract_samples(
            tree, repo=source.url, sha=sha, task_name=task_name,
            extract=extract.model_copy(update={"languages": [language]}), own=own_extract, tokenizer=tokenizer,
            workers=workers,
        )
        language_kept, filtered = filter_samples(records, filter_params, task_name, own_filter)
        languages[language] = _language_metrics(source, sha, files, extracted, filtered, len(language_kept))
        if not language_kept:
            languages[language]["skipped"] = (
                f"no {task_name} samples kept from {source.url} ({extracted['samples']} extracted, "
                f"{extracted['files_parsed']} {language} files parsed)"
            )
        kept.extend(language_kept)
    metrics: dict[str, Any] = {
        "enabled": bool(kept),
        "samples": len(kept),
        "samples_extracted": sum(m.get("samples_extracted", 0) for m in languages.values()),
        "languages": languages,
    }
    if not kept:
        metrics["skipped"] = "; ".join(f"{language}: {m['skipped']}" for language, m in languages.items())
    return kept, metrics


def _language_metrics(
    source: SourceParams, sha: str, files: Mapping[str, int], extracted: Counter, filtered: Counter, kept: int
) -> dict[str, Any]:
    drops = {k: v for k, v in sorted(filtered.items()) if k.startswith("dropped_")}
    return {
        "url": source.url, "rev": source.rev, "sha": sha, "files": files["files"],
        "files_parsed": extracted["files_parsed"], "samples_extracted": extracted["samples"],
        "samples": kept, **drops,
    }
