"""Stages `train` and `merge` on the tiny model: prompts, data loading, LoRA training, merging.

One training run (module fixture) feeds most tests; the determinism and QLoRA tests train
again. Every run is a few steps of a 2-layer model on one CPU thread: seconds in all.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from conftest import kill_at_checkpoint, load_stage

from repotune import checkpoints, errors
from repotune.errors import RepotuneError
from repotune.prompts import Prompter
from repotune.training_data import count_lengths, load_split

DOCSTRING = Prompter("docstring", "{code}\nDocstring:")

STAGES = Path(__file__).resolve().parent.parent / "stages"
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
# How the model card names each train.quantize setting.
CARD_QUANTIZATION = {"4bit": "4-bit NF4 with double quantisation", "8bit": "8-bit LLM.int8"}

FUNCTIONS = [
    ("add", "def add(a, b):\n    return a + b\n", "Return the sum of two numbers."),
    ("push", "def push(self, item):\n    self.items.append(item)\n", "Push an item on the stack."),
    ("read", "def read(path):\n    return Path(path).read_text()\n", "Return a file's text."),
    ("keys", "def keys(d):\n    return {k: 1 for k in d}\n", "Map every key of a dict to one."),
]

PARAMS = """\
source:
  url: /nonexistent/repo  # not used by train or merge
lora:
  r: 8
  alpha: 16
  dropout: 0.0
train:
  max_steps: 8
  batch_size: 4
  grad_accum: 1
  eval_steps: 4
  lr: 5.0e-2
  warmup: 0.0
  max_length: 64
  threads: 1
  max_val_samples: 3  # of the 4 written: val loss on the first 3 by id
"""


def record(i: int, split: str) -> dict:
    name, code, target = FUNCTIONS[i % len(FUNCTIONS)]
    return {
        "id": f"{split}-{i:03d}",
        "input": code,
        "target": target,
        "repo": "tiny",
        "sha": "0" * 40,
        "path": f"pkg/mod{i}.py",
        "language": "python",
        "kind": "function",
        "name": name,
        "start_line": 1,
        "end_line": 2,
    }


def write_data(root: Path, params: str = PARAMS) -> Path:
    (root / "split").mkdir(parents=True, exist_ok=True)
    # Written in reverse id order: load_split must sort.
    for split, count in (("train", 16), ("val", 4)):
        lines = [json.dumps(record(i, split)) for i in reversed(range(count))]
        (root / "split" / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "params.yaml").write_text(params, encoding="utf-8")
    return root


def train_args(root: Path, base: Path, out: str = "adapter") -> list[str]:
    return [
        "--params", str(root / "params.yaml"),
        "--base", str(base),
        "--train", str(root / "split/train.jsonl"),
        "--val", str(root / "split/val.jsonl"),
        "--out", str(root / out),
        "--metrics", str(root / f"metrics/{out}.json"),
        "--live", str(root / f"live/{out}"),
        "--checkpoints", str(root / f"checkpoints/{out}"),
    ]  # fmt: skip


def merge_args(root: Path, base: Path, adapter: str = "adapter", out: str = "merged") -> list[str]:
    return [
        "--base", str(base),
        "--adapter", str(root / adapter),
        "--val", str(root / "split/val.jsonl"),
        "--clone", str(root / "metrics/clone.json"),
        "--out", str(root / out),
        "--metrics", str(root / f"metrics/{out}.json"),
    ]  # fmt: skip


def read_tsv(path: Path) -> list[float]:
    with path.open(encoding="utf-8") as f:
        return [float(row[-1]) for row in list(csv.reader(f, delimiter="\t"))[1:]]


@pytest.fixture(scope="module")
def trained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with data, params, and the outputs of one run of the train stage."""
    root = write_data(tmp_path_factory.mktemp("train"))
    (root / "metrics").mkdir()
    (root / "metrics/clone.json").write_text(
        json.dumps({"url": "https://example.org/tiny.git", "sha": "a" * 40}), encoding="utf-8"
    )
    load_stage("train").main(train_args(root, tiny_model))
    return root


# --- prompts and data ---------------------------------------------------------------------


def test_prompt_keeps_braces_and_drops_trailing_whitespace():
    rec = {"input": "def f():\n    return {'a': 1}\n\n", "target": "  Make a dict.\n"}
    assert DOCSTRING.prompt(rec) == "def f():\n    return {'a': 1}\nDocstring:"
    assert DOCSTRING.completion(rec) == " Make a dict.\n"


def test_load_split_sorts_by_id_and_takes_first_n(tmp_path):
    root = write_data(tmp_path)
    records = load_split(root / "split/train.jsonl", max_samples=3)
    assert [r["id"] for r in records] == ["train-000", "train-001", "train-002"]
    assert len(load_split(root / "split/train.jsonl")) == 16


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "file not found"), ('{"id": "a"\n', "not valid JSON"), ('{"id": "a"}\n', "lacks")],
)
def test_load_split_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "train.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(RepotuneError, match=message) as info:
        load_split(path)
    assert str(path) in str(info.value)


def test_count_lengths_counts_truncated_and_too_long(tiny_model):
    from repotune.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    rows = DOCSTRING.rows([record(0, "x")])
    prompt = len(tokenizer(rows[0]["prompt"])["input_ids"])
    assert count_lengths(rows, tokenizer, 1000) == {
        "tokens": count_lengths(rows, tokenizer, 1000)["tokens"],
        "truncated": 0,
        "too_long": 0,
    }
    assert count_lengths(rows, tokenizer, prompt + 1)["truncated"] == 1
    assert count_lengths(rows, tokenizer, prompt)["too_long"] == 1


# --- train ----------------------------------------------------------------------------------


def test_train_writes_adapter_training_json_and_metrics(trained):
    adapter = trained / "adapter"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json"):
        assert (adapter / name).is_file(), name
    info = json.loads((adapter / "training.json").read_text(encoding="utf-8"))
    assert info["params"]["lora"]["r"] == 8
    assert info["params"]["train"]["max_steps"] == 8
    assert info["resolved"] == {
        "device": "cpu",
        "precision": "fp32",
        "gradient_checkpointing": False,
        "group_by_length": True,
        "packing": False,
        "processes": 1,
        "eos_token": "<|endoftext|>",
    }
    assert set(info["versions"]) >= {"torch", "transformers", "peft", "trl", "datasets"}
    assert info["results"]["steps"] == 8
    assert info["results"]["train_tokens"] > 0
    assert "train_seconds" not in info["results"]  # time-dependent: metrics only

    metrics = json.loads((trained / "metrics/adapter.json").read_text(encoding="utf-8"))
    assert metrics["steps"] == 8
    assert metrics["train_tokens_per_s"] > 0
    assert metrics["samples_truncated"] == metrics["samples_too_long"] == 0
    assert metrics["train_samples"] == 16 and metrics["val_samples"] == 3  # train.max_val_samples

    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["target_modules"] == sorted(TARGET_MODULES)
    assert config["base_model_name_or_path"].endswith("model")


def test_train_loss_is_finite_and_falls(trained):
    live = trained / "live/adapter/plots/metrics"
    for name in ("train/loss", "train/learning_rate", "train/grad_norm", "eval/loss"):
        assert (live / f"{name}.tsv").is_file(), name
    train_loss = read_tsv(live / "train/loss.tsv")
    eval_loss = read_tsv(live / "eval/loss.tsv")
    assert all(v == v and v < float("inf") for v in train_loss + eval_loss)
    assert train_loss[-1] < train_loss[0] - 0.1
    assert len(eval_loss) == 2 and eval_loss[-1] < eval_loss[0]


def test_adapter_holds_only_trained_lora_weights(trained):
    from safetensors.torch import load_file

    tensors = load_file(trained / "adapter/adapter_model.safetensors")
    assert tensors and all(".lora_A." in k or ".lora_B." in k for k in tensors)
    assert {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in tensors} == set(TARGET_MODULES)
    # lora_B starts at zero: non-zero means the adapter was trained.
    assert all(t.abs().max() > 0 for k, t in tensors.items() if ".lora_B." in k)


def test_train_is_deterministic(trained, tiny_model):
    load_stage("train").main(train_args(trained, tiny_model, out="again"))
    for name in ("adapter_model.safetensors", "adapter_config.json", "training.json"):
        assert (trained / "again" / name).read_bytes() == (trained / "adapter" / name).read_bytes()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_only_completion_positions_are_scored_on_cpu(tiny_model, tmp_path, monkeypatch, precision):
    """The loss projects the completion tokens only: repotune's own in fp32
    (repotune.completion_loss), TRL's fused loss in bf16, whose switch is restored afterwards."""
    import trl.trainer.utils as trl_utils

    from repotune import completion_loss, modeling, params
    from repotune.training import Outputs, train_adapter

    original_switch = trl_utils._use_triton
    scored: dict[str, list[int]] = {"repotune": [], "trl": []}
    real_trl, real_sums = trl_utils._ChunkedLogProbFunction, completion_loss.completion_sums

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            scored["trl"].append(hidden.shape[0])
            return real_trl.apply(hidden, *args)

    def sums(hidden, *args):
        scored["repotune"].append(hidden.shape[0])
        return real_sums(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    monkeypatch.setattr(completion_loss, "completion_sums", sums)
    records = [record(i, "train") for i in range(4)]
    p = params.parse(yaml.safe_load(PARAMS))
    train = p.train.model_copy(update={"max_steps": 1, "precision": precision})
    results = train_adapter(
        tiny_model, records, [], Outputs(tmp_path / "a"), lora=p.lora, train=train, prompt=p.prompt, task=p.task
    )

    tokenizer = modeling.load_tokenizer(tiny_model)
    rows = Prompter.from_params(p.prompt, "docstring").rows(records)
    # compat.trained_tokens (TRL's private counter): every prompt + completion + EOS token once.
    assert results["train_tokens"] == sum(len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1 for r in rows)
    completion_tokens = sum(
        len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1  # + EOS
        - len(tokenizer(r["prompt"])["input_ids"])
        for r in Prompter.from_params(p.prompt, "docstring").rows(records)
    )
    # one batch of all 4 rows, no prompt or padding
    assert scored == ({"repotune": [completion_tokens], "trl": []} if precision == "fp32"
                      else {"repotune": [], "trl": [completion_tokens]})
    assert trl_utils._use_triton is original_switch


def test_the_learning_rate_left_null_is_the_tasks_and_is_recorded(tiny_model, tmp_path):
    """train.lr: null trains at the task's TRAINING lr (completion 2e-4, docstring 1e-3: not
    the same number, so a mix-up shows) and train_adapter returns the value applied."""
    from repotune import params
    from repotune.params import TaskParams
    from repotune.training import Outputs, train_adapter

    p = params.parse(yaml.safe_load(PARAMS))
    unset = p.train.model_copy(update={"lr": None, "max_steps": 1, "eval_steps": 100, "save_steps": 0})
    records = [record(i, "train") for i in range(2)]
    for task_name, lr in (("docstring", 1.0e-3), ("completion", 2.0e-4)):
        results = train_adapter(tiny_model, records, [], Outputs(tmp_path / task_name), lora=p.lora, train=unset,
                                prompt=p.prompt, task=TaskParams(name=task_name))
        assert results["lr"] == lr
        # training.json beside the adapter records the resolved params, not the null.
        card = json.loads((tmp_path / task_name / "training.json").read_text())
        assert card["params"]["train"]["lr"] == lr
    explicit = train_adapter(tiny_model, records, [], Outputs(tmp_path / "explicit"), lora=p.lora,
                             train=unset.model_copy(update={"lr": 5.0e-2}), prompt=p.prompt,
                             task=TaskParams(name="completion"))
    assert explicit["lr"] == 5.0e-2


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_qlora_trains_and_merges_into_full_precision(quantize, tiny_model, tmp_path, caplog):
    """Both bitsandbytes modes train on CPU; merge.json also measures the merged model against
    the adapter on the quantized base it was trained on, recomputed here with peft directly."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repotune import modeling

    params = PARAMS.replace("  threads: 1\n", f"  threads: 1\n  quantize: {quantize}\n")
    root = write_data(tmp_path, params)
    load_stage("train").main(train_args(root, tiny_model))
    info = json.loads((root / "adapter/training.json").read_text(encoding="utf-8"))
    assert info["params"]["train"]["quantize"] == quantize
    lora_b = [w for k, w in load_file(root / "adapter/adapter_model.safetensors").items() if "lora_B" in k]
    assert len(lora_b) == 8 and all(w.abs().max() > 0 for w in lora_b)  # B starts at 0: all learned
    # fp32 training keeps fp32 LoRA weights (TRL would cast them to bf16 on a quantized model).
    assert info["resolved"]["precision"] == "fp32" and all(w.dtype == torch.float32 for w in lora_b)
    load_stage("merge").main(merge_args(root, tiny_model))
    merge = json.loads((root / "metrics/merged.json").read_text(encoding="utf-8"))
    assert merge["quantize"] == quantize
    assert merge["max_abs_diff"] <= 1e-4 and merge["adapter_effect"] > 0
    assert merge["top1_agreement"] == 1.0 and merge["mean_abs_diff"] <= merge["max_abs_diff"]

    # The same gap, worked out with transformers + peft: the adapter on the quantized base (as
    # in training) against the merged fp32 model, on the stage's 4 probes (first val ids).
    tokenizer = AutoTokenizer.from_pretrained(root / "merged")
    quantized = PeftModel.from_pretrained(
        modeling.load_causal_lm(tiny_model, quantize=quantize), root / "adapter"
    ).eval()
    merged = AutoModelForCausalLM.from_pretrained(root / "merged").eval()
    diffs, same = [], []
    with torch.no_grad():
        for i in range(4):
            ids = tokenizer(DOCSTRING.prompt(record(i, "val")), return_tensors="pt")
            q, m = quantized(**ids).logits[0], merged(**ids).logits[0]
            diffs.append((q - m).abs())
            same.append(q.argmax(-1) == m.argmax(-1))
    assert sum(len(d) for d in diffs) == merge["probe_tokens"]
    assert merge["max_abs_diff_quantized_base"] == pytest.approx(max(float(d.max()) for d in diffs), abs=1e-5)
    assert merge["mean_abs_diff_quantized_base"] == pytest.approx(float(torch.cat(diffs).mean()), rel=1e-3)
    assert merge["top1_agreement_quantized_base"] == pytest.approx(float(torch.cat(same).float().mean()))
    assert 0.0 <= merge["top1_agreement_quantized_base"] <= 1.0
    # Rounding the base weights to 4 or 8 bits moves the logits far more than fp32 merging does.
    assert merge["max_abs_diff_quantized_base"] > 100 * max(merge["max_abs_diff"], 1e-7)

    card = (root / "merged/README.md").read_text(encoding="utf-8")
    assert "A QLoRA adapter" in card and CARD_QUANTIZATION[quantize] in card
    assert f"{merge['top1_agreement_quantized_base']:.1%} of {merge['probe_tokens']} probe positions" in card
    # bitsandbytes' "inputs will be cast ... to float16" comes once, not at every 8-bit matmul.
    assert sum("MatMul8bitLt: inputs will be cast" in r.getMessage() for r in caplog.records) <= 1


def test_merge_json_of_an_unquantized_adapter_keeps_its_keys(trained, tiny_model):
    """The default run (quantize none) gets no quantized-base keys; only the stage's peak memory."""
    load_stage("merge").main(merge_args(trained, tiny_model, out="plain"))
    merge = json.loads((trained / "metrics/plain.json").read_text(encoding="utf-8"))
    assert sorted(merge) == ["adapter_effect", "max_abs_diff", "peak_memory_mib", "probe_tokens", "probes", "tolerance"]
    card = (trained / "plain/README.md").read_text(encoding="utf-8")
    assert "A LoRA adapter trained by repotune" in card and "quantized" not in card


def _no_bitsandbytes(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as when not installed


def _cuda_only_bitsandbytes(monkeypatch):
    import bitsandbytes

    monkeypatch.setattr(bitsandbytes, "supported_torch_devices", {"cuda"})


def _old_bitsandbytes(monkeypatch):
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "0.45.0" if name == "bitsandbytes" else real(name))


@pytest.mark.parametrize(("environment", "message"), [
    (_no_bitsandbytes, "train.quantize: 8bit needs bitsandbytes, which is not installed here: "),
    (_cuda_only_bitsandbytes, "train.quantize: 8bit on cpu is not supported by bitsandbytes 0.50.2 (it runs on: cuda): "),
    (_old_bitsandbytes, "train.quantize: 8bit needs bitsandbytes >= 0.46.1, found 0.45.0: "),
])  # fmt: skip
def test_quantize_bitsandbytes_cannot_run_here_stops_before_loading(
    environment, message, tiny_model, tmp_path, monkeypatch, capsys
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def never(*args, **kwargs):
        raise AssertionError("nothing may be loaded before the refusal")

    environment(monkeypatch)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", never)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", never)
    root = write_data(tmp_path, PARAMS.replace("  threads: 1\n", "  threads: 1\n  quantize: 8bit\n"))
    assert errors.run(load_stage("train").main, train_args(root, tiny_model)) == 1
    err = capsys.readouterr().err
    way_out = "install bitsandbytes (pyproject.toml pins 0.50.2), or set train.quantize: none\n"
    assert err == f"error: {message}{way_out}"
    assert not (root / "adapter").exists()


# --- merge ----------------------------------------------------------------------------------


def test_an_adapter_on_a_tied_input_embedding_merges_without_changing_the_output_head(tiny_model, tmp_path):
    """LoRA on embed_tokens of a model that ties its head to it (the python-framework-completion
    recipe on SmolLM2): the adapter changes the input lookup only, so must the merged model."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repotune.merging import merge_adapter

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")  # random A and B: a real effect
    prompts = [DOCSTRING.prompt(record(i, "val")) for i in range(3)]

    merge = merge_adapter(tiny_model, tmp_path / "adapter", tmp_path / "merged", prompts)
    assert merge["max_abs_diff"] <= 1e-4 and merge["adapter_effect"] > 1e-2
    assert merge["untied_output_embedding"] is True

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert merged.config.tie_word_embeddings is False
    assert torch.equal(merged.get_output_embeddings().weight, base.get_output_embeddings().weight)
    assert not torch.equal(merged.get_input_embeddings().weight, base.get_input_embeddings().weight)
    adapted = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    ids = AutoTokenizer.from_pretrained(tmp_path / "merged")(prompts[0], return_tensors="pt")
    with torch.no_grad():
        assert (adapted(**ids).logits - merged(**ids).logits).abs().max().item() <= 1e-4


def test_merge_matches_adapter_logits_and_changes_only_lora_targets(trained, tiny_model):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    load_stage("merge").main(merge_args(trained, tiny_model))
    merged_dir = trained / "merged"
    merge = json.loads((trained / "metrics/merged.json").read_text(encoding="utf-8"))
    assert merge["max_abs_diff"] <= 1e-4
    assert merge["adapter_effect"] > 1e-3  # the check compares models that really differ
    assert merge["probes"] == 4

    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert (merged_dir / name).is_file(), name
    card = (merged_dir / "README.md").read_text(encoding="utf-8")
    assert "https://example.org/tiny.git" in card and "a" * 40 in card
    assert "r=8" in card and "docstring (python)" in card and "`{code}\\nDocstring:`" in card and "metrics/evaluate.json" in card

    # Independent check: merged model vs base + adapter through peft, on a fresh prompt.
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    ids = tokenizer(DOCSTRING.prompt(record(1, "t")), return_tensors="pt")
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model), trained / "adapter"
    ).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        gap = (adapted(**ids).logits - merged(**ids).logits).abs().max().item()
    assert gap <= 1e-4

    # Only the LoRA-targeted projections differ from the base weights.
    base = load_file(tiny_model / "model.safetensors")
    new = load_file(merged_dir / "model.safetensors")
    assert base.keys() == new.keys()
    changed = {k for k in base if not torch.equal(base[k], new[k])}
    assert changed and all(k.split(".")[-2] in TARGET_MODULES for k in changed)
    assert len(changed) == len(TARGET_MODULES) * 2  # 2 layers


# --- errors ---------------------------------------------------------------------------------


def test_bad_paths_give_clear_errors(trained, tiny_model, tmp_path, capsys):
    train = load_stage("train")
    args = train_args(trained, tmp_path / "no-model", out="never")
    with pytest.raises(RepotuneError, match="no-model: not a Hugging Face model folder"):
        train.main(args)
    assert not (trained / "never").exists()

    missing = train_args(trained, tiny_model)
    missing[missing.index("--train") + 1] = str(tmp_path / "missing.jsonl")
    assert errors.run(train.main, missing) == 1
    assert "missing.jsonl: file not found" in capsys.readouterr().err

    with pytest.raises(RepotuneError, match="training.json: file not found"):
        load_stage("merge").main(merge_args(trained, tiny_model, adapter="no-adapter"))


def test_model_card_quotes_where_the_base_weights_come_from(trained):
    from repotune.merging import model_card

    training = json.loads((trained / "adapter/training.json").read_text(encoding="utf-8"))
    merge = {"max_abs_diff": 1e-5, "probes": 4, "tolerance": 1e-3}
    source = "# Where these base weights come from\n\nThe assembled GGUF has sha256 `abc`.\n"
    card = model_card(training, None, merge, source)
    assert "\n## Where these base weights come from\n\nThe assembled GGUF has sha256 `abc`." in card
    assert "Where these base weights" not in model_card(training, None, merge)


def test_unknown_lora_target_module_is_one_line_naming_the_real_ones(tiny_model, tmp_path):
    from repotune import params
    from repotune.params import TaskParams
    from repotune.training import Outputs, train_adapter

    p = params.parse(yaml.safe_load(PARAMS))
    lora = p.lora.model_copy(update={"target_modules": ["q_proj", "nonexistent_proj"]})
    with pytest.raises(RepotuneError, match=r"lora.target_modules \['nonexistent_proj'\] not in the base model "
                       r"\(its linear and embedding modules: down_proj, embed_tokens, gate_proj, k_proj, "
                       r"lm_head, o_proj, q_proj, up_proj, v_proj; or all-linear\)$"):
        train_adapter(tiny_model, [record(0, "t")], [], Outputs(tmp_path / "a"), lora=lora, train=p.train,
                      prompt=p.prompt, task=p.task)
    assert not (tmp_path / "a").exists()


def test_a_diverging_run_saves_nothing_and_says_where(tiny_model, tmp_path):
    from repotune import params
    from repotune.params import TaskParams
    from repotune.training import Outputs, train_adapter

    p = params.parse(yaml.safe_load(PARAMS))
    train = p.train.model_copy(update={"lr": 1.0e30, "max_steps": 4, "eval_steps": 100})
    records = [record(i, "t") for i in range(8)]
    with pytest.raises(RepotuneError, match=r"training diverged: the LoRA weights went non-finite at step \d+ \(16 tensors hold NaN/inf; final train loss [\d.]+, eval loss None\); "
                       r"lower train.lr \(now 1e\+30\); nothing was saved$"):
        train_adapter(tiny_model, records, [], Outputs(tmp_path / "a"), lora=p.lora, train=train,
                      prompt=p.prompt, task=p.task)
    assert not (tmp_path / "a").exists()


# --- checkpoints and resume -------------------------------------------------------------------

RESUMABLE = PARAMS.replace("  max_steps: 8\n", "  max_steps: 120\n  save_steps: 10\n").replace(
    "  eval_steps: 4\n", "  eval_steps: 20\n").replace("  dropout: 0.0\n", "  dropout: 0.1\n")


def outputs(root: Path, out: str = "adapter") -> dict[str, bytes]:
    """The adapter folder and the curves, byte for byte."""
    found = [*(root / out).rglob("*"), *(root / "live" / out).rglob("*")]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(found) if p.is_file()}


def run_and_kill(root: Path, base: Path, out: str, after_step: int) -> int:
    """Run the train stage in a process and SIGKILL it once a complete checkpoint at or past
    `after_step` exists; return that checkpoint's step."""
    argv = [sys.executable, str(STAGES / "train.py"), *train_args(root, base, out)]
    return kill_at_checkpoint(argv, root / "checkpoints" / out, after_step)


def test_checkpoint_picks_highest_complete_and_keys_by_params_and_inputs(tmp_path):
    run = checkpoints.prepare(tmp_path, "k1")
    for step, complete in ((10, True), (20, True), (30, False)):  # 30: killed while writing
        (run / f"checkpoint-{step}").mkdir()
        if complete:
            (run / f"checkpoint-{step}" / checkpoints.COMPLETE).write_text('{"step": %d, "train_tokens": 5}' % step)
    (run / "checkpoint-x").mkdir()
    assert checkpoints.latest(run) == run / "checkpoint-20"
    assert checkpoints.latest(checkpoints.prepare(tmp_path, "k2")) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "k2"]  # k1 removed

    params = {"train": {"lr": 0.1, "save_steps": 10}, "lora": {"r": 8}}
    key = checkpoints.run_key(params, {"base": "a", "train": "b"})
    assert key == checkpoints.run_key({"train": {"lr": 0.1, "save_steps": 99}, "lora": {"r": 8}}, {"base": "a", "train": "b"})
    assert key == checkpoints.run_key({"train": {"lr": 0.1, "threads": 1}, "lora": {"r": 8}}, {"base": "a", "train": "b"})
    assert key != checkpoints.run_key({"train": {"lr": 0.2, "save_steps": 10}, "lora": {"r": 8}}, {"base": "a", "train": "b"})
    assert key != checkpoints.run_key(params, {"base": "a", "train": "c"})
    checkpoints.finish(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]


def test_checkpoints_end_a_logging_window_and_the_curves_do_not_depend_on_save_steps():
    from repotune.params import TrainParams
    from repotune.trainer_setup import checkpoint_interval, logging_interval

    # logging every min(10, eval_steps) updates, whatever save_steps is
    assert [logging_interval(TrainParams(eval_steps=60, save_steps=s)) for s in (30, 25, 7, 0)] == [10] * 4
    assert logging_interval(TrainParams(eval_steps=4, save_steps=30)) == 4
    # checkpoints: save_steps rounded up to a multiple of it
    assert [checkpoint_interval(TrainParams(eval_steps=60, save_steps=s)) for s in (30, 25, 7, 10, 11)] == [30, 30, 10, 10, 20]
    assert checkpoint_interval(TrainParams(eval_steps=4, save_steps=5)) == 8


def test_sigkilled_training_resumes_from_its_last_checkpoint_to_the_same_bytes(tiny_model, tmp_path):
    """Dropout on, so the resumed run must also restore the RNG and the data position."""
    uninterrupted = write_data(tmp_path / "a", RESUMABLE)
    load_stage("train").main(train_args(uninterrupted, tiny_model))
    reference = outputs(uninterrupted)
    full = json.loads((uninterrupted / "metrics/adapter.json").read_text())
    assert full["steps"] == 120 and full["resumed_from_step"] == 0
    assert [p.name for p in (uninterrupted / "checkpoints/adapter").iterdir()] == ["README.md"]

    root = write_data(tmp_path / "b", RESUMABLE)
    killed_at = run_and_kill(root, tiny_model, "adapter", after_step=40)
    assert not (root / "adapter").exists()
    # A checkpoint the kill interrupted (no marker) is never resumed from, even when newer.
    run = next(p for p in (root / "checkpoints/adapter").iterdir() if p.is_dir())
    (run / "checkpoint-110").mkdir(exist_ok=True)
    (run / "checkpoint-110" / "adapter_model.safetensors").write_bytes(b"half")

    load_stage("train").main(train_args(root, tiny_model))
    resumed = json.loads((root / "metrics/adapter.json").read_text())
    assert resumed["resumed_from_step"] == killed_at > 0
    assert resumed["steps"] == 120
    assert resumed["train_tokens"] == full["train_tokens"]
    assert outputs(root) == reference  # adapter, training.json, curves
    assert [p.name for p in (root / "checkpoints/adapter").iterdir()] == ["README.md"]


def test_checkpoints_of_other_params_are_not_resumed_from(tiny_model, tmp_path):
    root = write_data(tmp_path, RESUMABLE)
    run_and_kill(root, tiny_model, "adapter", after_step=20)
    (root / "params.yaml").write_text(RESUMABLE.replace("lr: 5.0e-2", "lr: 4.0e-2"), encoding="utf-8")
    load_stage("train").main(train_args(root, tiny_model))
    assert json.loads((root / "metrics/adapter.json").read_text())["resumed_from_step"] == 0


# --- packing and precision ----------------------------------------------------------------------


def test_packed_batches_keep_samples_apart_and_train(tiny_model, tmp_path):
    """A packed row's logits equal each sample's logits computed alone: no attention across."""
    import torch

    from repotune import params
    from repotune.trainer_setup import build_trainer, load_for_training
    from repotune.training_data import training_rows

    root = write_data(tmp_path, PARAMS.replace("  max_length: 64\n", "  max_length: 64\n  packing: true\n"))
    p = params.load(root / "params.yaml")
    loaded = load_for_training(tiny_model, p.train)
    records = [record(i, "train") for i in range(16)]
    rows, _, _ = training_rows(Prompter.from_params(p.prompt, "docstring"), records, [], loaded.tokenizer, 64)
    trainer = build_trainer(loaded, rows, [], p.lora, p.train, tmp_path / "out", [], checkpoints=False)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch  # padding-free: samples are told apart by position ids
    positions = batch["position_ids"]
    assert positions.shape[0] == 1 and int((positions[0] == 0).sum()) > 2  # several samples per row
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=positions).logits[0]
        starts = [*(positions[0] == 0).nonzero().flatten().tolist(), positions.shape[1]]
        for start, end in zip(starts, starts[1:]):
            alone = model(input_ids=batch["input_ids"][:, start:end]).logits[0]
            assert torch.allclose(packed[start:end], alone, atol=1e-5), (start, end)

    load_stage("train").main(train_args(root, tiny_model))
    info = json.loads((root / "adapter/training.json").read_text(encoding="utf-8"))
    assert info["resolved"]["packing"] is True
    assert info["results"]["steps"] == 8 and math.isfinite(info["results"]["train_loss"])


def stage_trainer(tiny_model, folder, p, lora, train):
    """The trainer the train stage builds, on the first 8 docstring train records."""
    from repotune.trainer_setup import build_trainer, load_for_training
    from repotune.training_data import training_rows

    loaded = load_for_training(tiny_model, train)
    records = [record(i, "train") for i in range(8)]
    rows, _, _ = training_rows(Prompter.from_params(p.prompt, "docstring"), records, [], loaded.tokenizer, 64)
    return build_trainer(loaded, rows, [], lora, train, folder, [], checkpoints=False)


def test_prepacked_frozen_linears_give_the_same_loss_and_lora_gradients(tiny_model, tmp_path):
    """train.prepack_frozen: every frozen base linear but the output head runs on oneDNN
    pre-packed weights; one step's loss and every LoRA gradient match torch's MKL path to float
    rounding, and a short training ends at the same loss."""
    import torch

    from repotune import params
    from repotune.training import Outputs, train_adapter

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN: the linears stay as they are")
    p = params.load(write_data(tmp_path).joinpath("params.yaml"))
    records = [record(i, "train") for i in range(8)]
    steps = {}
    for packed in (False, True):
        torch.manual_seed(0)
        train = p.train.model_copy(update={"prepack_frozen": packed})
        trainer = stage_trainer(tiny_model, tmp_path / f"out{packed}", p, p.lora, train)
        model = trainer.model.eval()  # no dropout: the two paths see the same inputs
        plain = [name for name, m in model.named_modules()  # the frozen ones: LoRA's A and B train
                 if type(m) is torch.nn.Linear and not m.weight.requires_grad]
        batch = next(iter(trainer.get_train_dataloader()))
        loss = model(**{k: v for k, v in batch.items() if k != "completion_mask"}).loss
        loss.backward()
        grads = {name: q.grad.clone() for name, q in model.named_parameters() if q.requires_grad}
        steps[packed] = (plain, loss.item(), grads)
    (unpacked, loss, grads), (left, packed_loss, packed_grads) = steps[False], steps[True]
    assert len(unpacked) == 2 * 7 + 1 and left == ["base_model.model.lm_head"]  # its weight is the embeddings'
    assert packed_loss == pytest.approx(loss, abs=1e-5)
    assert grads.keys() == packed_grads.keys() and len(grads) == 2 * 4 * 2  # lora_A and lora_B of 4 targets
    for name, grad in grads.items():
        assert torch.allclose(grad, packed_grads[name], rtol=1e-3, atol=1e-6), name

    losses = {
        packed: train_adapter(
            tiny_model, records, [], Outputs(tmp_path / f"adapter{packed}"), lora=p.lora,
            train=p.train.model_copy(update={"max_steps": 3, "prepack_frozen": packed}), prompt=p.prompt, task=p.task,
        )["train_loss_avg"]
        for packed in (False, True)
    }
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)


def test_the_cpu_loss_is_trls_loss_with_its_gradients_and_logged_values(tiny_model, tmp_path, monkeypatch):
    """repotune.completion_loss: on CPU the trainer computes the loss on the completion
    positions through the (packed) head itself; loss, LoRA gradients, logged entropy, token
    accuracy and token count match TRL's own compute_loss, in training and evaluation, with the
    logits built whole or in recomputed parts, and a micro-batch without a completion token
    gives a zero loss that still backpropagates."""
    import torch
    from trl import SFTTrainer

    from repotune import completion_loss, params

    p = params.load(write_data(tmp_path).joinpath("params.yaml"))
    trainer = stage_trainer(tiny_model, tmp_path / "out", p, p.lora, p.train)
    model = trainer.model
    assert type(trainer).__name__ == "CompletionLossTrainer" and completion_loss.computes_here(model)
    batch = next(iter(trainer.get_train_dataloader()))

    def step(compute, training: bool, inputs=batch):
        model.train(training)
        trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        trainer._total_train_tokens = 0
        torch.manual_seed(0)  # the same dropout masks
        loss = compute(model, dict(inputs))
        loss.backward()
        grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.requires_grad}
        model.zero_grad()
        logged = trainer._metrics["train" if training else "eval"]
        return loss.item(), grads, {k: v[0] for k, v in logged.items()}

    def trls(m, inputs):
        return SFTTrainer.compute_loss(trainer, m, inputs)

    for training in (True, False):
        loss, grads, logged = step(trainer.compute_loss, training)
        trl_loss, trl_grads, trl_logged = step(trls, training)
        assert loss == pytest.approx(trl_loss, abs=1e-5) and loss > 0
        for name, grad in grads.items():
            assert torch.allclose(grad, trl_grads[name], rtol=1e-3, atol=1e-7), name
        assert logged.keys() == trl_logged.keys() == {"entropy", "mean_token_accuracy", "num_tokens"}
        assert logged["entropy"] == pytest.approx(trl_logged["entropy"], rel=1e-5)
        assert logged["mean_token_accuracy"] == pytest.approx(trl_logged["mean_token_accuracy"], abs=1e-9)
        assert logged["num_tokens"] == trl_logged["num_tokens"] == (batch["attention_mask"].sum() if training else 0)

    whole = step(trainer.compute_loss, True)
    vocab = model.get_output_embeddings().out_features
    monkeypatch.setattr(completion_loss, "_LOGITS_BYTES", 4 * vocab * 3)  # 3 rows a part
    parts = step(trainer.compute_loss, True)
    assert parts[0] == pytest.approx(whole[0], abs=1e-6) and parts[2] == pytest.approx(whole[2], rel=1e-6)
    for name, grad in whole[1].items():
        assert torch.allclose(grad, parts[1][name], rtol=1e-4, atol=1e-8), name

    empty = step(trainer.compute_loss, True, {**batch, "labels": torch.full_like(batch["labels"], -100)})
    assert empty[0] == 0 and empty[2]["mean_token_accuracy"] == 0


def test_the_loss_in_parts_has_the_whole_losss_values_and_gradients(monkeypatch):
    """Past the logits cap the rows go through the head in parts, each part's gradients taken
    with its log-probabilities: the same sums and the same gradients as the whole at once, for
    the hidden states and for a head that trains (weight and bias), and none asked for in eval."""
    import torch

    from repotune import completion_loss

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50)
    hidden, gold = torch.randn(11, 16), torch.randint(0, 50, (11,))

    def sums(cap_rows):
        monkeypatch.setattr(completion_loss, "_LOGITS_BYTES", 4 * 50 * cap_rows)
        head.zero_grad()
        states = hidden.clone().requires_grad_(True)
        nll, entropy, correct = completion_loss.completion_sums(states, head, gold)
        (2.5 * nll).backward()
        return nll.item(), entropy.item(), correct.item(), states.grad, head.weight.grad.clone(), head.bias.grad.clone()

    whole, parts = sums(11), sums(4)
    assert parts[:3] == pytest.approx(whole[:3], rel=1e-6) and whole[0] > 0
    for a, b in zip(whole[3:], parts[3:], strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        assert completion_loss.completion_sums(hidden, head, gold)[0].item() == pytest.approx(whole[0], rel=1e-6)


def test_a_model_with_nothing_to_prepack_is_left_untouched(tiny_model):
    """Off fp32 (here bf16; on a GPU, or k-bit layers, likewise) no linear is packed and no
    parameter is copied: the packing's release of the memory-mapped weights is for packed models."""
    import torch

    from repotune.modeling import load_causal_lm, prepack_frozen_linears

    model = load_causal_lm(tiny_model).to(torch.bfloat16).requires_grad_(False)
    storage = {name: q.data_ptr() for name, q in model.named_parameters()}
    assert prepack_frozen_linears(model) == 0
    assert {name: q.data_ptr() for name, q in model.named_parameters()} == storage
    assert sum(type(m) is torch.nn.Linear for m in model.modules()) == 2 * 7 + 1


def test_prepacking_copies_the_biases_so_the_weights_file_is_released():
    """A packed layer keeping a view of its frozen bias would keep the memory-mapped
    safetensors file, every weight of it, mapped: Qwen's q/k/v biases held 0.9 GB that way."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from repotune.modeling import prepack_frozen_linears

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN: the linears stay as they are")
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    model = Qwen2ForCausalLM(config).requires_grad_(False)
    biases = {name: m.bias for name, m in model.named_modules() if type(m) is torch.nn.Linear and m.bias is not None}
    storages = {name: bias.untyped_storage().data_ptr() for name, bias in biases.items()}
    assert sorted(name.rsplit(".", 1)[1] for name in biases) == ["k_proj", "q_proj", "v_proj"]
    assert prepack_frozen_linears(model) == 7
    for name, bias in biases.items():
        packed = model.get_submodule(name).bias
        assert torch.equal(packed, bias) and packed.untyped_storage().data_ptr() != storages[name]


def test_fast_dropout_drops_at_p_scales_the_rest_and_follows_the_seed():
    """train.fast_dropout: masks cut from 16 random bits an element drop a share p (kept to
    1/65536) and scale the rest by 1 / (1 - p), as nn.Dropout does; the gradient goes through
    the same mask; the seeded generator gives the same masks again, the next call others."""
    import torch

    from repotune.modeling import fast_dropout

    model = torch.nn.ModuleDict({"lora": torch.nn.Dropout(0.05), "off": torch.nn.Dropout(0.0)})
    assert fast_dropout(model) == 1 and type(model["off"]) is torch.nn.Dropout
    drop = model["lora"].train()
    x = torch.ones(1_000_003, requires_grad=True)  # not a multiple of the four elements a draw gives
    torch.manual_seed(0)
    out = drop(x)
    dropped = (out == 0).double().mean().item()
    assert abs(dropped - 0.05) < 0.002
    assert out.unique().tolist() == [0.0, pytest.approx(65536 / (65536 - 3277))]
    assert abs(out.double().mean().item() - 1) < 0.003
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())
    torch.manual_seed(0)
    assert torch.equal(drop(x), out)
    assert not torch.equal(drop(x), out)
    tokens = torch.randn(2, 7, 5, dtype=torch.bfloat16)
    assert drop(tokens).shape == tokens.shape and drop(tokens).dtype == torch.bfloat16
    assert drop.eval()(tokens) is tokens

    on_meta = torch.nn.Sequential(torch.nn.Linear(2, 2, device="meta"), torch.nn.Dropout(0.1))
    assert fast_dropout(on_meta) == 0  # off the CPU (a GPU's sampler is fast): left to torch


def test_fast_dropout_is_what_the_stage_trains_with_and_changes_the_masks(tiny_model, tmp_path):
    """build_trainer gives the LoRA dropouts bit masks with train.fast_dropout, torch's without;
    the adapters differ."""
    from repotune import params
    from repotune.training import Outputs, train_adapter

    p = params.load(write_data(tmp_path).joinpath("params.yaml"))
    lora = p.lora.model_copy(update={"dropout": 0.05})
    records = [record(i, "train") for i in range(8)]
    adapters = {}
    for fast in (False, True):
        train = p.train.model_copy(update={"fast_dropout": fast})
        trainer = stage_trainer(tiny_model, tmp_path / f"out{fast}", p, lora, train)
        kinds = {type(m).__name__ for name, m in trainer.model.named_modules() if "lora_dropout." in name}
        assert kinds == ({"BitMaskDropout"} if fast else {"Dropout"})
        run = train_adapter(
            tiny_model, records, [], Outputs(tmp_path / f"adapter{fast}"), lora=lora,
            train=train.model_copy(update={"max_steps": 3}), prompt=p.prompt, task=p.task,
        )
        assert math.isfinite(run["train_loss"])
        adapters[fast] = (tmp_path / f"adapter{fast}/adapter_model.safetensors").read_bytes()
    assert adapters[True] != adapters[False]  # other masks: other bytes (train.fast_dropout is declared)


def test_deterministic_training_does_not_fill_new_tensors_with_nan():
    import torch

    from repotune.training import deterministic

    before = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    with deterministic("cpu"):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    assert (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory) == before


def test_auto_precision_is_fp32_on_every_cpu():
    from repotune.modeling import resolve_precision

    # This very machine may have native bf16 (AVX512-BF16/AMX): auto still trains in fp32, so
    # that the trained bytes do not depend on the CPU; bf16 stays available when asked for.
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


# --- several processes: accelerate launch -----------------------------------------------------

ACCELERATE = STAGES.parent / "configs" / "accelerate"
# Random batches (not grouped by length), so that a global batch holds the same samples however
# it is split across processes; a checkpoint every 4 steps, to exercise its preparation by rank 0.
DATA_PARALLEL = PARAMS + "  group_by_length: false\n  device: cpu\n  save_steps: 4\n"


def lora_weights(adapter: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(adapter / "adapter_model.safetensors")


def test_two_cpu_processes_train_as_one_process_does_on_the_same_global_batch(tiny_model, tmp_path):
    """2 gloo processes x batch 2 against 1 process x batch 4: the same samples in every step,
    and (average_tokens_across_devices) the same loss normalisation, so the same adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = ACCELERATE / "cpu-2proc.yaml"
    two = write_data(tmp_path / "two", DATA_PARALLEL.replace("batch_size: 4", "batch_size: 2")
                     + f"  launcher: accelerate\n  accelerate_config: {config}\n")
    stale = two / "checkpoints/adapter/0123456789abcdef"  # another run's checkpoints
    stale.mkdir(parents=True)
    load_stage("train").main(train_args(two, tiny_model))
    one = write_data(tmp_path / "one", DATA_PARALLEL)
    load_stage("train").main(train_args(one, tiny_model))

    info = {run: json.loads((run / "adapter/training.json").read_text()) for run in (one, two)}
    metrics = {run: json.loads((run / "metrics/adapter.json").read_text()) for run in (one, two)}
    assert info[two]["resolved"]["processes"] == 2  # the Trainer's world size, not a param
    assert info[one]["resolved"]["processes"] == 1
    assert metrics[two]["steps"] == metrics[one]["steps"] == 8
    # TRL gathers every rank's token count: one rank alone would count about half.
    assert metrics[two]["train_tokens"] == metrics[one]["train_tokens"]
    # Rank 0 alone prepared and emptied the checkpoints (the other key's folder went).
    assert [p.name for p in (two / "checkpoints/adapter").iterdir()] == ["README.md"]
    assert (two / "live/adapter/plots/metrics/train/loss.tsv").is_file()

    a, b = lora_weights(one / "adapter"), lora_weights(two / "adapter")
    assert a.keys() == b.keys()
    assert all(torch.isfinite(t).all() for t in b.values())
    assert all(t.abs().max() > 0 for k, t in b.items() if ".lora_B." in k)  # B starts at 0
    gap = max((a[k] - b[k]).abs().max().item() for k in a)
    size = max(t.abs().max().item() for t in a.values())
    # Measured: 1.6e-5 (weights up to 0.31), from the order of float32 sums (two half-batch
    # gradients all-reduced against one batch at once) grown by Adam over 8 steps at lr 5e-2;
    # two 2-process runs are identical to the byte. The same 8 global batches of 2 instead of
    # 4 samples (a rank's half missing, in effect) differ by 0.49: 1e-4 is 6x the noise and
    # 5000x below that.
    assert gap < 1e-4, f"max |one - two| = {gap:.3g} (max |weight| {size:.3g})"

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, two / "adapter")
    assert sum("lora_" in name for name, _ in peft_model.named_parameters()) == len(a)


@pytest.mark.parametrize(
    ("config", "device", "message"),
    [
        ("nope.yaml", "cpu", r"train.accelerate_config .*nope.yaml: file not found \(in .*cpu-2proc.yaml"),
        ("deepspeed-zero2.yaml", "auto", r"deepspeed-zero2.yaml uses DeepSpeed, which is not installed \(pip install deepspeed"),
        ("multi-gpu.yaml", "auto", r"multi-gpu.yaml runs 8 process\(es\) per machine on GPUs but 0 CUDA GPU\(s\) are visible"),
        ("multi-gpu.yaml", "cpu", r"train.device is cpu but train.accelerate_config multi-gpu.yaml is a GPU config"),
        ("cpu-2proc.yaml", "auto", r"train.device must be cpu with train.accelerate_config cpu-2proc.yaml"),
        ("multi-cpu.yaml", "cpu", r"MULTI_CPU without mpirun_hostfile runs one process"),
    ],
)
def test_an_accelerate_config_that_cannot_run_here_fails_before_launching(
    tiny_model, tmp_path, monkeypatch, config, device, message
):
    import torch

    from repotune import launch

    monkeypatch.setitem(sys.modules, "deepspeed", None)  # not importable, even where installed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: pytest.fail(f"launched {a}"))
    (tmp_path / "multi-cpu.yaml").write_text(
        "distributed_type: MULTI_CPU\nuse_cpu: true\nnum_processes: 2\nnum_machines: 1\n", encoding="utf-8"
    )
    path = (tmp_path if config == "multi-cpu.yaml" else ACCELERATE) / config
    root = write_data(tmp_path, PARAMS.replace("  threads: 1\n", f"  threads: 1\n  device: {device}\n")
                      + f"  launcher: accelerate\n  accelerate_config: {path}\n")
    with pytest.raises(RepotuneError, match=message) as failed:
        load_stage("train").main(train_args(root, tiny_model))
    assert "\n" not in str(failed.value)
    assert not (root / "adapter").exists()


def test_launcher_accelerate_needs_a_config(tmp_path):
    from repotune import params

    (tmp_path / "params.yaml").write_text(PARAMS + "  launcher: accelerate\n", encoding="utf-8")
    with pytest.raises(RepotuneError, match="train: accelerate_config is required with launcher: accelerate"):
        params.load(tmp_path / "params.yaml")


def test_bf16_on_cpu_trains_with_fp32_lora_weights(tiny_model, tmp_path):
    """precision bf16 (what auto picks on CPUs with native bf16): bf16 base, autocast, and the
    LoRA weights the optimizer updates stay fp32 master weights."""
    import torch
    from safetensors.torch import load_file

    root = write_data(tmp_path, PARAMS.replace("  threads: 1\n", "  threads: 1\n  precision: bf16\n"))
    load_stage("train").main(train_args(root, tiny_model))
    info = json.loads((root / "adapter/training.json").read_text(encoding="utf-8"))
    assert info["resolved"]["precision"] == "bf16"
    assert math.isfinite(info["results"]["train_loss"]) and info["results"]["steps"] == 8
    weights = load_file(root / "adapter/adapter_model.safetensors")
    assert weights and all(w.dtype == torch.float32 for w in weights.values())
    assert all(w.abs().max() > 0 for k, w in weights.items() if "lora_B" in k)
