"""Stage `generate`: one system's outputs on every evaluation (set x prompt template).

A system is one entry of params.yaml `generate.systems` (dvc.yaml runs generate@<name> for
each): the model folder it runs, the context it sees, its prompt kind, and per task the
`decoding` keys it uses instead of the section's (the fine-tuned systems: 4 beams on docstrings).

Reads:  the system's model folder (models/base, models/merged, models/merged_rag,
        data/distill/model), data/split/test.jsonl, data/ood.jsonl (when it has samples),
        data/retrieved/<context>/{test,ood}.jsonl (the system's context, retrieval or prefix,
        put in every prompt as training puts it, see repotune.prompts), params.yaml
        `generate.systems.<system>`, `generate` (templates, sample cap, device, threads),
        `ood.max_samples` (the out-of-domain set's cap; null `ood` = no such set), `decoding`, `prompt`, `task` (name, and `task.<name>.extract`: a completion
        target's shape decides its stops) and `train.max_length` (long code is cut to fit it with room for
        max_new_tokens, as in training; no reference length leaks in), or for a system with
        context `retrieval.max_length` (the context is cut first, then the code).
Writes: data/generations/<system>/<set>.<template>.jsonl: per sample, sorted by id: the
        output (post-processed as the task says), the raw text, prompt and generated token
        counts, and whether the prompt's code was cut;
        metrics/generate/<system>.json: the model folder and its parameter count, prompts cut,
        generated tokens, seconds and tokens/s per evaluation (timings are NOT deterministic;
        only the report reads them).
        With prompt: chat (system base_chat): every evaluation is prompted with the task's
        CHAT_PROMPT through the model's chat template, the reply unwrapped by the task's
        chat_answer; a task without one, or a tokenizer without a chat template, writes
        system.json with enabled: false and the reason instead (evaluate leaves it out). So
        does a system with enabled: false, or enabled: with_retrieval while retrieval is off
        (its context files are empty, its model folder a disabled marker).
        A system with context also records per sample whether its context was cut to fit
        (context_cut) and per evaluation prompts_context_cut.
Run:    python stages/generate.py --system base [--model FOLDER (default: the system's)]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from repotune import atomic, errors, evalsets, params


def not_run(system: str, out: Path, metrics_path: Path, reason: str) -> None:
    """The outputs of a system that does not run: a disabled marker, and metrics saying why."""
    evalsets.write_disabled_system(out, reason)
    atomic.write_json(metrics_path, {"system": system, "enabled": False, "reason": reason})
    print(f"generate {system}: not run ({reason})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", required=True, help="a name of generate.systems (base, finetuned, ...)")
    parser.add_argument("--model", type=Path, default=None, help="default: the system's model folder")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--test", type=Path, default=Path("data/split/test.jsonl"))
    parser.add_argument("--ood", type=Path, default=Path("data/ood.jsonl"))
    parser.add_argument("--retrieved", type=Path, default=Path("data/retrieved"), help="the retrieve stage's output")
    parser.add_argument("--out", type=Path, default=None, help="default: data/generations/<system>")
    parser.add_argument("--metrics", type=Path, default=None, help="default: metrics/generate/<system>.json")
    args = parser.parse_args(argv)
    p = params.load(args.params)
    try:  # its own entry only: generate@<system> declares generate.systems.<system>, not the others
        system = p.generate.systems[args.system]
    except KeyError:
        raise errors.RepotuneError(f"system {args.system!r} is not in generate.systems of {args.params}") from None
    model = args.model or Path(system.model)
    out = args.out or Path("data/generations") / args.system
    metrics_path = args.metrics or Path("metrics/generate") / f"{args.system}.json"

    from repotune import systems
    from repotune.modeling import load_tokenizer, peak_memory_mib
    from repotune.prompts import with_context
    from repotune.tasks import task

    contexts = systems.context_files(args.retrieved, system)
    if (reason := systems.not_run_reason(args.system, system, model, contexts)) is not None:
        return not_run(args.system, out, metrics_path, reason)
    if not (model / "config.json").is_file():
        raise errors.RepotuneError(f"{model}: no model folder for system {args.system!r}")
    sets = evalsets.load_sets(args.test, args.ood, p.generate.max_samples, p.ood)
    # Each sample's context, rendered into its prompts (none: the records as they are).
    sets = {name: with_context(records, contexts[name], system.context) for name, records in sets.items()}
    tokenizer = load_tokenizer(model)
    if system.prompt == "chat" and (reason := systems.chat_unavailable(
        p.task.name, task(p.task.name).CHAT_PROMPT, tokenizer, model,
    )) is not None:
        return not_run(args.system, out, metrics_path, reason)
    summary = systems.generate_outputs(
        args.system, system, model, tokenizer, sets, out, task_name=p.task.name, extract=p.task.extract,
        prompt=p.prompt, templates=p.generate.templates, decoding=p.decoding, device=p.generate.device,
        threads=p.generate.threads,
        # A prompt holding context gets retrieval.max_length (train_rag trained at it); the rest
        # train.max_length, both with room for max_new_tokens.
        max_length=p.retrieval.max_length if system.context != "none" else p.train.max_length,
    )
    atomic.write_json(metrics_path, {**summary, "peak_memory_mib": peak_memory_mib()})
    print(f"generate {args.system}: " + ", ".join(
        f"{key} {s['samples']} samples in {s['seconds']} s" for key, s in summary.items()
        if isinstance(s, dict) and "samples" in s
    ))


if __name__ == "__main__":
    sys.exit(errors.run(main))
