"""Stage distill and logit-level distillation, on tiny models built here.

Two tiny Llamas share one tokenizer (a 2-layer student, hidden 32; a 3-layer teacher, hidden
64, with larger weights so its answers depend on the prompt); a third has another tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import build_tiny_model, load_stage, set_params

from repotune import atomic

CODE = [
    "def add(a, b):\n    return a + b",
    "def read(path):\n    return Path(path).read_text()",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)",
    "def push(self, item):\n    self.items.append(item)",
]


def docstring_records(n: int, prefix: str) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i:02d}", "input": CODE[i % len(CODE)], "target": f"Return the sum of item {i} and two numbers.",
            "repo": "r", "sha": "0" * 40, "path": f"pkg/{prefix}{i}.py", "language": "python", "task": "docstring",
            "kind": "function", "name": f"f{i}", "start_line": 1, "end_line": 3, "is_test": False,
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def teacher_model(tmp_path_factory, one_thread) -> Path:
    """A larger tiny model with the student's tokenizer and lively weights (std 0.3)."""
    import torch

    from repotune.modeling import load_causal_lm

    folder = build_tiny_model(tmp_path_factory.mktemp("teacher") / "model", hidden_size=64, layers=3, seed=1)
    model = load_causal_lm(folder)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0, 0.3)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("other") / "model", vocab_size=280)


def project_files(root: Path, student: Path, **sections) -> Path:
    """A params.yaml and the split files a distill stage reads, under `root`."""
    atomic.write_jsonl(root / "data/split/train.jsonl", docstring_records(12, "t"))
    atomic.write_jsonl(root / "data/split/val.jsonl", docstring_records(2, "v"))
    atomic.write_jsonl(root / "data/split/test.jsonl", docstring_records(3, "x"))
    atomic.write_jsonl(root / "data/ood.jsonl", [])
    raw = {"source": {"url": "https://example.com/r.git"}, "model": {"base": str(student)}}
    (root / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    set_params(root, generate={"device": "cpu", "threads": 1},
               decoding={"max_new_tokens": 12, "batch_size": 2, "stop": []},
               **{"task.docstring.filter": {"min_target_tokens": 0, "drop_placeholder_docs": False,
                                            "drop_name_only_docs": False, "drop_non_english_docs": False,
                                            "max_url_code_share": 1.0}}, **sections)
    return root / "params.yaml"


def run_distill(root: Path, student: Path) -> dict:
    load_stage("distill").main([
        "--params", str(root / "params.yaml"), "--split", str(root / "data/split"),
        "--base", str(student), "--repo", str(root / "data/repo"), "--clone-metrics", str(root / "metrics/clone.json"),
        "--out", str(root / "data/distill"), "--metrics", str(root / "metrics/distill.json"),
    ])
    return json.loads((root / "metrics/distill.json").read_text())


def test_disabled_stage_copies_the_train_split_byte_for_byte_and_loads_no_model(tmp_path, tiny_model, monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the disabled distill stage loaded a model or tokenizer")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    project_files(tmp_path, tiny_model)
    # Bytes a rewrite would change: unsorted ids, keys out of order, a trailing blank line.
    train = tmp_path / "data/split/train.jsonl"
    train.write_bytes(b'{"target": "b", "id": "z", "input": "x"}\n{"id": "a", "input": "y", "target": "c"}\n\n')
    assert run_distill(tmp_path, tiny_model) == {"enabled": False}
    assert (tmp_path / "data/distill/train.jsonl").read_bytes() == train.read_bytes()
    assert atomic.read_jsonl(tmp_path / "data/distill/targets.jsonl") == []
    assert not (tmp_path / "data/generations").exists()  # the teacher's benchmark is generate@teacher's


@pytest.mark.parametrize(
    ("gold", "teacher", "share", "expected"),
    [
        (10, 10, 0.5, (10, 10)),   # N = min(10 / 0.5, 10 / 0.5) = 20
        (10, 10, 0.25, (10, 3)),   # N = min(10 / 0.75, 10 / 0.25) = 13.3: 3 teacher, 10 gold
        (10, 10, 0.75, (3, 10)),   # N = min(40, 13.3): 10 teacher, 3 gold
        (10, 4, 0.5, (4, 4)),      # N = min(20, 8): the teacher's 4 decide
        (10, 10, 1.0, (0, 10)),
        (10, 10, 0.0, (10, 0)),
    ],
)
def test_mix_respects_the_teacher_share(gold, teacher, share, expected):
    from repotune.distill import mix

    gold_rows = [{"id": f"g{i:02d}"} for i in range(gold)]
    teacher_rows = [{"id": f"g{i:02d}.teacher"} for i in range(teacher)]
    rows, counts = mix(gold_rows, teacher_rows, share)
    assert (counts["rows_gold"], counts["rows_teacher"]) == expected
    assert sum(r["id"].endswith(".teacher") for r in rows) == expected[1] and len(rows) == sum(expected)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_sequence_distillation_writes_teacher_targets_with_provenance(
    tmp_path, tiny_model, teacher_model, one_thread, monkeypatch
):
    project_files(tmp_path, tiny_model, distill={"enabled": True, "teacher": {"base": str(teacher_model)},
                                                  "teacher_share": 0.5, "max_samples": 8})
    counts = run_distill(tmp_path, tiny_model)
    targets = atomic.read_jsonl(tmp_path / "data/distill/targets.jsonl")
    dropped = sum(v for k, v in counts.items() if k.startswith("teacher_dropped_"))
    assert counts["train_inputs"] == 8 and len(targets) + dropped == 8 and len(targets) >= 4
    gold = {r["id"]: r for r in docstring_records(12, "t")}
    template = "{code}\nDocstring:"
    for target in targets:
        source = gold[target["gold_id"]]
        assert target["id"] == source["id"] + ".teacher" and target["input"] == source["input"]
        assert target["target"] and target["target"] != source["target"]
        provenance = target["teacher"]
        assert provenance["model"] == str(teacher_model) and provenance["template_text"] == template
        assert provenance["decoding"]["max_new_tokens"] == 12 and len(provenance["identity"]) == 64
        import hashlib

        prompt = template.replace("{code}", source["input"])
        assert provenance["prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()
        assert provenance["raw"].strip().startswith(target["target"][:5])
    train = atomic.read_jsonl(tmp_path / "data/distill/train.jsonl")
    teacher_rows = [r for r in train if r["id"].endswith(".teacher")]
    # share 0.5 with 12 gold and k <= 8 teacher targets: N = min(24, 2k) = 2k, k of each.
    assert len(teacher_rows) == len(targets) == counts["rows_teacher"] == counts["rows_gold"]
    assert len(train) == 2 * len(targets)
    # Distill writes no benchmark outputs; the teacher's come from generate@teacher, a system on
    # the folder distill materialised the teacher into (data/distill/model), like any other.
    assert not (tmp_path / "data/generations").exists()
    set_params(tmp_path, generate={"systems": {"teacher": {"model": "data/distill/model"}}},
               evaluate={"reference": "teacher"})
    monkeypatch.chdir(tmp_path)
    load_stage("generate").main(["--system", "teacher"])
    assert [r["id"] for r in atomic.read_jsonl(tmp_path / "data/generations/teacher/test.plain.jsonl")] == ["x00", "x01", "x02"]
    speed = json.loads((tmp_path / "metrics/generate/teacher.json").read_text())
    # The teacher: 3 layers of hidden 64 (attention 2 x 64x64 + 2 x 64x32 = 12288, MLP 3 x 64x128
    # = 24576, norms 128) and the tied 300 x 64 embedding, the final norm 64.
    assert (speed["model"], speed["parameters"]) == ("data/distill/model", 3 * (12288 + 24576 + 128) + 300 * 64 + 64)
    # A second run with another share generates nothing: every answer is cached.
    set_params(tmp_path, distill={"teacher_share": 1.0})
    again = run_distill(tmp_path, tiny_model)
    assert again["generated_now"] == 0 and again["rows_gold"] == 0 and again["rows_teacher"] == len(targets)


def test_enabled_without_a_teacher_is_a_one_line_params_error():
    from repotune.errors import ParamsError
    from repotune.params import parse

    with pytest.raises(ParamsError, match=r"^params.yaml: distill: teacher is required when enabled is true"):
        parse({"source": {"url": "x"}, "distill": {"enabled": True}})


def test_a_teacher_system_needs_distillation_on():
    """data/distill/model keeps an earlier run's teacher when distillation is off: benchmarking
    it then would report a model this run never used."""
    from repotune.errors import ParamsError
    from repotune.params import parse

    teacher = {"generate": {"systems": {"base": {"model": "models/base"}, "teacher": {"model": "data/distill/model"}}}}
    with pytest.raises(ParamsError, match=r"^params.yaml: generate.systems.teacher.model is data/distill/model, "
                                          r"the distill teacher: it needs distill.enabled: true \(or leave the system out\)$"):
        parse({"source": {"url": "x"}, **teacher})
    on = parse({"source": {"url": "x"}, **teacher, "distill": {"enabled": True, "teacher": {"base": "t"}}})
    assert list(on.generate.systems) == ["base", "teacher"]


def test_logits_mode_refuses_a_teacher_with_another_tokenizer(tmp_path, tiny_model, other_tokenizer_model):
    from repotune.errors import RepotuneError

    project_files(tmp_path, tiny_model, distill={"enabled": True, "mode": "logits",
                                                  "teacher": {"base": str(other_tokenizer_model)}})
    with pytest.raises(RepotuneError, match=r"^distill.mode: logits needs teacher and student to share a tokenizer.*"
                                            r"use distill.mode: sequence"):
        run_distill(tmp_path, tiny_model)


def completion_kl(student, teacher, rows, tokenizer) -> float:
    """Mean KL(teacher || student) per completion token of `rows` (prompt/completion dicts)."""
    import torch
    import torch.nn.functional as F

    total, n = 0.0, 0
    with torch.no_grad():
        for row in rows:
            prompt = tokenizer(row["prompt"])["input_ids"]
            ids = torch.tensor([prompt + tokenizer(row["completion"], add_special_tokens=False)["input_ids"]])
            s = F.log_softmax(student(input_ids=ids).logits[0, len(prompt) - 1 : -1], -1)
            t = F.log_softmax(teacher(input_ids=ids).logits[0, len(prompt) - 1 : -1], -1)
            total += float((t.exp() * (t - s)).sum())
            n += t.shape[0]
    return total / n


def test_logit_distillation_trains_the_student_towards_the_teacher(tmp_path, lively_model, teacher_model, one_thread):
    """Pure KL (kl_weight 1) against plain SFT, same data and steps: the KL to the teacher on
    the training completions falls with the KL term and not without it (measured: 3.07 before,
    2.50 after KL training, 2.98 after SFT). The student is the lively tiny model: with the
    fixture's 0.02-std embeddings (tied, frozen under LoRA) its logits cannot leave ~±0.6,
    so no training could make it as peaked as the teacher."""
    tiny_model = lively_model
    from peft import PeftModel

    from repotune.distill_loss import check_same_vocab, kl_trainer_class
    from repotune.modeling import load_causal_lm, load_tokenizer
    from repotune.params import LoraParams, PromptParams, TaskParams, TrainParams
    from repotune.prompts import Prompter
    from repotune.training import Outputs, train_adapter

    records = docstring_records(16, "t")
    train = TrainParams(max_steps=12, batch_size=4, lr=2.0e-2, eval_steps=100, save_steps=0, max_length=96,
                        device="cpu", threads=1, warmup=0.0)
    lora = LoraParams(r=8, alpha=16, dropout=0.0)
    teacher = load_causal_lm(teacher_model)
    vocab = check_same_vocab(load_tokenizer(teacher_model), load_tokenizer(tiny_model), "teacher", "student")
    results = {}
    for name, factory in {
        "sft": None,
        "kl": lambda loaded: kl_trainer_class(teacher, vocab, temperature=1.0, kl_weight=1.0),
    }.items():
        out = tmp_path / name
        results[name] = train_adapter(tiny_model, records, [], Outputs(out), lora, train, PromptParams(),
                                      TaskParams(name="docstring"), trainer_class=factory)
        assert results[name]["train_loss"] == results[name]["train_loss"] < float("inf")  # finite
    assert results["kl"]["train_tokens"] == results["sft"]["train_tokens"] > 0  # counted as SFTTrainer counts
    tokenizer = load_tokenizer(tiny_model)
    rows = Prompter.from_params(PromptParams(), "docstring").rows(records[:8])
    kl = {}
    for name in ("sft", "kl"):
        student = PeftModel.from_pretrained(load_causal_lm(tiny_model), tmp_path / name).eval()
        kl[name] = completion_kl(student, teacher, rows, tokenizer)
    before = completion_kl(load_causal_lm(tiny_model).eval(), teacher, rows, tokenizer)
    assert kl["kl"] < 0.9 * before, (before, kl)
    assert kl["kl"] < 0.9 * kl["sft"], (before, kl)


def write_outputs(root: Path, system: str, outputs: list[str], recs: list[dict]) -> None:
    rows = [{"id": r["id"], "output": o, "raw": o, "prompt_tokens": 1, "new_tokens": 1, "code_cut": False}
            for r, o in zip(recs, outputs, strict=True)]
    atomic.write_jsonl(root / f"data/generations/{system}/test.plain.jsonl", rows)


def run_evaluate(root: Path) -> dict:
    load_stage("evaluate").main([
        "--params", str(root / "params.yaml"),
        "--generations", str(root / "data/generations"), "--test", str(root / "data/split/test.jsonl"),
        "--ood", str(root / "data/ood.jsonl"), "--stage-metrics", str(root / "metrics"), "--out", str(root / "out"),
    ])
    return json.loads((root / "out/evaluate.json").read_text())


def test_evaluate_shows_teacher_base_and_student_with_the_gain_kept_and_the_cost(tmp_path, tiny_model):
    systems = {"base": {"model": "models/base"}, "finetuned": {"model": "models/merged"},
               "teacher": {"model": "data/distill/model"}}
    project_files(tmp_path, tiny_model, evaluate={"resamples": 200},
                  distill={"enabled": True, "teacher": {"base": "teacher-folder"}})
    set_params(tmp_path, generate={"systems": systems})
    recs = docstring_records(40, "x")
    atomic.write_jsonl(tmp_path / "data/split/test.jsonl", recs)
    # Exact matches: base 0 of 40, student 20, teacher 40, so the student kept 50% of the gain.
    write_outputs(tmp_path, "base", ["Something else entirely."] * 40, recs)
    write_outputs(tmp_path, "finetuned", [r["target"] if i % 2 else "No." for i, r in enumerate(recs)], recs)
    write_outputs(tmp_path, "teacher", [r["target"] for r in recs], recs)
    atomic.write_json(tmp_path / "metrics/generate/teacher.json", {"parameters": 630_167_424, "test.plain": {"tokens_per_s": 12.5}})
    atomic.write_json(tmp_path / "metrics/generate/base.json", {"parameters": 134_515_008, "test.plain": {"tokens_per_s": 65.0}})
    atomic.write_json(tmp_path / "metrics/generate/finetuned.json", {"parameters": 134_515_008})
    head = run_evaluate(tmp_path)
    assert (head["base_exact_match"], head["finetuned_exact_match"], head["teacher_exact_match"]) == (0, 50.0, 100.0)
    assert head["delta_teacher_exact_match"] == 100.0 and head["delta_exact_match"] == 50.0
    assert head["gain_kept_exact_match"] == 50.0
    report = (tmp_path / "out/report.md").read_text()
    assert "# Evaluation, task `docstring`: base vs finetuned vs teacher" in report
    assert "| exact_match | 0.00 | 100.00 | 50.00 | +100.00 | +50.00 (50%) |" in report
    assert "| teacher | 630.2 M | 12.5 |" in report and "| base | 134.5 M | 65.0 |" in report
    assert "| finetuned | 134.5 M | ? |" in report  # no speed for the headline evaluation in its metrics

    # Without the teacher among the systems (distillation off), the run compares base and fine-tuned.
    set_params(tmp_path, generate={"systems": {name: systems[name] for name in ("base", "finetuned")}},
               distill={"enabled": False})
    head = run_evaluate(tmp_path)
    assert "teacher_exact_match" not in head and "gain_kept_exact_match" not in head
    assert head["delta_exact_match"] == 50.0
    assert "Teacher and student" not in (tmp_path / "out/report.md").read_text()
