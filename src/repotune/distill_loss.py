"""Logit-level knowledge distillation: the student also learns the teacher's next-token
distribution at every completion position (``distill.mode: logits``).

Training loss per completion token (the tokens TRL labels; prompt and padding positions are
never scored):

    (1 - w) * cross-entropy(gold token) + w * T^2 * KL(teacher_T || student_T)

with ``w = distill.kl_weight`` and ``T = distill.temperature`` (both distributions softened by
T; the T^2 keeps the gradient scale of the KL term independent of T, Hinton et al. 2015).
Only the completion positions are projected onto the vocabulary, for the student and the
frozen teacher alike: on a 49k-token vocabulary the projection of every position would cost
more than the rest of the step. Evaluation keeps the plain cross-entropy
(repotune.completion_loss), so the eval loss stays comparable with a run without distillation.

Comparing distributions token by token needs one vocabulary: teacher and student must share
their tokenizer (:func:`check_same_vocab`); otherwise use ``distill.mode: sequence``.

Heavy imports (torch, trl) stay inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import compat, modeling
from repotune.completion_loss import completion_logits, trainer_class
from repotune.errors import RepotuneError
from repotune.provenance import model_identity

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def check_same_vocab(
    teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase, teacher_name: str, student_name: str
) -> int:
    """The shared vocabulary size; a one-line error when the two tokenizers differ.

    The same token strings with the same ids are required (special tokens included): a
    distribution over one vocabulary means nothing over another.

    Raises:
        RepotuneError: the vocabularies differ, naming ``distill.mode``.
    """
    t_vocab, s_vocab = teacher.get_vocab(), student.get_vocab()
    if t_vocab != s_vocab:
        differ = len(set(t_vocab.items()) ^ set(s_vocab.items()))
        raise RepotuneError(
            f"distill.mode: logits needs teacher and student to share a tokenizer, but the teacher "
            f"{teacher_name} has {len(t_vocab)} tokens and the student {student_name} {len(s_vocab)} "
            f"({differ} token/id pairs differ); use distill.mode: sequence (any tokenizers)"
        )
    return len(s_vocab)


def kl_trainer_class(teacher: Any, vocab_size: int, temperature: float, kl_weight: float) -> type:
    """An ``SFTTrainer`` subclass whose training loss adds the KL term of the module doc (its
    evaluation loss: ``completion_loss.trainer_class``'s).

    Args:
        teacher: the frozen teacher (eval mode, on the student's device and precision).
        vocab_size: the shared tokenizer's size; logits beyond it (rows models pad their
            embedding matrix with) are left out of both distributions.
        temperature, kl_weight: ``distill.temperature`` and ``distill.kl_weight``.

    The mean KL and cross-entropy per completion token go to the logs as ``distill_kl`` and
    ``distill_ce``.
    """
    import torch
    import torch.nn.functional as F

    compat.check_trainer_internals()
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)

    class KLTrainer(trainer_class()):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            if not model.training or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            forward = {k: v for k, v in inputs.items() if k != "labels"}
            forward["use_cache"] = False
            logits = completion_logits(model, forward, mask)[:, :vocab_size].float()
            ce = F.cross_entropy(logits, labels[mask], reduction="sum")
            with torch.no_grad():
                teacher_logits = completion_logits(teacher, forward, mask)[:, :vocab_size].float()
            student_log = F.log_softmax(logits / temperature, dim=-1)
            teacher_log = F.log_softmax(teacher_logits / temperature, dim=-1)
            kl = F.kl_div(student_log, teacher_log, log_target=True, reduction="sum")
            n = mask.sum()
            loss = self._per_token((1 - kl_weight) * ce + kl_weight * temperature**2 * kl, n, num_items_in_batch)
            metrics = compat.count_trained_tokens(self, self._trained_tokens(inputs))  # as SFTTrainer does
            gather = self.accelerator.gather_for_metrics
            count = max(int(gather(n).sum()), 1)
            metrics["distill_kl"].append(float(gather(kl.detach()).sum()) / count)
            metrics["distill_ce"].append(float(gather(ce.detach()).sum()) / count)
            return loss

    return KLTrainer


@dataclass(frozen=True)
class TeacherLoss:
    """``distill.mode: logits`` in the train stage: the teacher folder, its identity and the
    KL term's settings."""

    teacher: Path
    identity: str
    temperature: float
    kl_weight: float

    def key(self) -> dict[str, str]:
        """What it adds to the checkpoints' run key: the loss depends on the teacher and its settings."""
        return {"teacher": self.identity, "distill": f"{self.temperature}/{self.kl_weight}"}

    def info(self) -> dict[str, Any]:
        """What training.json records of it."""
        return {"distill": {"mode": "logits", "teacher": self.identity,
                            "temperature": self.temperature, "kl_weight": self.kl_weight}}

    def trainer_class(self, loaded: Any) -> type:
        """``train_adapter``'s trainer_class hook: the KL trainer class with the teacher loaded
        beside the student (same device and precision as `loaded`, a ``trainer_setup.Loaded``);
        refuses a teacher with another vocabulary."""
        vocab = check_same_vocab(modeling.load_tokenizer(self.teacher), loaded.tokenizer, str(self.teacher), "models/base")
        model = modeling.load_causal_lm(self.teacher, device=loaded.device, precision=loaded.precision)
        return kl_trainer_class(model, vocab, self.temperature, self.kl_weight)


def teacher_loss(
    enabled: bool, mode: str, teacher: Path, temperature: float, kl_weight: float, launcher: str
) -> TeacherLoss | None:
    """The train stage's :class:`TeacherLoss` when distillation is on in logits mode (the
    ``distill`` params and `teacher`, data/distill/model), else None.

    Raises:
        RepotuneError: logits mode with ``train.launcher`` other than none (the teacher runs
            beside the student, in one process).
    """
    if not (enabled and mode == "logits"):
        return None
    if launcher != "none":
        raise RepotuneError(
            "distill.mode: logits trains in one process (the teacher runs beside the student); set train.launcher: none"
        )
    return TeacherLoss(teacher, model_identity(teacher), temperature, kl_weight)
