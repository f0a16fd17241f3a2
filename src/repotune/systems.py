"""A system of the benchmark (one entry of params.yaml `generate.systems`): whether it runs,
the prompts it gets on every evaluation, and the rows its outputs become.

The generate stage runs one system: :func:`not_run_reason` first (a disabled system, or one
that needs retrieval while retrieval is off, writes a marker instead), then
:func:`generate_outputs`: :func:`system_prompts` on the evaluation sets (with the system's
context already rendered into the records, see ``repotune.prompts.with_context``),
generation, and :func:`write_outputs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import atomic, evalsets
from repotune.generation import generate_from_folder
from repotune.modeling import parameter_count, resolve_device, resolve_precision, set_threads
from repotune.params import WITH_RETRIEVAL, DecodingParams, PromptParams, SystemParams
from repotune.prompts import Prompter, evaluation_prompts
from repotune.tasks import resolved_decoding, task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from repotune.generation import Generation

SETS = ("test", "ood")


def context_files(retrieved: Path, system: SystemParams) -> dict[str, Path]:
    """Per evaluation set, the file of the system's context (the retrieve stage's output)."""
    return {name: retrieved / system.context / f"{name}.jsonl" for name in SETS}


def not_run_reason(name: str, system: SystemParams, model: Path, contexts: Mapping[str, Path]) -> str | None:
    """Why system `name` is not run, or None when it runs: ``enabled: false``, or
    ``enabled: with_retrieval`` while retrieval is off (its model folder is a disabled marker,
    or its context files are empty)."""
    if system.enabled is False:
        return f"generate.systems.{name}.enabled is false"
    if system.enabled == WITH_RETRIEVAL and (
        atomic.disabled_reason(model) is not None
        or (system.context != "none" and not any(atomic.iter_jsonl(contexts["test"])))
    ):
        return f"enabled: {WITH_RETRIEVAL}, and retrieval.enabled is false"
    return None


def chat_unavailable(task_name: str, chat_prompt: str | None, tokenizer: PreTrainedTokenizerBase, model: Path) -> str | None:
    """Why a chat system cannot be prompted (the task has no chat request, or the tokenizer no
    chat template), or None."""
    if chat_prompt is None:
        return f"task {task_name} has no chat prompt"
    if not getattr(tokenizer, "chat_template", None):
        return f"{model}: the tokenizer has no chat template"
    return None


def system_prompts(
    task_name: str,
    prompt: PromptParams,
    templates: Sequence[str] | None,
    system: SystemParams,
    chat_prompt: str | None,
    sets: Mapping[str, Sequence[Mapping[str, Any]]],
    tokenizer: PreTrainedTokenizerBase,
    budget: int,
) -> tuple[dict[str, list[str]], dict[str, list[bool]], dict[str, list[bool]]]:
    """The prompts of every evaluation (``<set>.<template>``: each set with every template of
    `templates`, null = the trained one) for `system`, each cut to `budget` tokens, with per
    evaluation which prompts had their code cut and which their context (see
    ``repotune.prompts.evaluation_prompts``). A chat system gets the task's chat request
    (`chat_prompt`) through the tokenizer's chat template on every evaluation; the others the
    evaluation's template."""
    chat = system.prompt == "chat"
    evaluations = evalsets.evaluations(evalsets.templates(templates, prompt.template), "ood" in sets)
    return evaluation_prompts(
        sets, evaluations,
        lambda template: (Prompter(task_name, chat_prompt, chat_template=True, system=prompt.system)
                          if chat else Prompter.from_params(prompt, task_name, template)),
        tokenizer, budget,
    )


def output_rows(
    records: Sequence[Mapping[str, Any]],
    run: Generation,
    cut: Sequence[bool],
    context_cut: Sequence[bool] | None,
    output: Callable[[str], str],
) -> list[dict[str, Any]]:
    """One evaluation's rows, one per record in order: id, the raw text, the output (`output`
    of the raw text: the task's post-processing), prompt and generated token counts, whether
    the code was cut and, for a system with context (`context_cut` given), whether its context
    was."""
    flags = context_cut if context_cut is not None else [None] * len(cut)
    return [
        {
            "id": record["id"], "raw": raw, "output": output(raw),
            "prompt_tokens": n_prompt, "new_tokens": n_new, "code_cut": was_cut,
            **({"context_cut": context_was_cut} if context_cut is not None else {}),
        }
        for record, raw, n_prompt, n_new, was_cut, context_was_cut in zip(
            records, run.raw_texts, run.prompt_tokens, run.new_tokens, cut, flags, strict=True
        )
    ]


def write_outputs(
    folder: Path,
    sets: Mapping[str, Sequence[Mapping[str, Any]]],
    runs: Mapping[str, Generation],
    cut: Mapping[str, Sequence[bool]],
    context_cut: Mapping[str, Sequence[bool]] | None,
    output: Callable[[str], str],
) -> dict[str, dict[str, Any]]:
    """Write each evaluation's (``<set>.<template>``) rows (:func:`output_rows`) to its
    generation file in `folder`; return per evaluation its entry of
    metrics/generate/<system>.json: samples, prompts cut (code, and context for a system with
    context), generated tokens, seconds and tokens/s."""
    summaries = {}
    for key, run in runs.items():
        set_name, template = key.split(".", 1)
        flags = context_cut[key] if context_cut is not None else None
        rows = output_rows(sets[set_name], run, cut[key], flags, output)
        atomic.write_jsonl(evalsets.generation_file(folder, set_name, template), rows)
        summaries[key] = {
            "samples": len(rows), "prompts_code_cut": sum(cut[key]),
            **({"prompts_context_cut": sum(flags)} if flags is not None else {}),
            "generated_tokens": sum(run.new_tokens), "seconds": round(run.seconds, 2),
            "tokens_per_s": round(run.tokens_per_second, 2),
        }
    return summaries


def generate_outputs(
    name: str, system: SystemParams, model: Path, tokenizer: PreTrainedTokenizerBase,
    sets: Mapping[str, Sequence[Mapping[str, Any]]], out: Path, *,
    task_name: str, extract: Any, prompt: PromptParams, templates: Sequence[str] | None,
    decoding: DecodingParams, device: str, threads: int, max_length: int,
) -> dict[str, Any]:
    """Generate `system`'s (``generate.systems.<name>``) outputs with `model` on every evaluation
    of `sets` (their context already rendered) and write them to the folder `out` (replaced
    whole, atomically); return the entry of metrics/generate/<name>.json: the system, the device,
    precision and decoding as applied (the system's own keys for the task in place, the task's
    defaults filled in), the stops, and per
    evaluation :func:`write_outputs`' summary.

    The rest are params: ``task.name`` and its ``extract`` section, ``prompt``,
    ``generate.templates`` / ``device`` / ``threads``, ``decoding``, and the prompt budget
    `max_length` (``retrieval.max_length`` for a system with context, else ``train.max_length``),
    which keeps room for ``max_new_tokens``."""
    module = task(task_name)
    applied = resolved_decoding(system.decoding_for(decoding, task_name), task_name)
    chat = system.prompt == "chat"
    prompts, cut, context_cut = system_prompts(
        task_name, prompt, templates, system, module.CHAT_PROMPT, sets, tokenizer,
        budget=max(1, max_length - applied.max_new_tokens),
    )
    set_threads(threads)
    device = resolve_device(device)
    precision = resolve_precision("auto", device)  # CPU: fp32; CUDA: bf16 where supported, else fp16
    stop = applied.stop if applied.stop is not None else module.default_stop(extract)
    # A chat reply runs to the end of its turn: the docstring may come after a fence's blank line.
    runs = generate_from_folder(
        model, prompts, applied, stop=[] if chat else stop,
        skip_leading_whitespace=module.STOP_AFTER_LEADING_WHITESPACE, device=device, precision=precision,
    )
    summary: dict[str, Any] = {
        "system": name, "model": system.model, "context": system.context, "prompt": system.prompt,
        "parameters": parameter_count(model), "device": device, "precision": precision,
        "threads": threads, "batch_size": applied.batch_size,
        "decoding": applied.model_dump(mode="json", exclude={"stop", "batch_size"}), "stop": stop,
    }
    with atomic.atomic_path(out) as folder:
        folder.mkdir(parents=True)
        summary |= write_outputs(
            folder, sets, runs, cut, context_cut if system.context != "none" else None,
            lambda raw: module.postprocess(module.chat_answer(raw) if chat else raw, stop, extract),
        )
    return summary
