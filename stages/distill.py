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
    if not d.enabled:
        with io.atomic_path(out / "train.jsonl") as tmp:
            tmp.write_bytes((args.split / "train.jsonl").read_bytes())
        io.write_jsonl(out / "targets.jsonl", [])
        if not (out / "model").exists():  # a persisted output: keep a teacher of an earlier run
            io.write_text(out / "model" / "README.md", "The teacher model, once distill.enabled is true.\n")
        evalsets.write_disabled_system(args.generations)
        io.write_json(args.metrics, {"enabled": False})
        print("distill: disabled (distill.enabled: false), train on the split's train records")
        return

    from repotune.distill import Teaching, teach
    from repotune.tasks import resolved_decoding

    ood = p.benchmark.ood
    settings = Teaching(
        teacher=d.teacher, mode=d.mode, teacher_share=d.teacher_share, max_samples=d.max_samples,
        undocumented=d.undocumented, max_undocumented=d.max_undocumented, threads=d.threads,
        task_name=p.task.name, extract=p.extract, filter=p.filter, prompt=p.prompt,
        decoding=resolved_decoding(p.decoding, p.task.name),
        max_length=p.train.max_length, device=p.benchmark.device,
        templates=evalsets.templates(p.benchmark.templates, p.prompt.template),
        test_max_samples=p.benchmark.max_samples, ood_max_samples=ood.max_samples if ood is not None else None,
    )
    metrics = teach(settings, split=args.split, ood=args.ood, base=args.base, repo=args.repo,
                    clone_metrics=args.clone_metrics, out=out, generations=args.generations)
    io.write_json(args.metrics, metrics)
    print(f"distill ({d.mode}): {metrics['teacher_kept']} teacher targets of {metrics['train_inputs']} inputs "
          f"({metrics['generated_now']} generated now); train rows: {metrics['rows_gold']} gold + "
          f"{metrics['rows_teacher']} teacher")


if __name__ == "__main__":
    sys.exit(errors.run(main))
