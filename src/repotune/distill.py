"""Sequence-level knowledge distillation: a teacher model writes targets the student trains on.

The teacher answers the prompts a system is benchmarked with at the trained template (the
task's template, the task's stops and post-processing, ``decoding``), on the train inputs
and, for the docstring task, optionally on definitions that have no docstring at all. Its
answers become training records next to the gold ones, in a ratio set by
``distill.teacher_share``. Only text crosses from teacher to student, so the two may have
different tokenizers.

Generations are cached by sha256 of (teacher identity, rendered prompt, decoding, stops)
(``repotune.generation_cache``), so a new mixing ratio or sample cap re-generates nothing.
Definitions without a doc comment are mined by the extract stage's own engine
(``extraction.iter_file_samples``) with a sampler of their own.

Only training targets are made here. The teacher's benchmark outputs come from the generate
stage like every system's (a ``generate.systems`` entry on ``data/distill/model``, the folder
the teacher is materialised into).

Heavy imports (torch, transformers) stay inside the functions, through ``repotune.generation``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import atomic
from repotune.distill_loss import check_same_vocab
from repotune.errors import RepotuneError
from repotune.filters import truncate_tokens
from repotune.generation_cache import generate_cached, read_cache, speed, write_cache
from repotune.judge import judge_model_folder
from repotune.modeling import load_tokenizer, peak_memory_mib, resolve_device, resolve_precision, set_threads
from repotune.params import DecodingParams, ExtractParams, FilterParams, ModelParams, PromptParams, Section
from repotune.prompts import Prompter, fitted_prompts, template_text
from repotune.provenance import model_identity
from repotune.extraction import candidate_files, iter_file_samples
from repotune.tasks import TASKS, task

if TYPE_CHECKING:
    from repotune.languages import Definition


def undocumented_samples(
    definitions: Sequence[Definition], text: str, own: Any, counts: Counter, *,
    max_input_tokens: int, keep: str, **context: Any,
) -> Iterator[dict[str, Any]]:
    """The extract engine's sampler for teacher inputs (see ``extraction.iter_file_samples``): each
    definition of one file that has no doc comment, as a partial record with an empty target
    and its code cut to `max_input_tokens` code tokens from the `keep` end (as the filter stage
    cuts gold inputs); test definitions are counted (``undocumented_tests``) and left out."""
    for d in definitions:
        if d.doc is not None:
            continue
        if d.is_test:
            counts["undocumented_tests"] += 1
            continue
        code, cut = truncate_tokens(d.code, max_input_tokens, keep)
        yield {
            "kind": d.kind, "name": d.qualified_name, "start_line": d.start_line, "end_line": d.end_line,
            "input": code, "target": "", "input_truncated": cut, "is_test": False, "undocumented": True,
        }


def undocumented_records(
    root: Path, *, repo: str, sha: str, task_name: str, extract: ExtractParams,
    skip_paths: set[str], max_input_tokens: int, counts: Counter,
) -> list[dict[str, Any]]:
    """Definitions of `root` that have no doc comment, as records with an empty target, sorted
    by id: inputs for the teacher, mined by the extract stage's own engine (file selection,
    parsing, language modules, provenance; its output is untouched).

    Only for tasks whose targets are doc comments (``DOC_TARGETS``). Files in `skip_paths`
    (those that hold validation or test samples) are left out, so that no held-out file's code
    reaches training; test files (``extract.exclude_tests``) and tests by the language's
    conventions too.

    Raises:
        RepotuneError: the task's targets are not doc comments (every function already is a
            method_name sample, every file a completion source: nothing is undocumented there).
    """
    module = task(task_name)
    if not module.DOC_TARGETS:
        with_docs = ", ".join(name for name, t in TASKS.items() if t.DOC_TARGETS)
        raise RepotuneError(
            f"distill.undocumented applies to tasks whose targets are doc comments ({with_docs}); "
            f"task.name is {task_name!r}: set it to false"
        )
    engine: Counter = Counter()  # the extract stage's own counts: not this stage's metrics
    files = candidate_files(root, extract, engine)
    held_out = [f for f in files if f[0] in skip_paths]
    if held_out:  # a key of metrics/distill.json only when some file was held out
        counts["undocumented_files_held_out"] += len(held_out)
    records = list(iter_file_samples(
        root, [f for f in files if f[0] not in skip_paths], repo=repo, sha=sha, task_name=task_name,
        extract=extract, counts=engine,
        sampler=partial(undocumented_samples, max_input_tokens=max_input_tokens, keep=module.KEEP_INPUT),
    ))
    counts.update({key: n for key, n in engine.items() if key.startswith("undocumented_")})
    counts["undocumented_found"] += len(records)
    return sorted(records, key=lambda r: r["id"])


def mix(
    gold: Sequence[dict[str, Any]], teacher: Sequence[dict[str, Any]], share: float
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The training records: gold and teacher records with ``share`` of them the teacher's.

    As many records as the ratio allows: N = min(gold / (1 - share), teacher / share), of which
    round(share * N) teacher records (the first by id) and the rest gold (the first by id); so
    share 0 is the gold records alone, share 1 the teacher records alone.

    Returns:
        The records sorted by id, and counts ``rows_gold``, ``rows_teacher``.
    """
    if share <= 0 or not teacher:
        n_teacher, n_gold = 0, len(gold)
    elif share >= 1 or not gold:
        n_teacher, n_gold = len(teacher), 0
    else:
        total = min(len(gold) / (1 - share), len(teacher) / share)
        n_teacher = min(len(teacher), round(share * total))
        n_gold = min(len(gold), round(total) - n_teacher)
    by_id = sorted(gold, key=lambda r: r["id"])[:n_gold] + sorted(teacher, key=lambda r: r["id"])[:n_teacher]
    return sorted(by_id, key=lambda r: r["id"]), {"rows_gold": n_gold, "rows_teacher": n_teacher}


def teacher_record(record: Mapping[str, Any], output: str, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """A training record whose target the teacher wrote: the input's record with a new id
    (``<id>.teacher``, next to the gold one when sorted), ``gold_id`` (the input's id) and the
    provenance under ``teacher``."""
    return {
        **{k: v for k, v in record.items() if k != "target"},
        "id": f"{record['id']}.teacher", "gold_id": record["id"], "target": output, "teacher": dict(provenance),
    }


def teacher_records(
    inputs: Sequence[Mapping[str, Any]],
    prompts: Sequence[str],
    generated: Sequence[Mapping[str, Any]],
    postprocess: Any,
    drop_reason: Any,
    provenance: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], Counter]:
    """Training records from the teacher's answers to `inputs`, held to the gold targets'
    standard: an empty answer, or one the task's own filter would drop (``drop_reason``, e.g. a
    docstring under ``task.docstring.filter.min_target_tokens``), is dropped and counted
    (``teacher_dropped_<reason>``).

    Each record keeps the provenance (teacher, decoding, prompt template) plus the sha256 of
    its own rendered prompt, the raw output and the tokens generated.
    """
    counts: Counter = Counter()
    records = []
    for record, prompt, row in zip(inputs, prompts, generated, strict=True):
        output = postprocess(row["raw"])
        candidate = {**record, "target": output}
        reason = "empty" if not output.strip() else drop_reason(candidate)
        if reason is not None:
            counts[f"teacher_dropped_{reason}"] += 1
            continue
        made = teacher_record(candidate, output, {
            **provenance, "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
            "raw": row["raw"], "new_tokens": row["new_tokens"],
        })
        records.append(made)
    counts["teacher_kept"] = len(records)
    return sorted(records, key=lambda r: r["id"]), counts


@dataclass(frozen=True)
class Teaching:
    """What the distill stage reads of the params, key by key as dvc.yaml declares them."""

    teacher: ModelParams  # distill.teacher
    mode: str  # distill.mode
    teacher_share: float
    max_samples: int  # distill.max_samples
    undocumented: bool
    max_undocumented: int
    threads: int
    task_name: str
    extract: ExtractParams
    filter: FilterParams
    own_extract: Section  # task.<name>.extract
    own_filter: Section  # task.<name>.filter
    prompt: PromptParams
    decoding: DecodingParams
    max_length: int  # train.max_length: prompts are cut to it less decoding.max_new_tokens
    device: str  # generate.device


def teach(s: Teaching, *, split: Path, base: Path, repo: Path, clone_metrics: Path, out: Path) -> dict[str, Any]:
    """The enabled distill stage: the teacher (``distill.teacher``, materialised once into
    ``out/model``, where generate@<system> finds it as ``data/distill/model``) answers the train
    inputs (``mode: sequence``; with ``undocumented``, also the definitions of train-side files
    that have none); writes ``out/train.jsonl`` (gold and teacher records mixed by
    ``teacher_share``; with ``mode: logits`` the split's train file, byte for byte) and
    ``out/targets.jsonl`` (kept targets with provenance). Returns the stage's metrics.

    Generations are cached in ``out/cache/generations.jsonl`` (saved after each list of prompts).
    """
    cache_file = out / "cache" / "generations.jsonl"
    set_threads(s.threads)
    module = task(s.task_name)
    teacher = judge_model_folder(s.teacher, base, out)
    identity = model_identity(teacher)
    tokenizer = load_tokenizer(teacher, trust_remote_code=s.teacher.trust_remote_code)
    if s.mode == "logits":
        check_same_vocab(tokenizer, load_tokenizer(base), s.teacher.label, str(base))
    budget = max(1, s.max_length - s.decoding.max_new_tokens)
    gold = sorted(atomic.read_jsonl(split / "train.jsonl"), key=lambda r: r["id"])
    # A new list: undocumented inputs are added to it, never to the gold records.
    inputs = list(gold[: s.max_samples or None]) if s.mode == "sequence" and s.teacher_share > 0 else []
    counts: Counter = Counter()
    if s.undocumented and s.mode == "sequence":
        clone = atomic.read_json(clone_metrics)
        held_out = {r["path"] for name in ("val", "test") for r in atomic.read_jsonl(split / f"{name}.jsonl")}
        found = undocumented_records(
            repo, repo=clone["url"], sha=clone["sha"], task_name=s.task_name, extract=s.extract,
            skip_paths=held_out, max_input_tokens=s.filter.max_input_tokens, counts=counts,
        )
        inputs += found[: s.max_undocumented] if s.max_undocumented else found
    prompts, cut, _ = fitted_prompts(Prompter.from_params(s.prompt, s.task_name), inputs, tokenizer, budget)

    device = resolve_device(s.device)
    precision = resolve_precision("auto", device) if device.startswith("cuda") else "fp32"
    stop = s.decoding.stop if s.decoding.stop is not None else module.default_stop(s.own_extract)
    cache = read_cache(cache_file)
    rows, generated = generate_cached(
        teacher, {"train": prompts}, cache, identity, s.decoding, stop=stop,
        skip_leading_whitespace=module.STOP_AFTER_LEADING_WHITESPACE, device=device, precision=precision,
        save=lambda: write_cache(cache_file, cache),
    )

    provenance = {"model": s.teacher.label, "identity": identity, "decoding": s.decoding.model_dump(mode="json"),
                  "stop": list(stop), "template": s.prompt.template,
                  "template_text": template_text(s.prompt, s.task_name), "chat_template": s.prompt.chat_template}

    def postprocess(raw: str) -> str:
        return module.postprocess(raw, stop, s.own_extract)

    targets, kept = teacher_records(
        inputs, prompts, rows["train"], postprocess,
        lambda record: module.drop_reason(record, s.filter, s.own_filter), provenance,
    )
    counts.update(kept)
    if s.mode == "sequence":
        mixed, mix_counts = mix(gold, targets, s.teacher_share)
        atomic.write_jsonl(out / "train.jsonl", mixed)
    else:
        with atomic.atomic_path(out / "train.jsonl") as tmp:
            tmp.write_bytes((split / "train.jsonl").read_bytes())
        mix_counts = {"rows_gold": len(gold), "rows_teacher": 0}
    atomic.write_jsonl(out / "targets.jsonl", targets)

    return {"enabled": True, "mode": s.mode, "teacher": s.teacher.label, "identity": identity,
            "train_inputs": len(inputs), "train_prompts_code_cut": sum(cut),
            "generated_now": generated, "teacher_train": speed(rows["train"]),
            **mix_counts, **dict(sorted(counts.items())), "peak_memory_mib": peak_memory_mib()}
