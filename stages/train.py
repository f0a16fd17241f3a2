"""Stages `train` and `train_rag`: LoRA (or QLoRA) fine-tuning of the base model on the train split.

`train_rag` is this script with ``--context retrieval``: every train and val prompt holds the
sample's retrieved context (data/retrieved/retrieval/{train,val}.jsonl, rendered as the
generate stage renders it for the systems on models/merged_rag), written to its own outputs
(models/adapter_rag, models/checkpoints_rag, metrics/train_rag.json; no curves). When those
context files are empty (retrieval.enabled false: the retrieve stage read nothing), it loads
no model and writes a disabled marker (models/adapter_rag/disabled.json) and
``{"enabled": false}`` metrics instead.

Reads:  params.yaml (lora, train but threads and save_steps, prompt, task; model.base is
        recorded; distill: mode logits adds the teacher's KL term to the loss), models/base/,
        data/distill/train.jsonl (the split's train records, with the teacher's targets when
        distill.mode is sequence), data/split/val.jsonl, data/distill/model (the teacher)
Writes: models/adapter/ (adapter safetensors, adapter_config.json, tokenizer, training.json),
        dvclive/train/ (curves: train/eval loss, learning rate, grad norm),
        metrics/train.json (final losses, steps, tokens, training tokens/s),
        models/checkpoints/ (while training, every train.save_steps steps: a killed run
        resumes from the last complete checkpoint of the same params and inputs; emptied at
        the end)
With train.launcher accelerate, this process checks train.accelerate_config and re-runs the
script under `accelerate launch` (one worker per process, data parallel); the workers train
together and rank 0 alone writes the adapter, the curves, the metrics and the checkpoints.

    python stages/train.py [--params params.yaml] [--base models/base] [--out models/adapter] ...
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, checkpoints, distill_loss, errors, launch, modeling, params, training
from repotune.prompts import with_context
from repotune.training import Outputs, train_adapter
from repotune.training_data import load_split


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--base", type=Path, default=Path("models/base"))
    parser.add_argument("--train", type=Path, default=Path("data/distill/train.jsonl"))
    parser.add_argument("--val", type=Path, default=Path("data/split/val.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("models/adapter"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    parser.add_argument("--live", type=Path, default=Path("dvclive/train"))
    parser.add_argument("--checkpoints", type=Path, default=Path("models/checkpoints"))
    parser.add_argument("--teacher", type=Path, default=Path("data/distill/model"), help="distill.mode logits")
    parser.add_argument("--context", choices=("none", "retrieval"), default="none",
                        help="retrieval: prompts hold each sample's retrieved context (stage train_rag)")
    parser.add_argument("--retrieved", type=Path, default=Path("data/retrieved"), help="the retrieve stage's output")
    parser.add_argument("--no-live", action="store_true", help="write no dvclive curves")
    parser.add_argument("--max-length", type=int, default=None,
                        help="model tokens per prompt + completion instead of train.max_length (train_rag: retrieval.max_length)")
    args = parser.parse_args(argv)
    outputs = Outputs(args.out, live=None if args.no_live else args.live)
    rag = args.context != "none"
    contexts = {name: args.retrieved / args.context / f"{name}.jsonl" for name in ("train", "val")}
    if rag and not any(atomic.iter_jsonl(contexts["train"])):
        reason = f"{contexts['train']} is empty: retrieval.enabled is false"
        training.write_not_run(outputs, args.checkpoints, args.metrics, reason)
        print(f"train ({args.context} context): not run ({reason})")
        return

    p = params.load(args.params)
    # train_rag's prompts hold context: dvc.yaml passes retrieval.max_length (train never reads it).
    train = p.train if args.max_length is None else p.train.model_copy(update={"max_length": args.max_length})
    distill = p.distill
    teacher = distill_loss.teacher_loss(distill.enabled, distill.mode, args.teacher, distill.temperature,
                                        distill.kl_weight, train.launcher)
    # A quantization bitsandbytes cannot run here stops the stage before anything is loaded.
    modeling.check_quantize(train.quantize, modeling.resolve_device(train.device))
    accelerate_config = None
    if train.launcher == "accelerate":
        accelerate_config = launch.check_config(train.accelerate_config, train.device)
        if not launch.is_worker():
            launch.relaunch(accelerate_config, Path(__file__).resolve(), sys.argv[1:] if argv is None else list(argv))
            return
    main_process = launch.is_main_process()  # writes the shared outputs; the others only train
    train_records = load_split(args.train, train.max_samples)
    val_records = load_split(args.val, train.max_val_samples)
    if rag:  # the same rendering as at test time (repotune.prompts)
        train_records = with_context(train_records, contexts["train"], args.context)
        val_records = with_context(val_records, contexts["val"], args.context)
    if main_process:
        print(f"train: {len(train_records)} samples, val: {len(val_records)} samples")
    # model.base alone is read (its label is recorded): dvc.yaml declares that key, not `model`.
    base_label = p.model.label if p.model is not None else None
    if train.save_steps > 0:  # a key of all that decides the run (the process count: RNG states, shards)
        settings = {"lora": p.lora.model_dump(mode="json"), "train": train.model_dump(mode="json"),
                    "prompt": p.prompt.model_dump(mode="json"), "task": p.task.name, "model": base_label}
        files = {"train": args.train, "val": args.val, "accelerate_config": accelerate_config,
                 "context": contexts["train"] if rag else None, "val_context": contexts["val"] if rag else None}
        inputs = checkpoints.input_identities(args.base, files, **(teacher.key() if teacher else {}))
        outputs = dataclasses.replace(outputs, checkpoints=checkpoints.run_folder(args.checkpoints, settings, inputs, main_process))

    results = train_adapter(
        args.base, train_records, val_records, outputs,
        # Only task.name decides training (dvc.yaml declares it alone): the task's own knobs stay
        # at their defaults here, so a change of them never re-runs this stage.
        lora=p.lora, train=train, prompt=p.prompt, task=params.TaskParams(name=p.task.name),
        base_name=base_label or str(args.base),
        extra_info={"languages": sorted({r.get("language", "unknown") for r in train_records}),
                    **({"context": args.context} if rag else {}), **(teacher.info() if teacher else {})},
        trainer_class=teacher.trainer_class if teacher else None,
    )
    if main_process:
        training.write_metrics(args.metrics, results, args.context)
        checkpoints.finish(args.checkpoints)  # the adapter is saved: nothing left to resume


if __name__ == "__main__":
    sys.exit(errors.run(main))
