"""LoRA / QLoRA supervised fine-tuning of a causal LM on prompt/completion rows, with TRL: the
run itself, from the rows to the saved adapter, resuming from the last complete checkpoint.

The rows come from ``repotune.training_data`` and the trainer from ``repotune.trainer_setup``.
Curves (train loss, eval loss, learning rate, grad norm) go to a dvclive folder; the adapter,
the tokenizer and ``training.json`` (exact params, library versions, final losses; nothing
time-dependent) go to one folder written atomically.

Heavy imports (torch, transformers, peft, trl, dvclive) stay inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import atomic, checkpoints, compat
from repotune.errors import RepotuneError
from repotune.modeling import peak_memory_mib
from repotune.prompts import Prompter
from repotune.tasks import resolved_training
from repotune.trainer_setup import Loaded, build_trainer, divergence_watch, live_callback, load_for_training, packs_apart
from repotune.training_data import training_rows

if TYPE_CHECKING:
    from repotune.params import LoraParams, PromptParams, TaskParams, TrainParams

# Libraries whose versions decide what the adapter contains; recorded in training.json.
VERSIONED = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")

# What train_adapter returns that metrics/train.json records (with the stage's peak memory).
METRIC_KEYS = (
    "train_loss", "train_loss_avg", "eval_loss", "steps", "epochs", "train_tokens",
    "train_samples", "val_samples", "samples_truncated", "samples_too_long",
    "samples_code_cut", "samples_target_too_long",
    "train_seconds", "eval_seconds", "train_tokens_per_s", "resumed_from_step", "lr",
)


def library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in VERSIONED}


@contextmanager
def deterministic(device: str) -> Iterator[None]:
    """CPU: deterministic kernels are cheap, so ask for them (restored afterwards, since the
    setting is process-wide). CUDA: seeds only; deterministic CUDA needs CUDA_LAUNCH_BLOCKING.

    Without torch's filling of every new tensor with NaN that comes with deterministic mode
    (``torch.utils.deterministic.fill_uninitialized_memory``, a debugging aid): 69,000 fills
    for 48 default samples, 3% of the profiled step; no kernel reads memory it did not write,
    so the trained bytes are the same."""
    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_filling = torch.utils.deterministic.fill_uninitialized_memory
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = was_filling


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


@dataclass(frozen=True)
class Outputs:
    """Where :func:`train_adapter` writes.

    Attributes:
        adapter: the adapter folder (replaced atomically): adapter safetensors +
            adapter_config.json + tokenizer + training.json.
        live: the dvclive folder for the curves; None: no curves.
        checkpoints: this run's checkpoint folder (see :mod:`repotune.checkpoints`): with
            ``train.save_steps`` > 0, checkpoints go there and training resumes from the last
            complete one. None: no checkpoints.
    """

    adapter: Path
    live: Path | None = None
    checkpoints: Path | None = None


def _checkpointing(outputs: Outputs, train: TrainParams) -> bool:
    return outputs.checkpoints is not None and train.save_steps > 0


def _resume_point(outputs: Outputs, train: TrainParams) -> tuple[Path | None, tuple[int, int]]:
    """(the checkpoint to resume from or None, its (step, trained tokens) or (0, 0))."""
    resume_from = checkpoints.latest(outputs.checkpoints) if _checkpointing(outputs, train) else None
    resumed = (
        (int(resume_from.name.split("-")[1]), checkpoints.read_extra(resume_from)["train_tokens"])
        if resume_from else (0, 0)
    )
    return resume_from, resumed


def _training_info(
    loaded: Loaded, trainer: Any, results: dict[str, Any], lora: LoraParams, train: TrainParams,
    prompt: PromptParams, task: TaskParams, base_name: str, extra_info: dict[str, Any] | None,
) -> dict[str, Any]:
    """training.json: the params applied, what was resolved from them, versions and results."""
    return {
        "base_model": base_name,
        "params": {
            "lora": lora.model_dump(mode="json"),
            "train": train.model_dump(mode="json"),
            "prompt": prompt.model_dump(mode="json"),
        },
        "task": task.name,
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


def _fit(
    loaded: Loaded, rows: tuple[list[dict[str, str]], list[dict[str, str]]], lora: LoraParams,
    train: TrainParams, outputs: Outputs, scratch: Path, watch: Any,
    resume: tuple[Path | None, tuple[int, int]], trainer_class: Callable[[Loaded], type] | None,
) -> tuple[Any, Any, float]:
    """Build the trainer and run it (see :func:`run_training`), checkpointing into
    ``outputs.checkpoints`` when ``train.save_steps`` > 0 (else scratch), the curves into
    ``scratch/live`` when ``outputs.live`` is set.

    Returns:
        (trainer, train output, seconds of evaluation inside the training loop).
    """
    train_rows, val_rows = rows
    resume_from, resumed = resume
    use_checkpoints = _checkpointing(outputs, train)
    trainer_ref: dict[str, Any] = {}
    callbacks = [watch, checkpoints.marker(trainer_ref)]
    output_dir = Path(outputs.checkpoints) if use_checkpoints else scratch / "trainer"
    live = None
    try:
        with deterministic(loaded.device):
            trainer = build_trainer(
                loaded, train_rows, val_rows, lora, train, output_dir, callbacks, use_checkpoints,
                trainer_class(loaded) if trainer_class is not None else None,
            )
            trainer_ref["trainer"] = trainer
            if outputs.live is not None and trainer.is_world_process_zero():
                # One writer of the curves: dvclive in every rank would each make a folder.
                live = live_callback(scratch / "live")
                trainer.add_callback(live)
            output, in_loop_eval_seconds = run_training(trainer, resume_from, resumed, bool(val_rows))
    finally:
        if live is not None:
            live.live.end()
    return trainer, output, in_loop_eval_seconds


def train_adapter(
    base: str | Path,
    train_records: Sequence[dict[str, Any]],
    val_records: Sequence[dict[str, Any]],
    outputs: Outputs,
    lora: LoraParams,
    train: TrainParams,
    prompt: PromptParams,
    task: TaskParams,
    *,
    base_name: str | None = None,
    extra_info: dict[str, Any] | None = None,
    trainer_class: Callable[[Loaded], type] | None = None,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter on `train_records`, evaluating on `val_records`; save to `outputs`.

    Args:
        base: HF model folder (config.json, safetensors, tokenizer).
        train_records: samples with ``input`` (code) and ``target``, already selected (see
            ``training_data.load_split``).
        val_records: samples for the eval loss, every ``train.eval_steps`` steps and at the end.
            Empty: no evaluation (``eval_loss`` is None).
        outputs: the adapter folder, the curves' folder and the checkpoint folder.
        lora: LoRA rank, alpha, dropout, bias, target modules.
        train: optimisation, device/precision/quantization, threads, checkpointing, batching.
        prompt: the prompt params (template name, templates, chat rendering, system prompt).
        task: the task params (``task.name``: whose prompts, completions and lr to use).
        base_name: how training.json and adapter_config.json name the base model (e.g. the
            ``model.base`` param); defaults to `base` as given. Never an absolute path unless
            given one, so the adapter folder is identical wherever the pipeline runs.
        extra_info: more JSON-able facts to record in training.json (e.g. the languages).
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
    train = resolved_training(train, task.name)  # the task's learning rate where params leave it null
    if not train_records:
        raise RepotuneError("no training samples (is the train split empty?)")
    loaded = load_for_training(base, train)
    prompter = Prompter.from_params(prompt, task.name)
    train_rows, val_rows, counts = training_rows(
        prompter, train_records, val_records, loaded.tokenizer, train.max_length
    )
    counts["with_context"] = any("context" in r for r in train_records)
    resume_from, resumed = _resume_point(outputs, train)

    # Trainer scratch and the curves go to a folder beside the adapter: the curves replace
    # `outputs.live` (git-tracked) together with the adapter, so a killed run leaves the previous ones whole.
    with atomic.scratch_dir(outputs.adapter) as scratch:
        watch = divergence_watch()
        trainer, output, in_loop_eval_seconds = _fit(
            loaded, (train_rows, val_rows), lora, train, outputs, scratch, watch, (resume_from, resumed),
            trainer_class,
        )
        losses = check_finite(trainer, output, watch, train.lr)
        results, timing = summarise(
            trainer, output, in_loop_eval_seconds, losses, counts, len(train_rows), len(val_rows),
            resumed,
        )
        info = _training_info(loaded, trainer, results, lora, train, prompt, task, base_name or str(base), extra_info)
        save_adapter(trainer, loaded.tokenizer, Path(outputs.adapter), info)
        if outputs.live is not None and trainer.is_world_process_zero():
            atomic.replace_folder(scratch / "live", outputs.live)
    return {**results, **timing, "lr": train.lr}


def write_not_run(outputs: Outputs, checkpoints_root: Path, metrics: Path, reason: str) -> None:
    """What a train stage that has nothing to train on writes (train_rag without retrieval): a
    disabled marker for the adapter, no checkpoints, and ``{"enabled": false}`` metrics, why."""
    atomic.write_disabled(outputs.adapter, reason)
    checkpoints.finish(checkpoints_root)
    atomic.write_json(metrics, {"enabled": False, "reason": reason})


def write_metrics(metrics: Path, results: dict[str, Any], context: str = "none") -> None:
    """metrics/train.json: the :data:`METRIC_KEYS` of :func:`train_adapter`'s `results`, the
    prompts' context and how many samples it cut (train_rag), and the process's peak memory."""
    context_keys = {"context": context, "samples_context_cut": results["samples_context_cut"]} if context != "none" else {}
    atomic.write_json(metrics, {**{key: results[key] for key in METRIC_KEYS}, **context_keys,
                                "peak_memory_mib": peak_memory_mib()})
    print(
        f"train loss {results['train_loss']:.4f}, eval loss {results['eval_loss']}, "
        f"{results['steps']} steps, {results['train_tokens_per_s']:.1f} train tokens/s"
    )
