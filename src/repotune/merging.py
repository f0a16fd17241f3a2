"""Merging a LoRA adapter into its base model, with a numerical check and a model card.

The base is always loaded in fp32 on the CPU, also for an adapter trained with QLoRA: merging
into 4-bit weights would round the update away (and bitsandbytes cannot save the result as a
plain model). Before merging, the adapter model's logits on a few probe prompts are kept; after
merging, the merged model must give the same logits within a tolerance.

Heavy imports (torch, transformers, peft) stay inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import io
from repotune.errors import RepotuneError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_tokens: int,
) -> list[torch.Tensor]:
    """Logits (shape [tokens, vocab]) per prompt, one prompt at a time so no padding is involved."""
    import torch

    result = []
    with torch.no_grad():
        for text in prompts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)
            result.append(model(**ids).logits[0].float())
    return result


def _max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


# Largest allowed |merged - adapter| logit difference. Measured 7.7e-5 (AVX2) and 4.6e-4
# (AVX-512) on the default SmolLM2 run (30 layers, fp32): 1e-4 left too little room.
TOLERANCE = 1e-3


def merge_adapter(
    base: str | Path,
    adapter: str | Path,
    out: str | Path,
    probes: Sequence[str],
    tolerance: float = TOLERANCE,
    max_probe_tokens: int = 512,
    card: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Merge `adapter` into `base` and save a plain HF model to `out` (replaced atomically).

    Args:
        base: the base model folder (the one the adapter was trained on).
        adapter: the adapter folder written by :func:`repotune.training.train_adapter`.
        out: folder to write: safetensors, config, generation config, tokenizer, README.md.
        probes: prompts on which merged and unmerged logits are compared (at least one).
        tolerance: largest allowed absolute logit difference. fp32 rounding alone gave
            5.8e-5 to 7.7e-5 on SmolLM2-135M (30 layers, logits ~20); a wrong merge is off by ~1.
        max_probe_tokens: each probe is cut to this many tokens (bounds the check's cost).
        card: makes the README.md model card from the check's result (see :func:`model_card`);
            None writes no card.

    Returns:
        ``max_abs_diff`` (merged vs adapter logits), ``adapter_effect`` (largest change the
        adapter makes to the base logits: a check is only meaningful when it is not 0),
        ``tolerance``, ``probes``, ``probe_tokens``.

    Raises:
        RepotuneError: a folder is missing, no probe was given, or the gap exceeds `tolerance`.
    """
    from peft import PeftModel

    from repotune import modeling

    base, adapter = Path(base), Path(adapter)
    if not (base / "config.json").is_file():
        raise RepotuneError(f"{base}: not a Hugging Face model folder (no config.json)")
    if not (adapter / "adapter_config.json").is_file():
        raise RepotuneError(f"{adapter}: not an adapter folder (no adapter_config.json; run train)")
    if not probes:
        raise RepotuneError("no probe prompts to check the merge with (is the val split empty?)")

    # The tokenizer saved with the adapter is the one training used (pad token set by TRL).
    has_tokenizer = (adapter / "tokenizer_config.json").is_file()
    tokenizer = modeling.load_tokenizer(adapter if has_tokenizer else base)
    model = modeling.load_causal_lm(base, device="cpu", precision="fp32")
    peft_model = PeftModel.from_pretrained(model, str(adapter)).eval()

    with peft_model.disable_adapter():
        base_logits = _logits(peft_model, tokenizer, probes, max_probe_tokens)
    adapter_logits = _logits(peft_model, tokenizer, probes, max_probe_tokens)
    merged = peft_model.merge_and_unload().eval()
    merged_logits = _logits(merged, tokenizer, probes, max_probe_tokens)

    gap = _max_abs_diff(merged_logits, adapter_logits)
    result = {
        "max_abs_diff": gap,
        "adapter_effect": _max_abs_diff(adapter_logits, base_logits),
        "tolerance": tolerance,
        "probes": len(probes),
        "probe_tokens": sum(len(x) for x in adapter_logits),
    }
    if not gap <= tolerance:  # also catches NaN
        raise RepotuneError(
            f"merged model disagrees with base + adapter: max |logit difference| {gap:.3g} "
            f"> tolerance {tolerance:g} on {len(probes)} probe prompts"
        )

    # Generation must stop on the EOS that training appended to every completion.
    eos_ids = merged.generation_config.eos_token_id
    eos_ids = [] if eos_ids is None else [eos_ids] if isinstance(eos_ids, int) else list(eos_ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        merged.generation_config.eos_token_id = [*eos_ids, tokenizer.eos_token_id]

    with io.atomic_path(out) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if card is not None:
            (tmp / "README.md").write_text(card(result), encoding="utf-8")
    return result


def model_card(
    training: dict[str, Any],
    clone: dict[str, Any] | None,
    merge: dict[str, Any],
    base_source: str | None = None,
) -> str:
    """A README.md for the merged model: base, source repo and revision, task, LoRA, results.

    Args:
        training: the adapter's training.json.
        clone: metrics/clone.json (``url``, ``sha``), or None when not available.
        merge: the result of :func:`merge_adapter` (it goes in the card's merge check line).
        base_source: the base folder's SOURCE.md (where the base weights come from and how
            they were checked), appended as a section when given.
    """
    p = training.get("params", {})
    lora, train, prompt = p.get("lora", {}), p.get("train", {}), p.get("prompt", {})
    task = training.get("task", "unknown")
    languages = ", ".join(training.get("languages", [])) or "unknown"
    results = training.get("results", {})
    base = training.get("base_model", "unknown")
    url = (clone or {}).get("url", "unknown")
    sha = (clone or {}).get("sha", "unknown")
    targets = lora.get("target_modules")
    targets = ", ".join(targets) if isinstance(targets, list) else targets
    from repotune.params import PromptParams
    from repotune.prompts import template_text

    template = "`" + template_text(PromptParams(**prompt), task).replace("\n", "\\n") + "`"
    if prompt.get("chat_template"):
        template += " in the tokenizer's chat template"
    lines = [
        "---",
        f"base_model: {base}",
        "library_name: transformers",
        "tags: [repotune, lora, code]",
        "---",
        "",
        f"# {base}, fine-tuned on {url}",
        "",
        "A LoRA adapter trained by repotune on samples mined from one "
        "repository, merged into the base model's weights (fp32).",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base}` |",
        f"| source repository | {url} |",
        f"| source revision | `{sha}` |",
        f"| task | {task} ({languages}) |",
        f"| prompt | {template}, then the completion, ended by EOS |",
        f"| LoRA | r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
        f"bias={lora.get('bias')}, target modules: {targets} |",
        f"| training | {results.get('steps')} steps ({results.get('epochs')} epochs) on "
        f"{results.get('train_samples')} samples, lr={train.get('lr')}, "
        f"batch={train.get('batch_size')}x{train.get('grad_accum')}, "
        f"max_length={train.get('max_length')}, seed={train.get('seed')} |",
        f"| final losses | train {_fmt(results.get('train_loss'))}, "
        f"eval {_fmt(results.get('eval_loss'))} (completion tokens only) |",
        f"| merge check | max abs logit difference merged vs base + adapter: "
        f"{merge['max_abs_diff']:.2e} on {merge['probes']} val prompts "
        f"(tolerance {merge['tolerance']:g}) |",
        "",
        "Evaluation (base vs fine-tuned on the held-out test split of the same repository): "
        "`metrics/evaluate.json` and `metrics/report.md` in the pipeline that produced this "
        "model. Training curves: `dvclive/train`.",
        "",
    ]
    if base_source:
        # SOURCE.md starts with its own "# ..." title: one level down inside the card.
        lines += ["#" + base_source.strip(), ""]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
