"""Build the stacked character RNN from the config."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from pipeline.config import Config
from pipeline.layers import (
    HashedNgrams,
    JamoEmbedding,
    KeepFirstStep,
    MaskedBagMean,
    MaskedConv1D,
    MaskedMaxMeanPooling,
    MaskedMaxPool1D,
    RightPad,
    ZeroEmptyReviews,
)
from pipeline.optimizers import SparseAdam

_CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "simplernn": layers.SimpleRNN}


def build_model(
    config: Config,
    vocab_size: int,
    steps_per_epoch: int | None = None,
    jamo_table: tuple[np.ndarray, int] | None = None,
) -> keras.Model:
    """Embedding -> [conv] -> stacked RNN -> [max/mean pooling] -> sigmoid, compiled.

    Inputs have no fixed length, so training can cut each batch to its longest review; with
    `mask_padding` every layer skips padded steps, so a review's score never depends on its batch.
    Masked models move the padding after the text and give every review at least one step, so
    the masks reaching the RNN are the kind cuDNN accepts on a GPU.
    """
    inputs = keras.Input(shape=(None,), dtype="int32", name="chars")
    ids = RightPad(config.padding, name="right_pad")(inputs) if config.mask_padding else inputs
    x = layers.Embedding(
        vocab_size, config.embedding_dim, mask_zero=config.mask_padding, name="embedding"
    )(ids)
    if config.jamo_features:
        if jamo_table is None:
            raise ValueError("jamo_features needs the tokenizer's jamo_table()")
        table, jamo_count = jamo_table
        jamo = JamoEmbedding(vocab_size, jamo_count, config.jamo_features, name="jamo")
        features = jamo(ids)
        jamo.table.assign(table)
        x = layers.Concatenate(name="char_and_jamo")([x, features])
    if config.spatial_dropout:
        x = layers.SpatialDropout1D(config.spatial_dropout, name="spatial_dropout")(x)
    if config.mask_padding:
        x = KeepFirstStep(name="keep_first_step")(x)
    if config.conv_filters:
        x = MaskedConv1D(
            config.conv_filters, config.conv_kernel, activation="relu", name="char_ngrams"
        )(x)
    steps_mask = None  # set when pooling makes a new mask the first RNN layer must be given
    if config.conv_filters and config.conv_pool > 1:
        text_side = "post" if config.mask_padding else config.padding  # where the text starts
        x, steps_mask = MaskedMaxPool1D(config.conv_pool, text_side, name="ngram_pool")(x)
    rnn_class = _CELLS[config.cell]
    for depth, units in enumerate(config.rnn_units, start=1):
        rnn = rnn_class(
            units,
            return_sequences=config.pooling or depth < len(config.rnn_units),
            dropout=config.dropout,
            recurrent_dropout=config.recurrent_dropout,
            name=f"{config.cell}_{depth}",
        )
        if config.bidirectional:
            rnn = layers.Bidirectional(rnn, name=f"bi_{config.cell}_{depth}")
        x = rnn(x, mask=steps_mask) if depth == 1 and steps_mask is not None else rnn(x)
    if config.pooling:
        x = MaskedMaxMeanPooling(name="pooling")(x)
    if config.ngram_order:
        x = layers.Concatenate(name="rnn_and_ngrams")([x, _ngram_bag(config, vocab_size, ids)])
    if config.mask_padding:
        x = ZeroEmptyReviews(name="zero_empty")([x, inputs])
    if config.head_dropout:
        x = layers.Dropout(config.head_dropout, name="head_dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="positive")(x)
    model = keras.Model(inputs, outputs, name="char_rnn")
    model.compile(
        optimizer=SparseAdam(_learning_rate(config, steps_per_epoch)),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def _ngram_bag(config: Config, vocab_size: int, ids):
    """The mean of a review's hashed character n-gram vectors (a fastText-style bag)."""
    ngrams = HashedNgrams(vocab_size, config.ngram_order, config.ngram_buckets, name="ngrams")
    rows = ngrams(ids)
    vectors = layers.Embedding(ngrams.table_size, config.ngram_dim, name="ngram_embedding")(rows)
    return MaskedBagMean(config.ngram_dropout, seed=config.seed, name="ngram_bag")([vectors, rows])


def _learning_rate(config: Config, steps_per_epoch: int | None):
    if config.lr_schedule == "cosine" and steps_per_epoch:
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch
        )
    return config.learning_rate
