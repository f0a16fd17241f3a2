"""Private APIs of pinned libraries that repotune relies on, each behind a version check.

A private name can vanish or change meaning in any release. Every use of one lives here, is
checked against the version it was written for, and fails loudly when that version is not the
one installed (tests/test_compat.py checks each shim's behaviour against the public API, so an
upstream change breaks a test rather than a number).

- sacrebleu: ``Metric._extract_corpus_statistics`` (per-sentence sufficient statistics) and
  ``Metric._compute_score_from_stats`` (the corpus score from summed statistics), the pair
  sacrebleu's own significance tests use; with them a bootstrap resample recomputes corpus
  chrF/BLEU exactly from summed statistics instead of re-reading every sentence.
- transformers: ``GenerationMixin._get_logits_processor`` (the processors ``generate`` builds
  from a ``GenerationConfig``), so the continuous-batching loop applies exactly transformers'
  own repetition penalty, n-gram blocking, temperature and nucleus warpers; and the KV-cache
  layer internals (``DynamicLayer``'s ``keys``/``values``/``is_initialized``/
  ``lazy_initialization``/``update``, ``DynamicCache(config=...).layers``) that
  ``repotune.slot_cache`` subclasses for continuous batching.
- transformers: ``PretrainedConfig._attn_implementation`` (the attention a model runs, which
  decides whether packed samples stay apart; see :func:`attention_implementation`).
- trl: ``trl.trainer.utils._use_triton`` (whether the fused loss projects only the labelled
  positions; see :func:`completion_positions_only`), ``SFTTrainer._total_train_tokens``
  (the prompt + completion tokens it trained on) and ``SFTTrainer._metrics`` (the values it
  logs, which a trainer with its own loss adds to: :func:`count_trained_tokens`); and TRL
  1.16's cast of the LoRA weights of a quantized model to bf16, undone by
  :func:`lora_weights_in_fp32` (a behaviour, not a name, but as tied to the version).
- bitsandbytes: the logger of its private ``bitsandbytes.autograd._functions`` module (see
  :func:`int8_cast_warning_once`) and its 4-bit layers' ``support_avx512bf16_for_cpu`` switch
  and ``weight.quant_state.blocksize`` (see :func:`avx512bf16_kernel_only_where_it_fits`).
- torch: the oneDNN ops ``torch.ops.mkldnn._reorder_linear_weight`` / ``_linear_pointwise``
  (a linear layer with its weight pre-packed once for the decoding batch size).
- dvclive: ``Live._init_dvc`` (switched off: see :func:`quiet_live`).

Where a name is gone, the shim raises rather than falling back: a silent fallback would turn a
measured speed-up into an unexplained slowdown.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from typing import Any

import numpy as np

from repotune.errors import RepotuneError

SACREBLEU = "2.6."
TRANSFORMERS = "5.23."
TRL = "1.16."
TORCH = "2.13."
DVCLIVE = "3.49."
BITSANDBYTES = "0.50."


def _require(package: str, prefix: str, what: str) -> None:
    found = version(package)
    if not found.startswith(prefix):
        raise RepotuneError(
            f"{package} {found} is installed, but repotune uses its private {what}, checked only "
            f"with {package} {prefix}x: install the version pinned in pyproject.toml"
        )


def _missing(package: str, what: str) -> RepotuneError:
    return RepotuneError(
        f"{package} {version(package)} has no {what}, which repotune relies on: install the "
        "version pinned in pyproject.toml"
    )


def sacrebleu_scorer(kind: str) -> Any:
    """A fresh sacrebleu ``CHRF()`` (``kind='chrf'``) or ``BLEU()`` with default settings."""
    from sacrebleu.metrics import BLEU, CHRF

    _require("sacrebleu", SACREBLEU, "Metric._extract_corpus_statistics/_compute_score_from_stats")
    return {"chrf": CHRF, "bleu": BLEU}[kind]()


def sacrebleu_sentence_stats(scorer: Any, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sentence sufficient statistics ``[n, k]`` of `predictions` against one reference each."""
    return np.asarray(scorer._extract_corpus_statistics(list(predictions), [list(references)]), dtype=np.float64)


def sacrebleu_score_from_stats(scorer: Any, summed: np.ndarray) -> float:
    """The corpus score (0–100) from statistics summed over sentences."""
    return float(scorer._compute_score_from_stats(summed.tolist()).score)


def logits_processors(model: Any, config: Any) -> Any:
    """The ``LogitsProcessorList`` that ``model.generate`` would build from `config`."""
    import warnings

    _require("transformers", TRANSFORMERS, "GenerationMixin._get_logits_processor")
    with warnings.catch_warnings():
        # Without a prompt length transformers warns that the repetition penalty and n-gram
        # blocking will skip the prompt; here each row's processors get its prompt + output
        # ids (repotune.generation), so they do not (tested against model.generate).
        warnings.filterwarnings("ignore", message=r"Passing `(repetition_penalty|no_repeat_ngram_size)` with `inputs_embeds`")
        return model._get_logits_processor(config, device=str(model.device))


def kv_cache_classes() -> tuple[type, type, type]:
    """transformers' ``(Cache, DynamicCache, DynamicLayer)``, once the layer internals that
    ``repotune.slot_cache`` overrides are checked to be there."""
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    _require("transformers", TRANSFORMERS, "KV-cache layer internals (DynamicLayer)")
    layer = DynamicLayer()
    for name in ("lazy_initialization", "update", "get_seq_length", "is_initialized", "keys", "values"):
        if not hasattr(layer, name):
            raise _missing("transformers", f"DynamicLayer.{name}")
    return Cache, DynamicCache, DynamicLayer


@contextlib.contextmanager
def completion_positions_only() -> Iterator[None]:
    """Make TRL's fused loss project only the completion positions on CPU too.

    TRL 1.16 projects onto the vocabulary only the positions that have a label when Triton runs
    the kernel, and *every* position (prompt and padding included) elsewhere, to keep shapes
    fixed for compilers such as Neuron's (``trl/trainer/utils.py``: ``compact =
    _use_triton(device)``; the kernel choice itself is made separately). On CPU nothing is
    compiled, and the prompt positions' log-probabilities are masked out of the loss anyway.
    Measured on SmolLM2-135M, 160 Twisted samples: the same train loss to the last digit and
    1.48x the training tokens/s (112 -> 165). The switch is restored on exit.

    Raises:
        RepotuneError: another TRL version, or one without the switch.
    """
    _require("trl", TRL, "trl.trainer.utils._use_triton")
    from trl.trainer import utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        raise _missing("trl", "trl.trainer.utils._use_triton")
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


def trained_tokens(trainer: Any) -> int:
    """Tokens (attention-mask ones: prompt + completion, no padding) TRL's trainer trained on."""
    _require("trl", TRL, "SFTTrainer._total_train_tokens")
    if not hasattr(trainer, "_total_train_tokens"):
        raise _missing("trl", "SFTTrainer._total_train_tokens")
    return int(trainer._total_train_tokens)


def set_trained_tokens(trainer: Any, tokens: int) -> None:
    """Restore TRL's token counter (a run resumed from a checkpoint, which does not hold it)."""
    trained_tokens(trainer)  # the same version and name checks
    trainer._total_train_tokens = tokens


def check_trainer_internals() -> None:
    """Check, once per run, the TRL version :func:`count_trained_tokens` was written for (it runs
    at every training step, where reading package metadata would cost milliseconds)."""
    _require("trl", TRL, "SFTTrainer._total_train_tokens/_metrics")


def count_trained_tokens(trainer: Any, tokens: int, mode: str = "train") -> dict[str, list[float]]:
    """Add `tokens` to TRL's token counter as ``SFTTrainer.compute_loss`` does (for a trainer
    that computes its own loss; in ``mode`` "eval" nothing is added), and return the dict of
    values it logs for `mode` (``_metrics[mode]``: name -> values since the last log), for the
    caller's own.

    Call :func:`check_trainer_internals` once first.
    """
    if not hasattr(trainer, "_total_train_tokens") or not hasattr(trainer, "_metrics"):
        raise _missing("trl", "SFTTrainer._total_train_tokens/_metrics")
    if mode == "train":
        trainer._total_train_tokens += tokens
    metrics = trainer._metrics[mode]
    metrics["num_tokens"] = [trainer._total_train_tokens]
    return metrics


def lora_weights_in_fp32(trainer: Any) -> None:
    """Undo TRL 1.16's cast of the trainable (LoRA) weights of a quantized model to bf16.

    TRL 1.16 casts the LoRA weights of any quantized model to bf16 (the QLoRA paper's GPU
    recipe): in fp32 training that rounds every update, and bf16 matmuls crawl on CPUs without
    native bf16. Call it before the optimizer exists, so that it sees fp32 weights.
    """
    _require("trl", TRL, "SFTTrainer's bf16 cast of a quantized model's LoRA weights")
    for param in trainer.model.parameters():
        if param.requires_grad:
            param.data = param.data.float()


def attention_implementation(model: Any) -> str | None:
    """The attention implementation `model` runs (``eager``, ``sdpa``, ``flash_attention_2``,
    ...): transformers' ``config._attn_implementation``; None for a config without one."""
    _require("transformers", TRANSFORMERS, "PretrainedConfig._attn_implementation")
    return getattr(model.config, "_attn_implementation", None)


class _FirstOnly(logging.Filter):
    """Passes the first record whose message starts with `prefix`, drops the later ones."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix, self.seen = prefix, False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        first, self.seen = not self.seen, True
        return first


def int8_cast_warning_once() -> None:
    """Let bitsandbytes say once per process, not at every matmul, that LLM.int8 casts to fp16.

    Its MatMul8bitLt logs "inputs will be cast from torch.float32 to float16" at every call
    whose input is not fp16: with fp32 compute (every CPU run) that is one line per quantized
    linear per forward and backward pass, thousands in a training log. The logger is that of
    its private module ``bitsandbytes.autograd._functions``.
    """
    _require("bitsandbytes", BITSANDBYTES, "logger bitsandbytes.autograd._functions")
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _FirstOnly) for f in logger.filters):
        logger.addFilter(_FirstOnly("MatMul8bitLt: inputs will be cast"))


def avx512bf16_kernel_only_where_it_fits(model: Any) -> None:
    """Keep bitsandbytes' plain 4-bit CPU kernel for layers its AVX512-bf16 path cannot take.

    On CPUs with AVX512-bf16, bitsandbytes 0.50 repacks a 4-bit weight at its first no-grad
    forward (an eval pass) into blocks of 32 output rows and one absmax per `blocksize` inputs;
    for other shapes it crashes ("shape '[32, 0]' is invalid", seen on a 32-wide test model).
    Real models' widths are multiples of both; the rest keep the kernel that works everywhere.
    The switch is the layer's ``support_avx512bf16_for_cpu``.
    """
    _require("bitsandbytes", BITSANDBYTES, "Linear4bit.support_avx512bf16_for_cpu")
    for module in model.modules():
        if not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        state = getattr(module.weight, "quant_state", None)
        blocksize = getattr(state, "blocksize", 64)
        if module.out_features % 32 or module.in_features % blocksize:
            module.support_avx512bf16_for_cpu = False


def onednn_linear_ops() -> tuple[Any, Any] | None:
    """``(pack(weight, batch_size), linear(x, packed, bias))`` over torch's oneDNN ops.

    None where this torch build has no oneDNN at all (a legitimately different build: the
    caller keeps plain linears).

    Raises:
        RepotuneError: another torch version, or a oneDNN build without the ops.
    """
    import torch

    if not torch.backends.mkldnn.is_available():
        return None
    _require("torch", TORCH, "oneDNN linear ops (torch.ops.mkldnn._linear_pointwise)")
    ops = torch.ops.mkldnn
    for name in ("_reorder_linear_weight", "_linear_pointwise"):
        if not hasattr(ops, name):
            raise _missing("torch", f"torch.ops.mkldnn.{name}")

    def pack(weight: Any, batch_size: int) -> Any:
        return ops._reorder_linear_weight(weight, max(1, batch_size))

    def linear(x: Any, packed: Any, bias: Any) -> Any:
        return ops._linear_pointwise(x, packed, bias, "none", [], "")

    return pack, linear


def quiet_live(folder: str) -> Any:
    """A dvclive ``Live`` writing only metrics and plots under `folder`: no DVC integration.

    On its own dvclive runs ``dvc init`` in a git repository without DVC and ``git add``s its
    folder inside ``dvc exp run``; the pipeline declares the folder as plots instead.
    """
    _require("dvclive", DVCLIVE, "Live._init_dvc")
    from dvclive import Live

    if not hasattr(Live, "_init_dvc"):
        raise _missing("dvclive", "Live._init_dvc")

    class _Live(Live):
        def _init_dvc(self) -> None:
            pass

    return _Live(dir=folder, save_dvc_exp=False, dvcyaml=False, report=None)
