"""The training loss of a CPU run: cross-entropy on the completion positions, through the head.

TRL 1.16's ``SFTTrainer`` computes its loss with a fused kernel
(``trl.kernels.ChunkedLogProbFunction``) that projects the hidden states onto the vocabulary in
tiles of 32,768 columns and never builds the logits: right on a GPU, with a 150k vocabulary and
thousands of rows. On CPU its three products per micro-batch (forward, the forward again in
backward, the gradient) run through MKL on slices of the weight: measured on a 2-core EPYC, the
50 completion rows of a default SmolLM2-135M micro-batch (vocabulary 49,152) took 117 ms
forward and backward, at 73 GFLOP/s. The same rows through the output projection as one
product, with the log-softmax kept for backward, took 62-68 ms, with the same loss to 1e-6 and
the same hidden-state gradient to 4e-9. (A head pre-packed for oneDNN took 42-48 ms, but its
packed copy costs 113 MB more at the peak, on a default run already near 4 GB; not done.)

So on CPU in fp32 the trainer of :func:`trainer_class` keeps everything ``SFTTrainer`` does
(data, collator, logs, token count, the ``entropy`` and ``mean_token_accuracy`` it logs) and
computes the loss itself: the decoder runs on every position, the head on the completion
positions alone, ``log_softmax`` and the negative log-likelihood of the gold tokens give the
loss. The logits are built at most 64 MB at a time: a micro-batch with more completion rows
than that is split, and each part's gradient is computed with its log-probabilities and kept
in their stead (:func:`_parted_sums`), so the memory stays bounded as with TRL's kernel. Elsewhere (GPU, bf16, fp16) TRL's loss runs.

Heavy imports (torch, trl) stay inside the functions.
"""

from __future__ import annotations

import functools
from typing import Any

from repotune import compat

# The most logits (bytes, fp32) built at once; beyond it the rows are split (_parted_sums).
_LOGITS_BYTES = 64 << 20


def output_head(model: Any) -> Any:
    """The output projection of `model` (a peft model, or one that DistributedDataParallel wraps)."""
    return getattr(model, "module", model).get_output_embeddings()


def completion_hidden(model: Any, inputs: dict[str, Any], mask: Any) -> Any:
    """Final hidden states (n, hidden) at the `mask`ed positions of the shifted sequence
    (position i predicts token i + 1). The model's own forward runs (so that a
    DistributedDataParallel wrapper syncs the gradients) with its head on the last position
    alone; its last hidden states are the decoder's output, after the final norm."""
    outputs = model(**inputs, logits_to_keep=1, output_hidden_states=True)
    return outputs.hidden_states[-1][:, :-1][mask]


def completion_logits(model: Any, inputs: dict[str, Any], mask: Any) -> Any:
    """Logits (n, vocab) at the `mask`ed positions of the shifted sequence: the decoder runs on
    every position, the vocabulary projection only on these."""
    return output_head(model)(completion_hidden(model, inputs, mask))


def _sums(hidden: Any, head: Any, targets: Any) -> tuple[Any, Any, Any]:
    """(negative log-likelihood, entropy, correct top-1) of `targets`, summed over the rows."""
    import torch
    import torch.nn.functional as F

    log_probs = head(hidden).float().log_softmax(-1)
    nll = F.nll_loss(log_probs, targets, reduction="sum")
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum()
        correct = (log_probs.argmax(-1) == targets).sum()
    return nll, entropy, correct


def completion_sums(hidden: Any, head: Any, targets: Any) -> tuple[Any, Any, Any]:
    """:func:`_sums` of `hidden` (n, hidden) through `head`, the logits built at most
    ``_LOGITS_BYTES`` at a time (more rows: :func:`_parted_sums`)."""
    rows = max(1, _LOGITS_BYTES // (4 * head.out_features))
    if hidden.size(0) <= rows:
        return _sums(hidden, head, targets)
    return _parted_sums()(hidden, head.weight, head.bias, targets, rows)


@functools.cache
def _parted_sums() -> Any:
    """:func:`_sums` over parts of `rows` rows, as an autograd function that computes the
    gradients while each part's log-probabilities are at hand (d NLL / d logits is softmax minus
    the one-hot of the gold token) and keeps only them: two products a part, no logits kept
    and none recomputed (TRL's kernel, or a checkpointed part, computes three)."""
    import torch

    class PartedSums(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, rows):  # noqa: ANN001, ANN205
            sums = [hidden.new_zeros(()), hidden.new_zeros(()), targets.new_zeros(())]
            wants_hidden, wants_weight, wants_bias = ctx.needs_input_grad[:3]
            grad_hidden = torch.empty_like(hidden) if wants_hidden else None
            grad_weight = torch.zeros_like(weight) if wants_weight else None
            grad_bias = torch.zeros_like(bias) if wants_bias else None
            for start in range(0, hidden.size(0), rows):
                part, gold = hidden[start : start + rows], targets[start : start + rows]
                log_probs = torch.nn.functional.linear(part, weight, bias).float().log_softmax(-1)
                probs = log_probs.exp()
                sums[0] -= log_probs.gather(1, gold[:, None]).sum()
                sums[1] -= (probs * log_probs).sum()
                sums[2] += (log_probs.argmax(-1) == gold).sum()
                probs[torch.arange(gold.numel()), gold] -= 1  # d NLL / d logits
                if wants_hidden:
                    grad_hidden[start : start + rows] = probs @ weight
                if wants_weight:
                    grad_weight += probs.T @ part
                if wants_bias:
                    grad_bias += probs.sum(0)
            ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
            ctx.mark_non_differentiable(sums[1], sums[2])
            return tuple(sums)

        @staticmethod
        def backward(ctx, grad_nll, _entropy, _correct):  # noqa: ANN001, ANN205
            grads = tuple(None if g is None else g * grad_nll for g in ctx.saved_tensors)
            return *grads, None, None

    return PartedSums.apply


def computes_here(model: Any) -> bool:
    """Whether :func:`trainer_class`'s loss takes `model`'s micro-batches (a CPU fp32 head)."""
    import torch

    weight = output_head(model).weight
    return weight.device.type == "cpu" and weight.dtype == torch.float32


@functools.cache
def trainer_class() -> type:
    """An ``SFTTrainer`` subclass whose loss on CPU fp32 models is the module doc's (TRL's
    elsewhere, and where the logits themselves are asked for or a mixture-of-experts model adds
    its auxiliary loss); the same loss and logged values as TRL's, to float rounding."""
    import torch
    from trl import SFTTrainer

    compat.check_trainer_internals()

    class CompletionLossTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            if return_outputs or self.aux_loss_enabled or not computes_here(model):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            forward = {k: v for k, v in inputs.items() if k != "labels"} | {"use_cache": False}
            nll, entropy, correct = completion_sums(
                completion_hidden(model, forward, mask), output_head(model), labels[mask]
            )
            count = mask.sum()
            self._log_step(inputs, count, entropy, correct)
            return self._per_token(nll, count, num_items_in_batch)

        def _per_token(self, summed: Any, count: Any, num_items_in_batch: Any) -> Any:
            """`summed` (over this micro-batch's `count` completion tokens) divided as
            SFTTrainer divides its loss: by num_items_in_batch, the completion tokens of the
            whole update on every process, and times the processes, since DDP averages."""
            denominator = num_items_in_batch if num_items_in_batch is not None else count
            loss = summed / torch.as_tensor(denominator).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return loss

        def _trained_tokens(self, inputs: dict[str, Any]) -> int:
            """The prompt + completion tokens of this micro-batch on every process (what
            SFTTrainer counts as ``num_tokens``; padding-free rows: their positions)."""
            mask = inputs.get("attention_mask")
            if mask is None:
                positions = inputs["position_ids"]
                local = torch.tensor(positions.size(1), device=positions.device)
            else:
                local = mask.sum()
            return int(self.accelerator.gather_for_metrics(local).sum())

        def _log_step(self, inputs: dict[str, Any], count: Any, entropy: Any, correct: Any) -> None:
            """What SFTTrainer.compute_loss logs: entropy and top-1 accuracy per completion
            token, and (training) the prompt + completion tokens, over every process."""
            mode = "train" if self.model.training else "eval"
            gather = self.accelerator.gather_for_metrics
            metrics = compat.count_trained_tokens(self, self._trained_tokens(inputs) if mode == "train" else 0, mode)
            valid = int(gather(count).sum())
            metrics["entropy"].append(float(gather(entropy).sum()) / valid if valid else 0.0)
            metrics["mean_token_accuracy"].append(float(gather(correct).sum()) / valid if valid else 0.0)

    return CompletionLossTrainer
