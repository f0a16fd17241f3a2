"""Code tokens: a run of word characters or a single other non-space character.

``self.x = 1`` is 5 tokens. Model-free, so that the data stages (filter lengths, near-duplicate
shingles) never load a tokenizer; shared by :mod:`repotune.filters` and :mod:`repotune.dedup`.
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    """The code tokens of `text`, in order."""
    return TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return sum(1 for _ in TOKEN.finditer(text))
