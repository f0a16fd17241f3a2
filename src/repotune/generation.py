"""Batched text generation for the benchmark: left padding, length-sorted batches, stop strings.

Prompts are tokenised the way the model was trained (the tokenizer's own special tokens, e.g.
a BOS where it adds one), sorted by token length so that each batch holds prompts of similar
length (little padding: generation on CPU is prefill-bound, so padding is wasted compute),
generated batch by batch, and put back in their original order.

Stop sequences are applied twice: during generation, a stopping criterion ends a row as soon as
its (left-stripped) text contains a stop sequence, which saves the remaining decoding steps;
afterwards :func:`truncate_at_stop` cuts the text at the first stop. Both ignore leading
whitespace because SmolLM2 completions start with blank lines: a ``"\\n\\n"`` stop must not end
an answer that has not started yet.

Heavy imports (torch, transformers, tqdm) stay inside the functions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Generation:
    """Outputs of :func:`generate`, in the order of the prompts.

    Attributes:
        texts: completions, cut at the first stop sequence and stripped.
        new_tokens: tokens the model generated per prompt (up to and including EOS or the
            token that completed a stop sequence; padding of finished rows excluded).
        prompt_tokens: prompt length in tokens per prompt (special tokens included).
        seconds: wall time spent in tokenisation and ``model.generate`` (all batches).
    """

    texts: list[str]
    new_tokens: list[int]
    prompt_tokens: list[int]
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per wall-clock second (prefill time included, so batch-dependent)."""
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else 0.0


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the first stop sequence that follows its first non-blank character; strip.

    Leading whitespace is ignored when looking for stops, so ``"\\n\\nReturn x.\\n\\nMore"``
    with stop ``["\\n\\n"]`` gives ``"Return x."`` and not ``""``.

    Args:
        text: a raw completion (the decoded new tokens).
        stop: stop sequences; empty strings are ignored.

    Returns:
        The text before the earliest stop, stripped of surrounding whitespace.
    """
    body = text.lstrip()
    cut = min((i for s in stop if s and (i := body.find(s)) >= 0), default=len(body))
    return body[:cut].strip()


def _stop_criterion(tokenizer: PreTrainedTokenizerBase, stop: Sequence[str], prompt_len: int):
    """A transformers StoppingCriteria that ends a row once its stripped text holds a stop.

    transformers' built-in ``stop_strings`` cannot ignore leading whitespace (a ``"\\n\\n"``
    stop would end SmolLM2's answers at their leading blank lines), so the new tokens of each
    unfinished row are decoded at every step instead; that costs microseconds per row against
    milliseconds for a decoding step of even a 135M model on CPU.

    Returns:
        The criterion; its ``stopped_at`` maps a row to the number of new tokens it had when
        it was stopped (used to count generated tokens exactly).
    """
    import torch
    from transformers import StoppingCriteria

    stops = [s for s in stop if s]

    class StopAfterContent(StoppingCriteria):
        def __init__(self) -> None:
            self.stopped_at: dict[int, int] = {}

        def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            new = input_ids[:, prompt_len:]
            for row in range(input_ids.shape[0]):
                if row in self.stopped_at:
                    done[row] = True
                    continue
                text = tokenizer.decode(new[row], skip_special_tokens=True).lstrip()
                if any(s in text for s in stops):
                    self.stopped_at[row] = new.shape[1]
                    done[row] = True
            return done

    return StopAfterContent()


def _count_new_tokens(row: list[int], eos_ids: set[int], stopped_at: int | None) -> int:
    """Tokens generated in one row: up to the first EOS (included) or the stop, whichever first.

    After a row finishes, transformers fills it with the pad token (often the EOS token too),
    which the model did not generate and which must not count towards throughput.
    """
    count = len(row)
    for i, token in enumerate(row):
        if token in eos_ids:
            count = i + 1
            break
    if stopped_at is not None:
        count = min(count, stopped_at)
    return count


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.9,
    num_beams: int = 1,
    batch_size: int = 8,
    stop: Sequence[str] = ("\n\n",),
    seed: int = 42,
    stop_early: bool = True,
    progress: bool = True,
    desc: str = "generate",
) -> Generation:
    """Generate one completion per prompt, in batches of similar length.

    Greedy decoding (the default) gives the same texts whatever the batch size, because left
    padding is masked out. Sampling is reproducible for a given seed, batch size and prompt set:
    each batch reseeds torch with ``seed + batch index``.

    Args:
        model: a causal LM (eval mode is set here).
        tokenizer: its tokenizer; needs a pad token (see ``modeling.load_tokenizer``).
        prompts: the prompt texts.
        max_new_tokens: the most tokens generated per prompt.
        do_sample: sample instead of greedy/beam search.
        temperature: sampling temperature (used only when sampling).
        top_p: nucleus sampling mass (used only when sampling).
        num_beams: beam search width (1 = no beam search).
        batch_size: prompts per ``model.generate`` call.
        stop: stop sequences; the text is cut at the first one after leading whitespace.
        seed: seed for sampling.
        stop_early: also end generation of a row once it holds a stop sequence (saves time;
            the texts are the same either way).
        progress: show a tqdm progress bar (per prompt).
        desc: label of the progress bar.

    Returns:
        A :class:`Generation` with texts, token counts and the time taken.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import StoppingCriteriaList

    model.eval()
    device = model.device
    eos_ids = _eos_ids(model, tokenizer)
    options: dict = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "num_beams": num_beams,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": sorted(eos_ids) or None,
    }
    if do_sample:
        options.update(temperature=temperature, top_p=top_p)
    else:
        # The model's own generation_config may carry sampling defaults (SmolLM2's does);
        # neutral values keep greedy decoding greedy and silence transformers' warnings.
        options.update(temperature=None, top_p=None, top_k=None)

    # Lengths with the tokenizer's special tokens, exactly as the batches below see them.
    lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]] if prompts else []
    # Longest first: the first batch shows the worst-case memory and time at once; ties keep
    # the original order, so the batching (and sampling) is deterministic.
    order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
    texts: list[str] = [""] * len(prompts)
    new_tokens: list[int] = [0] * len(prompts)

    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generated tokens must follow the prompt directly
    start = time.perf_counter()
    try:
        with tqdm(total=len(prompts), desc=desc, disable=not progress, unit="prompt") as bar:
            for b, first in enumerate(range(0, len(order), batch_size)):
                batch = order[first : first + batch_size]
                enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True)
                enc = enc.to(device)
                prompt_len = enc["input_ids"].shape[1]
                criteria = StoppingCriteriaList()
                criterion = None
                if stop_early and any(stop):
                    criterion = _stop_criterion(tokenizer, stop, prompt_len)
                    criteria.append(criterion)
                if do_sample:
                    torch.manual_seed(seed + b)
                with torch.inference_mode():
                    out = model.generate(**enc, stopping_criteria=criteria, **options)
                new = out[:, prompt_len:].tolist()
                for row, index in enumerate(batch):
                    texts[index] = truncate_at_stop(
                        tokenizer.decode(new[row], skip_special_tokens=True), stop
                    )
                    # Beam search reorders rows inside generate, so the criterion's row
                    # numbers only match the outputs without beams.
                    stopped = (
                        criterion.stopped_at.get(row)
                        if criterion is not None and num_beams == 1
                        else None
                    )
                    new_tokens[index] = _count_new_tokens(new[row], eos_ids, stopped)
                bar.update(len(batch))
    finally:
        tokenizer.padding_side = padding_side
    seconds = time.perf_counter() - start
    return Generation(texts=texts, new_tokens=new_tokens, prompt_tokens=lengths, seconds=seconds)


def generate_from_folder(
    folder: str | Path,
    prompts: Sequence[str],
    *,
    device: str = "cpu",
    precision: str = "fp32",
    desc: str | None = None,
    **decoding,
) -> Generation:
    """Load the model and tokenizer in `folder`, generate for `prompts`, free the model.

    Args:
        folder: a HF model folder (config, safetensors, tokenizer).
        prompts: the prompt texts.
        device: 'cpu' or 'cuda' (resolved, see ``modeling.resolve_device``).
        precision: 'fp32', 'bf16' or 'fp16' (resolved, see ``modeling.resolve_precision``).
        desc: progress bar label (default: the folder name).
        **decoding: keyword arguments of :func:`generate` (the ``decoding`` params section).

    Returns:
        The :class:`Generation` for the prompts.
    """
    import gc

    from repotune.modeling import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(folder)
    model = load_causal_lm(folder, device=device, precision=precision)
    try:
        return generate(model, tokenizer, prompts, desc=desc or Path(folder).name, **decoding)
    finally:
        # The benchmark loads two models one after the other; drop the first before the second.
        del model
        gc.collect()
