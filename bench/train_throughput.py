"""Training throughput of the train stage: tokens/s, FLOPs per token, MFU.

Two measurements, both with the LoRA and train settings of params.yaml:

- ``stage``: ``repotune.training.train_adapter``, exactly as the train stage runs it (TRL
  SFTTrainer, completion-only loss, length-grouped batches, AdamW), for one epoch over the first
  ``--samples`` train samples by id (no evaluation). Tokens are the real (unpadded) prompt +
  completion tokens TRL trains on; the wall time includes the trainer's own work (collation,
  optimizer, logging) and the padding of every batch.
- ``stage_packed``: the same with ``train.packing: true`` (TRL best-fit-decreasing packing,
  padding-free): the same samples and useful FLOPs, fewer and fuller rows, but each packed
  row's attention is computed over the whole row and masked per sample.
- ``kernel``: the same peft LoRA model doing forward + backward + AdamW step on a fixed
  batch of ``batch_size`` x ``--kernel-length`` tokens with no padding, timed over a few steps:
  what the model's arithmetic alone achieves on this CPU.
- ``micro_batches`` (``--micro-batches 8x1 4x2 2x4``, instead of the three above): the stage
  with each split of the same update into ``train.batch_size`` x ``train.grad_accum``, each in
  a process of its own, for their tokens/s and peak memory side by side.

Both are put against the machine's limit: the matmul rate measured in the precision the
model computes in (``--precision``; 4-bit QLoRA dequantizes to it; 8-bit, an int8 forward
through torch._int_mm and a dequantized backward, has no single rate and is put against it as
a reference only) with the same number of threads, before and after each measurement.
``--precision bf16`` and ``--quantize 4bit|8bit`` measure the stage as ``train.precision`` /
``train.quantize`` would run it (the kernel loads the model the same way); ``--prepack off``
measures torch's MKL path instead of ``train.prepack_frozen``'s oneDNN pre-packed weights,
``--fast-dropout off`` torch's dropout masks instead of ``train.fast_dropout``'s, and in fp32 every run is also put against the pre-packed oneDNN matmul rate (``mfu_vs_onednn``,
the stricter reference: it is faster than MKL's here). The result records
the CPU model and flags (AVX2, AVX-512, bf16, AMX) it was taken on. FLOPs per token are those
LoRA training needs (``flops.lora_training_flops``:
forward and activation gradients of the frozen base, LoRA forward and both its gradients,
attention at the real sequence lengths); the weight gradients of frozen weights are not
computed and not counted. The vocabulary projection counts at the completion positions only
for the stage (its loss needs no more; see ``repotune.completion_loss``) and at
every position for the kernel (whose loss covers them all).

    python bench/train_throughput.py --model models/base --train data/split/train.jsonl
        [--params params.yaml] [--samples 320] [--threads 2] [--kernel-steps 4]
        [--kernel-length 192] [--runs kernel stage stage_packed] [--precision fp32|bf16] [--quantize none|4bit|8bit] [--prepack on|off] [--fast-dropout on|off] [--out out.json]
    python bench/train_throughput.py --model models/base --micro-batches 8x1 4x2 2x4 [--samples 160]

Wall times include anything else running on the machine: the matmul rate and the load average
are recorded around every measurement; compare runs only when those agree. Peak memory is
the largest resident set sampled every 20 ms during each measurement (``peak_rss_mib``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from flops import (  # bench/flops.py
    lora_flops_per_token,
    lora_training_flops,
    machine_facts,
    machine_rate,
    model_shape,
    peak_rss,
    write_result,
)

from repotune import params
from repotune.prompts import Prompter
from repotune.training_data import load_split, token_lengths


def trained_lengths(
    rows: Sequence[dict[str, str]], tokenizer, max_length: int
) -> tuple[list[int], list[int]]:
    """Tokens of every row as TRL trains it: (prompt + completion + EOS, completion + EOS), cut
    at max_length. Rows whose prompt alone fills max_length are dropped by TRL and here too.
    """
    kept = [(p, min(t, max_length)) for p, t in token_lengths(rows, tokenizer) if p < max_length]
    return [t for _, t in kept], [t - p for p, t in kept]


def measure(threads: int, work, matmul_seconds: float = 1.5, dtype: str = "fp32") -> dict:
    """Run `work()` (returns seconds, FLOPs, extra facts) between two matmul-rate measurements
    in `dtype`."""
    with machine_rate(threads, matmul_seconds, dtype) as machine:
        with peak_rss() as peak:
            seconds, flops, facts = work()
    return {
        **facts,
        "peak_rss_mib": round(peak["mib"]),
        "seconds": round(seconds, 2),
        **machine,
        "achieved_flops_per_s": round(flops / seconds),
        "mfu": round(flops / seconds / machine["matmul_flops_per_s"], 4),
        # Against the faster pre-packed oneDNN rate: the stricter reference when the stage packs.
        **({"mfu_vs_onednn": round(flops / seconds / machine["onednn_matmul_flops_per_s"], 4)}
           if "onednn_matmul_flops_per_s" in machine else {}),
    }


def micro_batch(spec: str) -> tuple[int, int]:
    """``BxA`` -> (train.batch_size B, train.grad_accum A)."""
    try:
        size, accum = (int(n) for n in spec.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected BxA, e.g. 4x2") from None
    if size < 1 or accum < 1:
        raise argparse.ArgumentTypeError(f"{spec!r}: both numbers must be at least 1")
    return size, accum


def micro_batch_process(args: argparse.Namespace, spec: tuple[int, int]) -> dict:
    """One ``--micro-batches`` stage run in a fresh process of this script (nothing of an
    earlier run left in its allocator), as its result dict."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="repotune-bench-") as scratch:
        out = Path(scratch) / "run.json"
        subprocess.run([
            sys.executable, __file__, "--model", args.model, "--train", args.train, "--params", args.params,
            "--samples", str(args.samples), "--threads", str(args.threads),
            "--matmul-seconds", str(args.matmul_seconds), "--micro-batches", "x".join(map(str, spec)),
            "--precision", args.precision, "--quantize", args.quantize, "--prepack", args.prepack,
            "--out", str(out),
        ], check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["micro_batches"][0]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF model folder (e.g. models/base)")
    parser.add_argument("--train", default="data/split/train.jsonl", help="train split JSONL")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--samples", type=int, default=320, help="train samples for the stage run (train.max_samples)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kernel-steps", type=int, default=4, help="timed kernel steps")
    parser.add_argument("--kernel-length", type=int, default=0, help="0: mean trained length")
    parser.add_argument("--matmul-seconds", type=float, default=1.5, help="per rate measurement")
    parser.add_argument(
        "--runs", nargs="+", choices=["kernel", "stage", "stage_packed"], default=["kernel", "stage", "stage_packed"],
        help="which measurements to take (default all three)",
    )
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="train.precision")
    parser.add_argument("--quantize", choices=["none", "4bit", "8bit"], default="none", help="train.quantize")
    parser.add_argument(
        "--prepack", choices=["on", "off"], default="on",
        help="train.prepack_frozen: the frozen linears on oneDNN pre-packed weights (on, the default) or MKL (off)",
    )
    parser.add_argument(
        "--fast-dropout", choices=["on", "off"], default="on",
        help="train.fast_dropout: dropout masks cut from 16 random bits an element (on, the default) or torch's",
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="kernel run only: the peft model under torch.compile (inductor), on torch's MKL path (no "
        "pre-packed weights); its first step, compilation included, is reported as first_step_seconds",
    )
    parser.add_argument(
        "--micro-batches", nargs="+", metavar="BxA", type=micro_batch,
        help="instead of the kernel and packing runs: the stage with train.batch_size B and "
        "grad_accum A (e.g. 8x1 4x2 2x4), each in a process of its own so that its peak memory is its own",
    )
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.micro_batches and len(args.micro_batches) > 1:
        runs = [micro_batch_process(args, spec) for spec in args.micro_batches]
        write_result({"samples": args.samples, "threads": args.threads, "machine": machine_facts(),
                      "micro_batches": runs}, args.out)
        return

    import torch
    from peft import LoraConfig, get_peft_model

    from repotune import modeling
    from repotune.tasks import resolved_training
    from repotune.trainer_setup import cpu_training_kernels, load_for_training
    from repotune.training import Outputs, train_adapter

    p = params.load(args.params)
    train = resolved_training(p.train, p.task.name).model_copy(  # the task's lr where params leave it null
        update={"epochs": 1.0, "max_steps": -1, "threads": args.threads, "device": "cpu",
                "precision": args.precision, "quantize": args.quantize, "prepack_frozen": args.prepack == "on",
                "fast_dropout": args.fast_dropout == "on"}
    )
    if args.compile:
        # inductor cannot trace oneDNN's opaque packed weights: the compiled kernel runs torch's
        # MKL path, as bench/results/train_compile.json measured it.
        train = train.model_copy(update={"prepack_frozen": False})
    if args.micro_batches:
        train = train.model_copy(update=dict(zip(("batch_size", "grad_accum"), args.micro_batches[0], strict=True)))
    torch.set_num_threads(args.threads)
    records = load_split(args.train, args.samples)
    tokenizer = modeling.load_tokenizer(args.model)
    lengths, completions = trained_lengths(
        # As the stage builds them: code cut so that every row fits max_length.
        Prompter.from_params(p.prompt, p.task.name).fitted_rows(records, tokenizer, train.max_length)[0],
        tokenizer, train.max_length,
    )

    base = load_for_training(Path(args.model), train).model  # as the stage loads it (k-bit: prepared)
    shape = model_shape(base)  # before peft adds the LoRA weights
    model = get_peft_model(
        base,
        LoraConfig(r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout,
                   bias=p.lora.bias, target_modules=p.lora.target_modules, task_type="CAUSAL_LM"),
    )
    lora_fpt = lora_flops_per_token(model)
    length = args.kernel_length or round(sum(lengths) / len(lengths))
    result = {
        "model": Path(args.model).name,
        "machine": machine_facts(),
        "threads": args.threads,
        "precision": args.precision,
        "quantize": args.quantize,
        "prepack_frozen": train.prepack_frozen,
        "fast_dropout": train.fast_dropout,
        "compile": args.compile,
        "lora": p.lora.model_dump(mode="json"),
        "batch_size": train.batch_size,
        "max_length": train.max_length,
        **shape,
        "lora_flops_per_token": lora_fpt,
        "flops_per_token_at_mean_length": round(lora_training_flops(shape, [length], lora_fpt) / length),
    }

    def kernel():
        cpu_training_kernels(model, train)  # as build_trainer does for the stage
        model.train()
        optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=train.lr)
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, shape["vocab"], (train.batch_size, length), generator=generator)
        forward = torch.compile(model) if args.compile else model

        def step() -> None:
            loss = forward(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        start = time.perf_counter()
        step()  # warm-up: allocations, thread pool (and compilation)
        first_step = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.kernel_steps):
            step()
        seconds = time.perf_counter() - start
        tokens = args.kernel_steps * train.batch_size * length
        flops = args.kernel_steps * lora_training_flops(shape, [length] * train.batch_size, lora_fpt)
        return seconds, flops, {
            "steps": args.kernel_steps, "sequence_length": length, "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1), "first_step_seconds": round(first_step, 2),
        }

    def stage(packing: bool):
        with tempfile.TemporaryDirectory(prefix="repotune-bench-") as scratch:
            run = train_adapter(
                args.model, records, [], Outputs(Path(scratch) / "adapter"),
                lora=p.lora, train=train.model_copy(update={"packing": packing}), prompt=p.prompt, task=p.task,
            )
        seconds = run["train_seconds"]
        return seconds, lora_training_flops(shape, lengths, lora_fpt, completions), {
            "samples": len(records),
            "steps": run["steps"],
            "tokens": run["train_tokens"],
            "tokens_counted_here": sum(lengths),
            "tokens_per_s": round(run["train_tokens"] / seconds, 1),
            "mean_length": round(sum(lengths) / len(lengths), 1),
            "completion_tokens": sum(completions),
            "final_loss": round(run["train_loss"], 4),
            "packing": packing,
        }

    if args.micro_batches:
        del model, base  # the stage loads its own copy: this one would count in its peak
        result["micro_batches"] = [{"batch_size": train.batch_size, "grad_accum": train.grad_accum,
                                    **measure(args.threads, lambda: stage(False), args.matmul_seconds, args.precision)}]
        write_result(result, args.out)
        return
    if "kernel" in args.runs:
        result["kernel"] = measure(args.threads, kernel, args.matmul_seconds, args.precision)
        print(json.dumps(result["kernel"]), file=sys.stderr)
    del model, base  # the stage loads its own copy
    for name, packing in (("stage", False), ("stage_packed", True)):
        if name not in args.runs:
            continue
        result[name] = measure(args.threads, lambda packing=packing: stage(packing), args.matmul_seconds, args.precision)
        print(json.dumps(result[name]), file=sys.stderr)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
