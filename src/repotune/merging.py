"""Merging a LoRA adapter into its base model, with a numerical check and a model card.

The base is always loaded in fp32 on the CPU, also for an adapter trained with QLoRA: merging
into 4-bit weights would round the update away (and bitsandbytes cannot save the result as a
plain model). Before merging, the adapter model's logits on a few probe prompts are kept; after
merging, the merged model must give the same logits within a tolerance. An adapter trained on
a quantized base is also run on that base again, and the merged model's distance from it is
reported: the merged model is not what training saw.

Heavy imports (torch, transformers, peft) stay inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import atomic, modeling
from repotune.errors import RepotuneError
from repotune.params import PromptParams
from repotune.prompts import template_text

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


def _agreement(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> dict[str, float]:
    """How far two models' logits are apart, in terms a person can read beyond the largest gap.

    Returns:
        ``mean_abs_diff``: |a - b| averaged over every probe position and vocabulary entry;
        ``top1_agreement``: the share of probe positions where both pick the same next token
        (what greedy decoding would see).
    """
    import torch

    x, y = torch.cat(list(a)), torch.cat(list(b))  # [all probe tokens, vocab]
    return {
        "mean_abs_diff": float((x - y).abs().mean()),
        "top1_agreement": float((x.argmax(-1) == y.argmax(-1)).float().mean()),
    }


def _quantized_adapter_logits(
    base: Path,
    adapter: Path,
    quantize: str,
    precision: str,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[str],
    max_tokens: int,
) -> list[torch.Tensor]:
    """Logits of the adapter on the base quantized as in training (CPU), i.e. what training saw.

    The merged model holds base + update in fp32; the adapter learned its update on top of the
    quantized weights, so on its own base it may behave measurably unlike the merged model.
    """
    from peft import PeftModel

    model = modeling.load_causal_lm(base, device="cpu", precision=precision, quantize=quantize)
    peft_model = PeftModel.from_pretrained(model, str(adapter)).eval()
    return _logits(peft_model, tokenizer, probes, max_tokens)


# Largest allowed |merged - adapter| logit difference. Measured 7.7e-5 (AVX2) and 4.6e-4
# (AVX-512) on the default SmolLM2 run (30 layers, fp32): 1e-4 left too little room.
TOLERANCE = 1e-3


def _untie_adapted_embedding(model: PreTrainedModel, adapter: Path) -> bool:
    """Give the output head its own copy of the input embedding when the adapter adapts that
    embedding and the model ties the two; True when it did.

    With tied weights (SmolLM2, Qwen2.5-0.5B) the adapter changes only the input lookup: the
    head keeps the base weights during training. Merging into the shared tensor would change
    the head too (logits off by ~3 on SmolLM2), so the merged model keeps the two apart
    (``tie_word_embeddings: false``, one more vocab x hidden matrix on disk).
    """
    import torch
    from safetensors import safe_open

    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    weights = adapter / "adapter_model.safetensors"
    if head is None or head.weight is not embedding.weight or not weights.is_file():
        return False
    names = [name for name, module in model.named_modules() if module is embedding]  # model.embed_tokens
    with safe_open(str(weights), "pt") as f:
        if not any(f".{name}.lora_embedding_" in key for key in f.keys() for name in names):  # noqa: SIM118
            return False
    head.weight = torch.nn.Parameter(embedding.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    return True


# long: 40 of its lines are the docstring (what the merge check measures, what the card records);
# the body is one sequence over the same loaded models: load, compare logits, merge, save.
def merge_adapter(
    base: str | Path,
    adapter: str | Path,
    out: str | Path,
    probes: Sequence[str],
    tolerance: float = TOLERANCE,
    max_probe_tokens: int = 512,
    card: Callable[[dict[str, Any]], str] | None = None,
    quantize: str = "none",
    precision: str = "fp32",
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
        quantize: how the base was quantized when the adapter was trained ('none', '4bit',
            '8bit'; ``train.quantize`` in training.json).
        precision: the compute precision training used (``resolved.precision``); the quantized
            base is loaded with it.

    Returns:
        ``max_abs_diff`` (merged vs adapter logits), ``adapter_effect`` (largest change the
        adapter makes to the base logits: a check is only meaningful when it is not 0),
        ``tolerance``, ``probes``, ``probe_tokens``; ``untied_output_embedding`` when the
        adapter adapts a tied input embedding (see :func:`_untie_adapted_embedding`). For a
        quantized adapter also ``quantize``,
        ``mean_abs_diff`` and ``top1_agreement`` (merged vs adapter, both fp32), and the same
        three against the adapter on the quantized base it was trained on:
        ``max_abs_diff_quantized_base``, ``mean_abs_diff_quantized_base``,
        ``top1_agreement_quantized_base``. Those are reported, never checked: the gap is what
        quantization costs, not a faulty merge. Without quantization no key is added, so
        merge.json stays as it was.

    Raises:
        RepotuneError: a folder is missing, no probe was given, or the gap exceeds `tolerance`.
    """
    from peft import PeftModel

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
    untied = _untie_adapted_embedding(model, adapter)
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
    if untied:
        result["untied_output_embedding"] = True
    if quantize != "none":
        quantized_logits = _quantized_adapter_logits(
            base, adapter, quantize, precision, tokenizer, probes, max_probe_tokens
        )
        result["quantize"] = quantize
        result.update(_agreement(merged_logits, adapter_logits))
        result["max_abs_diff_quantized_base"] = _max_abs_diff(merged_logits, quantized_logits)
        result.update({
            f"{key}_quantized_base": value
            for key, value in _agreement(merged_logits, quantized_logits).items()
        })

    # Generation must stop on the EOS that training appended to every completion.
    eos_ids = merged.generation_config.eos_token_id
    eos_ids = [] if eos_ids is None else [eos_ids] if isinstance(eos_ids, int) else list(eos_ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        merged.generation_config.eos_token_id = [*eos_ids, tokenizer.eos_token_id]

    with atomic.atomic_path(out) as tmp:
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
    template = "`" + template_text(PromptParams(**prompt), task).replace("\n", "\\n") + "`"
    if prompt.get("chat_template"):
        template += " in the tokenizer's chat template"
    if training.get("context") == "retrieval":
        template += (" with the sample's retrieved context (chunks of other files of the repository, as comments "
                     "naming their path) in its {context} slot, or first")
    lines = [
        "---",
        f"base_model: {base}",
        "library_name: transformers",
        "tags: [repotune, lora, code]",
        "---",
        "",
        f"# {base}, fine-tuned on {url}",
        "",
        _summary(merge),
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
        *_quantized_rows(merge),
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


# How each train.quantize setting stores the base weights, for the model card.
QUANTIZATIONS = {"4bit": "4-bit NF4 with double quantisation", "8bit": "8-bit LLM.int8"}


def _summary(merge: dict[str, Any]) -> str:
    """The card's first sentence: what was trained on what, and what the weights are now."""
    quantize = merge.get("quantize")
    if quantize is None:
        return (
            "A LoRA adapter trained by repotune on samples mined from one "
            "repository, merged into the base model's weights (fp32)."
        )
    return (
        f"A QLoRA adapter trained by repotune on samples mined from one repository, on the "
        f"base model quantized by bitsandbytes ({QUANTIZATIONS.get(quantize, quantize)}), then "
        "merged into the base model's full-precision weights (fp32), not the quantized ones."
    )


def _quantized_rows(merge: dict[str, Any]) -> list[str]:
    """Card rows saying how far the merged model is from what the adapter did in training.

    Nothing for an adapter trained without quantization.
    """
    if merge.get("quantize") is None:
        return []
    return [
        f"| vs the quantized base | merged vs base ({merge['quantize']}) + adapter, as in "
        f"training: max abs logit difference {merge['max_abs_diff_quantized_base']:.2e}, "
        f"mean {merge['mean_abs_diff_quantized_base']:.2e}; same top-1 next token at "
        f"{merge['top1_agreement_quantized_base']:.1%} of {merge['probe_tokens']} probe "
        f"positions (fp32 base + adapter: {merge['top1_agreement']:.1%}). The merged model "
        "adds the adapter to the full-precision weights, so it is not exactly the model "
        "whose losses were measured in training. |",
    ]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
