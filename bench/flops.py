"""Shared by the bench scripts: the machine's matmul rate, peak memory, a model's FLOPs, the output.

FLOPs are counted as 2 per multiply-add, for real (unpadded) tokens only:

- every non-embedding weight matrix costs 2 FLOPs per weight per token (2 x non-embedding
  parameters; norms and activations are negligible);
- the output projection onto the vocabulary costs 2 x hidden x vocab per position whose logits
  are computed (real compute even when tied to the input embedding, whose lookup is free);
- causal attention costs, per layer, 2 x width x position for QK^T and the same for AV, i.e.
  4 x layers x width x position for the token at that position (width = heads x head_dim).

The reference rate is measured, not taken from a datasheet: products of SmolLM2-135M's MLP
shape (2048x576 @ 576x1536) in the precision the workload computes in (fp32 unless told), with
the same number of threads as the workload. Results carry :func:`machine_facts` (CPU model and
flags) so that a number is never read without the machine it was taken on.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


def matmul_flops(
    threads: int, m: int = 2048, k: int = 576, n: int = 1536, seconds: float = 3.0, dtype: str = "fp32"
) -> float:
    """Measured FLOP/s of (m x k) @ (k x n) products in `dtype` (fp32, bf16 or fp16) with
    `threads` torch threads."""
    import torch

    from repotune.modeling import torch_dtype

    torch.set_num_threads(threads)
    kind = torch_dtype(dtype)
    a, b = torch.randn(m, k).to(kind), torch.randn(k, n).to(kind)
    return _rate(lambda: a @ b, 2 * m * k * n, seconds)


def onednn_matmul_flops(threads: int, m: int = 2048, k: int = 576, n: int = 1536, seconds: float = 3.0) -> float | None:
    """Measured fp32 FLOP/s of the same products on a weight pre-packed for oneDNN (the path of
    ``train.prepack_frozen`` and of generation), which runs faster than MKL's ``a @ b`` on
    the CPUs measured here; None where torch has no oneDNN."""
    import torch

    from repotune import compat

    ops = compat.onednn_linear_ops()
    if ops is None:
        return None
    pack, linear = ops
    torch.set_num_threads(threads)
    a, packed = torch.randn(m, k), pack(torch.randn(n, k), m)
    return _rate(lambda: linear(a, packed, None), 2 * m * k * n, seconds)


def _rate(product: Callable[[], object], flops: int, seconds: float) -> float:
    """FLOP/s of calling `product` (`flops` each) over `seconds`, after 3 warm-up calls
    (thread pool start, caches)."""
    for _ in range(3):
        product()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        product()
        runs += 1
    return flops * runs / (time.perf_counter() - start)


# The CPU features that decide which kernels torch and oneDNN pick (and so the speed, and for
# bf16 whether it is native or emulated).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def machine_facts() -> dict:
    """The machine the numbers were taken on: CPU model, logical cores, the flags of
    :data:`CPU_FLAGS` it has, torch's CPU capability and version."""
    import platform

    import torch

    facts = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": [],
        "logical_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    with contextlib.suppress(OSError):  # Linux; elsewhere the model name from platform
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                facts["cpu"] = value.strip()
            elif key.strip() == "flags":
                facts["cpu_flags"] = [flag for flag in CPU_FLAGS if flag in value.split()]
                break
    return facts


@contextlib.contextmanager
def machine_rate(threads: int, seconds: float = 1.5, dtype: str = "fp32") -> Iterator[dict]:
    """Measure the matmul rate in `dtype` and the load average before and after the block.

    The cores may be shared: the better of the two rates is the reference, and the load
    averages tell a slow run from a busy machine. The yielded dict is filled when the block
    ends with ``matmul_flops_per_s``, ``matmul_dtype`` and ``load_average_1min`` (before, after),
    and in fp32 ``onednn_matmul_flops_per_s`` (measured once, after the block).
    """
    state: dict = {}
    before, load = matmul_flops(threads, seconds=seconds, dtype=dtype), os.getloadavg()[0]
    yield state
    state["matmul_flops_per_s"] = round(max(before, matmul_flops(threads, seconds=seconds, dtype=dtype)))
    state["matmul_dtype"] = dtype
    if dtype == "fp32" and (onednn := onednn_matmul_flops(threads, seconds=seconds)) is not None:
        state["onednn_matmul_flops_per_s"] = round(onednn)
    state["load_average_1min"] = [round(load, 2), round(os.getloadavg()[0], 2)]


@contextlib.contextmanager
def peak_rss(every: float = 0.02) -> Iterator[dict[str, float]]:
    """Sample this process's resident set while the block runs; ``["mib"]`` is the largest."""
    import psutil

    process, peak, done = psutil.Process(), {"mib": 0.0}, threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["mib"] = max(peak["mib"], process.memory_info().rss / 2**20)
            done.wait(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def write_result(result: dict, out: str | Path | None) -> None:
    """Print the result as JSON and, if `out` is given, write it there too."""
    from repotune import atomic

    text = json.dumps(result, indent=2)
    print(text)
    if out:
        atomic.write_text(out, text + "\n")


def model_shape(model) -> dict[str, int]:
    """Parameter counts and the dimensions the FLOPs formulas need (of a plain HF causal LM)."""
    config = model.config
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    # A 4-bit (bitsandbytes) weight stores two values per byte: count the weights it stands for.
    total = sum(
        p.quant_state.shape.numel() if getattr(p, "quant_state", None) is not None else p.numel()
        for p in model.parameters()
    )
    # Tied output embeddings are one tensor counted once by model.parameters().
    embed_params = embedding.numel() + (0 if head is embedding else head.numel())
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "params": total,
        "non_embedding_params": total - embed_params,
        "hidden": config.hidden_size,
        "vocab": head.shape[0],
        "layers": config.num_hidden_layers,
        "attention_width": config.num_attention_heads * head_dim,
    }


def generation_flops(
    shape: dict[str, int], prompt_tokens: Sequence[int], new_tokens: Sequence[int]
) -> tuple[float, float]:
    """Useful FLOPs of a generate run: (prefill + decoding, decoding only). Padding not counted.

    A prompt of p tokens costs 2N per token, attention 4·L·w·(position) summed over positions
    and one vocabulary projection (transformers' generate computes logits for the last prompt
    position only); each later generated token costs 2N + 2·h·V + 4·L·w·(context). The first
    generated token comes out of the prefill.
    """
    n2 = 2 * shape["non_embedding_params"]
    head = 2 * shape["hidden"] * shape["vocab"]
    attn = 4 * shape["layers"] * shape["attention_width"]
    total = decode = 0.0
    for p, g in zip(prompt_tokens, new_tokens):
        total += n2 * p + attn * p * (p + 1) / 2 + head
        steps = sum(n2 + head + attn * (p + t) for t in range(1, g))
        total += steps
        decode += steps + (n2 + head + attn * p if g else 0)  # count the first token too
    return total, decode


def lora_training_flops(
    shape: dict[str, int],
    lengths: Sequence[int],
    lora_flops_per_token: float,
    scored: Sequence[int] | None = None,
) -> float:
    """Useful FLOPs of LoRA training on sequences of `lengths` tokens (forward + backward).

    The base weights are frozen, so the backward pass computes gradients of activations only
    (as much as the forward pass: 2N + 2hV per token) and none of the frozen weights' gradients
    (the 2N that the usual "6N per token" rule of full fine-tuning adds). Attention backward
    costs twice its forward (dQ, dK from dS; dV, dP). The vocabulary projection counts only at
    the `scored` positions of each sequence (default: all): a completion-only loss needs the
    logits of the completion tokens alone, so projecting the prompt is work done, not work
    needed. The LoRA branches cost `lora_flops_per_token` forward, and twice that backward
    (activation and weight gradients).
    """
    n2 = 2 * shape["non_embedding_params"]
    head = 2 * shape["hidden"] * shape["vocab"]
    attn = 4 * shape["layers"] * shape["attention_width"]
    total = 0.0
    for p, k in zip(lengths, scored if scored is not None else lengths, strict=True):
        forward = (n2 + lora_flops_per_token) * p + head * k + attn * p * (p + 1) / 2
        backward = (n2 + 2 * lora_flops_per_token) * p + head * k + 2 * attn * p * (p + 1) / 2
        total += forward + backward
    return total


def lora_flops_per_token(model) -> float:
    """Forward FLOPs per token of a peft model's LoRA branches (A then B, per adapted layer)."""
    total = 0
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or "default" not in lora_a:
            continue
        a, b = lora_a["default"].weight, module.lora_B["default"].weight
        total += 2 * (a.numel() + b.numel())
    return float(total)
