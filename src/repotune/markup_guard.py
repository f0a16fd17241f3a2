"""A logits processor that keeps inline documentation markup from opening inside open markup.

Pushed past the short sentence it would end on (beam search favouring longer endings), a small
fine-tuned model pads Twisted summaries with markup inside markup, ``L{L{bool}}`` or
``C{L{C{User}}}``, which no reference has (1 of 4,512 Twisted summaries: a literal of
delimiters): 7 of 150 test outputs of the default run with 4 beams, 1 greedy. Banning the
nested opener alone does not help (the model routes round it: ``L{TaskT{Result}}``), so the
guard bans every token holding ``{`` while markup is open: while the text of a row's last
:data:`TAIL_TOKENS` tokens ends inside an epytext ``X{...`` or a Javadoc ``{@tag ...`` with
no ``}`` yet. On the default run's adapter it took those outputs from 7 to 0 (8 to 0 out of
domain) and the chrF of the run up by 0.34 (ROUGE-L +0.02): docs/results.md, "Beam search
for the fine-tuned systems". ``decoding.markup_guard`` switches it (the docstring task's
default: on; code tasks: off, where ``Foo{`` is code).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from transformers import LogitsProcessor

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Tokens of a row's end decoded to look for open markup: markup content is a name or a few
# words (tokens of ~4 characters), longer than that the markup is not closed anyway.
TAIL_TOKENS = 12
# Text that ends inside inline markup: an epytext X{ or a Javadoc {@tag with no brace after it.
OPEN_MARKUP = re.compile(r"(?:\b[A-Z]\{|\{@\w+)[^{}\n]*$")


class MarkupGuard(LogitsProcessor):
    """Scores of tokens holding ``{`` set to -inf in rows whose text ends inside open markup."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        braces = [i for i in range(len(tokenizer)) if "{" in tokenizer.decode([i])]
        self.braces = torch.tensor(braces, dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row in range(input_ids.shape[0]):
            tail = self.tokenizer.decode(input_ids[row, -TAIL_TOKENS:].tolist(), skip_special_tokens=True)
            if OPEN_MARKUP.search(tail):
                scores[row, self.braces.to(scores.device)] = float("-inf")
        return scores
