"""Build TRL's SFTTrainer for LoRA / QLoRA fine-tuning from the params: the base model loaded
for training (device, precision, quantization), the SFTConfig, the LoRA config, and the
callbacks (divergence watch, dvclive curves).

Heavy imports (torch, transformers, peft, trl, dvclive) stay inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import compat, completion_loss, modeling
from repotune.compat import quiet_live
from repotune.errors import RepotuneError

if TYPE_CHECKING:
    from transformers import TrainerCallback
    from trl import SFTConfig

    from repotune.params import LoraParams, TrainParams

# Trainer log keys -> dvclive metric names (plots/metrics/<name>.tsv). Nothing time-dependent.
LIVE_METRICS = {
    "loss": "train/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "mean_token_accuracy": "train/token_accuracy",
    "eval_loss": "eval/loss",
    "eval_mean_token_accuracy": "eval/token_accuracy",
}

# Attention implementations that keep packed samples apart: transformers 5 builds a per-sample
# (block-diagonal) mask from position ids that restart at 0 for eager, sdpa and flex attention,
# and the flash kernels take the sample boundaries (cu_seq_lens) from TRL's collator.
PACKING_ATTENTION = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")


def check_target_modules(model: Any, target_modules: Sequence[str] | str) -> None:
    """Fail with the model's own module names when ``lora.target_modules`` names one it lacks.

    Raises:
        RepotuneError: one line naming the missing names and the adaptable ones (linear and
            embedding layers, by their last name component).
    """
    if isinstance(target_modules, str):  # "all-linear": peft resolves it
        return
    import torch

    adaptable = sorted({
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) or "Linear" in type(module).__name__
    })
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in target_modules if m not in names]
    if missing:
        raise RepotuneError(
            f"params.yaml: lora.target_modules {missing} not in the base model "
            f"(its linear and embedding modules: {', '.join(adaptable)}; or all-linear)"
        )


def packs_apart(model: Any) -> bool:
    """Whether the model's attention keeps packed samples from attending to each other."""
    return compat.attention_implementation(model) in PACKING_ATTENTION


def divergence_watch() -> TrainerCallback:
    """A Trainer callback that stops training at the first step whose update left a trainable
    weight NaN or infinite, and remembers that step (``first_bad_step``; 0: none).

    Checking the LoRA weights (a few million values) costs microseconds per step; the loss
    is logged only every few steps, so it cannot tell the step itself.
    """
    import torch
    from transformers import TrainerCallback

    class _Watch(TrainerCallback):
        first_bad_step = 0

        def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ARG002
            if self.first_bad_step or model is None:
                return
            if any(p.requires_grad and not torch.isfinite(p).all() for p in model.parameters()):
                self.first_bad_step = state.global_step
                control.should_training_stop = True

    return _Watch()


def live_callback(folder: str | Path) -> TrainerCallback:
    """A Trainer callback that writes the curves in :data:`LIVE_METRICS` with dvclive.

    The x axis is the optimizer step. dvclive's DVC integration is switched off: on its own it
    runs ``dvc init`` in a git repository without DVC and ``git add``s its folder inside
    ``dvc exp run``; the pipeline declares the folder as plots instead. No dvc.yaml, no report,
    no experiment is written. Call ``callback.live.end()`` after the last evaluation.
    """
    from transformers import TrainerCallback

    class _LiveCallback(TrainerCallback):
        def __init__(self) -> None:
            self.live = quiet_live(str(folder))

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ARG002
            # Resumed from a checkpoint: its log holds the curves up to there.
            for entry in state.log_history:
                self._write(state, entry, entry["step"])

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ARG002
            self._write(state, logs, state.global_step)

        def _write(self, state, logs, step):  # noqa: ANN001, ANN202
            if not state.is_world_process_zero or not logs:
                return
            values = {name: logs[key] for key, name in LIVE_METRICS.items() if key in logs}
            if not values:
                return
            self.live.step = step
            for name, value in values.items():
                self.live.log_metric(name, float(value))
            self.live.next_step()

    return _LiveCallback()


def resolve_gradient_checkpointing(setting: bool | str, device: str) -> bool:
    """``train.gradient_checkpointing``: auto is on for CUDA (memory is what runs out there) and
    off on CPU (SmolLM2-135M, batch 8: 6.6 GB instead of 11.7 GB RSS, but ~20% slower)."""
    if setting == "auto":
        return device.startswith("cuda")
    return bool(setting)


def logging_interval(train: TrainParams) -> int:
    """Optimizer updates per point of the train-loss curve: min(10, ``train.eval_steps``),
    whatever ``train.save_steps`` is (the curves do not depend on checkpointing)."""
    return min(10, train.eval_steps)


def checkpoint_interval(train: TrainParams) -> int:
    """Updates between checkpoints: ``train.save_steps`` rounded up to a multiple of
    :func:`logging_interval`, so that a checkpoint ends a logging window and a resumed run's
    curves are those of an uninterrupted one (save_steps 25 with eval_steps 60: every 30)."""
    logging = logging_interval(train)
    return -(-train.save_steps // logging) * logging


def sft_config(
    train: TrainParams,
    output_dir: str,
    device: str,
    precision: str,
    has_eval: bool,
    gradient_checkpointing: bool,
    checkpoints: bool = False,
    packing: bool = False,
) -> SFTConfig:
    """TRL's SFTConfig from the train params, with device, precision and checkpointing resolved.

    `checkpoints`: save every ``train.save_steps`` steps into `output_dir` (the last two kept,
    so a complete one exists while the next is written); otherwise nothing is saved there.
    """
    from trl import SFTConfig

    if train.lr is None:  # a caller skipped tasks.resolved_training: never guess a default here
        raise ValueError("train.lr unresolved: pass tasks.resolved_training(...)")

    return SFTConfig(
        output_dir=output_dir,
        save_strategy="steps" if checkpoints else "no",
        save_steps=checkpoint_interval(train) if checkpoints else 500,
        save_total_limit=2,
        report_to="none",  # curves go through our own dvclive callback
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,  # -1: use num_train_epochs
        learning_rate=train.lr,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        warmup_steps=train.warmup,  # a float in [0, 1) is a ratio of the total steps
        max_length=train.max_length,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=train.eval_steps,
        prediction_loss_only=True,
        # Train loss is averaged over each logging window; at most 10 steps per point. Every
        # checkpoint ends a window (see checkpoint_interval), so a resumed run logs the same windows.
        logging_steps=logging_interval(train),
        logging_first_step=True,
        seed=train.seed,
        data_seed=train.seed,
        # SFTConfig defaults to bf16=True, which fails (or crawls) on CPU.
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        dataloader_pin_memory=device.startswith("cuda"),
        # transformers 5 renamed gradient_checkpointing (TRL's default for it: True).
        activation_checkpointing=gradient_checkpointing,
        # Batches padded to their longest row: random batches of docstring samples were 47%
        # real tokens at batch 8, batches of similar length 97% (shuffled megabatches of up to
        # 50 batches, sorted by length; the longest batch first, so an OOM shows at once).
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        # Best-fit decreasing packing turns padding-free on: no attention mask, position ids
        # restart at each sample, and transformers masks attention between samples from them.
        packing=packing,
        packing_strategy="bfd",
    )


@dataclass
class Loaded:
    """A model ready for LoRA training, with the tokenizer and what was resolved for it."""

    model: Any
    tokenizer: Any
    device: str  # "cpu", "cuda" or "cuda:<local rank>"
    precision: str
    gradient_checkpointing: bool


def load_for_training(base: Path, train: TrainParams) -> Loaded:
    """Load the base for training: device (this process's GPU under a multi-process launcher),
    precision, threads, quantization (frozen k-bit weights, fp32 norms) resolved from params."""
    from peft import prepare_model_for_kbit_training

    if not (base / "config.json").is_file():
        raise RepotuneError(f"{base}: not a Hugging Face model folder (no config.json)")
    device = modeling.resolve_device(train.device)
    precision = modeling.resolve_precision(train.precision, device)
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        # One GPU per process: a k-bit model's device map would otherwise put every rank on cuda:0.
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    checkpointing = resolve_gradient_checkpointing(train.gradient_checkpointing, device)
    modeling.set_threads(train.threads)

    tokenizer = modeling.load_tokenizer(base)
    model = modeling.load_causal_lm(base, device=device, precision=precision, quantize=train.quantize)
    if train.quantize != "none":
        # Freezes the k-bit weights, upcasts norms to fp32; TRL then adds the LoRA layers.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    return Loaded(model, tokenizer, device, precision, checkpointing)


def build_trainer(
    loaded: Loaded,
    train_rows: list[dict[str, str]],
    val_rows: list[dict[str, str]],
    lora: LoraParams,
    train: TrainParams,
    output_dir: Path,
    callbacks: list[TrainerCallback],
    checkpoints: bool,
    trainer_class: type | None = None,
) -> Any:
    """TRL's SFTTrainer with a fresh LoRA adapter on the loaded model (completion-only loss).

    `trainer_class`: an SFTTrainer subclass with its own training loss (the hook of
    ``distill.mode: logits``, see repotune.distill_loss); None = SFTTrainer with the CPU loss
    of repotune.completion_loss."""
    from datasets import Dataset
    from peft import LoraConfig

    check_target_modules(loaded.model, lora.target_modules)
    packing = train.packing and packs_apart(loaded.model)
    if train.packing and not packing:
        print(
            f"train.packing: attention {compat.attention_implementation(loaded.model)!r} would let packed "
            "samples see each other; training with length-grouped batches instead"
        )
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias=lora.bias,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    config = sft_config(
        train, str(output_dir), loaded.device, loaded.precision, has_eval=bool(val_rows),
        gradient_checkpointing=loaded.gradient_checkpointing, checkpoints=checkpoints,
        packing=packing,
    )
    trainer = (trainer_class or completion_loss.trainer_class())(
        model=loaded.model,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
        processing_class=loaded.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    if train.quantize != "none" and loaded.precision == "fp32":
        # TRL casts a quantized model's LoRA weights to bf16; the optimizer does not exist yet.
        compat.lora_weights_in_fp32(trainer)
    cpu_training_kernels(trainer.model, train)
    return trainer


def cpu_training_kernels(model: Any, train: TrainParams) -> None:
    """The CPU kernels `train` asks for, put into the peft `model` before its optimizer exists:
    frozen linears on pre-packed oneDNN weights (``train.prepack_frozen``; CPU fp32 only, other
    linears are left as they are) and dropout masks cut from random bits (``train.fast_dropout``;
    CPU only)."""
    if train.prepack_frozen:
        modeling.prepack_frozen_linears(model)
    if train.fast_dropout:
        modeling.fast_dropout(model)
