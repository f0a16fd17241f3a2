"""The bench scripts: their FLOPs arithmetic, and a smoke run of both on the tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import flops  # noqa: E402  (bench/flops.py)

# The tiny Llama of conftest: hidden 32, MLP 64, 2 layers, 4 heads of 8, 2 KV heads, tied head.
HIDDEN, MLP, LAYERS, KV_WIDTH = 32, 64, 2, 16


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from repotune.modeling import load_causal_lm

    return load_causal_lm(tiny_model)


def test_model_shape_counts_every_matmul_weight_once(tiny):
    shape = flops.model_shape(tiny)
    per_layer = (
        HIDDEN * HIDDEN * 2  # q, o
        + HIDDEN * KV_WIDTH * 2  # k, v
        + HIDDEN * MLP * 3  # gate, up, down
        + HIDDEN * 2  # two RMSNorms
    )
    assert shape["non_embedding_params"] == LAYERS * per_layer + HIDDEN  # + final norm
    assert shape["params"] == shape["non_embedding_params"] + shape["vocab"] * HIDDEN  # tied
    assert (shape["hidden"], shape["layers"], shape["attention_width"]) == (HIDDEN, LAYERS, 32)


def test_lora_flops_per_token_is_two_per_lora_weight(tiny_model):
    from peft import LoraConfig, get_peft_model

    from repotune.modeling import load_causal_lm

    model = get_peft_model(
        load_causal_lm(tiny_model),
        LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"),
    )
    in_plus_out = (HIDDEN + HIDDEN) * 2 + (HIDDEN + KV_WIDTH) * 2
    assert flops.lora_flops_per_token(model) == 2 * 4 * in_plus_out * LAYERS


def test_training_flops_are_forward_plus_activation_gradients(tiny):
    shape = flops.model_shape(tiny)
    n2, head = 2 * shape["non_embedding_params"], 2 * HIDDEN * shape["vocab"]
    attn = 4 * LAYERS * shape["attention_width"]
    p = 10
    forward = (n2 + head) * p + attn * p * (p + 1) / 2
    assert flops.lora_training_flops(shape, [p], 0.0) == pytest.approx(2 * forward + attn * p * (p + 1) / 2)
    # LoRA branches: forward once, backward twice; sequences add up.
    with_lora = flops.lora_training_flops(shape, [p, p], 100.0)
    assert with_lora == pytest.approx(2 * flops.lora_training_flops(shape, [p], 0.0) + 2 * 3 * 100.0 * p)
    # The vocabulary projection counts only where it is scored (forward and backward).
    assert flops.lora_training_flops(shape, [p], 0.0, [3]) == pytest.approx(
        flops.lora_training_flops(shape, [p], 0.0) - 2 * head * (p - 3)
    )


def test_generation_flops_prefill_then_one_step_per_new_token(tiny):
    shape = flops.model_shape(tiny)
    n2, head = 2 * shape["non_embedding_params"], 2 * HIDDEN * shape["vocab"]
    attn = 4 * LAYERS * shape["attention_width"]
    prefill = n2 * 5 + attn * 5 * 6 / 2 + head
    total, decode = flops.generation_flops(shape, [5], [1])  # the first token comes from the prefill
    assert total == pytest.approx(prefill)
    assert decode == pytest.approx(n2 + head + attn * 5)
    total3, decode3 = flops.generation_flops(shape, [5], [3])
    assert total3 - total == pytest.approx(2 * (n2 + head) + attn * (6 + 7))
    assert decode3 - decode == pytest.approx(total3 - total)
    assert flops.generation_flops(shape, [5], [0]) == (pytest.approx(prefill), 0.0)


def test_matmul_rate_is_measured(tiny):
    rate = flops.matmul_flops(threads=1, m=64, k=64, n=64, seconds=0.05)
    assert 1e6 < rate < 1e14


def test_matmul_rate_is_measured_in_the_precision_asked(monkeypatch):
    import torch

    seen = []
    real = torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: seen.append(a.dtype) or real(a, b))
    with flops.machine_rate(threads=1, seconds=0.02, dtype="bf16") as state:
        pass
    assert state["matmul_dtype"] == "bf16" and state["matmul_flops_per_s"] > 0
    assert set(seen) == {torch.bfloat16}


def test_machine_facts_name_the_cpu_and_its_flags():
    import torch

    facts = flops.machine_facts()
    assert facts["cpu"] and facts["logical_cores"] >= 1 and facts["torch"] == torch.__version__
    assert set(facts["cpu_flags"]) <= set(flops.CPU_FLAGS)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # this machine's own flags, as the kernel reports them
        flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split()
        assert facts["cpu_flags"] == [flag for flag in flops.CPU_FLAGS if flag in flags]


def test_a_four_bit_model_is_counted_by_the_weights_it_stands_for(tiny_model):
    from repotune.modeling import load_causal_lm

    plain, packed = (flops.model_shape(load_causal_lm(tiny_model, quantize=q)) for q in ("none", "4bit"))
    assert packed == plain


def tiny_records(n: int) -> list[dict]:
    """`n` train samples of one-line functions, a few model tokens each."""
    return [{"id": f"s{i}", "input": f"def f{i}(x):\n    return x + {i}\n", "target": f"Add {i} to x."} for i in range(n)]


def write_small_batch_params(path: Path) -> Path:
    """The project's params.yaml with micro-batches of 2, no accumulation and max_length 64."""
    raw = yaml.safe_load((BENCH.parent / "params.yaml").read_text())
    raw["train"].update(batch_size=2, grad_accum=1, max_length=64)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_train_bench_measures_the_precision_and_quantization_asked(tiny_model, tmp_path, capsys):
    import train_throughput

    from repotune import atomic

    split = tmp_path / "train.jsonl"
    atomic.write_jsonl(split, tiny_records(4))
    params = write_small_batch_params(tmp_path / "params.yaml")
    for precision, quantize, dtype in (("bf16", "none", "bf16"), ("fp32", "4bit", "fp32")):
        out = tmp_path / f"{precision}-{quantize}.json"
        train_throughput.main([
            "--model", str(tiny_model), "--train", str(split), "--params", str(params), "--samples", "4",
            "--threads", "1", "--kernel-steps", "1", "--matmul-seconds", "0.05",
            "--precision", precision, "--quantize", quantize, "--runs", "kernel", "stage", "--out", str(out),
        ])
        result = json.loads(out.read_text())
        assert (result["precision"], result["quantize"]) == (precision, quantize)
        assert result["machine"]["cpu_flags"] == flops.machine_facts()["cpu_flags"]
        for run in ("kernel", "stage"):
            assert result[run]["matmul_dtype"] == dtype and result[run]["mfu"] > 0
        assert result["stage"]["steps"] == 2 and "stage_packed" not in result
    capsys.readouterr()


@pytest.mark.slow  # compiling even the tiny model takes the inductor ~1 minute on 2 cores
def test_the_kernel_runs_compiled_when_asked(tiny_model, tmp_path, capsys):
    import train_throughput

    from repotune import atomic

    split = tmp_path / "train.jsonl"
    atomic.write_jsonl(split, tiny_records(2))
    out = tmp_path / "compiled.json"
    train_throughput.main([
        "--model", str(tiny_model), "--train", str(split), "--samples", "2", "--threads", "1",
        "--kernel-steps", "2", "--matmul-seconds", "0.05", "--runs", "kernel", "--compile", "--out", str(out),
    ])
    result = json.loads(out.read_text())
    kernel = result["kernel"]
    assert result["compile"] is True and kernel["tokens_per_s"] > 0
    assert result["prepack_frozen"] is False  # inductor cannot trace oneDNN's packed weights
    # The first step compiles the graph (seconds); the compiled steps after it take milliseconds.
    step_seconds = kernel["tokens"] / kernel["tokens_per_s"] / kernel["steps"]
    assert kernel["first_step_seconds"] > 20 * step_seconds, (kernel["first_step_seconds"], step_seconds)
    capsys.readouterr()


def test_bench_scripts_run_on_the_tiny_model(tiny_model, tmp_path, monkeypatch, capsys):
    import generation_throughput
    import train_throughput

    from repotune import atomic

    records = tiny_records(4)
    # Longer than max_length (64): the stage cuts its code to fit, and the bench must count that.
    records.append({"id": "s9", "input": "def long(x):\n" + "    x = x + 1\n" * 40 + "    return x\n", "target": "Add 40 to x."})
    split = tmp_path / "train.jsonl"
    atomic.write_jsonl(split, records)
    params = write_small_batch_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)

    out = tmp_path / "train.json"
    train_throughput.main([
        "--model", str(tiny_model), "--train", str(split), "--params", str(params),
        "--samples", "5", "--threads", "1", "--kernel-steps", "1", "--matmul-seconds", "0.05",
        "--out", str(out),
    ])
    result = json.loads(out.read_text())
    assert result["stage"]["steps"] == 3 and result["stage"]["samples"] == 5
    # TRL's own token count and the bench's count of the same rows agree.
    assert result["stage"]["tokens"] == result["stage"]["tokens_counted_here"]
    # Packed: the same tokens (nothing dropped or padded in), in no more rows than samples.
    assert result["stage_packed"]["packing"] and not result["stage"]["packing"]
    assert result["stage_packed"]["tokens"] == result["stage"]["tokens"]
    assert result["stage_packed"]["steps"] <= result["stage"]["steps"]
    for run in (result["kernel"], result["stage"], result["stage_packed"]):
        assert run["tokens_per_s"] > 0 and 0 < run["mfu"]
        assert run["peak_rss_mib"] > 100  # torch alone is more than that

    # Micro-batches: the same update split two ways, each in a process of its own.
    out = tmp_path / "micro.json"
    train_throughput.main([
        "--model", str(tiny_model), "--train", str(split), "--params", str(params),
        "--samples", "4", "--threads", "1", "--matmul-seconds", "0.05",
        "--micro-batches", "2x1", "1x2", "--out", str(out),
    ])
    runs = json.loads(out.read_text())["micro_batches"]
    assert [(r["batch_size"], r["grad_accum"]) for r in runs] == [(2, 1), (1, 2)]
    assert runs[0]["steps"] == 2 and runs[1]["steps"] == 2  # 4 samples, updates of 2
    assert runs[0]["tokens"] == runs[1]["tokens"] == runs[0]["tokens_counted_here"]
    assert all(r["peak_rss_mib"] > 100 and r["tokens_per_s"] > 0 for r in runs)
    with pytest.raises(SystemExit):
        train_throughput.main(["--model", str(tiny_model), "--micro-batches", "4by2"])

    out = tmp_path / "gen.json"
    generation_throughput.main([
        "--model", str(tiny_model), "--prompts", str(split), "--samples", "4",
        "--batch-sizes", "2", "1", "--threads", "1", "--max-new-tokens", "4",
        "--matmul-seconds", "0.05", "--out", str(out),
    ])
    runs = json.loads(out.read_text())["runs"]
    assert [r["batch_size"] for r in runs] == [2, 1]
    assert all(r["same_texts_as_first"] for r in runs)
    assert all(r["peak_rss_mib"] > 100 for r in runs)  # torch alone is more than that
    assert runs[0]["generated_tokens"] == runs[1]["generated_tokens"] > 0
    capsys.readouterr()


def test_data_scale_takes_an_even_sorted_subset():
    import data_scale

    paths = ["a.py", "b.py", "c.py", "d.py", "e.py", "f.py"]
    assert data_scale.evenly(paths, 3) == ["a.py", "c.py", "e.py"]
    assert data_scale.evenly(paths, 4) == ["a.py", "b.py", "d.py", "e.py"]  # indices 0, 6//4, 12//4, 18//4
    assert data_scale.evenly(paths, 9) == paths


def test_data_scale_runs_the_data_half_on_a_local_corpus(tmp_path):
    import data_scale

    source = tmp_path / "site"
    doc = '"""Return {0} after a long enough explanation of what {0} is and why it matters here."""'
    for i, rel in enumerate(["pkg/a.py", "pkg/b.py", "pkg/sub/c.py", "z.py", "skip/__pycache__/x.py"]):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text("\n\n".join(
            f"def f{i}_{j}(x):\n    {doc.format(f'f{i}_{j}')}\n    y = x + {j}\n    return y * 2" for j in range(4)) + "\n")
    (source / "notes.txt").write_text("not python\n")
    raw = yaml.safe_load((BENCH.parent / "params.yaml").read_text())
    raw["split"]["min_test_samples"] = 0
    raw["task"]["docstring"]["filter"]["min_target_tokens"] = 5
    raw["split"].update(train=0.4, val=0.3, test=0.3)  # 3 files: one per split
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw))

    result = data_scale.main(["--source", str(source), "--sizes", "3", "--workers", "1", "2",
                              "--params", str(params_path), "--out", str(tmp_path / "out.json")])
    assert result["source_py_files"] == 4  # __pycache__ and notes.txt are not taken
    one, two = result["runs"]
    assert (one["files"], one["workers"], two["workers"]) == (3, 1, 2)
    assert one["files_parsed"] == 3 and one["stages"]["extract"]["samples"] == 12  # 3 files x 4 functions
    assert one["stages"]["filter"]["samples"] == 12 and one["stages"]["split"]["samples"] == 12
    assert one["extracted_sha256"] == two["extracted_sha256"]
    assert json.loads((tmp_path / "out.json").read_text())["runs"][1]["workers"] == 2
    assert result["table"].count("\n| 3 | ") == 2


def test_the_loss_bench_times_trls_kernel_and_the_shipped_loss_on_the_same_rows(tiny_model, tmp_path, capsys):
    import loss_throughput

    from repotune import atomic

    split = tmp_path / "train.jsonl"
    atomic.write_jsonl(split, tiny_records(4))
    out = tmp_path / "loss.json"
    loss_throughput.main(["--model", str(tiny_model), "--rows", "3", "7", "--repeats", "2", "--threads", "1",
                          "--train", str(split), "--samples", "4",
                          "--params", str(write_small_batch_params(tmp_path / "params.yaml")), "--out", str(out)])
    result = json.loads(out.read_text())
    stage = result["stage_micro_batches"]
    assert stage["samples"] == 4 and stage["micro_batches"] >= 1 and stage["completion_rows"] > 0
    assert stage["seconds_two_passes"]["trl"] > 0 and stage["seconds_two_passes"]["repotune"] > 0
    assert [run["rows"] for run in result["runs"]] == [3, 7] and result["hidden"] == HIDDEN
    for run in result["runs"]:
        assert run["trl_ms"] > 0 and run["repotune_ms"] > 0 and run["trl_gflops_per_s"] > 0
        # The same loss and gradient: the two compute one thing.
        assert run["loss_difference"] < 1e-4 and run["gradient_difference"] < 1e-6
    assert result["machine"]["logical_cores"] >= 1
    capsys.readouterr()


def test_beam_search_bench_times_both_paths(tiny_model, tmp_path, capsys):
    import beam_search

    from repotune import atomic

    split = tmp_path / "test.jsonl"
    atomic.write_jsonl(split, tiny_records(4))
    out = tmp_path / "beams.json"
    beam_search.main([
        "--model", str(tiny_model), "--prompts", str(split), "--samples", "3", "--num-beams", "2",
        "--threads", "1", "--out", str(out),
    ])
    result = json.loads(out.read_text())
    (runs,) = result["rounds"]
    assert result["samples"] == 3 and set(runs) == {"greedy", "slots", "padded"}
    assert runs["greedy"]["decode_steps"] > 0 and runs["slots"]["decode_steps"] > 0
    assert runs["padded"]["decode_steps"] == 0  # model.generate's path does not count steps
    assert all(run["generated_tokens"] > 0 and run["seconds"] > 0 for run in runs.values())
    assert 0 <= result["same_texts_slots_padded"] <= 3
    capsys.readouterr()
