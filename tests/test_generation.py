"""Generation: stop handling, token counting, continuous batching, sampling, beams, packed linears."""

from __future__ import annotations

import pytest

from repotune.generation import Ending, _count_new_tokens, generate
from repotune.params import DecodingParams
from repotune.stops import cut_at_stop, truncate_at_stop

PROMPTS = [
    "def add(a, b):\n    return a + b\nDocstring:",
    "import os\nfrom pathlib import Path\n\ndef read(path):\n    return Path(path).read_text()\nDocstring:",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\nDocstring:",
    "def f():\nDocstring:",
    "def read(path):\n    return os.path\nDocstring:",
]


def decoding(**settings) -> DecodingParams:
    """Decoding params resolved as a task resolves them (no repetition penalty, no n-gram
    blocking), greedy and without stops unless `settings` say otherwise."""
    return DecodingParams(**{"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "markup_guard": False, "stop": [], **settings})


# --- stop sequences and token counting ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("\n\n  Return x.\n\nMore text.", ["\n\n"], "Return x."),
        ("\n\n\n", ["\n\n"], ""),
        ("Return x.\ndef g():", ["\n\n", "def "], "Return x."),
        ("Return x.\n\n", [], "Return x."),
        ("  Return x. END and more", ["END", ""], "Return x."),
        ('"""Return x."""', ['"""'], ""),
    ],
)
def test_truncate_at_stop(text, stop, expected):
    assert truncate_at_stop(text, stop) == expected


def test_code_completion_stops_do_not_skip_leading_whitespace():
    # Mid-line cursor: a newline first means the line is complete; indentation is kept.
    assert cut_at_stop("\n    return x\n", ["\n"], skip_leading_whitespace=False) == ""
    assert cut_at_stop("  x + 1)\n", ["\n"], skip_leading_whitespace=False) == "  x + 1)"
    assert cut_at_stop("\n    return x\n", ["\n"]) == "\n    return x"


def test_count_new_tokens():
    assert _count_new_tokens([5, 6, 0, 0], eos_ids={0}, stopped_at=None) == 3  # EOS counted
    assert _count_new_tokens([5, 6, 7, 0], eos_ids={0}, stopped_at=2) == 2  # pad after stop not
    assert _count_new_tokens([5, 6, 7], eos_ids={0}, stopped_at=None) == 3


# --- generation on the tiny model ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(lively_model):
    from repotune.modeling import load_causal_lm, load_tokenizer

    return load_causal_lm(lively_model), load_tokenizer(lively_model)


def test_batched_equals_unbatched_greedy_in_original_order(tiny):
    model, tokenizer = tiny
    one_by_one = [generate(model, tokenizer, [p], decoding(max_new_tokens=12), progress=False).texts[0] for p in PROMPTS]
    batched = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=12, batch_size=3), progress=False)
    assert len(set(one_by_one)) > 1  # outputs depend on the prompt, so order is really tested
    assert batched.texts == one_by_one
    assert batched.prompt_tokens == [len(tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert all(0 < n <= 12 for n in batched.new_tokens)
    assert tokenizer.padding_side == "right"  # restored


def test_stop_early_gives_same_texts_with_fewer_tokens(tiny):
    model, tokenizer = tiny
    full = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=16), progress=False)
    # A stop string taken from inside a real output, so that the criterion really fires.
    text = full.texts[0]
    stop = [text[len(text) // 2 : len(text) // 2 + 2]]
    settings = decoding(max_new_tokens=16, stop=stop, batch_size=2)
    late = generate(model, tokenizer, PROMPTS, settings, stop_early=False, progress=False)
    early = generate(model, tokenizer, PROMPTS, settings, stop_early=True, progress=False)
    assert early.texts == late.texts == [truncate_at_stop(t, stop) for t in full.texts]
    assert sum(early.new_tokens) < sum(late.new_tokens)


def test_sampling_is_reproducible_with_a_seed(tiny):
    model, tokenizer = tiny
    settings = decoding(max_new_tokens=8, do_sample=True, seed=1)
    first = generate(model, tokenizer, PROMPTS, settings, progress=False)
    assert generate(model, tokenizer, PROMPTS, settings, progress=False).texts == first.texts


def test_continuous_batching_equals_model_generate(tiny):
    """Slots refilled mid-run (5 prompts, 2 slots, rows ending at different steps) give
    exactly the tokens of transformers' own generate, one prompt at a time."""
    from repotune.generation import _generate_padded

    model, tokenizer = tiny
    full = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=16), progress=False)
    text = full.texts[1]
    stop = [text[len(text) // 2 : len(text) // 2 + 2]]  # ends some rows early, not all
    continuous = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=16, stop=stop, batch_size=2), progress=False)
    assert continuous.decode_steps > 0 and continuous.prefill_seconds > 0
    reference = _generate_padded(
        model, tokenizer, PROMPTS, list(range(len(PROMPTS))),
        decoding(max_new_tokens=16, temperature=1.0, top_p=1.0, batch_size=1, seed=0),
        Ending({tokenizer.eos_token_id}, stop, early=True, skip_leading_whitespace=True), on_done=lambda: None,
    )
    assert continuous.new_tokens == [len(row) for row in reference]
    assert continuous.texts == [truncate_at_stop(tokenizer.decode(r), stop) for r in reference]
    assert len(set(continuous.new_tokens)) > 1  # rows really ended at different steps
    # Fewer steps than one prompt at a time: rows shared the decoding steps.
    one_slot = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=16, stop=stop, batch_size=1), progress=False)
    assert one_slot.texts == continuous.texts
    assert continuous.decode_steps < one_slot.decode_steps == sum(continuous.new_tokens) - len(PROMPTS)


def _padded(model, tokenizer, eos_ids=frozenset(), **options):
    """transformers' own ``model.generate``, one prompt at a time, greedy, no stops; rows end
    at `eos_ids` (passed to ``generate`` as its EOS) or after 12 tokens."""
    from repotune.generation import _generate_padded

    return _generate_padded(
        model, tokenizer, PROMPTS, list(range(len(PROMPTS))),
        decoding(max_new_tokens=12, temperature=1.0, top_p=1.0, batch_size=1, seed=0, **options),
        Ending(set(eos_ids), [], early=False, skip_leading_whitespace=True), on_done=lambda: None,
    )


def test_repetition_options_take_effect_as_in_transformers_generate(tiny):
    """repetition_penalty and no_repeat_ngram_size run transformers' own logits processors in
    the continuous loop: the same tokens as model.generate with the same options, and not the
    tokens of plain greedy decoding."""
    model, tokenizer = tiny
    plain = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=12, batch_size=2), progress=False)
    for options in ({"repetition_penalty": 3.0}, {"no_repeat_ngram_size": 1}):
        ours = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=12, batch_size=2, **options), progress=False)
        theirs = _padded(model, tokenizer, **options)
        assert [tokenizer.decode(r) for r in theirs] == ours.raw_texts, options
        assert ours.raw_texts != plain.raw_texts, options
    # n-gram size 1: no token of the prompt or of the output comes twice.
    ids = tokenizer(PROMPTS)["input_ids"]
    for prompt, row in zip(ids, _padded(model, tokenizer, no_repeat_ngram_size=1)):
        assert len(set(row)) == len(row) and not set(row) & set(prompt)


def test_repetition_options_take_effect_with_beams(tiny):
    """The model.generate path (beam search) gets the same options."""
    model, tokenizer = tiny
    plain = _padded(model, tokenizer, num_beams=2)
    blocked = _padded(model, tokenizer, num_beams=2, no_repeat_ngram_size=1)
    assert blocked != plain
    for prompt, row in zip(tokenizer(PROMPTS)["input_ids"], blocked):
        assert len(set(row)) == len(row) and not set(row) & set(prompt)


def test_a_row_ending_at_eos_counts_it_and_frees_its_slot(tiny):
    model, tokenizer = tiny
    ids = tokenizer(PROMPTS[0], return_tensors="pt")
    row = model.generate(**ids, max_new_tokens=6, do_sample=False)[0, ids["input_ids"].shape[1] :]
    eos = int(row[2])  # make prompt 0's third token its end
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos
    try:
        ended = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=6, batch_size=2), progress=False)
    finally:
        model.generation_config.eos_token_id = saved
    assert ended.new_tokens[0] == row.tolist().index(eos) + 1 <= 3
    assert all(0 < n <= 6 for n in ended.new_tokens)  # the freed slot served the other prompts


def test_a_special_token_ends_the_output_like_eos(tiny):
    """A chat turn's start, a file separator...: what follows a special token is not the answer
    (beams found "A TCP client.\\n<|im_start|>assistant\\nYou can use ..."); greedy and beams end there."""
    import copy

    model, tokenizer = tiny
    ids = tokenizer(PROMPTS[0], return_tensors="pt")
    row = model.generate(**ids, max_new_tokens=6, do_sample=False)[0, ids["input_ids"].shape[1] :].tolist()
    marked = copy.deepcopy(tokenizer)
    marked.add_special_tokens({"additional_special_tokens": [marked.convert_ids_to_tokens(row[2])]})
    assert len(marked) == len(tokenizer) and row[2] in marked.all_special_ids  # the same token, now special
    free = generate(model, tokenizer, PROMPTS[:1], decoding(max_new_tokens=6), progress=False)
    ended = generate(model, marked, PROMPTS[:1], decoding(max_new_tokens=6), progress=False)
    assert free.new_tokens == [6] and ended.new_tokens == [row.index(row[2]) + 1]
    # Beams end there as at an EOS id: the same outputs as with the token made the model's EOS.
    beams = generate(model, marked, PROMPTS, decoding(max_new_tokens=6, num_beams=2), progress=False)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [saved, row[2]]
    try:
        as_eos = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=6, num_beams=2), progress=False)
    finally:
        model.generation_config.eos_token_id = saved
    plain = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=6, num_beams=2), progress=False)
    assert beams.new_tokens == as_eos.new_tokens != plain.new_tokens


def test_sampling_does_not_depend_on_batch_size(tiny):
    model, tokenizer = tiny
    options = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.0, "top_p": 0.95}
    one = generate(model, tokenizer, PROMPTS, decoding(batch_size=1, seed=3, **options), progress=False)
    three = generate(model, tokenizer, PROMPTS, decoding(batch_size=3, seed=3, **options), progress=False)
    assert one.texts == three.texts
    greedy = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=8), progress=False)
    assert one.texts != greedy.texts  # it really sampled
    assert generate(model, tokenizer, PROMPTS, decoding(batch_size=3, seed=4, **options), progress=False).texts != three.texts


def test_sampled_beams_and_sliding_window_models_use_model_generate(tiny, tmp_path):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from repotune.slot_cache import supports

    model, tokenizer = tiny
    assert supports(model)
    beams = generate(model, tokenizer, PROMPTS[:2], decoding(max_new_tokens=5, num_beams=2), progress=False)
    assert beams.decode_steps > 0 and all(0 < n <= 5 for n in beams.new_tokens)  # on the slots
    sampled = generate(
        model, tokenizer, PROMPTS[:2], decoding(max_new_tokens=5, num_beams=2, do_sample=True), progress=False
    )
    assert sampled.decode_steps == 0 and all(0 < n <= 5 for n in sampled.new_tokens)

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    sliding = MistralForCausalLM(config)
    assert not supports(sliding)
    out = generate(sliding, tokenizer, PROMPTS[:2], decoding(max_new_tokens=5), progress=False)
    assert out.decode_steps == 0 and all(0 < n <= 5 for n in out.new_tokens)


def test_prepacked_linears_keep_the_logits(lively_model):
    import torch

    from repotune.modeling import load_causal_lm, load_tokenizer, prepack_linears

    model, tokenizer = load_causal_lm(lively_model), load_tokenizer(lively_model)
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    ids = tokenizer(PROMPTS[1], return_tensors="pt")
    with torch.inference_mode():
        before = model(**ids).logits
        assert prepack_linears(model, batch_size=8) == linears == 2 * 7 + 1  # + lm_head
        assert not any(type(m) is torch.nn.Linear for m in model.modules())
        after = model(**ids).logits
    assert torch.allclose(before, after, atol=1e-4)
    texts = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=8), progress=False).texts
    reference = load_causal_lm(lively_model)
    assert texts == generate(reference, tokenizer, PROMPTS, decoding(max_new_tokens=8), progress=False).texts


def test_length_penalty_steers_beam_search_towards_longer_endings(tiny):
    """decoding.length_penalty reaches beam search: with a token the model often emits as its
    end, a penalty above 0 picks longer finished beams than one below 0 (transformers divides a
    beam's log-probability by its length to the power of the penalty)."""
    model, tokenizer = tiny
    plain = _padded(model, tokenizer, num_beams=4)
    end = max(set(plain[0][2:]), key=plain[0].count)  # a token the model emits, made its end

    def lengths(penalty: float) -> list[int]:
        return [len(row) for row in _padded(model, tokenizer, eos_ids={end}, num_beams=4, length_penalty=penalty)]

    short, long = lengths(-5.0), lengths(5.0)
    assert all(s <= n for s, n in zip(short, long)) and sum(long) > sum(short), (short, long)


def _frequent_token(model, tokenizer) -> int:
    """A token the model emits often after prompt 0's first tokens (made an end below, so that
    beams end at different lengths)."""
    ids = tokenizer(PROMPTS[0], return_tensors="pt")
    row = model.generate(**ids, max_new_tokens=12, do_sample=False)[0, ids["input_ids"].shape[1] :].tolist()
    return max(set(row[2:]), key=row.count)


@pytest.mark.parametrize(
    ("beams", "penalty", "ngram"), [(2, 1.0, 0), (4, -2.0, 2), (4, 2.0, 0)]
)
def test_beam_search_on_slots_equals_model_generate(tiny, beams, penalty, ngram):
    """Beams on the slots (a prompt at a time, or two prompts sharing the steps while a third
    waits for a slot) give exactly the tokens of transformers' beam search, one prompt at a
    time: the same candidates, finished hypotheses, length penalty, early stop and n-gram
    blocking."""
    from repotune.generation import _eos_ids, _generate_padded

    model, tokenizer = tiny
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = _frequent_token(model, tokenizer)
    try:
        options = {"max_new_tokens": 12, "num_beams": beams, "length_penalty": penalty, "no_repeat_ngram_size": ngram}
        reference = _generate_padded(
            model, tokenizer, PROMPTS, list(range(len(PROMPTS))),
            decoding(temperature=1.0, top_p=1.0, batch_size=1, seed=0, **options),
            Ending(_eos_ids(model, tokenizer), [], early=False, skip_leading_whitespace=True), on_done=lambda: None,
        )
        alone = generate(model, tokenizer, PROMPTS, decoding(batch_size=beams, **options), progress=False)
        shared = generate(model, tokenizer, PROMPTS, decoding(batch_size=2 * beams + 1, **options), progress=False)
    finally:
        model.generation_config.eos_token_id = saved
    expected = [tokenizer.decode(row, skip_special_tokens=True) for row in reference]
    assert alone.raw_texts == shared.raw_texts == expected
    assert alone.new_tokens == shared.new_tokens == [len(row) for row in reference]
    assert 0 < shared.decode_steps < alone.decode_steps  # two searches shared the steps
    if penalty == -2.0:
        assert min(alone.new_tokens) < 12  # some beams really ended early


def test_a_stop_ends_exactly_the_beam_that_holds_it(tiny):
    """With beams on the slots, a candidate ends at the token that completes a stop sequence
    (transformers' criteria would look at rows by position, which beams change every step)."""
    import torch

    from repotune.beam_search import generate_beams
    from repotune.generation import _eos_ids, _processors
    from repotune.stops import is_stopped

    model, tokenizer = tiny
    free = generate(model, tokenizer, PROMPTS, decoding(max_new_tokens=12, num_beams=3), progress=False)
    text = free.raw_texts[2]
    stop = [text[len(text) // 2 : len(text) // 2 + 2]]
    settings = decoding(max_new_tokens=12, num_beams=3, stop=stop)
    ending = Ending(_eos_ids(model, tokenizer), stop, early=True, skip_leading_whitespace=True)
    with torch.inference_mode():
        rows, _, _ = generate_beams(
            model, tokenizer, tokenizer(PROMPTS)["input_ids"], range(len(PROMPTS)), settings, ending,
            _processors(model, settings, tokenizer), on_done=lambda: None,
        )
    held = [is_stopped(tokenizer.decode(row, skip_special_tokens=True), stop) for row in rows]
    assert any(held) and sum(map(len, rows)) < sum(free.new_tokens)
    for row, holds in zip(rows, held, strict=True):
        if holds:  # it ended at the token that completed the stop
            assert not is_stopped(tokenizer.decode(row[:-1], skip_special_tokens=True), stop)
        else:
            assert len(row) == 12 or row[-1] in ending.eos_ids
