"""The training loss on CPU: TRL's fused kernel against repotune.completion_loss, per micro-batch.

Times the forward and backward of the loss alone (the hidden states of the completion rows
through the model's output head, the negative log-likelihood of gold tokens) at several row
counts, the two ways interleaved repetition by repetition in one process, so that the
machine's swings hit both alike:

- ``trl``: ``trl.kernels.ChunkedLogProbFunction`` with the chunk size and outputs SFTTrainer
  asks for (log-probabilities, entropy, top-1), what the stage ran before;
- ``repotune``: ``completion_loss.completion_sums`` (one product through the head,
  log-softmax, the gold tokens' NLL, entropy and top-1 of the logs), what it runs now.

The result gives the milliseconds a micro-batch, the GFLOP/s of the three vocabulary
products TRL's kernel computes (forward, forward again in backward, gradient; the shipped loss
keeps its logits and computes two), the loss and gradient differences, and the machine.

With ``--train``, also the whole forward and backward of the stage's own micro-batches (the
trainer ``build_trainer`` makes, on the first ``--samples`` train samples): each micro-batch
with ``SFTTrainer.compute_loss`` (TRL's kernel on the completion rows, as the stage ran it)
and with the shipped ``compute_loss``, alternating, twice over: what the loss saves of a step.

    python bench/loss_throughput.py --model models/base [--rows 36 50 72 120] [--repeats 20]
        [--train data/split/train.jsonl --samples 96 --params params.yaml] [--threads 2] [--out out.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from flops import machine_facts, write_result  # bench/flops.py


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--model", required=True, help="a model folder (models/base)")
    parser.add_argument("--rows", nargs="+", type=int, default=[36, 50, 72, 120],
                        help="completion rows of a micro-batch (the default run: 50 on average)")
    parser.add_argument("--repeats", type=int, default=20, help="timed forward + backward passes per way and row count")
    parser.add_argument("--train", help="a train split (JSONL): also time the stage's own micro-batches")
    parser.add_argument("--samples", type=int, default=96, help="with --train: its first N samples")
    parser.add_argument("--params", default="params.yaml", help="with --train: the params the stage reads")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch
    from trl.kernels import ChunkedLogProbFunction

    from repotune import completion_loss, modeling

    torch.set_num_threads(args.threads)
    head = modeling.load_causal_lm(args.model).get_output_embeddings().requires_grad_(False)
    vocab, width = head.weight.shape
    generator = torch.Generator().manual_seed(0)

    def trl(hidden, gold):  # as SFTTrainer 1.16 calls it (trl/trainer/utils.py)
        outputs = ("log_probs", "entropy", "is_top1")
        return -ChunkedLogProbFunction.apply(hidden, head.weight, head.bias, gold, 1.0, 32768, None, 1.0, outputs)[0].sum()

    def shipped(hidden, gold):
        return completion_loss.completion_sums(hidden, head, gold)[0]

    ways = {"trl": trl, "repotune": shipped}
    runs = []
    for rows in args.rows:
        states = torch.randn(rows, width, generator=generator)
        gold = torch.randint(0, vocab, (rows,), generator=generator)
        seconds, results = dict.fromkeys(ways, 0.0), {}
        for repeat in range(args.repeats + 2):  # two warm-up passes, not timed
            for name, loss_of in ways.items():
                hidden = states.clone().requires_grad_(True)
                start = time.perf_counter()
                loss = loss_of(hidden, gold)
                loss.backward()
                if repeat >= 2:
                    seconds[name] += time.perf_counter() - start
                results[name] = (loss.detach(), hidden.grad)
        flops = 3 * 2 * rows * vocab * width
        runs.append({
            "rows": rows,
            **{f"{name}_ms": round(1000 * s / args.repeats, 1) for name, s in seconds.items()},
            "trl_gflops_per_s": round(flops * args.repeats / seconds["trl"] / 1e9, 1),
            "loss_difference": float((results["trl"][0] - results["repotune"][0]).abs()),
            "gradient_difference": float((results["trl"][1] - results["repotune"][1]).abs().max()),
        })
        print(runs[-1])
    result = {"model": args.model, "vocab": vocab, "hidden": width, "threads": args.threads,
              "repeats": args.repeats, "machine": machine_facts(), "runs": runs}
    if args.train:
        result["stage_micro_batches"] = stage_micro_batches(args)
    write_result(result, args.out)


def stage_micro_batches(args: argparse.Namespace) -> dict:
    """Forward + backward seconds of the stage's micro-batches with TRL's loss and the shipped one."""
    import tempfile
    from pathlib import Path

    from train_throughput import load_split  # bench/train_throughput.py
    from trl import SFTTrainer

    from repotune import compat, params
    from repotune.prompts import Prompter
    from repotune.tasks import resolved_training
    from repotune.trainer_setup import build_trainer, load_for_training
    from repotune.training_data import training_rows

    p = params.load(args.params)
    train = resolved_training(p.train, p.task.name).model_copy(update={"device": "cpu", "threads": args.threads})
    loaded = load_for_training(Path(args.model), train)
    rows = training_rows(Prompter.from_params(p.prompt, p.task.name), load_split(args.train, args.samples), [],
                         loaded.tokenizer, train.max_length)[0]
    with tempfile.TemporaryDirectory(prefix="repotune-bench-") as scratch:
        trainer = build_trainer(loaded, rows, [], p.lora, train, Path(scratch), [], checkpoints=False)
    model = trainer.model.train()
    batches = list(trainer.get_train_dataloader())
    ways = {"trl": lambda batch: SFTTrainer.compute_loss(trainer, model, batch),
            "repotune": lambda batch: trainer.compute_loss(model, batch)}
    seconds = dict.fromkeys(ways, 0.0)
    with compat.completion_positions_only():  # as the stage ran TRL's loss
        for timed, batches_now in ((False, batches[:2]), (True, batches + batches)):
            for i, batch in enumerate(batches_now):
                for name in (list(ways) if i % 2 == 0 else list(ways)[::-1]):
                    start = time.perf_counter()
                    ways[name](dict(batch)).backward()
                    model.zero_grad()
                    seconds[name] += (time.perf_counter() - start) if timed else 0.0
    return {"samples": args.samples, "micro_batches": len(batches),
            "completion_rows": sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches),
            "seconds_two_passes": {name: round(s, 2) for name, s in seconds.items()},
            "saved": round(1 - seconds["repotune"] / seconds["trl"], 4)}


if __name__ == "__main__":
    main()
