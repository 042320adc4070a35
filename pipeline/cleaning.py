"""The one cleaning function, shared by training data preparation and prediction."""

from __future__ import annotations

import re
from collections.abc import Iterable

# The original notebook's rule: keep Hangul jamo (ㄱ-ㅎ, ㅏ-ㅣ), Hangul syllables, digits, spaces.
_DROPPED = re.compile(r"[^ㄱ-ㅎㅏ-ㅣ가-힣0-9 ]+")
_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Keep Hangul, digits and single spaces; tabs and newlines count as spaces."""
    return _WHITESPACE.sub(" ", _DROPPED.sub("", _WHITESPACE.sub(" ", text))).strip()


def clean_texts(texts: Iterable[str]) -> list[str]:
    return [clean_text(t) for t in texts]
