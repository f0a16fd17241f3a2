"""Beam search in continuous batching: each prompt's beams hold slots of one SlotCache.

transformers' ``model.generate`` searches beams over left-padded batches. It repeats every
prompt ``num_beams`` times before the prefill, so each prompt is prefilled ``num_beams``
times over the batch's padded length, and a batch decodes until its slowest prompt is done:
on the default docstring run's fine-tuned model, 4 beams took ~7x the time of greedy
decoding. Here a prompt is prefilled once, on its own. Its keys and values are copied into
``num_beams`` slots of a :class:`~repotune.slot_cache.SlotCache`, and a prompt whose search
is over hands its slots to the next prompt at once, as greedy decoding does
(``repotune.generation``).

The search is transformers' (``GenerationMixin._beam_search`` with its default
``early_stopping=False``), one prompt at a time:

- each step, every beam's next-token log-probabilities (after the logits processors, which
  see the prompt and the beam's tokens) are added to the beam's score, and the best
  ``max(2, 1 + EOS ids) x num_beams`` (beam, token) candidates are taken;
- a candidate that ends (an EOS id, a stop sequence, ``max_new_tokens``) and ranks among the
  first ``num_beams`` joins the finished hypotheses, scored by its log-probability divided by
  its generated length to the power ``length_penalty``; the best ``num_beams`` are kept;
- the best ``num_beams`` candidates that do not end go on, each on its parent beam's keys
  and values;
- the search is over when ``num_beams`` hypotheses are finished and the best running beam,
  divided by its length to the power ``length_penalty``, scores no better than the worst of
  them (transformers' heuristic), or when every candidate ends. The best finished hypothesis
  is the output.

Only plain beam search (``do_sample: false``); sampled beams stay on ``model.generate``. Unlike
that path, a stop sequence ends exactly the candidate that holds it (transformers' stopping
criteria see rows by position, and beams change rows every step).

This module imports torch at the top: import it inside functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from repotune.slot_cache import SlotCache, prefill

if TYPE_CHECKING:
    from transformers import LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

    from repotune.generation import Ending
    from repotune.params import DecodingParams

# transformers' score for "no such beam" (running beams beyond the first at the start, and
# candidates that end, among the running ones).
_NONE = -1.0e9


@dataclass
class _Search:
    """One prompt's search: its running beams (generated tokens and summed log-probabilities,
    best first) and its finished hypotheses (length-penalised score and tokens, best first)."""

    index: int
    beams: list[list[int]]
    scores: list[float]
    finished: list[tuple[float, list[int]]] = field(default_factory=list)
    improvable: bool = True  # transformers' is_early_stop_heuristic_unsatisfied


class BeamSlots:
    """One run of beam search over a slot cache (see the module doc).

    Args:
        model: the causal LM (eval mode, inference).
        tokenizer: its tokenizer (stop sequences are looked for in decoded beams).
        prompt_ids: token ids of every prompt.
        order: the prompts to search, in the order they take slots.
        decoding: resolved decoding params: ``num_beams``, ``length_penalty``,
            ``max_new_tokens``, and ``batch_size`` rows (``batch_size // num_beams``
            prompts, at least one, are searched together).
        ending: EOS ids and stop sequences (with ``early``: looked for in every candidate).
        processors: transformers' logits processors for these options (may be empty).
        on_done: called once per prompt whose search is over.
    """

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt_ids: list[list[int]],
        order: list[int], decoding: DecodingParams, ending: Ending, processors: LogitsProcessorList,
        on_done: Callable[[], None],
    ) -> None:
        self.model, self.tokenizer, self.prompt_ids = model, tokenizer, prompt_ids
        self.decoding, self.ending, self.processors, self.on_done = decoding, ending, processors, on_done
        self.width = decoding.num_beams
        self.keep = max(2, 1 + len(ending.eos_ids)) * self.width
        self.groups = max(1, decoding.batch_size // self.width)
        self.cache = SlotCache.for_prompts(
            model, self.groups * self.width, (len(prompt_ids[i]) for i in order), decoding.max_new_tokens
        )
        self.searches: list[_Search] = []  # search g holds slots [g * width, (g + 1) * width)
        self.tokens: list[list[int]] = [[] for _ in prompt_ids]
        self.queue = iter(order)
        self.prefill_seconds, self.steps = 0.0, 0

    def run(self) -> list[list[int]]:
        """Search every prompt of `order`; the best finished hypothesis of each (its tokens)."""
        while len(self.searches) < self.groups and self.fill(len(self.searches)):
            pass
        while self.searches:
            self.step()
        return self.tokens

    def _processed(self, search: _Search, log_probs: torch.Tensor) -> torch.Tensor:
        """The processors' view of `log_probs` [beams, vocab]: each beam's prompt + tokens."""
        if not self.processors:
            return log_probs
        prompt = self.prompt_ids[search.index]
        ids = torch.tensor([prompt + beam for beam in search.beams], device=log_probs.device)
        return self.processors(ids, log_probs)

    def advance(self, search: _Search, log_probs: torch.Tensor) -> list[int] | None:
        """One step of `search` from its beams' next-token log-probabilities [beams, vocab].

        Returns:
            The parent beam of each new running beam; None when the search is over (its
            best hypothesis is then in ``self.tokens``).
        """
        generated = len(search.beams[0]) + 1  # every candidate's length
        total = self._processed(search, log_probs) + torch.tensor(search.scores, device=log_probs.device)[:, None]
        top, flat = total.flatten().topk(min(self.keep, total.numel()))
        vocab = total.shape[-1]
        going: list[tuple[float, int, list[int]]] = []
        ended: list[tuple[float, int, list[int]]] = []
        for rank, (score, position) in enumerate(zip(top.tolist(), flat.tolist(), strict=True)):
            parent, token = divmod(position, vocab)
            tokens = search.beams[parent] + [token]
            if not self.ending.reached(tokens, self.decoding.max_new_tokens, self.tokenizer):
                going.append((score, parent, tokens))
                if len(going) == self.width:  # the beams are full; later ranks can be neither
                    break
                continue
            ended.append((_NONE, parent, tokens))
            if rank < self.width and search.improvable:
                search.finished.append((score / generated**self.decoding.length_penalty, tokens))
        search.finished = sorted(search.finished, key=lambda hypothesis: -hypothesis[0])[: self.width]
        if not going:  # no candidate can go on
            return self._over(search)
        running = (going + ended)[: self.width]
        search.beams = [tokens for _, _, tokens in running]
        search.scores = [score for score, _, _ in running]
        if len(search.finished) == self.width:
            best_possible = search.scores[0] / generated**self.decoding.length_penalty
            search.improvable = best_possible > search.finished[-1][0]
        if not search.improvable:
            return self._over(search)
        return [parent for _, parent, _ in running]

    def _over(self, search: _Search) -> None:
        self.tokens[search.index] = search.finished[0][1] if search.finished else []
        self.on_done()
        return None

    def fill(self, group: int) -> bool:
        """Start the next prompts' searches in `group` until one needs decoding; False when
        none is left."""
        for index in self.queue:
            start = time.perf_counter()
            cache, logits = prefill(self.model, self.prompt_ids[index])
            search = _Search(index, beams=[[]], scores=[0.0])
            parents = self.advance(search, logits[None].log_softmax(-1))
            self.prefill_seconds += time.perf_counter() - start
            if parents is None:  # over at its first token
                continue
            slots = self._slots(group)
            for slot in slots:
                self.cache.load(slot, cache)
            if group == len(self.searches):
                self.searches.append(search)
            else:
                self.searches[group] = search
            self.cache.active = len(self.searches) * self.width
            return True
        return False

    def _slots(self, group: int) -> list[int]:
        return list(range(group * self.width, (group + 1) * self.width))

    def step(self) -> None:
        """One decoding step of every running beam; searches that end hand their slots on."""
        last = [beam[-1] for search in self.searches for beam in search.beams]
        log_probs = self.cache.decode(self.model, last).log_softmax(-1)
        self.steps += 1
        over = []
        for group, search in enumerate(self.searches):
            slots = self._slots(group)
            parents = self.advance(search, log_probs[slots[0] : slots[-1] + 1])
            if parents is None:
                over.append(group)
            else:
                self.cache.reorder(slots, [slots[parent] for parent in parents])
        # Highest group first, so that the last group always holds a running search.
        for group in reversed(over):
            if not self.fill(group):
                last = len(self.searches) - 1
                if group != last:
                    self.cache.reorder(self._slots(group), self._slots(last))
                    self.searches[group] = self.searches[last]
                self.searches.pop()
        self.cache.active = len(self.searches) * self.width


def generate_beams(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt_ids: list[list[int]], order: Sequence[int],
    decoding: DecodingParams, ending: Ending, processors: LogitsProcessorList, on_done: Callable[[], None],
) -> tuple[list[list[int]], float, int]:
    """Beam search of every prompt of `order` (see :class:`BeamSlots`).

    Returns:
        The best hypothesis's tokens per prompt (up to and including its EOS or the token that
        completed a stop), seconds of prefill, number of decoding steps.
    """
    run = BeamSlots(model, tokenizer, prompt_ids, list(order), decoding, ending, processors, on_done)
    return run.run(), run.prefill_seconds, run.steps
