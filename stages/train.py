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
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, checkpoints, errors, launch, modeling, params
from repotune.artifacts import sha256_file
from repotune.distill_loss import teacher_trainer
from repotune.modeling import peak_memory_mib
from repotune.prompts import with_context
from repotune.provenance import model_identity
from repotune.training import METRIC_KEYS, Outputs, train_adapter
from repotune.training_data import load_split


# long: the stage's recipe in order: a disabled train_rag, params, launcher, records, checkpoint
# key, train, metrics; the work is in repotune.training. To be shortened (checkpoint key helper).
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
    contexts = {name: args.retrieved / args.context / f"{name}.jsonl" for name in ("train", "val")}
    if args.context != "none" and not any(atomic.iter_jsonl(contexts["train"])):
        reason = f"{contexts['train']} is empty: retrieval.enabled is false"
        atomic.write_disabled(args.out, reason)
        checkpoints.finish(args.checkpoints)
        atomic.write_json(args.metrics, {"enabled": False, "reason": reason})
        print(f"train ({args.context} context): not run ({reason})")
        return

    p = params.load(args.params)
    # train_rag's prompts hold context: dvc.yaml passes retrieval.max_length (train never reads it).
    train = p.train if args.max_length is None else p.train.model_copy(update={"max_length": args.max_length})
    distill = p.distill
    logits = distill.enabled and distill.mode == "logits"
    if logits and train.launcher != "none":
        raise errors.RepotuneError(
            "distill.mode: logits trains in one process (the teacher runs beside the student); set train.launcher: none"
        )
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
    if args.context != "none":  # the same rendering as at test time (repotune.prompts)
        train_records = with_context(train_records, contexts["train"], args.context)
        val_records = with_context(val_records, contexts["val"], args.context)
    if main_process:
        print(f"train: {len(train_records)} samples, val: {len(val_records)} samples")
    teacher_identity = model_identity(args.teacher) if logits else None
    # model.base alone is read (its label is recorded): dvc.yaml declares that key, not `model`.
    base_label = p.model.label if p.model is not None else None
    run_folder = None
    if train.save_steps > 0:
        # The process count decides the RNG states and data shards a checkpoint holds.
        inputs = {"base": model_identity(args.base), "train": sha256_file(args.train), "val": sha256_file(args.val),
                  **({"accelerate_config": sha256_file(accelerate_config)} if accelerate_config else {}),
                  **({"context": sha256_file(contexts["train"]), "val_context": sha256_file(contexts["val"])}
                     if args.context != "none" else {}),
                  # with logits, the loss depends on the teacher and its settings
                  **({"teacher": teacher_identity, "distill": f"{distill.temperature}/{distill.kl_weight}"} if logits else {})}
        run_folder = checkpoints.run_folder(
            args.checkpoints,
            {"lora": p.lora.model_dump(mode="json"), "train": train.model_dump(mode="json"),
             "prompt": p.prompt.model_dump(mode="json"), "task": p.task.name,
             "model": base_label},
            inputs, main_process,
        )

    results = train_adapter(
        args.base, train_records, val_records,
        Outputs(args.out, live=None if args.no_live else args.live, checkpoints=run_folder),
        # Only task.name decides training (dvc.yaml declares it alone): the task's own knobs stay
        # at their defaults here, so a change of them never re-runs this stage.
        lora=p.lora, train=train, prompt=p.prompt, task=params.TaskParams(name=p.task.name),
        base_name=base_label or str(args.base),
        extra_info={
            "languages": sorted({r.get("language", "unknown") for r in train_records}),
            **({"context": args.context} if args.context != "none" else {}),
            **({"distill": {"mode": "logits", "teacher": teacher_identity,
                            "temperature": distill.temperature, "kl_weight": distill.kl_weight}} if logits else {}),
        },
        trainer_class=(
            (lambda loaded: teacher_trainer(args.teacher, loaded, distill.temperature, distill.kl_weight))
            if logits else None
        ),
    )
    if not main_process:
        return
    context_keys = {"context": args.context, "samples_context_cut": results["samples_context_cut"]} \
        if args.context != "none" else {}
    atomic.write_json(args.metrics, {**{key: results[key] for key in METRIC_KEYS}, **context_keys,
                                 "peak_memory_mib": peak_memory_mib()})
    checkpoints.finish(args.checkpoints)  # the adapter is saved: nothing left to resume
    print(
        f"train loss {results['train_loss']:.4f}, eval loss {results['eval_loss']}, "
        f"{results['steps']} steps, {results['train_tokens_per_s']:.1f} train tokens/s"
    )


if __name__ == "__main__":
    sys.exit(errors.run(main))
