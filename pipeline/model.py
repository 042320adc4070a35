"""Build the stacked character RNN from the config."""

from __future__ import annotations

import keras
from keras import layers

from pipeline.config import Config

_CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "simplernn": layers.SimpleRNN}


def build_model(config: Config, vocab_size: int) -> keras.Model:
    """Embedding -> stacked RNN layers -> sigmoid; compiled with Adam and binary cross-entropy.

    Inputs have no fixed length, so training can trim each batch to its longest review; with
    `mask_padding` the RNN skips padded steps, so a review's score never depends on its batch.
    """
    inputs = keras.Input(shape=(None,), dtype="int32", name="chars")
    x = layers.Embedding(
        vocab_size, config.embedding_dim, mask_zero=config.mask_padding, name="embedding"
    )(inputs)
    rnn_class = _CELLS[config.cell]
    for depth, units in enumerate(config.rnn_units, start=1):
        rnn = rnn_class(
            units,
            return_sequences=depth < len(config.rnn_units),
            dropout=config.dropout,
            recurrent_dropout=config.recurrent_dropout,
            name=f"{config.cell}_{depth}",
        )
        x = layers.Bidirectional(rnn, name=f"bi_{config.cell}_{depth}")(x) if config.bidirectional else rnn(x)
    outputs = layers.Dense(1, activation="sigmoid", name="positive")(x)
    model = keras.Model(inputs, outputs, name="char_rnn")
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model
