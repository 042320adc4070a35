"""The one cleaning function, shared by training data preparation and prediction."""

from __future__ import annotations

import re
from collections.abc import Iterable

# The original notebook's rule: keep Hangul jamo (ㄱ-ㅎ, ㅏ-ㅣ), Hangul syllables, digits, spaces.
# Other whitespace (tabs, newlines, no-break spaces) is kept here and folded to one space below.
_DROPPED = re.compile(r"[^ㄱ-ㅎㅏ-ㅣ가-힣0-9\s]+")


def clean_text(text: str) -> str:
    """Keep Hangul, digits and single spaces; any run of whitespace becomes one space."""
    return " ".join(_DROPPED.sub("", text).split())


def clean_texts(texts: Iterable[str]) -> list[str]:
    return [clean_text(t) for t in texts]
