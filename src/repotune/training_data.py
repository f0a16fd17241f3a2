"""The rows TRL trains on: split records read and sorted, turned into prompt/completion rows by
a ``prompts.Prompter`` and cut to ``train.max_length``, with counts of what the cut did.

TRL 1.16 sees a prompt-completion dataset and computes the loss on completion tokens only
(prompt tokens are labelled -100), and appends the tokenizer's EOS to every completion so the
model learns to stop; :func:`token_lengths` counts tokens the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune.errors import RepotuneError
from repotune.prompts import Prompter

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REQUIRED_KEYS = ("id", "input", "target")


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
