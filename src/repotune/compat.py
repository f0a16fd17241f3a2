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
- trl: ``trl.trainer.utils._use_triton`` (whether the fused loss projects only the labelled
  positions; see :func:`completion_positions_only`) and ``SFTTrainer._total_train_tokens``
  (the prompt + completion tokens it trained on).
- torch: the oneDNN ops ``torch.ops.mkldnn._reorder_linear_weight`` / ``_linear_pointwise``
  (a linear layer with its weight pre-packed once for the decoding batch size).
- dvclive: ``Live._init_dvc`` (switched off: see :func:`quiet_live`).

Where a name is gone, the shim raises rather than falling back: a silent fallback would turn a
measured speed-up into an unexplained slowdown.
"""

from __future__ import annotations

import contextlib
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
