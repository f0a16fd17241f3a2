"""Training checkpoints that a crashed or killed train stage resumes from.

Layout: ``models/checkpoints/<run key>/checkpoint-<step>/`` as the Trainer writes it (adapter,
optimizer, scheduler, RNG states, trainer state with the data position), plus ``repotune.json``
which this module writes last. The Trainer writes a checkpoint file by file, in place; only a
checkpoint with ``repotune.json`` is complete, so a half-written one is never resumed from.

The run key is a hash of everything that decides the adapter's bytes: the params (except the
checkpoint interval itself), the base model's file hashes and the train/val files. A run with
other params or inputs never resumes from another's checkpoints; starting a run removes the
checkpoints of every other key, and a finished run removes its own.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune import atomic, compat
from repotune.artifacts import sha256_file
from repotune.provenance import model_identity

if TYPE_CHECKING:
    from transformers import TrainerCallback

COMPLETE = "repotune.json"
README = "README.md"
_STEP = re.compile(r"^checkpoint-(\d+)$")
# Params that do not change what is trained: a new value still resumes the same run.
NOT_IN_KEY = ("save_steps", "threads")

_README_TEXT = """\
# Training checkpoints

While the train stage runs with `train.save_steps` > 0, its checkpoints (adapter, optimizer,
scheduler, RNG states, data position) are written here under a key of the params and inputs.
A `dvc repro` after a crash resumes from the last complete one; a finished run removes them.
"""


def run_key(params: dict[str, Any], inputs: dict[str, str]) -> str:
    """Hex key of one training run: params (minus :data:`NOT_IN_KEY` under ``train``) and
    the identities of its inputs (e.g. the base model's and the split files' sha256)."""
    params = json.loads(json.dumps(params))  # a deep copy of plain JSON
    for name in NOT_IN_KEY:
        params.get("train", {}).pop(name, None)
    return hashlib.sha256(atomic.dumps({"params": params, "inputs": inputs}).encode()).hexdigest()[:16]


def prepare(root: str | Path, key: str) -> Path:
    """The folder for run `key` under `root`, created; other keys' folders are removed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for other in root.iterdir():
        if other.is_dir() and other.name != key:
            shutil.rmtree(other)
    if not (root / README).is_file():
        atomic.write_text(root / README, _README_TEXT)
    folder = root / key
    folder.mkdir(exist_ok=True)
    return folder


def run_folder(root: str | Path, params: dict[str, Any], inputs: dict[str, str], main_process: bool = True) -> Path:
    """This run's checkpoint folder under `root` (see :func:`run_key`).

    Only the main process prepares it: preparing removes other keys' folders, which racing
    ranks would both try; the other ranks only read their own key's folder, never removed.
    """
    key = run_key(params, inputs)
    return prepare(root, key) if main_process else Path(root) / key


def input_identities(base: Path, files: dict[str, Path | None], **values: str) -> dict[str, str]:
    """The inputs of a :func:`run_key`: the base model folder's identity, the sha256 of each
    of `files` (None: not an input of this run), and `values` as given."""
    return {"base": model_identity(base), **{name: sha256_file(path) for name, path in files.items() if path},
            **values}


def latest(folder: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in `folder`, or None."""
    steps = [
        (int(match.group(1)), path)
        for path in Path(folder).glob("checkpoint-*")
        if (match := _STEP.match(path.name)) and (path / COMPLETE).is_file()
    ]
    return max(steps)[1] if steps else None


def finish(root: str | Path) -> None:
    """Remove every run's checkpoints under `root`; the folder DVC declares stays, with its
    README (written when missing: a run without checkpoints, or a train_rag switched off)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / README).is_file():
        atomic.write_text(root / README, _README_TEXT)
    for path in root.iterdir():
        if path.is_dir():
            shutil.rmtree(path)


def read_extra(checkpoint: str | Path) -> dict[str, Any]:
    """What :func:`marker` recorded beside the Trainer's own state (e.g. trained tokens)."""
    return atomic.read_json(Path(checkpoint) / COMPLETE)


def marker(trainer_ref: dict[str, Any]) -> TrainerCallback:
    """A callback that marks each checkpoint complete once the Trainer has written it.

    ``on_save`` runs after the Trainer wrote every file of the checkpoint (and after it rotated
    the old ones out; ``save_total_limit`` 2 keeps the previous complete one meanwhile). The
    marker also records TRL's token counter, which the Trainer's state does not hold.
    `trainer_ref` is a dict whose ``"trainer"`` is set once the trainer exists.
    With several processes each writes its own RNG state into the checkpoint and the Trainer
    does not wait for the others before ``on_save``: every rank waits here first, so rank 0
    never marks a checkpoint that another rank is still writing.
    """
    from transformers import TrainerCallback

    class _Marker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ARG002
            trainer_ref["trainer"].accelerator.wait_for_everyone()  # no-op for one process
            if not state.is_world_process_zero:
                return
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                atomic.write_json(checkpoint / COMPLETE, {
                    "step": state.global_step,
                    "train_tokens": compat.trained_tokens(trainer_ref["trainer"]),
                })

    return _Marker()
