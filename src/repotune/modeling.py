"""Loading causal LMs and tokenizers on the right device, in the right precision.

Heavy imports (torch, transformers) stay inside the functions so that data stages and test
collection stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import compat
from repotune.errors import RepotuneError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; explicit 'cuda' without one fails."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RepotuneError("device 'cuda' was asked for but no CUDA GPU is visible")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """'auto' -> bf16 on a CUDA GPU that supports it, fp16 on an older GPU; fp32 on every CPU.

    bf16 on CPU is opt-in (``train.precision: bf16``): on a CPU with native bf16 (AVX512-BF16,
    AMX) the default stage trained only 1.08x faster in it (188.4 vs 174.7 tokens/s) while its
    losses and scores changed, so an automatic choice made the trained bytes depend on the CPU.
    """
    import torch

    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def torch_dtype(precision: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def peak_memory_mib() -> float:
    """Largest resident set of this process so far, in MiB (Linux reports it in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def parameter_count(folder: str | Path) -> int:
    """Parameters of the model in `folder`: its manifest's count (models/base), else the tensor
    sizes in its safetensors headers (no weights are read; a tied embedding is stored, and
    counted, once)."""
    import json
    import math

    folder = Path(folder)
    manifest = folder / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("parameters"):
        return int(json.loads(manifest.read_text(encoding="utf-8"))["parameters"])
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def set_threads(threads: int) -> None:
    """Use `threads` CPU threads for torch ops; 0 leaves torch's default (all cores)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


# How a tokenizer was loaded, which transformers writes back into tokenizer_config.json:
# `local_files_only` follows HF_HUB_OFFLINE (true/false: one byte apart), so the same model
# saved with and without that variable set differed, and DVC re-ran every stage downstream.
LOAD_OPTIONS = ("local_files_only", "is_local")


def drop_load_options(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Forget `tokenizer`'s :data:`LOAD_OPTIONS`, so that saving it gives the same bytes anywhere."""
    for key in LOAD_OPTIONS:
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


def load_tokenizer(folder: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (eos when the model has none) and left padding for generation."""
    from transformers import AutoTokenizer

    tokenizer = drop_load_options(
        AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    folder: str | Path,
    device: str = "cpu",
    precision: str = "fp32",
    quantize: str = "none",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load a causal LM from a local HF folder onto `device`.

    Args:
        folder: HF folder with config.json and safetensors.
        device: 'cpu' or 'cuda' (already resolved, see :func:`resolve_device`).
        precision: 'fp32', 'bf16' or 'fp16' (already resolved).
        quantize: 'none', '4bit' or '8bit' (see :func:`quantization_config`).
        trust_remote_code: passed to transformers; off unless params say otherwise.
    """
    from transformers import AutoModelForCausalLM

    check_quantize(quantize, device)
    dtype = torch_dtype(precision)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if quantize != "none":
        kwargs["quantization_config"] = quantization_config(quantize, precision)
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    if quantize == "none":
        model.to(device)
    elif quantize == "8bit":
        compat.int8_cast_warning_once()
    elif device == "cpu":
        compat.avx512bf16_kernel_only_where_it_fits(model)
    return model


# transformers 5.23 refuses bitsandbytes below this version (its BITSANDBYTES_MIN_VERSION).
BITSANDBYTES_MIN_VERSION = "0.46.1"


def check_quantize(quantize: str, device: str) -> None:
    """Stop before anything is loaded when bitsandbytes cannot quantize on `device` here.

    Otherwise transformers fails halfway through loading, with an ImportError or a RuntimeError
    that names neither the param nor the way out. bitsandbytes 0.50.2 runs both 4-bit and 8-bit
    (forward and backward) on CPU; older wheels ran on CUDA only.

    Raises:
        RepotuneError: one line naming ``train.quantize`` and what to change.
    """
    from importlib import metadata

    from packaging.version import Version

    if quantize == "none":
        return
    way_out = "install bitsandbytes (pyproject.toml pins 0.50.2), or set train.quantize: none"
    try:
        version = metadata.version("bitsandbytes")
        import bitsandbytes
    except (metadata.PackageNotFoundError, ImportError):
        raise RepotuneError(
            f"train.quantize: {quantize} needs bitsandbytes, which is not installed here: {way_out}"
        ) from None
    if Version(version) < Version(BITSANDBYTES_MIN_VERSION):
        raise RepotuneError(
            f"train.quantize: {quantize} needs bitsandbytes >= {BITSANDBYTES_MIN_VERSION}, "
            f"found {version}: {way_out}"
        )
    supported = sorted(getattr(bitsandbytes, "supported_torch_devices", ()))
    if device not in supported:
        raise RepotuneError(
            f"train.quantize: {quantize} on {device} is not supported by bitsandbytes {version} "
            f"(it runs on: {', '.join(supported) or 'nothing'}): {way_out}"
        )


def quantization_config(quantize: str, precision: str) -> Any:
    """bitsandbytes settings for `quantize`, computing in `precision` (already resolved).

    '4bit' is QLoRA's recipe: NF4 weights, double quantisation of the block scales, matmuls in
    `precision`. '8bit' is LLM.int8 (int8 weights, outlier columns kept in fp16); its matmul
    casts the activations to fp16 whatever `precision` says.
    """
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch_dtype(precision),
        bnb_4bit_use_double_quant=True,
    )


def prepack_linears(model: PreTrainedModel, batch_size: int) -> int:
    """Pre-pack every plain ``nn.Linear`` of a CPU fp32 model for oneDNN; for inference only.

    torch's CPU ``F.linear`` hands each call to MKL's sgemm, which re-packs the whole weight
    matrix for small row counts: on this CPU the 211 linears of SmolLM2-135M took 92 ms for 8
    rows (a decoding step at batch 8) against 51 ms for 1 row. Weights reordered once into
    oneDNN's blocked layout (the ops torch's own inductor uses for frozen CPU models) took 40
    and 34 ms, and a 150-token prefill went from 0.32-0.42 s to 0.25 s. Logits change by
    float rounding only (1.4e-4 at most on SmolLM2's).

    The model can no longer be trained or saved afterwards. Nothing happens off the CPU, in
    another dtype, for quantized layers (``nn.Linear`` subclasses are left alone), or where this
    torch build has no oneDNN.

    Args:
        model: the model to change in place.
        batch_size: the row count the weight layout is tuned for (the decoding batch size).

    Returns:
        How many linears were packed.
    """
    import torch

    ops = compat.onednn_linear_ops()
    if ops is None:
        return 0
    pack, linear_op = ops

    class PackedLinear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.packed = pack(linear.weight.detach(), batch_size)
            self.bias = None if linear.bias is None else linear.bias.detach()
            self.in_features, self.out_features = linear.in_features, linear.out_features

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return linear_op(x, self.packed, self.bias)

    return _replace_linears(model, PackedLinear)


def _replace_linears(model: PreTrainedModel, make: Callable[[Any], Any], frozen_only: bool = False) -> int:
    """Replace every plain CPU fp32 ``nn.Linear`` of `model` by ``make(linear)``; with
    `frozen_only`, only those without a trainable weight or bias, and never the output
    projection (TRL's fused loss reads its weight). How many were replaced."""
    import torch

    head = model.get_output_embeddings() if frozen_only else None
    return _replace_children(
        model,
        lambda child: (
            type(child) is torch.nn.Linear
            and child.weight.device.type == "cpu"
            and child.weight.dtype == torch.float32
            and not (frozen_only and (child is head or any(p.requires_grad for p in child.parameters())))
        ),
        make,
    )


def _replace_children(model: Any, matches: Callable[[Any], bool], make: Callable[[Any], Any]) -> int:
    """Replace every submodule of `model` that `matches` by ``make(submodule)``, in place; how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if matches(child):
                setattr(parent, name, make(child))
                replaced += 1
    return replaced


# The row count oneDNN's weight layout is tuned for in training (micro-batch x sequence length
# is ~250 rows by default); measured on this CPU, any hint from 16 to 1024 runs at the same rate.
_TRAINING_ROWS = 256
# oneDNN primitives kept in its cache (see prepack_frozen_linears).
_ONEDNN_CACHED_PRIMITIVES = 64


def prepack_frozen_linears(model: PreTrainedModel) -> int:
    """Pre-pack every frozen plain ``nn.Linear`` of a CPU fp32 model for oneDNN, for training.

    LoRA leaves the base linears frozen: training needs their product with the input (forward)
    and with the output's gradient (backward: the gradient of the input), never a gradient of
    their weights. Both run here on weights reordered once into oneDNN's layout, the forward on
    W and the backward on W^T. torch's default sends both to MKL's sgemm, which re-packs W at
    every call: on this CPU the frozen linears of SmolLM2-135M ran at ~160-190 GFLOP/s that way
    and ~200-225 packed (bench/train_throughput.py, docs/performance.md). Results move by float
    rounding only (the same train loss to 1e-4), and oneDNN gives the same bits with 1 and 2
    threads. The plain weights are dropped (the two packed copies take their place and as much
    again): the model can no longer be merged or saved whole; peft saves the adapter alone.
    Call it before the optimizer exists (the parameters' storage is replaced).

    Nothing happens off the CPU, in another dtype, for quantized layers (``nn.Linear``
    subclasses) or trainable linears, or where this torch build has no oneDNN; a model with
    none packed is left untouched (a GPU or k-bit model's parameters are not copied).

    Returns:
        How many linears were packed.
    """
    import torch

    ops = compat.onednn_linear_ops()
    if ops is None:
        return 0
    # oneDNN keeps a primitive per input shape (1,024 by default, ~0.5 MB each): length-grouped
    # batches come in hundreds of shapes, which grew the default train stage's peak by ~0.7 GB.
    # Six primitives make one shape's step; a few shapes kept is enough. oneDNN reads this when
    # its cache is first used, which in the train stage is the packing below (a value set by the
    # user wins).
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(_ONEDNN_CACHED_PRIMITIVES))
    pack, linear_op = ops

    class PackedProduct(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, layer: PackedFrozenLinear) -> torch.Tensor:
            ctx.layer = layer
            return linear_op(x, layer.packed, layer.bias)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
            return linear_op(grad.contiguous(), ctx.layer.packed_t, None), None

    class PackedFrozenLinear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            weight = linear.weight.detach()
            self.packed = pack(weight, _TRAINING_ROWS)
            self.packed_t = pack(weight.t().contiguous(), _TRAINING_ROWS)
            # A copy: a view would keep the memory-mapped file alive (released below).
            self.bias = None if linear.bias is None else linear.bias.detach().clone()
            self.in_features, self.out_features = linear.in_features, linear.out_features

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return PackedProduct.apply(x, self)

    packed = _replace_linears(model, PackedFrozenLinear, frozen_only=True)
    if packed:
        # The weights were memory-mapped from the safetensors file, whose pages stay mapped (and
        # counted) while any tensor of it lives: copying the rest (embeddings, norms: ~20% of
        # SmolLM2) releases the file, so the packing costs one copy of the linears, not two.
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.data = tensor.data.clone()
    return packed


# Dropout masks are cut from 16 random bits an element: p is kept to 1/65536.
_MASK_BITS = 16


def fast_dropout(model: PreTrainedModel) -> int:
    """Give every ``nn.Dropout`` of a CPU model (LoRA's, in training) masks cut from random bits.

    torch draws a CPU dropout mask one element at a time from its Mersenne Twister, 64 bits and
    a double-precision comparison per element, on one thread, except on Intel CPUs, where MKL
    samples it: on this AMD CPU a mask for one 252 x 576 input took 0.77 ms, about as long as
    the frozen 576 x 576 product beside it, and the masks were 8% of a default train step. Here
    each draw of 64 bits gives four elements 16 bits each; an element is dropped when its 16
    bits fall among the lowest ``round(p * 65536)`` values, and the kept ones are scaled by
    ``1 / (1 - p)`` as torch does: 0.27 ms for the same mask, the same distribution (p rounded
    to 1/65536), drawn from torch's seeded generator, so the same masks on every CPU and
    thread count. They are other masks than torch's: the trained bytes differ from
    ``nn.Dropout``'s.

    Nothing happens off the CPU (torch's GPU sampler is fast) or for a dropout of 0.

    Returns:
        How many dropouts were replaced.
    """
    import torch

    levels = 1 << _MASK_BITS

    class BitMaskDropout(torch.nn.Module):
        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p
            self.dropped = min(round(p * levels), levels - 1)  # values of the 16 bits that drop
            self.scale = levels / (levels - self.dropped)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training or not self.dropped:
                return x
            count = x.numel()
            bits = torch.empty(-(-count // 4), dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
            keep = bits.view(torch.int16)[:count].view_as(x) >= self.dropped - levels // 2
            return x * keep.to(x.dtype).mul_(self.scale)

        def extra_repr(self) -> str:
            return f"p={self.p}, {_MASK_BITS}-bit masks"

    if any(parameter.device.type != "cpu" for parameter in model.parameters()):
        return 0
    return _replace_children(
        model, lambda child: type(child) is torch.nn.Dropout and child.p > 0, lambda child: BitMaskDropout(child.p)
    )
