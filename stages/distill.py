"""Stage `distill` (optional): a teacher model teaches the run's model (``distill``).

Reads:  data/split/{train,val,test}.jsonl (val and test: which files are held out),
        models/base (the student's tokenizer, for logits mode), data/repo + metrics/clone.json
        (``undocumented``), data/distill/model + cache (persisted: the materialised teacher, its
        generations), params.yaml `distill`, `task`, `extract`, `filter`, `prompt`, `decoding`,
        `generate.device`, `train.max_length`
Writes: data/distill/train.jsonl: the records the train stage trains on. Disabled (or
        ``mode: logits``): the split's train file, byte for byte. ``mode: sequence``: gold and
        teacher records mixed in ``teacher_share``;
        data/distill/targets.jsonl: every kept teacher target with its provenance (teacher,
        identity, decoding, prompt template and the prompt's sha256, raw output);
        data/distill/model: the teacher, which a system of generate.systems with
        ``model: data/distill/model`` (teacher) is benchmarked on by generate@teacher;
        metrics/distill.json (counts; teacher speed, which is not deterministic).
Run:    python stages/distill.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, errors, params


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--base", type=Path, default=Path("models/base"))
    parser.add_argument("--repo", type=Path, default=Path("data/repo"))
    parser.add_argument("--clone-metrics", type=Path, default=Path("metrics/clone.json"))
    parser.add_argument("--out", type=Path, default=Path("data/distill"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/distill.json"))
    args = parser.parse_args(argv)
    p = params.load(args.params)
    d = p.distill
    out = args.out
    (out / "cache").mkdir(parents=True, exist_ok=True)
    cache_file = out / "cache" / "generations.jsonl"
    if not cache_file.exists():
        atomic.write_jsonl(cache_file, [])
    if not d.enabled:
        with atomic.atomic_path(out / "train.jsonl") as tmp:
            tmp.write_bytes((args.split / "train.jsonl").read_bytes())
        atomic.write_jsonl(out / "targets.jsonl", [])
        if not (out / "model").exists():  # a persisted output: keep a teacher of an earlier run
            atomic.write_text(out / "model" / "README.md", "The teacher model, once distill.enabled is true.\n")
        atomic.write_json(args.metrics, {"enabled": False})
        print("distill: disabled (distill.enabled: false), train on the split's train records")
        return

    from repotune.distill import Teaching, teach
    from repotune.tasks import resolved_decoding

    settings = Teaching(
        teacher=d.teacher, mode=d.mode, teacher_share=d.teacher_share, max_samples=d.max_samples,
        undocumented=d.undocumented, max_undocumented=d.max_undocumented, threads=d.threads,
        task_name=p.task.name, extract=p.extract, filter=p.filter, own_extract=p.task.extract,
        own_filter=p.task.filter, prompt=p.prompt,
        decoding=resolved_decoding(p.decoding, p.task.name),
        max_length=p.train.max_length, device=p.generate.device,
    )
    metrics = teach(settings, split=args.split, base=args.base, repo=args.repo,
                    clone_metrics=args.clone_metrics, out=out)
    atomic.write_json(args.metrics, metrics)
    print(f"distill ({d.mode}): {metrics['teacher_kept']} teacher targets of {metrics['train_inputs']} inputs "
          f"({metrics['generated_now']} generated now); train rows: {metrics['rows_gold']} gold + "
          f"{metrics['rows_teacher']} teacher")


if __name__ == "__main__":
    sys.exit(errors.run(main))
