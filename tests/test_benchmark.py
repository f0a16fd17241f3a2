"""Benchmark stage: metrics, stop handling, batched generation, the stage end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from repotune import io, metrics
from repotune.generation import _count_new_tokens, generate
from repotune.report import prediction_rows, render_report
from repotune.stops import cut_at_stop, truncate_at_stop
from repotune.tasks import docstring

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = [
    "def add(a, b):\n    return a + b\nDocstring:",
    "import os\nfrom pathlib import Path\n\ndef read(path):\n    return Path(path).read_text()\nDocstring:",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\nDocstring:",
    "def f():\nDocstring:",
    "def read(path):\n    return os.path\nDocstring:",
]


def load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- metrics -------------------------------------------------------------------------------


def test_identical_texts_score_100():
    refs = ["Return the sum of two numbers.", "Push an item onto the stack."]
    assert docstring.score(refs, refs) == {"chrf": 100.0, "rouge_l": 100.0, "bleu": 100.0, "exact_match": 100.0}
    assert metrics.sentence_chrf(refs, refs) == [100.0, 100.0]


def test_disjoint_texts_score_low():
    scores = docstring.score(["zzz qqq xxx", "vvv www"], ["Return the sum.", "Push an item."])
    assert scores["chrf"] < 10 and scores["bleu"] < 1 and scores["rouge_l"] == 0
    assert scores["exact_match"] == 0


def test_exact_match_ignores_whitespace_and_rouge_ignores_case_and_punctuation():
    assert metrics.exact_match(["Return  the\nsum. "], ["Return the sum."]) == 100.0
    assert metrics.exact_match(["return the sum."], ["Return the sum."]) == 0.0
    assert metrics.rouge_l(["return THE sum"], ["Return the sum."]) == 100.0
    assert metrics.sentence_chrf([""], ["Return the sum."]) == [0.0]


def test_compare_is_flat_with_deltas():
    refs = ["Return the sum of two numbers.", "Push an item onto the stack."]
    flat = metrics.compare(refs, {"base": ["x", "y"], "finetuned": refs}, docstring.score)
    assert flat["samples"] == 2
    for name in docstring.METRICS:
        assert flat[f"delta_{name}"] == pytest.approx(flat[f"finetuned_{name}"] - flat[f"base_{name}"])
    assert flat["delta_chrf"] > 90
    with pytest.raises(ValueError):
        metrics.chrf(["a"], ["a", "b"])


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
def one_thread():
    """One torch thread: the tiny model's ops take microseconds, and two threads spin-waiting on
    a shared 2-core machine made these tests 10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lively_model(tiny_model, tmp_path_factory, one_thread) -> Path:
    """The tiny model with larger random weights (std 0.2), saved to its own folder.

    With the fixture's small init every prompt yields the same token over and over, which
    would let a batching or ordering bug pass unnoticed; here outputs depend on the prompt.
    """
    import torch

    from repotune.modeling import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0, 0.2)
    folder = tmp_path_factory.mktemp("lively") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(lively_model):
    from repotune.modeling import load_causal_lm, load_tokenizer

    return load_causal_lm(lively_model), load_tokenizer(lively_model)


def test_batched_equals_unbatched_greedy_in_original_order(tiny):
    model, tokenizer = tiny
    options = {"max_new_tokens": 12, "stop": [], "progress": False}
    one_by_one = [generate(model, tokenizer, [p], **options).texts[0] for p in PROMPTS]
    batched = generate(model, tokenizer, PROMPTS, batch_size=3, **options)
    assert len(set(one_by_one)) > 1  # outputs depend on the prompt, so order is really tested
    assert batched.texts == one_by_one
    assert batched.prompt_tokens == [len(tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert all(0 < n <= 12 for n in batched.new_tokens)
    assert tokenizer.padding_side == "right"  # restored


def test_stop_early_gives_same_texts_with_fewer_tokens(tiny):
    model, tokenizer = tiny
    full = generate(model, tokenizer, PROMPTS, max_new_tokens=16, stop=[], progress=False)
    # A stop string taken from inside a real output, so that the criterion really fires.
    text = full.texts[0]
    stop = [text[len(text) // 2 : len(text) // 2 + 2]]
    options = {"max_new_tokens": 16, "stop": stop, "batch_size": 2, "progress": False}
    late = generate(model, tokenizer, PROMPTS, stop_early=False, **options)
    early = generate(model, tokenizer, PROMPTS, stop_early=True, **options)
    assert early.texts == late.texts == [truncate_at_stop(t, stop) for t in full.texts]
    assert sum(early.new_tokens) < sum(late.new_tokens)


def test_sampling_is_reproducible_with_a_seed(tiny):
    model, tokenizer = tiny
    options = {"max_new_tokens": 8, "do_sample": True, "stop": [], "progress": False}
    first = generate(model, tokenizer, PROMPTS, seed=1, **options)
    assert generate(model, tokenizer, PROMPTS, seed=1, **options).texts == first.texts


def test_continuous_batching_equals_model_generate(tiny):
    """Slots refilled mid-run (5 prompts, 2 slots, rows ending at different steps) give
    exactly the tokens of transformers' own generate, one prompt at a time."""
    from repotune.generation import _generate_padded

    model, tokenizer = tiny
    full = generate(model, tokenizer, PROMPTS, max_new_tokens=16, stop=[], progress=False)
    text = full.texts[1]
    stop = [text[len(text) // 2 : len(text) // 2 + 2]]  # ends some rows early, not all
    options = {"max_new_tokens": 16, "stop": stop, "progress": False}
    continuous = generate(model, tokenizer, PROMPTS, batch_size=2, **options)
    assert continuous.decode_steps > 0 and continuous.prefill_seconds > 0
    reference = _generate_padded(
        model, tokenizer, PROMPTS, list(range(len(PROMPTS))), max_new_tokens=16, do_sample=False,
        temperature=1.0, top_p=1.0, num_beams=1, batch_size=1, stop=stop, seed=0,
        stop_early=True, skip_leading_whitespace=True, eos_ids={tokenizer.eos_token_id}, on_done=lambda: None,
    )
    assert continuous.new_tokens == [len(row) for row in reference]
    assert continuous.texts == [truncate_at_stop(tokenizer.decode(r), stop) for r in reference]
    assert len(set(continuous.new_tokens)) > 1  # rows really ended at different steps
    # Fewer steps than one prompt at a time: rows shared the decoding steps.
    one_slot = generate(model, tokenizer, PROMPTS, batch_size=1, **options)
    assert one_slot.texts == continuous.texts
    assert continuous.decode_steps < one_slot.decode_steps == sum(continuous.new_tokens) - len(PROMPTS)


def test_a_row_ending_at_eos_counts_it_and_frees_its_slot(tiny):
    model, tokenizer = tiny
    ids = tokenizer(PROMPTS[0], return_tensors="pt")
    row = model.generate(**ids, max_new_tokens=6, do_sample=False)[0, ids["input_ids"].shape[1] :]
    eos = int(row[2])  # make prompt 0's third token its end
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos
    try:
        ended = generate(model, tokenizer, PROMPTS, max_new_tokens=6, stop=[], batch_size=2, progress=False)
    finally:
        model.generation_config.eos_token_id = saved
    assert ended.new_tokens[0] == row.tolist().index(eos) + 1 <= 3
    assert all(0 < n <= 6 for n in ended.new_tokens)  # the freed slot served the other prompts


def test_sampling_does_not_depend_on_batch_size(tiny):
    model, tokenizer = tiny
    options = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.0, "top_p": 0.95, "stop": [], "progress": False}
    one = generate(model, tokenizer, PROMPTS, batch_size=1, seed=3, **options)
    three = generate(model, tokenizer, PROMPTS, batch_size=3, seed=3, **options)
    assert one.texts == three.texts
    greedy = generate(model, tokenizer, PROMPTS, max_new_tokens=8, stop=[], progress=False)
    assert one.texts != greedy.texts  # it really sampled
    assert generate(model, tokenizer, PROMPTS, batch_size=3, seed=4, **options).texts != three.texts


def test_beam_search_and_sliding_window_models_use_model_generate(tiny, tmp_path):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from repotune.slot_cache import supports

    model, tokenizer = tiny
    assert supports(model)
    beams = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=5, num_beams=2, stop=[], progress=False)
    assert beams.decode_steps == 0 and all(0 < n <= 5 for n in beams.new_tokens)

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    sliding = MistralForCausalLM(config)
    assert not supports(sliding)
    out = generate(sliding, tokenizer, PROMPTS[:2], max_new_tokens=5, stop=[], progress=False)
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
    texts = generate(model, tokenizer, PROMPTS, max_new_tokens=8, stop=[], progress=False).texts
    reference = load_causal_lm(lively_model)
    assert texts == generate(reference, tokenizer, PROMPTS, max_new_tokens=8, stop=[], progress=False).texts


# --- report ----------------------------------------------------------------------------------


def test_report_shows_table_and_largest_changes():
    records = [
        {"id": "b", "target": "Return the sum.", "path": "m.py", "name": "add", "start_line": 3, "input": "def add(): ..."},
        {"id": "a", "target": "Push an item.", "path": "m.py", "name": "push", "start_line": 9, "input": "def push(): ..."},
    ]
    rows = prediction_rows(
        records, ["zzz", "Push an item."], ["Return the sum.", "qq"], docstring.sample_scores
    )
    assert [r["id"] for r in rows] == ["a", "b"]
    outputs = {"base": ["zzz", "Push an item."], "finetuned": ["Return the sum.", "qq"]}
    summary = metrics.compare([r["target"] for r in records], outputs, docstring.score)
    text = render_report(summary, rows, docstring.METRICS, "chrf", {"max_new_tokens": 64})
    assert "| chrF (sacrebleu, corpus) |" in text and "## Largest gains" in text
    assert text.index("`add`") < text.index("## Largest losses") < text.index("`push`")


# --- the stage ----------------------------------------------------------------------------


def write_inputs(root: Path, max_samples: int = 0) -> None:
    records = [
        {
            "id": f"s{i:02d}",
            "input": prompt.removesuffix("\nDocstring:"),
            "target": f"Docstring number {i}.",
            "repo": "https://example.com/r.git",
            "sha": "0" * 40,
            "path": f"pkg/m{i}.py",
            "language": "python",
            "kind": "function",
            "name": f"f{i}",
            "start_line": 1,
            "end_line": 3,
        }
        for i, prompt in enumerate(PROMPTS)
    ]
    io.write_jsonl(root / "data/split/test.jsonl", reversed(records))  # the stage sorts by id
    (root / "params.yaml").write_text(
        "source:\n  url: https://example.com/r.git\n"
        f"benchmark:\n  max_samples: {max_samples}\n  device: cpu\n  threads: 1\n"
        "decoding:\n  max_new_tokens: 6\n  batch_size: 2\n  stop: []\n",
        encoding="utf-8",
    )


DETERMINISTIC = ["benchmark.json", "predictions.jsonl", "benchmark_plot.json", "report.md", "benchmark.png"]


def run_stage(root: Path, model: Path, out: str) -> Path:
    load_stage("benchmark").main(
        [
            f"--params={root / 'params.yaml'}",
            f"--base={model}",
            f"--merged={model}",
            f"--test={root / 'data/split/test.jsonl'}",
            f"--out={root / out}",
        ]
    )
    return root / out


def test_stage_identical_models_zero_delta_and_deterministic(tmp_path, lively_model):
    write_inputs(tmp_path)
    first = run_stage(tmp_path, lively_model, "m1")
    second = run_stage(tmp_path, lively_model, "m2")

    summary = json.loads((first / "benchmark.json").read_text())
    expected = {"samples", "task", "prompts_code_cut"} | {f"{k}_{m}" for k in ("base", "finetuned", "delta") for m in docstring.METRICS}
    assert set(summary) == expected
    assert summary["samples"] == len(PROMPTS) and summary["task"] == "docstring"
    assert all(summary[f"delta_{m}"] == 0 for m in docstring.METRICS)

    rows = io.read_jsonl(first / "predictions.jsonl")
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert all(r["base"] == r["finetuned"] and r["delta_score"] == 0 for r in rows)

    speed = json.loads((first / "benchmark_speed.json").read_text())
    assert speed["base_tokens_per_s"] > 0 and speed["finetuned_generated_tokens"] > 0
    assert (first / "benchmark.png").read_bytes().startswith(b"\x89PNG")
    for name in DETERMINISTIC:  # timing lives in benchmark_speed.json, excluded on purpose
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_stage_max_samples_takes_first_ids(tmp_path, tiny_model, one_thread):
    write_inputs(tmp_path, max_samples=2)
    out = run_stage(tmp_path, tiny_model, "m")
    assert [r["id"] for r in io.read_jsonl(out / "predictions.jsonl")] == ["s00", "s01"]
    assert json.loads((out / "benchmark.json").read_text())["samples"] == 2
