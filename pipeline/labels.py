"""The one threshold: a probability above it is a positive review, and the labels' names."""

from __future__ import annotations

import numpy as np

POSITIVE, NEGATIVE = "긍정", "부정"  # the original notebook's labels
THRESHOLD = 0.5  # a review is positive when its probability is above this


def is_positive(probabilities: float | np.ndarray) -> np.ndarray:
    """True where a probability is above THRESHOLD: the one threshold, label_of's too."""
    return np.asarray(probabilities) > THRESHOLD


def label_of(probability: float) -> str:
    """'긍정' above THRESHOLD, else '부정'."""
    return POSITIVE if is_positive(probability) else NEGATIVE
