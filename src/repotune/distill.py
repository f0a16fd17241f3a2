"""Sequence-level knowledge distillation: a teacher model writes targets the student trains on.

The teacher answers the prompts a system is benchmarked with at the trained template (the
task's template, the task's stops and post-processing, ``decoding``), on the train inputs
and, for the docstring task, optionally on definitions that have no docstring at all. Its
answers become training records next to the gold ones, in a ratio set by
``distill.teacher_share``. Only text crosses from teacher to student, so the two may have
different tokenizers.

Generations are cached by sha256 of (teacher identity, rendered prompt, decoding, stops), so a
new mixing ratio or sample cap re-generates nothing; the model is loaded only for prompts not
in the cache.

Only training targets are made here. The teacher's benchmark outputs come from the generate
stage like every system's (a ``benchmark.systems`` entry on ``data/distill/model``, the folder
the teacher is materialised into).

Heavy imports (torch, transformers) stay inside the functions, through ``repotune.generation``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repotune import atomic
from repotune.base_model import model_identity
from repotune.distill_loss import check_same_vocab
from repotune.errors import RepotuneError
from repotune.files import candidate_paths, read_source
from repotune.filters import truncate_tokens
from repotune.generation import generate_from_folder
from repotune.judge import judge_model_folder
from repotune.languages import definitions, parser
from repotune.modeling import load_tokenizer, peak_memory_mib, resolve_device, resolve_precision, set_threads
from repotune.params import DecodingParams, ExtractParams, FilterParams, ModelParams, PromptParams, Section
from repotune.prompts import Prompter, fitted_prompts, template_text
from repotune.tasks import sample_id, skipped_tests, task


def generation_key(identity: str, prompt: str, decoding: DecodingParams, stop: Sequence[str]) -> str:
    """What decides a teacher's raw output: its weights, the prompt, decoding and stops.

    ``decoding.batch_size`` is left out: texts do not depend on it (see repotune.generation).
    """
    settings = atomic.dumps({**decoding.model_dump(mode="json", exclude={"batch_size"}), "stop": list(stop)})
    return hashlib.sha256("\0".join((identity, prompt, settings)).encode()).hexdigest()


def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """key -> {raw, new_tokens, prompt_tokens, seconds} of earlier generations (empty if none)."""
    if not path.is_file():
        return {}
    return {row["key"]: {k: v for k, v in row.items() if k != "key"} for row in atomic.read_jsonl(path)}


def write_cache(path: Path, cache: Mapping[str, Mapping[str, Any]]) -> None:
    atomic.write_jsonl(path, [{"key": key, **value} for key, value in sorted(cache.items())])


def generate_cached(
    folder: Path,
    prompts: Mapping[str, Sequence[str]],
    cache: dict[str, dict[str, Any]],
    identity: str,
    decoding: DecodingParams,
    *,
    stop: Sequence[str],
    skip_leading_whitespace: bool,
    device: str,
    precision: str,
    save: Callable[[], None] | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The teacher's generation for every prompt of every named list, from `cache` or generated;
    `cache` is filled in place and `save` called after each list that needed the model (so a
    run killed half-way keeps what it generated: a teacher is slow on a CPU). The model is
    loaded for each such list; none at all when everything is cached.

    A generated row keeps its share of its run's wall time (``seconds``, in proportion to its
    new tokens), so the tokens/s of a list read back from the cache is the measured one.

    Returns:
        name -> one cached row per prompt (raw, new_tokens, prompt_tokens, seconds), and the
        number of prompts generated now.
    """
    keys = {name: [generation_key(identity, p, decoding, stop) for p in texts] for name, texts in prompts.items()}
    generated = 0
    for name, texts in prompts.items():
        todo = list(dict.fromkeys(p for p, k in zip(texts, keys[name], strict=True) if k not in cache))
        if not todo:
            continue
        run = generate_from_folder(
            folder, {name: todo}, decoding, stop=stop, skip_leading_whitespace=skip_leading_whitespace,
            device=device, precision=precision,
        )[name]
        total = max(sum(run.new_tokens), 1)
        for text, raw, n_new, n_prompt in zip(todo, run.raw_texts, run.new_tokens, run.prompt_tokens, strict=True):
            cache[generation_key(identity, text, decoding, stop)] = {
                "raw": raw, "new_tokens": n_new, "prompt_tokens": n_prompt,
                "seconds": round(run.seconds * n_new / total, 6),
            }
        generated += len(todo)
        if save is not None:
            save()
    return {name: [cache[k] for k in ks] for name, ks in keys.items()}, generated


def speed(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Generated tokens, seconds and tokens/s of a list of generated rows."""
    tokens = sum(r["new_tokens"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    return {"generated_tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else 0.0}


def undocumented_records(
    root: Path, *, repo: str, sha: str, task_name: str, extract: ExtractParams,
    skip_paths: set[str], max_input_tokens: int, counts: Counter,
) -> list[dict[str, Any]]:
    """Definitions of `root` that have no doc comment, as records with an empty target, sorted
    by id: inputs for the teacher, mined with the extract stage's own file selection and
    language modules (its output is untouched).

    Only for tasks with doc comments as targets (``docstring``). Files in `skip_paths` (those
    that hold validation or test samples) are left out, so that no held-out file's code reaches
    training; test files (``extract.exclude_tests``) and tests by the language's conventions
    too. Inputs are cut to `max_input_tokens` code tokens, as the filter stage cuts gold inputs.

    Raises:
        RepotuneError: the task is not docstring (every function already is a method_name
            sample, every file a completion source: nothing is undocumented there).
    """
    import pathspec

    if task_name != "docstring":
        raise RepotuneError(
            f"distill.undocumented applies to task docstring only (task.name is {task_name!r}); set it to false"
        )
    keep = task(task_name).KEEP_INPUT
    generated = pathspec.PathSpec.from_lines("gitignore", extract.generated)
    records = []
    for lang in extract.languages:
        files = candidate_paths(
            root, lang, extract.include, extract.exclude, extract.max_file_bytes, Counter(),
            skipped_tests(extract, lang),
        )
        parse = parser(lang)
        for rel in files:
            if rel in skip_paths:
                counts["undocumented_files_held_out"] += 1
                continue
            source = read_source(root, rel, generated, Counter())
            if source is None:
                continue
            tree = parse.parse(source.data)
            if tree.root_node.has_error:
                continue
            for d in definitions(lang, tree.root_node, source.data):
                if d.doc is not None:
                    continue
                if d.is_test:
                    counts["undocumented_tests"] += 1
                    continue
                code, cut = truncate_tokens(d.code, max_input_tokens, keep)
                records.append({
                    "id": sample_id(source.path, d.qualified_name, d.start_line), "repo": repo, "sha": sha,
                    "path": source.path, "language": lang, "task": task_name, "kind": d.kind,
                    "name": d.qualified_name, "start_line": d.start_line, "end_line": d.end_line,
                    "input": code, "target": "", "input_truncated": cut, "is_test": False, "undocumented": True,
                })
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
    device: str  # benchmark.device


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
