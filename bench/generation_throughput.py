"""Generation throughput of a model folder: tokens/s per batch size, FLOP/s and MFU.

Measures what the generate stage does (``repotune.generation.generate_from_folder``: linears
pre-packed for the batch size, continuous batching, stop sequences that end rows early) on a
set of docstring prompts, at several batch sizes, and relates it to this machine's fp32 matmul
rate:

- model FLOPs per token: see ``bench/flops.py`` (real tokens only, prefill included).
- achieved FLOP/s: the FLOPs of the real (unpadded) tokens, prompt prefill included, divided
  by the wall time; "generated-only" counts just the decoding steps' FLOPs, as tokens/s x FLOPs
  per generated token.
- MFU: achieved FLOP/s divided by the measured rate of SmolLM2-shaped fp32 matmuls
  (2048x576 @ 576x1536) with the same number of threads.

Prompts come from a test.jsonl (records with ``input``) or, by default, from docstring-bearing
functions of the running Python's standard library (docstring removed, as in the pipeline).

    python bench/generation_throughput.py --model /tmp/smollm2-base [--prompts test.jsonl]
        [--samples 48] [--batch-sizes 1 8] [--threads 2] [--max-new-tokens 64]
        [--compare-stop-early | --no-stop-early] [--out out.json]

Wall times include anything else running on the machine: every run records the load average
and the matmul rate around it; compare runs only when those agree.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

from flops import generation_flops, machine_rate, model_shape, peak_rss, write_result  # bench/flops.py

from repotune import atomic
from repotune.params import DecodingParams, ExtractParams, PromptParams
from repotune.prompts import template_text
from repotune.extraction import extract_samples


def stdlib_records(count: int, min_chars: int = 300, max_chars: int = 1500) -> list[dict]:
    """Docstring samples from the standard library's top-level modules, chosen deterministically.

    Mined as the extract stage mines a repository (``repotune.extraction.extract_samples``).

    Args:
        count: how many records to return (evenly spread over all candidates; 0 = all).
        min_chars: shortest function source (without docstring) to keep, in characters.
        max_chars: longest one; ~1500 characters is ~400 tokens, the filter stage's default cap.

    Returns:
        Records with id, input (the function without its docstring) and target (the first
        paragraph of the docstring).
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    extract = ExtractParams(include=["/*.py"])
    records, _ = extract_samples(
        stdlib, repo="stdlib", sha=sys.version.split()[0], task_name="docstring", extract=extract
    )
    candidates = [
        r for r in records
        if r["kind"] != "class" and not r["name"].split(".")[-1].startswith("__")
        and min_chars <= len(r["input"]) <= max_chars
    ]
    step = max(1, len(candidates) // count) if count else 1
    return candidates[::step][: count or None]


def main(argv: Sequence[str] | None = None) -> None:
    decoding, prompt = DecodingParams(), PromptParams()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF model folder")
    parser.add_argument("--prompts", help="test.jsonl (default: stdlib functions)")
    parser.add_argument("--samples", type=int, default=48, help="first N prompts by id (0 = all)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, decoding.batch_size])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=decoding.max_new_tokens)
    parser.add_argument("--stop", nargs="*", default=["\n\n"], help="the docstring task's default")
    parser.add_argument("--no-stop-early", action="store_true", help="cut stops only afterwards")
    parser.add_argument(
        "--compare-stop-early", action="store_true", help="run every batch size with and without"
    )
    parser.add_argument("--template", default=template_text(prompt, "docstring"))
    parser.add_argument("--matmul-seconds", type=float, default=1.5, help="per rate measurement")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch

    from repotune.generation import generate
    from repotune.modeling import load_causal_lm, load_tokenizer, prepack_linears
    from repotune.prompts import Prompter

    torch.set_num_threads(args.threads)
    if args.prompts:
        records = sorted(atomic.read_jsonl(args.prompts), key=lambda r: r["id"])[: args.samples or None]
    else:
        records = stdlib_records(args.samples)
    prompts = [Prompter("docstring", args.template).prompt(r) for r in records]
    tokenizer = load_tokenizer(args.model)
    shape = model_shape(load_causal_lm(args.model))
    stop_early = [True, False] if args.compare_stop_early else [not args.no_stop_early]
    result = {
        "model": Path(args.model).name,
        "samples": len(prompts),
        "threads": args.threads,
        "max_new_tokens": args.max_new_tokens,
        "stop": args.stop,
        **shape,
        "runs": [],
    }
    texts = None
    for batch_size in args.batch_sizes:
        # As the generate stage loads it (generate_from_folder): linears packed for this batch.
        model = load_causal_lm(args.model)
        prepack_linears(model, batch_size)
        # Warm-up (not timed): the first calls pay for thread-pool start and allocations.
        # No repetition penalty, no n-gram blocking, no markup guard: the neutral values, as before DecodingParams.
        plain = DecodingParams(repetition_penalty=1.0, no_repeat_ngram_size=0, markup_guard=False)
        generate(model, tokenizer, prompts[:2], plain.model_copy(update={"max_new_tokens": 4, "batch_size": 2}),
                 stop=[], progress=False)
        for early in stop_early:
            with machine_rate(args.threads, args.matmul_seconds) as machine, peak_rss() as memory:
                cpu = time.process_time()
                run = generate(
                    model, tokenizer, prompts,
                    plain.model_copy(update={"max_new_tokens": args.max_new_tokens, "batch_size": batch_size}),
                    stop=args.stop, stop_early=early,
                    desc=f"batch {batch_size}" + ("" if early else " (no early stop)"),
                )
                cpu = time.process_time() - cpu
            peak = machine["matmul_flops_per_s"]
            total, decode = generation_flops(shape, run.prompt_tokens, run.new_tokens)
            generated = sum(run.new_tokens)
            result["runs"].append({
                "batch_size": batch_size,
                "stop_early": early,
                "seconds": round(run.seconds, 2),
                "cpu_seconds": round(cpu, 2),
                "peak_rss_mib": round(memory["mib"]),
                "load_average_1min": machine["load_average_1min"],
                "prompt_tokens": sum(run.prompt_tokens),
                "generated_tokens": generated,
                "tokens_per_s": round(generated / run.seconds, 2),
                "prefill_seconds": round(run.prefill_seconds, 2),
                "decode_steps": run.decode_steps,
                "rows_per_decode_step": round((generated - len(prompts)) / max(run.decode_steps, 1), 2),
                "samples_per_s": round(len(prompts) / run.seconds, 3),
                "flops_per_generated_token": round(decode / max(generated, 1)),
                "achieved_flops_per_s": round(total / run.seconds),
                "matmul_flops_per_s": peak,
                "mfu": round(total / run.seconds / peak, 4),
                "mfu_generated_only": round(decode / run.seconds / peak, 4),
                # Greedy outputs must not depend on batch size or early stopping.
                "same_texts_as_first": texts is None or run.texts == texts,
            })
            texts = texts or run.texts
            print(json.dumps(result["runs"][-1]), file=sys.stderr)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
