"""A model judge: an instruct model rates each sample's target from 1 to 5.

The rating is read from the model's next-token distribution after the rating prompt, not from
generated text: the probabilities of the tokens ``1``..``5``, renormalised, give an expected
rating (the score, in [1, 5]) and the mass they held before renormalising (``digit_mass``: how
much the model meant to answer with a digit at all; a low mass says the prompt did not work).
One forward pass per sample, no sampling: the same model, prompt and sample give the same score.

Scores are cached by sha256 of (model identity, prompt template, sample id, rendered prompt), so
a sample whose code, target and prompt are unchanged is never scored twice, across runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from repotune.base_model import materialize_base
from repotune.errors import RepotuneError
from repotune.atomic import read_json, read_jsonl
from repotune.modeling import load_causal_lm, load_tokenizer
from repotune.prompts import chat
from repotune.provenance import MANIFEST, model_identity
from repotune.tasks import task

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from repotune.params import ModelParams

DIGITS = ("1", "2", "3", "4", "5")
_PLACEHOLDER = re.compile(r"\{code\}|\{target\}")


def judge_model_folder(model: ModelParams | None, base_folder: Path, cache_folder: Path) -> Path:
    """The folder of the judge model: `base_folder` when ``judge.model`` is null, else the
    source materialised (like ``model.base``) once into `cache_folder`/model and reused while its
    manifest names the same source, file, revision and sha256."""
    if model is None:
        return base_folder
    folder = cache_folder / "model"
    manifest = folder / MANIFEST
    wanted = {
        "source": model.base if isinstance(model.base, str) else list(model.base),
        "file": model.file if isinstance(model.file, str | None) else list(model.file),
        "revision": model.revision,
    }
    if manifest.is_file():
        have = read_json(manifest)
        same = all(have.get(k) == v for k, v in wanted.items())
        if same and (model.sha256 is None or have.get("gguf_sha256") == model.sha256):
            return folder
    materialize_base(model, folder)
    return folder


def render(
    record: Mapping[str, Any],
    template: str,
    task_name: str,
    tokenizer: PreTrainedTokenizerBase,
    max_code_tokens: int,
    chat_template: bool,
) -> str:
    """The judge's prompt for `record`: {code} (cut to `max_code_tokens` tokens, head kept) and
    {target} filled in one pass (a docstring that says "{code}" stays as it is)."""
    code = task(task_name).prompt_input(record)
    enc = tokenizer(code, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) > max_code_tokens:
        code = code[: enc["offset_mapping"][max_code_tokens - 1][1]]
    fill = {"{code}": code, "{target}": str(record["target"])}
    text = _PLACEHOLDER.sub(lambda m: fill[m.group(0)], template)
    return chat(text, tokenizer, key="judge.chat_template") if chat_template else text


def cache_key(identity: str, template: str, sample_id: str, prompt: str) -> str:
    return hashlib.sha256("\0".join((identity, template, sample_id, prompt)).encode()).hexdigest()


def digit_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of ``1``..``5``; each digit must be one token."""
    ids = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in DIGITS]
    several = [d for d, i in zip(DIGITS, ids, strict=True) if len(i) != 1]
    if several:
        raise RepotuneError(f"judge: the judge model's tokenizer splits the digits {several} into several tokens")
    return [i[0] for i in ids]


def rate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], batch_size: int
) -> list[tuple[float, float]]:
    """(expected rating in [1, 5], probability mass on the five digits) per prompt, in order.

    Prompts are tokenised the way the model was trained (the tokenizer's BOS, if it adds one),
    sorted by length (less padding), left-padded, with position ids that skip the padding so a
    prompt's logits do not depend on its batch neighbours beyond float noise; values are
    rounded to 4 decimals.
    """
    import torch

    ids = digit_ids(tokenizer)
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    weights = torch.arange(1, len(DIGITS) + 1, dtype=torch.float64)
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(prompts)
    device = next(model.parameters()).device
    with torch.no_grad(), tqdm(total=len(prompts), desc="judge", unit="sample") as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                input_ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=input_ids.to(device), attention_mask=mask.to(device),
                position_ids=positions.to(device), logits_to_keep=1,
            ).logits[:, -1, :]
            probs = torch.softmax(logits.double(), dim=-1)[:, ids].cpu()  # (rows, 5)
            mass = probs.sum(-1)
            expected = (probs * weights).sum(-1) / mass
            for r, i in enumerate(rows):
                out[i] = (round(float(expected[r]), 4), round(float(mass[r]), 4))
            bar.update(len(rows))
    return out


def read_cache(path: Path) -> dict[str, dict[str, float]]:
    """key -> {score, digit_mass} from the cache file (empty when there is none yet)."""
    if not path.is_file():
        return {}
    return {row["key"]: {"score": row["score"], "digit_mass": row["digit_mass"]} for row in read_jsonl(path)}


def judge_samples(
    records: Sequence[Mapping[str, Any]],
    folder: Path,
    cache: dict[str, dict[str, float]],
    template: str,
    task_name: str,
    *,
    chat_template: bool,
    max_code_tokens: int,
    batch_size: int,
    trust_remote_code: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every record with the model in `folder`, reusing and filling `cache` (in place).

    The model is loaded only when some record is not in the cache.

    Returns:
        One row per record, sorted by id (id, score, digit_mass, model, prompt_sha256), and
        counts for metrics/judge.json (samples, scored, cached, mean_score, mean_digit_mass, model, prompt_sha256).
    """
    identity = model_identity(folder)
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    prompts = [render(r, template, task_name, tokenizer, max_code_tokens, chat_template) for r in records]
    keys = [cache_key(identity, template, str(r["id"]), p) for r, p in zip(records, prompts, strict=True)]
    todo = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values())
    if todo:
        model = load_causal_lm(folder, trust_remote_code=trust_remote_code).eval()
        rated = rate(model, tokenizer, [prompts[i] for i in todo], batch_size)
        for i, (score, mass) in zip(todo, rated, strict=True):
            cache[keys[i]] = {"score": score, "digit_mass": mass}
    prompt_sha256 = hashlib.sha256(template.encode()).hexdigest()
    rows = sorted(
        ({"id": r["id"], **cache[k], "model": identity, "prompt_sha256": prompt_sha256}
         for r, k in zip(records, keys, strict=True)),
        key=lambda row: row["id"],
    )
    n = len(rows)
    counts = {
        "samples": n,
        "scored": len(todo),
        "cached": n - len(todo),
        "mean_score": round(sum(r["score"] for r in rows) / n, 4) if n else 0.0,
        "mean_digit_mass": round(sum(r["digit_mass"] for r in rows) / n, 4) if n else 0.0,
        "model": identity,
        "prompt_sha256": prompt_sha256,
    }
    return rows, counts

