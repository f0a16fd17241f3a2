"""Code tokens: a run of word characters or a single other non-space character.

``self.x = 1`` is 5 tokens. Also the sub-tokens of an identifier (camelCase humps, digits,
underscores). Model-free, so that the data stages (filter lengths, near-duplicate
shingles) never load a tokenizer; shared by :mod:`repotune.filters` and :mod:`repotune.dedup`.
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"\w+|[^\w\s]")
_SUBTOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def tokens(text: str) -> list[str]:
    """The code tokens of `text`, in order."""
    return TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return sum(1 for _ in TOKEN.finditer(text))


def subtokens(name: str) -> list[str]:
    """``getHTTPResponse2_code`` -> ``['get', 'http', 'response', '2', 'code']``."""
    return [t.lower() for t in _SUBTOKEN.findall(name)]
