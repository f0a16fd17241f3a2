"""Stage `distill` (optional): a teacher model teaches the run's model (``distill``).

Reads:  data/split/{train,val,test}.jsonl, data/ood.jsonl, models/base (the student: its
        tokenizer and parameter count), data/repo + metrics/clone.json (``undocumented``),
        data/distill/model + cache (persisted: the materialised teacher, its generations),
        params.yaml `distill`, `task`, `extract`, `filter`, `prompt`, `decoding`, `benchmark`
        (the evaluation sets and templates the teacher is benchmarked on), `train.max_length`
Writes: data/distill/train.jsonl: the records the train stage trains on. Disabled (or
        ``mode: logits``): the split's train file, byte for byte. ``mode: sequence``: gold and
        teacher records mixed in ``teacher_share``;
        data/distill/targets.jsonl: every kept teacher target with its provenance (teacher,
        identity, decoding, prompt template and the prompt's sha256, raw output);
        data/generations/teacher/: the teacher's outputs on every evaluation, as a generate
        stage writes them, and system.json (enabled, teacher, parameters, speed): evaluate
        compares the teacher as a third system when it is enabled;
        metrics/distill.json (counts; teacher speed, which is not deterministic).
Run:    python stages/distill.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from repotune import errors, evalsets, io, params


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--ood", type=Path, default=Path("data/ood.jsonl"))
    parser.add_argument("--base", type=Path, default=Path("models/base"))
    parser.add_argument("--repo", type=Path, default=Path("data/repo"))
    parser.add_argument("--clone-metrics", type=Path, default=Path("metrics/clone.json"))
    parser.add_argument("--out", type=Path, default=Path("data/distill"))
    parser.add_argument("--generations", type=Path, default=Path("data/generations/teacher"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/distill.json"))
    args = parser.parse_args(argv)
    p = params.load(args.params)
    d = p.distill
    out = args.out
    (out / "cache").mkdir(parents=True, exist_ok=True)
    cache_file = out / "cache" / "generations.jsonl"
    if not cache_file.exists():
        io.write_jsonl(cache_file, [])
    train_bytes = (args.split / "train.jsonl").read_bytes()
    if not d.enabled:
        with io.atomic_path(out / "train.jsonl") as tmp:
            tmp.write_bytes(train_bytes)
        io.write_jsonl(out / "targets.jsonl", [])
        if not (out / "model").exists():  # a persisted output: keep a teacher of an earlier run
            io.write_text(out / "model" / "README.md", "The teacher model, once distill.enabled is true.\n")
        with io.atomic_path(args.generations) as folder:
            folder.mkdir(parents=True)
            io.write_json(folder / "system.json", {"enabled": False})
        io.write_json(args.metrics, {"enabled": False})
        print("distill: disabled (distill.enabled: false), train on the split's train records")
        return

    from repotune import distill
    from repotune.base_model import model_identity
    from repotune.judge import judge_model_folder
    from repotune.modeling import load_tokenizer, peak_memory_mib, resolve_device, resolve_precision, set_threads
    from repotune.prompts import Prompter, template_text
    from repotune.tasks import task

    set_threads(d.threads)
    module = task(p.task.name)
    teacher = judge_model_folder(d.teacher, args.base, out)  # materialised once into data/distill/model
    identity = model_identity(teacher)
    tokenizer = load_tokenizer(teacher, trust_remote_code=d.teacher.trust_remote_code)
    if d.mode == "logits":
        from repotune.distill_loss import check_same_vocab

        check_same_vocab(tokenizer, load_tokenizer(args.base), d.teacher.label, str(args.base))
    budget = max(1, p.train.max_length - p.decoding.max_new_tokens)
    gold = sorted(io.read_jsonl(args.split / "train.jsonl"), key=lambda r: r["id"])
    # A new list: undocumented inputs are added to it, never to the gold records.
    inputs = list(gold[: d.max_samples or None]) if d.mode == "sequence" and d.teacher_share > 0 else []
    counts: Counter = Counter()
    if d.undocumented and d.mode == "sequence":
        clone = io.read_json(args.clone_metrics)
        held_out = {r["path"] for name in ("val", "test") for r in io.read_jsonl(args.split / f"{name}.jsonl")}
        found = distill.undocumented_records(
            args.repo, repo=clone["url"], sha=clone["sha"], task_name=p.task.name, extract=p.extract,
            skip_paths=held_out, max_input_tokens=p.filter.max_input_tokens, counts=counts,
        )
        inputs += found[: d.max_undocumented] if d.max_undocumented else found
    sets = evalsets.load_sets(
        args.split / "test.jsonl", args.ood, p.benchmark.max_samples,
        p.benchmark.ood.max_samples if p.benchmark.ood is not None else None,
    )
    prompts, cut = {}, {}
    prompts["train"], cut["train"] = distill.fitted_prompts(Prompter.from_params(p.prompt, p.task.name), inputs, tokenizer, budget)
    evaluation = distill.evaluation_prompts(p.prompt, p.task.name, sets, p.benchmark.templates, tokenizer, budget)
    prompts.update(evaluation[0])
    cut.update(evaluation[1])

    device = resolve_device(p.benchmark.device)
    precision = resolve_precision("auto", device) if device.startswith("cuda") else "fp32"
    stop = p.decoding.stop if p.decoding.stop is not None else module.default_stop(p.extract)
    cache = distill.read_cache(cache_file)
    rows, generated = distill.generate_cached(
        teacher, prompts, cache, identity, p.decoding, stop=stop,
        skip_leading_whitespace=module.STOP_AFTER_LEADING_WHITESPACE, device=device, precision=precision,
        save=lambda: distill.write_cache(cache_file, cache),
    )

    provenance = {"model": d.teacher.label, "identity": identity, "decoding": p.decoding.model_dump(mode="json"),
                  "stop": list(stop), "template": p.prompt.template,
                  "template_text": template_text(p.prompt, p.task.name), "chat_template": p.prompt.chat_template}

    def postprocess(raw: str) -> str:
        return module.postprocess(raw, stop, p.extract)

    targets, kept = distill.teacher_records(
        inputs, prompts["train"], rows["train"], postprocess,
        lambda record: module.drop_reason(record, p.filter), provenance,
    )
    counts.update(kept)
    if d.mode == "sequence":
        mixed, mix_counts = distill.mix(gold, targets, d.teacher_share)
        io.write_jsonl(out / "train.jsonl", mixed)
    else:
        with io.atomic_path(out / "train.jsonl") as tmp:
            tmp.write_bytes(train_bytes)
        mix_counts = {"rows_gold": len(gold), "rows_teacher": 0}
    io.write_jsonl(out / "targets.jsonl", targets)

    # Parameters per system (the fine-tuned student has the base's: LoRA is merged), for the report.
    student_size = distill.parameter_count(args.base)
    system = {"enabled": True, "mode": d.mode, "teacher": d.teacher.label, "identity": identity, "parameters": {
        "teacher": distill.parameter_count(teacher), "base": student_size, "finetuned": student_size}}
    train_rows = rows.pop("train")
    distill.write_generations(args.generations, rows, sets, cut, postprocess, system)
    metrics = {**system, "train_inputs": len(inputs), "train_prompts_code_cut": sum(cut["train"]),
               "generated_now": generated, "teacher_train": distill.speed(train_rows),
               **mix_counts, **dict(sorted(counts.items())), "peak_memory_mib": peak_memory_mib()}
    io.write_json(args.metrics, metrics)
    print(f"distill ({d.mode}): {counts['teacher_kept']} teacher targets of {len(inputs)} inputs "
          f"({generated} generated now); train rows: {mix_counts['rows_gold']} gold + {mix_counts['rows_teacher']} teacher")


if __name__ == "__main__":
    sys.exit(errors.run(main))
