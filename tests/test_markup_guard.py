"""repotune.markup_guard: no token holding "{" while inline markup is open, on the tiny model."""

from __future__ import annotations

import re

import pytest

from repotune.generation import generate
from repotune.markup_guard import OPEN_MARKUP, MarkupGuard
from repotune.params import DecodingParams


@pytest.fixture(scope="module")
def tiny(lively_model):
    from repotune.modeling import load_causal_lm, load_tokenizer

    return load_causal_lm(lively_model), load_tokenizer(lively_model)


@pytest.mark.parametrize(("text", "open_"), [
    ("Return a L{Deferred", True),
    ("Send the C{IUser} to L{", True),
    ("See {@link Foo", True),
    ("Return a L{Deferred} that fires", False),
    ("Format the {name", False),  # a brace that is not markup
    ("See {@link Foo} and", False),
    ("Use L{Foo\nnext line", False),  # markup does not span lines
])
def test_open_markup_is_an_unclosed_epytext_or_javadoc_opener_at_the_end(text, open_):
    assert bool(OPEN_MARKUP.search(text)) is open_


def test_the_guard_bans_every_brace_token_in_rows_inside_markup_and_nothing_else(tiny):
    import torch

    _, tokenizer = tiny
    guard = MarkupGuard(tokenizer)
    braces = {i for i in range(len(tokenizer)) if "{" in tokenizer.decode([i])}
    assert braces and set(guard.braces.tolist()) == braces
    rows = ["x = 1\nReturn a L{Deferred", "x = 1\nReturn a L{Deferred} that"]
    ids = [tokenizer(row)["input_ids"] for row in rows]
    width = max(map(len, ids))
    batch = torch.tensor([[tokenizer.pad_token_id] * (width - len(row)) + row for row in ids])
    scores = guard(batch, torch.zeros(2, len(tokenizer)))
    banned = {i for i in range(len(tokenizer)) if scores[0, i] == float("-inf")}
    assert banned == braces and not torch.isinf(scores[1]).any()


@pytest.mark.parametrize(("beams", "sample"), [(1, False), (2, False), (2, True)])  # slots, beams, model.generate
def test_generation_with_the_guard_opens_no_brace_inside_markup(tiny, beams, sample):
    """Prompts that end inside markup: with the guard no output holds "{" before a "}" closes
    it; without, the model writes some (the guard had something to do). The tiny model's head
    is nudged towards brace tokens (+4 on their logits) so that it does."""
    import copy

    import torch

    model, tokenizer = tiny
    braces = torch.tensor([i for i in range(len(tokenizer)) if "{" in tokenizer.decode([i])])
    model = copy.deepcopy(model)

    def nudge(module, inputs, logits):
        logits[..., braces] += 4.0
        return logits

    model.lm_head.register_forward_hook(nudge)
    prompts = [f"def f{i}(x):\n    return x\nReturn the C{{" for i in range(8)]
    settings = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "stop": [], "max_new_tokens": 8,
                "num_beams": beams, "do_sample": sample, "batch_size": 4}
    guarded = generate(model, tokenizer, prompts, DecodingParams(**settings, markup_guard=True), progress=False)
    free = generate(model, tokenizer, prompts, DecodingParams(**settings, markup_guard=False), progress=False)

    def opens_inside(text: str) -> bool:
        return "{" in re.split(r"[}\n]", text)[0]  # a brace before the prompt's markup closes (or its line ends)

    assert not any(opens_inside(text) for text in guarded.raw_texts)
    assert any(opens_inside(text) for text in free.raw_texts)
