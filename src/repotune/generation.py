"""Text generation for the evaluation sets: continuous batching over a slot KV cache, stop strings.

Greedy and sampled decoding run on a small continuous-batching loop (:func:`generate`):
``batch_size`` slots share one forward pass per decoding step; a prompt is prefilled on its
own (no padding, so no wasted prefill compute), its keys and values are copied into a free
slot, and the moment a row ends (EOS, a stop string, ``max_new_tokens``) its slot takes the
next prompt. Nothing waits for the longest row of a batch, and the KV cache is one buffer
allocated once (transformers' ``DynamicCache`` re-concatenates every layer's cache at every
step: for 8 rows of ~470 tokens that copy was 69% of a decoding step here). Beam search runs
on the same slots, ``num_beams`` a prompt (``repotune.beam_search``). Sampled beams and
models whose cache is not plain full attention (sliding-window or linear-attention layers)
use ``model.generate`` on length-sorted, left-padded batches instead.

Prompts are tokenised the way the model was trained (the tokenizer's own special tokens, e.g.
a BOS where it adds one) and are prefilled longest first, so the first prefill shows the
worst-case memory and time at once.

Stop sequences are applied twice: during generation, a row ends as soon as its text contains
a stop sequence, which saves the remaining decoding steps; afterwards the text is cut at the
first stop (``repotune.stops``). By default both ignore leading whitespace, because SmolLM2
completions start with blank lines: a ``"\\n\\n"`` stop must not end an answer that has not
started yet; code completion passes ``skip_leading_whitespace=False`` (a newline first means
the line is complete). The raw texts are kept too, for the task's own post-processing.

Heavy imports (torch, transformers, tqdm) stay inside the functions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from repotune import compat
from repotune.modeling import load_causal_lm, load_tokenizer, prepack_linears
from repotune.stops import cut_at_stop, is_stopped, truncate_at_stop

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from repotune.params import DecodingParams


@dataclass(frozen=True)
class Generation:
    """Outputs of :func:`generate`, in the order of the prompts.

    Attributes:
        texts: completions cut at the first stop sequence (and stripped, when stops are looked
            for after leading whitespace; code completions keep their whitespace).
        raw_texts: the decoded new tokens as generated, before any cut.
        new_tokens: tokens the model generated per prompt (up to and including EOS or the
            token that completed a stop sequence; padding of finished rows excluded).
        prompt_tokens: prompt length in tokens per prompt (special tokens included).
        seconds: wall time spent in tokenisation, prefill and decoding (all prompts).
        prefill_seconds: the part of `seconds` spent in prompt prefills (continuous batching;
            0 on the ``model.generate`` path, which does not tell).
        decode_steps: forward passes that generated one token for every active row
            (continuous batching; 0 on the ``model.generate`` path).
    """

    texts: list[str]
    raw_texts: list[str]
    new_tokens: list[int]
    prompt_tokens: list[int]
    seconds: float
    prefill_seconds: float = 0.0
    decode_steps: int = 0

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per wall-clock second (prefill time included, so batch-dependent)."""
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else 0.0


def _stop_criterion(
    tokenizer: PreTrainedTokenizerBase, stop: Sequence[str], prompt_len: int, skip_leading_whitespace: bool
):
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
                text = tokenizer.decode(new[row], skip_special_tokens=True)
                if is_stopped(text, stops, skip_leading_whitespace):
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
    """The tokens that end an output: the model's and the tokenizer's EOS, and every other
    special token of the tokenizer (a chat turn's start, a file separator, ...). The decoded
    text drops special tokens, so what follows one is a new turn or file, not the answer: beam
    search found "A TCP client.\n<|im_start|>assistant\nYou can use ..." where greedy ends."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids | set(tokenizer.all_special_ids)


def _processors(model: PreTrainedModel, decoding: DecodingParams, tokenizer: PreTrainedTokenizerBase):
    """transformers' own logits processors for these options, as ``generate`` builds them from
    a ``GenerationConfig`` (repetition penalty, n-gram blocking; temperature and nucleus
    warpers when sampling), after the markup guard when ``decoding.markup_guard``
    (:mod:`repotune.markup_guard`); empty for plain greedy decoding."""
    from transformers import GenerationConfig

    sample = decoding.do_sample
    config = GenerationConfig(
        do_sample=sample, temperature=decoding.temperature if sample else None,
        top_p=decoding.top_p if sample else None, top_k=None, repetition_penalty=decoding.repetition_penalty,
        no_repeat_ngram_size=decoding.no_repeat_ngram_size,
    )
    processors = compat.logits_processors(model, config)
    if decoding.markup_guard:
        from repotune.markup_guard import MarkupGuard  # imports torch at its top: only when generating

        processors.insert(0, MarkupGuard(tokenizer))
    return processors


@dataclass(frozen=True)
class Ending:
    """When a row ends, besides ``decoding.max_new_tokens``: one of `eos_ids`, or (with `early`)
    a stop sequence of `stop`, looked for after leading whitespace when
    `skip_leading_whitespace` (see :func:`generate`)."""

    eos_ids: set[int]
    stop: Sequence[str]
    early: bool
    skip_leading_whitespace: bool

    def reached(self, tokens: list[int], max_new_tokens: int, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Whether generated `tokens` end here: the last is an EOS id, there are
        `max_new_tokens` of them, or (with `early`) their text holds a stop sequence."""
        if tokens[-1] in self.eos_ids or len(tokens) >= max_new_tokens:
            return True
        return self.early and any(self.stop) and is_stopped(
            tokenizer.decode(tokens, skip_special_tokens=True), self.stop, self.skip_leading_whitespace
        )


class _Slots:
    """One run of continuous batching over a :class:`~repotune.slot_cache.SlotCache` (see the
    module doc and :func:`_generate_continuous`): the cache, which prompt each slot holds, the
    tokens generated so far, the per-prompt generators and the timings."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt_ids: list[list[int]],
        order: list[int], decoding: DecodingParams, ending: Ending, on_done,
    ) -> None:
        from repotune.slot_cache import SlotCache  # imports torch at its top: only when generating

        self.model, self.tokenizer, self.prompt_ids = model, tokenizer, prompt_ids
        self.decoding, self.ending, self.on_done = decoding, ending, on_done
        self.device = model.device
        self.processors = _processors(model, decoding, tokenizer)
        self.generators: dict[int, torch.Generator] = {}
        self.tokens: list[list[int]] = [[] for _ in prompt_ids]
        self.cache = SlotCache.for_prompts(
            model, decoding.batch_size, (len(prompt_ids[i]) for i in order), decoding.max_new_tokens
        )
        self.slot_prompt: list[int] = []  # prompt index held by slot s, for s < cache.active
        self.queue = iter(order)
        self.prefill_seconds, self.steps = 0.0, 0

    def pick(self, scores: torch.Tensor, index: int) -> int:
        """The next token of prompt `index` from its [vocab] scores (float32)."""
        import torch

        if self.processors:
            ids = torch.tensor([self.prompt_ids[index] + self.tokens[index]], device=self.device)
            scores = self.processors(ids, scores[None])[0]
        if not self.decoding.do_sample:
            return int(scores.argmax())
        if index not in self.generators:
            self.generators[index] = torch.Generator(device=self.device).manual_seed(self.decoding.seed + index)
        return int(torch.multinomial(scores.softmax(-1)[None], 1, generator=self.generators[index]))

    def finished(self, index: int) -> bool:
        return self.ending.reached(self.tokens[index], self.decoding.max_new_tokens, self.tokenizer)

    def fill(self, slot: int) -> bool:
        """Prefill prompts into `slot` until one needs decoding; False when none is left."""
        from repotune.slot_cache import prefill as prefill_prompt  # imports torch at its top

        for index in self.queue:
            start = time.perf_counter()
            prefill, logits = prefill_prompt(self.model, self.prompt_ids[index])
            self.tokens[index].append(self.pick(logits, index))
            self.prefill_seconds += time.perf_counter() - start
            if self.finished(index):  # ended on its first token (EOS, or max_new_tokens 1)
                self.on_done()
                continue
            self.cache.load(slot, prefill)
            if slot == len(self.slot_prompt):
                self.slot_prompt.append(index)
            else:
                self.slot_prompt[slot] = index
            return True
        return False

    def step(self) -> None:
        """One decoding step over the active slots; ended rows hand their slot on."""
        n = self.cache.active
        logits = self.cache.decode(self.model, [self.tokens[i][-1] for i in self.slot_prompt[:n]])
        self.steps += 1
        # Plain greedy decoding needs no per-row processing: one argmax for all rows.
        greedy = logits.argmax(-1).tolist() if not self.processors and not self.decoding.do_sample else None
        ended = []
        for slot, index in enumerate(self.slot_prompt[:n]):
            self.tokens[index].append(greedy[slot] if greedy is not None else self.pick(logits[slot], index))
            if self.finished(index):
                ended.append(slot)
        # Highest slot first, so that the last slot is always a live row: a slot left without
        # a prompt takes the last row, and steps keep computing rows [0, active) only.
        for slot in reversed(ended):
            self.on_done()
            if not self.fill(slot):
                last_slot = len(self.slot_prompt) - 1
                if slot != last_slot:
                    self.cache.reorder([slot], [last_slot])
                    self.slot_prompt[slot] = self.slot_prompt[last_slot]
                self.slot_prompt.pop()
        self.cache.active = len(self.slot_prompt)


def _generate_continuous(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    order: list[int],
    decoding: DecodingParams,
    ending: Ending,
    on_done,
) -> tuple[list[list[int]], float, int]:
    """Continuous batching over a :class:`~repotune.slot_cache.SlotCache` (see module doc).

    Each prompt is prefilled alone into a batch-1 cache, its first token taken from the
    prefill's logits, and its keys and values copied into a free slot. Every decoding step
    feeds the last token of each active slot. A row that ends frees its slot for the next
    prompt of `order`; once no prompt is left, the last active slot moves into the freed one,
    so that steps only ever compute active rows. Sampling draws each prompt's tokens from its
    own generator seeded with ``decoding.seed + prompt index``, so samples do not depend on
    batch size. transformers' logits processors (:func:`_processors`) see each row's prompt
    and output tokens, as in ``model.generate``.

    Returns:
        Generated token ids per prompt (EOS included; nothing after it), seconds of prefill,
        number of decoding steps.
    """
    run = _Slots(model, tokenizer, prompt_ids, order, decoding, ending, on_done)
    while len(run.slot_prompt) < decoding.batch_size and run.fill(len(run.slot_prompt)):
        pass
    run.cache.active = len(run.slot_prompt)
    while run.cache.active:
        run.step()
    return run.tokens, run.prefill_seconds, run.steps


def _generate_padded(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    order: list[int],
    decoding: DecodingParams,
    ending: Ending,
    on_done,
) -> list[list[int]]:
    """``model.generate`` on left-padded batches of `order` (beam search, other caches).

    Sampling reseeds torch with ``decoding.seed + batch index`` before each batch.

    Returns:
        Generated token ids per prompt, cut after EOS or the token that completed a stop.
    """
    import torch
    from transformers import StoppingCriteriaList

    options: dict = {
        "max_new_tokens": decoding.max_new_tokens,
        "do_sample": decoding.do_sample,
        "num_beams": decoding.num_beams,
        "length_penalty": decoding.length_penalty,
        "repetition_penalty": decoding.repetition_penalty,
        "no_repeat_ngram_size": decoding.no_repeat_ngram_size,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": sorted(ending.eos_ids) or None,
    }
    if decoding.markup_guard:
        from transformers import LogitsProcessorList

        from repotune.markup_guard import MarkupGuard  # imports torch at its top: only when generating

        options["logits_processor"] = LogitsProcessorList([MarkupGuard(tokenizer)])
    if decoding.do_sample:
        options.update(temperature=decoding.temperature, top_p=decoding.top_p)
    else:
        # The model's own generation_config may carry sampling defaults (SmolLM2's does);
        # neutral values keep greedy decoding greedy and silence transformers' warnings.
        options.update(temperature=None, top_p=None, top_k=None)
    tokens: list[list[int]] = [[] for _ in prompts]
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generated tokens must follow the prompt directly
    try:
        for b, first in enumerate(range(0, len(order), decoding.batch_size)):
            batch = order[first : first + decoding.batch_size]
            enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True)
            enc = enc.to(model.device)
            prompt_len = enc["input_ids"].shape[1]
            criteria = StoppingCriteriaList()
            criterion = None
            if ending.early and any(ending.stop):
                criterion = _stop_criterion(tokenizer, ending.stop, prompt_len, ending.skip_leading_whitespace)
                criteria.append(criterion)
            if decoding.do_sample:
                torch.manual_seed(decoding.seed + b)
            out = model.generate(**enc, stopping_criteria=criteria, **options)
            new = out[:, prompt_len:].tolist()
            for row, index in enumerate(batch):
                # Beam search reorders rows inside generate, so the criterion's row numbers
                # only match the outputs without beams.
                stopped = (
                    criterion.stopped_at.get(row) if criterion is not None and decoding.num_beams == 1 else None
                )
                tokens[index] = new[row][: _count_new_tokens(new[row], ending.eos_ids, stopped)]
                on_done()
    finally:
        tokenizer.padding_side = padding_side
    return tokens


def check_resolved(decoding: DecodingParams) -> None:
    """Refuse ``decoding`` keys left null for the task to decide (``tasks.resolved_decoding``).

    Raises:
        ValueError: naming the unresolved keys; never guess a default here.
    """
    unresolved = [key for key in ("repetition_penalty", "no_repeat_ngram_size", "markup_guard")
                  if getattr(decoding, key) is None]
    if unresolved:
        raise ValueError(f"decoding.{', decoding.'.join(unresolved)} unresolved: pass tasks.resolved_decoding(...)")


def _ending(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, decoding: DecodingParams,
    stop: Sequence[str] | None, stop_early: bool, skip_leading_whitespace: bool,
) -> Ending:
    """How rows end under :func:`generate`'s arguments, once `decoding` is checked resolved."""
    check_resolved(decoding)
    stop = decoding.stop if stop is None else stop
    if stop is None:
        raise ValueError("decoding.stop unresolved: pass stop= (the task's default_stop) or set decoding.stop")
    return Ending(_eos_ids(model, tokenizer), stop, stop_early, skip_leading_whitespace)


def _decode(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], prompt_ids: list[list[int]],
    order: list[int], decoding: DecodingParams, ending: Ending, on_done,
) -> tuple[list[list[int]], float, int]:
    """The tokens of every prompt by the path that suits `decoding` and the model: greedy or
    sampled rows on the slots, beam search on the slots, else ``model.generate``; with the
    seconds of prefill and the decoding steps (0 where the path does not tell)."""
    from repotune.slot_cache import supports  # imports torch at its top: only when generating

    if not prompts:
        return [], 0.0, 0
    if decoding.num_beams == 1 and supports(model):
        return _generate_continuous(model, tokenizer, prompt_ids, order, decoding, ending, on_done)
    if not decoding.do_sample and supports(model):
        from repotune.beam_search import generate_beams  # imports torch at its top

        return generate_beams(
            model, tokenizer, prompt_ids, order, decoding, ending, _processors(model, decoding, tokenizer), on_done
        )
    return _generate_padded(model, tokenizer, prompts, order, decoding, ending, on_done), 0.0, 0


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    decoding: DecodingParams,
    *,
    stop: Sequence[str] | None = None,
    stop_early: bool = True,
    skip_leading_whitespace: bool = True,
    progress: bool = True,
    desc: str = "generate",
) -> Generation:
    """Generate one completion per prompt, ``decoding.batch_size`` rows at a time.

    Greedy decoding gives the same texts whatever the batch size (up to float rounding: rows
    never see each other, padding is masked). Sampling is reproducible for a given seed: with
    continuous batching each prompt has its own generator seeded with ``decoding.seed + prompt
    index``, so samples do not depend on batch size either; on the ``model.generate`` path each
    batch reseeds torch with ``decoding.seed + batch index``.

    Args:
        model: a causal LM (eval mode is set here).
        tokenizer: its tokenizer; needs a pad token (see ``modeling.load_tokenizer``).
        prompts: the prompt texts.
        decoding: the resolved ``decoding`` params (see ``tasks.resolved_decoding``):
            max_new_tokens, do_sample, temperature and top_p (sampling only), num_beams (1 = no
            beam search; beams run on the slots, ``batch_size // num_beams`` prompts at once,
            sampled beams on ``model.generate``; length_penalty), repetition_penalty (1.0 = none),
            no_repeat_ngram_size (0 = off), batch_size (continuous batching slots, or prompts
            per ``model.generate`` call), seed (sampling).
        stop: the stop sequences (the text is cut at the first one); None: ``decoding.stop``.
        stop_early: also end generation of a row once it holds a stop sequence (saves time;
            the texts are the same either way).
        skip_leading_whitespace: look for stops only after the first non-blank character
            (docstrings); False for code completion, where a leading newline ends the line.
        progress: show a tqdm progress bar (per prompt).
        desc: label of the progress bar.

    Returns:
        A :class:`Generation` with texts, token counts and the time taken.

    Raises:
        ValueError: a ``decoding`` key the task should have resolved is null, or no stops
            are given (`stop` and ``decoding.stop`` both None).
    """
    import torch
    from tqdm.auto import tqdm

    ending = _ending(model, tokenizer, decoding, stop, stop_early, skip_leading_whitespace)
    model.eval()
    start = time.perf_counter()
    # Token ids with the tokenizer's special tokens, exactly as the model will see them.
    prompt_ids = tokenizer(list(prompts))["input_ids"] if prompts else []
    lengths = [len(ids) for ids in prompt_ids]
    # Longest first: the first prefill shows the worst-case memory and time at once; ties keep
    # the original order, so the schedule (and the padded path's sampling) is deterministic.
    order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
    with tqdm(total=len(prompts), desc=desc, disable=not progress, unit="prompt") as bar:
        with torch.inference_mode():
            tokens, prefill_seconds, steps = _decode(
                model, tokenizer, prompts, prompt_ids, order, decoding, ending, on_done=lambda: bar.update(1)
            )
    raw = [tokenizer.decode(row, skip_special_tokens=True) for row in tokens]
    if skip_leading_whitespace:
        texts = [truncate_at_stop(text, ending.stop) for text in raw]
    else:
        texts = [cut_at_stop(text, ending.stop, skip_leading_whitespace=False) for text in raw]
    return Generation(
        texts=texts, raw_texts=raw, new_tokens=[len(row) for row in tokens], prompt_tokens=lengths,
        seconds=time.perf_counter() - start, prefill_seconds=prefill_seconds, decode_steps=steps,
    )


def generate_from_folder(
    folder: str | Path,
    prompts: Mapping[str, Sequence[str]],
    decoding: DecodingParams,
    *,
    stop: Sequence[str],
    skip_leading_whitespace: bool,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, Generation]:
    """Load the model and tokenizer in `folder` once, generate for each list of prompts, free it.

    On a CPU in fp32 the model's linears are pre-packed for oneDNN first
    (``modeling.prepack_linears``): generation here is bound by those matmuls.

    Args:
        folder: a HF model folder (config, safetensors, tokenizer).
        prompts: name -> prompt texts (one progress bar each, labelled with the name).
        decoding: the ``decoding`` params (its ``stop`` is ignored: `stop` is the resolved one).
        stop: the stop sequences (``decoding.stop``, or the task's default when that is null).
        skip_leading_whitespace: see :func:`generate`.
        device: 'cpu' or 'cuda' (resolved, see ``modeling.resolve_device``).
        precision: 'fp32', 'bf16' or 'fp16' (resolved, see ``modeling.resolve_precision``).

    Returns:
        name -> the :class:`Generation` of that list.
    """
    import gc

    check_resolved(decoding)  # before the model is loaded
    tokenizer = load_tokenizer(folder)
    model = load_causal_lm(folder, device=device, precision=precision)
    # This model only generates: its linears can take oneDNN's packed layout (CPU fp32 only).
    prepack_linears(model, decoding.batch_size)
    try:
        return {
            name: generate(
                model, tokenizer, texts, decoding, stop=stop, skip_leading_whitespace=skip_leading_whitespace,
                desc=name,
            )
            for name, texts in prompts.items()
        }
    finally:
        # Stages may load one model after another; drop this one first.
        del model
        gc.collect()
