"""Prompts and completions: the one place that decides what the model sees and must write.

Training (`train`) and evaluation (`benchmark`) both build prompts here, so the model is scored
on exactly the text layout it was trained on. Pure string functions, no heavy imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PLACEHOLDER = "{code}"


def build_prompt(template: str, record: Mapping[str, Any]) -> str:
    """Fill the template's ``{code}`` placeholder with the record's input code.

    ``str.replace`` rather than ``str.format``: code is full of braces (dicts, f-strings) that
    ``format`` would try to interpret. Trailing whitespace of the code is dropped so that the
    prompt does not depend on whether the extractor kept the final newline.

    Args:
        template: e.g. ``"{code}\\nDocstring:"`` (``prompt.docstring`` in params.yaml).
        record: a sample with at least an ``input`` key (the code, docstring removed).

    Returns:
        The prompt text, ending where the model's completion starts.
    """
    return template.replace(PLACEHOLDER, record["input"].rstrip())


def build_completion(record: Mapping[str, Any]) -> str:
    """The text the model is trained to write after the prompt: ``" " + target + "\\n"``.

    The leading space separates the answer from the prompt's final ``:`` the way text is
    usually written, so byte-level BPE tokenizes the prompt identically alone and followed by
    the completion. TRL appends the tokenizer's EOS token after the newline, so the model learns
    to stop (generation ends on EOS; a ``"\\n\\n"`` stop string remains a fallback).

    Args:
        record: a sample with a ``target`` key (the docstring text).
    """
    return " " + record["target"].strip() + "\n"
