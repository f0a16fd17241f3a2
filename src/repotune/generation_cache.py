"""A cache of model generations keyed by what decides them (the model's identity, the rendered
prompt, the decoding settings and the stops), so that a re-run generates only the prompts it
has not seen; the model is loaded only when some prompt is new.

The distill stage keeps its teacher's generations here (a teacher is slow on a CPU): a new
mixing ratio or sample cap re-generates nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from repotune import atomic
from repotune.generation import generate_from_folder
from repotune.params import DecodingParams


def generation_key(identity: str, prompt: str, decoding: DecodingParams, stop: Sequence[str]) -> str:
    """What decides a teacher's raw output: its weights, the prompt, decoding and stops.

    ``decoding.batch_size`` is left out: texts do not depend on it (see repotune.generation).
    """
    settings = atomic.dumps({**decoding.model_dump(mode="json", exclude={"batch_size"}), "stop": list(stop)})
    return hashlib.sha256("\0".join((identity, prompt, settings)).encode()).hexdigest()


def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """key -> {raw, new_tokens, prompt_tokens, seconds} of earlier generations (empty if none)."""
    if not path.is_file():
        return {}
    return {row["key"]: {k: v for k, v in row.items() if k != "key"} for row in atomic.read_jsonl(path)}


def write_cache(path: Path, cache: Mapping[str, Mapping[str, Any]]) -> None:
    atomic.write_jsonl(path, [{"key": key, **value} for key, value in sorted(cache.items())])


def generate_cached(
    folder: Path,
    prompts: Mapping[str, Sequence[str]],
    cache: dict[str, dict[str, Any]],
    identity: str,
    decoding: DecodingParams,
    *,
    stop: Sequence[str],
    skip_leading_whitespace: bool,
    device: str,
    precision: str,
    save: Callable[[], None] | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The teacher's generation for every prompt of every named list, from `cache` or generated;
    `cache` is filled in place and `save` called after each list that needed the model (so a
    run killed half-way keeps what it generated: a teacher is slow on a CPU). The model is
    loaded for each such list; none at all when everything is cached.

    A generated row keeps its share of its run's wall time (``seconds``, in proportion to its
    new tokens), so the tokens/s of a list read back from the cache is the measured one.

    Returns:
        name -> one cached row per prompt (raw, new_tokens, prompt_tokens, seconds), and the
        number of prompts generated now.
    """
    keys = {name: [generation_key(identity, p, decoding, stop) for p in texts] for name, texts in prompts.items()}
    generated = 0
    for name, texts in prompts.items():
        todo = list(dict.fromkeys(p for p, k in zip(texts, keys[name], strict=True) if k not in cache))
        if not todo:
            continue
        run = generate_from_folder(
            folder, {name: todo}, decoding, stop=stop, skip_leading_whitespace=skip_leading_whitespace,
            device=device, precision=precision,
        )[name]
        total = max(sum(run.new_tokens), 1)
        for text, raw, n_new, n_prompt in zip(todo, run.raw_texts, run.new_tokens, run.prompt_tokens, strict=True):
            cache[generation_key(identity, text, decoding, stop)] = {
                "raw": raw, "new_tokens": n_new, "prompt_tokens": n_prompt,
                "seconds": round(run.seconds * n_new / total, 6),
            }
        generated += len(todo)
        if save is not None:
            save()
    return {name: [cache[k] for k in ks] for name, ks in keys.items()}, generated


def speed(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Generated tokens, seconds and tokens/s of a list of generated rows."""
    tokens = sum(r["new_tokens"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    return {"generated_tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else 0.0}
