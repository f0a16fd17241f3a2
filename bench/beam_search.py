"""Beam search on the slots against model.generate's padded batches, greedy decoding beside.

Loads a model folder as the generate stage does (linears pre-packed for the batch size),
prompts it with the docstring task's template on the first ``--samples`` records of a
test.jsonl by id (the stage's own prompts differ only where it cuts code to fit
``train.max_length``), with the docstring task's decoding defaults (n-gram block 4, stop
``"\\n\\n"``, 64 new tokens, batch size 16), and times, one after another in one process and
``--rounds`` times over:

- ``greedy``: continuous batching, one row a prompt;
- ``slots``: beam search on the slots (``repotune.beam_search``), ``--num-beams`` and
  ``--length-penalty``;
- ``padded``: the same beam search on ``model.generate`` over left-padded batches, the path
  beams ran on before (``repotune.slot_cache.supports`` made to say no for the run).

Each run records seconds, prefill seconds, decoding steps, generated tokens and the load
average; the result also says on how many prompts the two beam paths give the same text
(float rounding differs between a padded batch and a prompt alone, which can flip a near tie
between beams, and a stop sequence ends a different set of candidates on each path).

    python bench/beam_search.py --model models/merged --prompts data/split/test.jsonl \\
        [--samples 150] [--num-beams 4] [--length-penalty 1.5] [--rounds 1] [--threads 2] [--out out.json]

Wall times include anything else running on the machine: compare runs only when the load
averages agree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence

from flops import machine_facts, write_result  # bench/flops.py

from repotune import atomic
from repotune.params import DecodingParams, PromptParams
from repotune.prompts import template_text


@contextlib.contextmanager
def padded_path() -> Iterator[None]:
    """Beam search on ``model.generate`` for the block: the slot cache says it does not support
    the model, so ``repotune.generation`` takes the padded path, as it did for all beams before."""
    from repotune import slot_cache

    supports = slot_cache.supports
    slot_cache.supports = lambda model: False
    try:
        yield
    finally:
        slot_cache.supports = supports


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF model folder")
    parser.add_argument("--prompts", required=True, help="test.jsonl (records with id and input)")
    parser.add_argument("--samples", type=int, default=150, help="first N records by id (0 = all)")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stop", nargs="*", default=["\n\n"], help="the docstring task's default")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch

    from repotune.generation import generate
    from repotune.modeling import load_causal_lm, load_tokenizer, prepack_linears
    from repotune.prompts import Prompter
    from repotune.tasks import resolved_decoding

    torch.set_num_threads(args.threads)
    records = sorted(atomic.read_jsonl(args.prompts), key=lambda r: r["id"])[: args.samples or None]
    prompter = Prompter("docstring", template_text(PromptParams(), "docstring"))
    prompts = [prompter.prompt(record) for record in records]
    greedy = resolved_decoding(DecodingParams(stop=args.stop), "docstring")
    beams = greedy.model_copy(update={"num_beams": args.num_beams, "length_penalty": args.length_penalty})
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model)
    prepack_linears(model, greedy.batch_size)  # as generate_from_folder does
    runs = {"greedy": (greedy, contextlib.nullcontext), "slots": (beams, contextlib.nullcontext),
            "padded": (beams, padded_path)}
    result: dict = {
        "model": args.model, "samples": len(prompts), "threads": args.threads, "num_beams": args.num_beams,
        "length_penalty": args.length_penalty, "machine": machine_facts(), "rounds": [],
    }
    texts: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        round_ = {}
        for name, (decoding, path) in runs.items():
            with path():
                run = generate(model, tokenizer, prompts, decoding, stop=decoding.stop, desc=name)
            texts[name] = run.texts
            round_[name] = {
                "seconds": round(run.seconds, 2), "prefill_seconds": round(run.prefill_seconds, 2),
                "decode_steps": run.decode_steps, "generated_tokens": sum(run.new_tokens),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
            print(name, json.dumps(round_[name]), file=sys.stderr)
        result["rounds"].append(round_)
    result["same_texts_slots_padded"] = sum(a == b for a, b in zip(texts["slots"], texts["padded"], strict=True))
    write_result(result, args.out)


if __name__ == "__main__":
    main()
