"""LoRA / QLoRA supervised fine-tuning of a causal LM on prompt/completion rows, with TRL.

Each sample becomes one row ``{"prompt": ..., "completion": ...}`` built by a ``prompts.Prompter``.
TRL 1.16 sees a prompt-completion dataset and computes the loss on completion tokens only
(prompt tokens are labelled -100), and appends the tokenizer's EOS to every completion so the
model learns to stop. Curves (train loss, eval loss, learning rate, grad norm) go to a dvclive
folder; the adapter, the tokenizer and ``training.json`` (exact params, library versions, final
losses; nothing time-dependent) go to one folder written atomically.

Heavy imports (torch, transformers, peft, trl, dvclive) stay inside the functions.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import atomic, checkpoints, compat, modeling
from repotune.compat import quiet_live
from repotune.errors import RepotuneError
from repotune.prompts import Prompter
from repotune.tasks import resolved_training

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, TrainerCallback
    from trl import SFTConfig

    from repotune.params import LoraParams, PromptParams, TrainParams

# Libraries whose versions decide what the adapter contains; recorded in training.json.
VERSIONED = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")

REQUIRED_KEYS = ("id", "input", "target")
# What train_adapter returns that metrics/train.json records (with the stage's peak memory).
METRIC_KEYS = (
    "train_loss", "train_loss_avg", "eval_loss", "steps", "epochs", "train_tokens",
    "train_samples", "val_samples", "samples_truncated", "samples_too_long",
    "samples_code_cut", "samples_target_too_long",
    "train_seconds", "eval_seconds", "train_tokens_per_s", "resumed_from_step", "lr",
)

# Trainer log keys -> dvclive metric names (plots/metrics/<name>.tsv). Nothing time-dependent.
LIVE_METRICS = {
    "loss": "train/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "mean_token_accuracy": "train/token_accuracy",
    "eval_loss": "eval/loss",
    "eval_mean_token_accuracy": "eval/token_accuracy",
}


def load_split(path: str | Path, max_samples: int = 0) -> list[dict[str, Any]]:
    """Read a split file, sorted by id; keep the first `max_samples` (0 = all).

    Sorting first makes the subset independent of the file's line order, so the same
    `max_samples` always selects the same samples.

    Raises:
        RepotuneError: the file is missing, is not JSONL, or a record lacks id/input/target.
    """
    path = Path(path)
    if not path.is_file():
        raise RepotuneError(f"{path}: file not found (run the split stage first)")
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RepotuneError(f"{path}:{number}: not valid JSON: {exc}") from None
            missing = [key for key in REQUIRED_KEYS if not isinstance(record.get(key), str)]
            if missing:
                raise RepotuneError(f"{path}:{number}: record lacks string key(s) {missing}")
            records.append(record)
    records.sort(key=lambda r: r["id"])
    return records[:max_samples] if max_samples > 0 else records


def token_lengths(
    rows: Sequence[dict[str, str]], tokenizer: PreTrainedTokenizerBase
) -> list[tuple[int, int]]:
    """(prompt tokens, prompt + completion + EOS tokens) of every row, as TRL tokenizes it.

    The +1 is the EOS token TRL appends to every completion.
    """
    return [
        (
            len(tokenizer(row["prompt"])["input_ids"]),
            len(tokenizer(row["prompt"] + row["completion"])["input_ids"]) + 1,
        )
        for row in rows
    ]


def count_lengths(
    rows: Sequence[dict[str, str]], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, int]:
    """Count what TRL will do to each row at `max_length` (it keeps the start of a sequence).

    Returns:
        ``tokens``: prompt + completion + EOS tokens over all rows before truncation;
        ``truncated``: rows whose completion is cut (they lose their EOS, so part of the
        target and the stop signal are not learned); ``too_long``: rows whose prompt alone
        fills `max_length`, which TRL drops because no completion token is left to learn.
    """
    counts = {"tokens": 0, "truncated": 0, "too_long": 0}
    for prompt, total in token_lengths(rows, tokenizer):
        counts["tokens"] += total
        if prompt >= max_length:
            counts["too_long"] += 1
        elif total > max_length:
            counts["truncated"] += 1
    return counts


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


# Attention implementations that keep packed samples apart: transformers 5 builds a per-sample
# (block-diagonal) mask from position ids that restart at 0 for eager, sdpa and flex attention,
# and the flash kernels take the sample boundaries (cu_seq_lens) from TRL's collator.
PACKING_ATTENTION = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")


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


def library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in VERSIONED}


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


def training_rows(
    prompter: Prompter,
    train_records: Sequence[dict[str, Any]],
    val_records: Sequence[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, int]]:
    """Prompt/completion rows for training and evaluation, cut to fit `max_length`.

    Returns (train rows, val rows, counts): the counts of :func:`count_lengths` plus
    ``fitted`` (code cut to fit) and ``target_too_long`` (dropped: the target alone fills it).
    """
    # Code is cut so that every row fits max_length; only a target that alone leaves no room
    # drops its sample (TRL would otherwise drop a row whose prompt fills max_length).
    train_rows, fit = prompter.fitted_rows(train_records, tokenizer, max_length)
    if not train_rows:
        raise RepotuneError(
            f"no training sample fits train.max_length={max_length} tokens "
            f"({fit['target_too_long']} targets alone are too long)"
        )
    # Evaluation batches are taken in order and padded to their longest row: sorting by length
    # (characters, a proxy for tokens) halves the padding. The order only regroups the batches.
    val_rows = sorted(
        prompter.fitted_rows(val_records, tokenizer, max_length)[0],
        key=lambda r: len(r["prompt"] + r["completion"]),
    )
    return train_rows, val_rows, {**count_lengths(train_rows, tokenizer, max_length), **fit}


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
    ``distill.mode: logits``, see repotune.distill_loss); None = SFTTrainer."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTTrainer

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
    trainer = (trainer_class or SFTTrainer)(
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
    return trainer


@contextmanager
def deterministic(device: str) -> Iterator[None]:
    """CPU: deterministic kernels are cheap, so ask for them (restored afterwards, since the
    setting is process-wide). CUDA: seeds only; deterministic CUDA needs CUDA_LAUNCH_BLOCKING."""
    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def run_training(
    trainer: Any, resume_from: Path | None, resumed: tuple[int, int], has_eval: bool
) -> tuple[Any, float]:
    """Train (from `resume_from`, a complete checkpoint at step and tokens `resumed`, when
    given) and evaluate once more at the end unless the last step was just evaluated.

    Returns (train output, seconds this process spent in evaluations inside the training loop,
    which ``train_runtime`` includes)."""
    if resume_from is not None:
        if trainer.is_world_process_zero():
            print(f"resuming from {resume_from} (same params and inputs)")
        # TRL's token counter is not part of the Trainer's state; the checkpoint marker has it.
        compat.set_trained_tokens(trainer, resumed[1])
    with compat.completion_positions_only():
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        history = trainer.state.log_history
        in_loop_eval_seconds = sum(h.get("eval_runtime", 0.0) for h in history if h["step"] > resumed[0])
        evaluated = [h["step"] for h in history if "eval_loss" in h]
        if has_eval and (not evaluated or evaluated[-1] != trainer.state.global_step):
            trainer.evaluate()
    return output, in_loop_eval_seconds


def check_finite(trainer: Any, output: Any, watch: Any, lr: float) -> tuple[float, float | None]:
    """(final train loss, final eval loss), or a clear error when training diverged.

    Nothing is saved on divergence: an adapter of NaNs would only fail later, in merge."""
    import torch

    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h]
    eval_logs = [h for h in history if "eval_loss" in h]
    eval_loss = eval_logs[-1]["eval_loss"] if eval_logs else None
    final_loss = train_losses[-1] if train_losses else output.training_loss
    bad_weights = [
        name for name, param in trainer.model.named_parameters()
        if param.requires_grad and not torch.isfinite(param).all()
    ]
    if bad_weights or not math.isfinite(final_loss) or (eval_loss is not None and not math.isfinite(eval_loss)):
        where = f"at step {watch.first_bad_step}" if watch.first_bad_step else "in the last evaluation"
        raise RepotuneError(
            f"training diverged: the LoRA weights went non-finite {where} ({len(bad_weights)} "
            f"tensors hold NaN/inf; final train loss "
            f"{final_loss}, eval loss {eval_loss}); "
            f"lower train.lr (now {lr:g}); nothing was saved"
        )
    return final_loss, eval_loss


def mean_logged_loss(history: Sequence[dict[str, Any]]) -> float | None:
    """Mean train loss over the steps the logged windows cover (each log is its window's mean).

    Unlike the Trainer's own ``training_loss`` (the mean over the steps *this process* ran), it
    is the same for a run resumed from a checkpoint as for one that never stopped.
    """
    total, steps, last = 0.0, 0, 0
    for entry in history:
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - last)
            steps += entry["step"] - last
            last = entry["step"]
    return total / steps if steps else None


def summarise(
    trainer: Any, output: Any, in_loop_eval_seconds: float, losses: tuple[float, float | None],
    counts: dict[str, int], n_train: int, n_val: int, resumed: tuple[int, int],
) -> tuple[dict[str, Any], dict[str, float]]:
    """(results the adapter's bytes determine, time-dependent figures of this process).

    `resumed`: (step, trained tokens) of the checkpoint this run resumed from; (0, 0) if none.
    """
    final_loss, eval_loss = losses
    history = trainer.state.log_history
    # TRL counts attention-mask tokens (prompt + completion, no padding) of every micro-batch.
    train_tokens = compat.trained_tokens(trainer)
    train_seconds = max(float(output.metrics["train_runtime"]) - in_loop_eval_seconds, 1e-9)
    results = {
        "train_loss": final_loss,
        "train_loss_avg": mean_logged_loss(history),
        "eval_loss": eval_loss,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_tokens": train_tokens,
        "train_samples": n_train,
        "val_samples": n_val,
        "samples_truncated": counts["truncated"],
        "samples_too_long": counts["too_long"],
        "samples_code_cut": counts["fitted"],
        "samples_target_too_long": counts["target_too_long"],
        # Only for prompts with context, so that a plain adapter's training.json keeps its bytes.
        **({"samples_context_cut": counts["context_cut"]} if counts.get("with_context") else {}),
    }
    timing = {
        "train_seconds": train_seconds,
        # Evaluations of this process only (a resumed run's log holds the earlier ones too).
        "eval_seconds": sum(
            h.get("eval_runtime", 0.0) for h in history if "eval_loss" in h and h["step"] > resumed[0]
        ),
        "train_tokens_per_s": (train_tokens - resumed[1]) / train_seconds,
        "resumed_from_step": resumed[0],
    }
    return results, timing


def full_state_dict(trainer: Any) -> dict[str, Any] | None:
    """The whole model's weights when FSDP or DeepSpeed shard them across ranks, else None
    (each rank then holds them all). Collective: every rank must call it, as
    ``Trainer.save_model`` does; rank 0 alone saving its shard would save a fraction."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model)
    if getattr(trainer, "is_deepspeed_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.deepspeed)
    return None


def save_adapter(trainer: Any, tokenizer: Any, out: Path, info: dict[str, Any]) -> None:
    """Write adapter + tokenizer + training.json to `out` atomically (main process only; every
    rank calls it, for the gathering of sharded weights)."""
    state_dict = full_state_dict(trainer)
    if not trainer.is_world_process_zero():
        return
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    saved_config = peft_model.peft_config["default"]
    # adapter_config.json would otherwise record the base folder as loaded (maybe absolute),
    # and peft keeps target_modules as a set, whose order varies with PYTHONHASHSEED.
    saved_config.base_model_name_or_path = info["base_model"]
    if isinstance(saved_config.target_modules, set):
        saved_config.target_modules = sorted(saved_config.target_modules)
    with atomic.atomic_path(out) as tmp:
        peft_model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        atomic.write_json(tmp / "training.json", info)


def train_adapter(
    base: str | Path,
    train_records: Sequence[dict[str, Any]],
    val_records: Sequence[dict[str, Any]],
    out: str | Path,
    lora: LoraParams,
    train: TrainParams,
    prompt: PromptParams,
    task_name: str,
    live_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    base_name: str | None = None,
    extra_info: dict[str, Any] | None = None,
    trainer_class: Callable[[Loaded], type] | None = None,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter on `train_records`, evaluating on `val_records`; save to `out`.

    Args:
        base: HF model folder (config.json, safetensors, tokenizer).
        train_records: samples with ``input`` (code) and ``target`` (docstring), already
            selected (see :func:`load_split`).
        val_records: samples for the eval loss, every ``train.eval_steps`` steps and at the end.
            Empty: no evaluation (``eval_loss`` is None).
        out: adapter folder to write (replaced atomically): adapter safetensors +
            adapter_config.json + tokenizer + training.json.
        lora: LoRA rank, alpha, dropout, bias, target modules.
        train: optimisation, device/precision/quantization, threads, checkpointing, batching.
        prompt: the prompt params (template name, templates, chat rendering, system prompt).
        task_name: the task (``repotune.tasks.TASKS``) whose prompts and completions to build.
        live_dir: dvclive folder for the curves; None disables logging.
        checkpoint_dir: this run's checkpoint folder (see :mod:`repotune.checkpoints`): with
            ``train.save_steps`` > 0, checkpoints go there and training resumes from the last
            complete one. None: no checkpoints.
        base_name: how training.json and adapter_config.json name the base model (e.g. the
            ``model.base`` param); defaults to `base` as given. Never an absolute path unless
            given one, so the adapter folder is identical wherever the pipeline runs.
        extra_info: more JSON-able facts to record in training.json (e.g. the task).
        trainer_class: called with the loaded model, returns the trainer class to use instead of
            SFTTrainer (the hook of logit-level distillation, which needs the student's
            device, precision and tokenizer to load its teacher); None = SFTTrainer.

    Returns:
        Results: ``train_loss`` (mean over the last logging window), ``train_loss_avg`` (over
        the whole run), ``eval_loss`` (final), ``steps``, ``epochs``, ``train_tokens`` (prompt +
        completion tokens seen), sample counts, ``resumed_from_step`` (0: from scratch), ``lr``
        (the learning rate applied: ``train.lr`` or the task's) and the
        time-dependent ``train_seconds``, ``eval_seconds``, ``train_tokens_per_s`` (training
        only, evaluation excluded; after a resume, of the resumed part).

    Raises:
        RepotuneError: bad base folder, no training sample left, non-finite loss.
    """
    base = Path(base)
    train = resolved_training(train, task_name)  # the task's learning rate where params leave it null
    if not train_records:
        raise RepotuneError("no training samples (is the train split empty?)")
    loaded = load_for_training(base, train)
    prompter = Prompter.from_params(prompt, task_name)
    train_rows, val_rows, counts = training_rows(
        prompter, train_records, val_records, loaded.tokenizer, train.max_length
    )
    counts["with_context"] = any("context" in r for r in train_records)
    use_checkpoints = checkpoint_dir is not None and train.save_steps > 0
    resume_from = checkpoints.latest(checkpoint_dir) if use_checkpoints else None
    resumed = (
        (int(resume_from.name.split("-")[1]), checkpoints.read_extra(resume_from)["train_tokens"])
        if resume_from else (0, 0)
    )

    # Trainer scratch and the curves go to a folder beside `out`: the curves replace `live_dir`
    # (git-tracked) together with the adapter, so a killed run leaves the previous ones whole.
    with atomic.scratch_dir(out) as scratch:
        watch = divergence_watch()
        trainer_ref: dict[str, Any] = {}
        callbacks = [watch, checkpoints.marker(trainer_ref)]
        output_dir = Path(checkpoint_dir) if use_checkpoints else scratch / "trainer"
        live = None
        try:
            with deterministic(loaded.device):
                trainer = build_trainer(
                    loaded, train_rows, val_rows, lora, train, output_dir, callbacks, use_checkpoints,
                    trainer_class(loaded) if trainer_class is not None else None,
                )
                trainer_ref["trainer"] = trainer
                if live_dir is not None and trainer.is_world_process_zero():
                    # One writer of the curves: dvclive in every rank would each make a folder.
                    live = live_callback(scratch / "live")
                    trainer.add_callback(live)
                output, in_loop_eval_seconds = run_training(trainer, resume_from, resumed, bool(val_rows))
        finally:
            if live is not None:
                live.live.end()

        losses = check_finite(trainer, output, watch, train.lr)
        results, timing = summarise(
            trainer, output, in_loop_eval_seconds, losses, counts, len(train_rows), len(val_rows),
            resumed,
        )
        info = {
            "base_model": base_name or str(base),
            "params": {
                "lora": lora.model_dump(mode="json"),
                "train": train.model_dump(mode="json"),
                "prompt": prompt.model_dump(mode="json"),
            },
            "task": task_name,
            "resolved": {
                "device": loaded.device,
                "precision": loaded.precision,
                "gradient_checkpointing": loaded.gradient_checkpointing,
                "group_by_length": train.group_by_length,
                "packing": bool(train.packing and packs_apart(loaded.model)),
                # Data-parallel processes that trained together (the Trainer's own world size).
                "processes": trainer.args.world_size,
                "eos_token": loaded.tokenizer.eos_token,
            },
            "versions": library_versions(),
            "results": results,
            **(extra_info or {}),
        }
        save_adapter(trainer, loaded.tokenizer, Path(out), info)
        if live_dir is not None and trainer.is_world_process_zero():
            atomic.replace_folder(scratch / "live", live_dir)
    return {**results, **timing, "lr": train.lr}
