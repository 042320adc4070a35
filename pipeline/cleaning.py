"""The one cleaning function, shared by training data preparation and prediction."""

from __future__ import annotations

import re
from collections.abc import Iterable

# The original notebook's rule: keep digits, Hangul jamo (ㄱ-ㅎ, ㅏ-ㅣ: one run of code points),
# Hangul syllables (가-힣) and spaces. The export (pipeline/export.py) reads these ranges too.
KEPT_RANGES = ((0x30, 0x39), (0x3131, 0x3163), (0xAC00, 0xD7A3))
# Other whitespace (tabs, newlines, no-break spaces) is kept here and folded to one space below.
_DROPPED = re.compile(
    "[^" + "".join(f"{chr(low)}-{chr(high)}" for low, high in KEPT_RANGES) + r"\s]+"
)


def clean_text(text: str) -> str:
    """Keep Hangul, digits and single spaces; any run of whitespace becomes one space."""
    return " ".join(_DROPPED.sub("", text).split())


def clean_texts(texts: Iterable[str]) -> list[str]:
    return [clean_text(t) for t in texts]
