"""A real Keras model with hand-set weights, so a test knows each review's exact probability.

It keeps the contract every model of ours keeps (the tokenizer's padded int32 ids in, (batch, 1)
probabilities out) and loads through `Predictor` like a trained one, in a second instead of a
training run. Each character gets a score; a review's probability is

    sigmoid(sum of its characters' scores / width)

where width is the padded length (`mask_zero=False`) or the review's length (`mask_zero=True`).
Padding scores 0, so the empty review, or scores that cancel exactly, give exactly 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.tokenizer import OOV_INDEX, CharTokenizer


def save_known_model(
    artifacts_dir: Path,
    scores: dict[str, float],
    oov_score: float = 0.0,
    mask_zero: bool = False,
) -> CharTokenizer:
    """Write model.keras beside the folder's tokenizer.json; characters not in `scores` score 0."""
    import keras

    tokenizer = CharTokenizer.load(artifacts_dir / "tokenizer.json")
    table = np.zeros((tokenizer.vocab_size, 1), dtype="float32")
    table[OOV_INDEX] = oov_score
    for char, score in scores.items():
        table[tokenizer.word_index_[char]] = score
    inputs = keras.Input(shape=(None,), dtype="int32")
    embedding = keras.layers.Embedding(tokenizer.vocab_size, 1, mask_zero=mask_zero)
    pooled = keras.layers.GlobalAveragePooling1D()(embedding(inputs))
    dropped = keras.layers.Dropout(0.5)(pooled)  # like ours: inference must never drop
    head = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, head(dropped))
    embedding.set_weights([table])
    head.set_weights([np.ones((1, 1), dtype="float32"), np.zeros(1, dtype="float32")])
    model.save(artifacts_dir / "model.keras")
    return tokenizer
