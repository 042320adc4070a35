"""Build the stacked character RNN from the config."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.layers import (
    HashedNgrams,
    JamoEmbedding,
    KeepFirstStep,
    MaskedBagMean,
    MaskedConv1D,
    MaskedMaxMeanPooling,
    MaskedMaxPool1D,
    PlaceLogits,
    RightPad,
    StepGather,
    Temperature,
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
    the masks reaching the RNN are the kind cuDNN accepts on a GPU. The answer is a logit and a
    `Temperature` sigmoid (1 in training; `train` fits it on validation for the saved model).
    """
    inputs = keras.Input(shape=(None,), dtype="int32", name="chars")
    ids = RightPad(config.padding, name="right_pad")(inputs) if config.mask_padding else inputs
    x, steps_mask = encode(config, vocab_size, ids, jamo_table, sequences=config.pooling)
    if config.pooling:
        x = MaskedMaxMeanPooling(name="pooling")(x)
    rnn_features = x
    if config.ngram_order:
        ngram_features = _ngram_bag(config, vocab_size, ids)
        x = layers.Concatenate(name="rnn_and_ngrams")([x, ngram_features])
    if config.mask_padding:
        x = ZeroEmptyReviews(name="zero_empty")([x, inputs])
    if config.head_dropout:
        x = layers.Dropout(config.head_dropout, name="head_dropout")(x)
    logit = layers.Dense(1, name="logit")(x)
    outputs = Temperature(name="positive")(logit)
    loss = keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing)
    if config.ngram_order and config.branch_loss_weight:
        # Each branch also answers alone, and is scored on it: neither can lean on the other
        # (without this the n-grams, which learn fastest, leave the RNN little to learn).
        # These answers exist for training only; `train.for_inference` keeps `positive`.
        rnn_alone = layers.Dropout(config.head_dropout, name="rnn_alone_dropout")(rnn_features)
        answers = [
            outputs,
            layers.Dense(1, activation="sigmoid", name="rnn_alone")(rnn_alone),
            layers.Dense(1, activation="sigmoid", name="ngrams_alone")(ngram_features),
        ]
        outputs = layers.Concatenate(name="with_branch_answers")(answers)
        loss = WithBranchLosses(config.branch_loss_weight, config.label_smoothing)
    model = keras.Model(inputs, outputs, name="char_rnn")
    rate = _learning_rate(config, config.learning_rate, config.epochs, steps_per_epoch)
    slow = encoder_layers(config) if config.pretrain != "none" else ()
    optimizer = SparseAdam(rate, slow_layers=slow, slow_scale=config.pretrained_lr_scale)
    model.compile(optimizer=optimizer, loss=loss)
    return model


def encode(config: Config, vocab_size: int, ids, jamo_table=None, sequences: bool = True):
    """The character encoder: embeddings -> [conv -> pool] -> stacked RNN, on (masked) ids.

    Returns the last RNN layer's output (every step's if `sequences`, else its last state),
    which carries its steps' mask, and the pooled steps' mask (None without pooling). The
    classifier and the pretraining models build it with the same layer names, so pretrained
    weights move by name.
    """
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
    if pool_size(config) > 1:
        text_side = "post" if config.mask_padding else config.padding  # where the text starts
        x, steps_mask = MaskedMaxPool1D(config.conv_pool, text_side, name="ngram_pool")(x)
    rnn_class = _CELLS[config.cell]
    for depth, units in enumerate(config.rnn_units, start=1):
        rnn = rnn_class(
            units,
            return_sequences=sequences or depth < len(config.rnn_units),
            dropout=config.dropout,
            recurrent_dropout=config.recurrent_dropout,
            name=f"{config.cell}_{depth}",  # the Bidirectional wrapper names both directions
        )
        if config.bidirectional:
            rnn = layers.Bidirectional(rnn, name=_rnn_name(config, depth))
        x = rnn(x, mask=steps_mask) if depth == 1 and steps_mask is not None else rnn(x)
    return x, steps_mask


def _rnn_name(config: Config, depth: int) -> str:
    return f"bi_{config.cell}_{depth}" if config.bidirectional else f"{config.cell}_{depth}"


def encoder_layers(config: Config) -> tuple[str, ...]:
    """The names of the encoder's layers that hold weights: what pretraining trains."""
    names = ["embedding"]
    if config.jamo_features:
        names.append("jamo")
    if config.conv_filters:
        names.append("char_ngrams")
    names += [_rnn_name(config, depth) for depth in range(1, len(config.rnn_units) + 1)]
    return tuple(names)


def pool_size(config: Config) -> int:
    """Characters per encoder step: the convolution's max-pool, else 1."""
    return config.conv_pool if config.conv_filters and config.conv_pool > 1 else 1


def build_pretrainer(
    config: Config,
    vocab_size: int,
    steps_per_epoch: int | None = None,
    jamo_table: tuple[np.ndarray, int] | None = None,
) -> keras.Model:
    """The encoder with the head of `config.pretrain`, compiled with its optimizer.

    mlm: ids with some characters hidden, and the places of those characters (counted from the
    text's start) -> logits over the vocabulary for each place. rtd: ids with some characters
    replaced -> one logit per character place, "was this character replaced?".
    """
    if not config.mask_padding:
        raise PipelineError("pretraining needs mask_padding = true (the default)")
    ids_in = keras.Input(shape=(None,), dtype="int32", name="chars")
    ids = RightPad(config.padding, name="right_pad")(ids_in)
    steps, _ = encode(config, vocab_size, ids, jamo_table, sequences=True)
    pool = pool_size(config)
    if config.pretrain == "mlm":
        places = keras.Input(shape=(None,), dtype="int32", name="places")
        x = StepGather(pool, name="gather")([steps, places])
        x = layers.Dense(2 * config.embedding_dim, activation="gelu", name="mlm_hidden")(x)
        outputs = layers.Dense(vocab_size, name="mlm_logits")(x)
        inputs = [ids_in, places]
    else:  # rtd: every place of every step: (batch, steps * pool)
        outputs = PlaceLogits(pool, name="rtd_logits")(steps)
        inputs = ids_in
    model = keras.Model(inputs, outputs, name=f"pretrain_{config.pretrain}")
    rate = _learning_rate(
        config, config.pretrain_learning_rate, config.pretrain_epochs, steps_per_epoch
    )
    model.compile(optimizer=keras.optimizers.Adam(rate))
    return model


def load_pretrained(model: keras.Model, pretrained: keras.Model) -> list[str]:
    """Copy the weights of every layer `model` shares by name with `pretrained`; their names."""
    theirs = {layer.name: layer for layer in pretrained.layers if layer.weights}
    copied = []
    for layer in model.layers:
        if layer.name in theirs and layer.weights:
            weights = theirs[layer.name].get_weights()
            if [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
                raise PipelineError(
                    f"the pretrained encoder's {layer.name} layer has other sizes than this "
                    "model's (its settings changed since); rerun `python -m pipeline pretrain`"
                )
            layer.set_weights(weights)
            copied.append(layer.name)
    if "embedding" not in copied:
        raise PipelineError(
            "the pretrained encoder shares no layers with this model; rerun "
            "`python -m pipeline pretrain`"
        )
    return copied


@keras.saving.register_keras_serializable(package="pipeline")
class WithBranchLosses(keras.losses.Loss):
    """Cross-entropy of the model's answer (column 0) plus `weight` times each branch's own."""

    def __init__(self, weight: float, label_smoothing: float = 0.0, **kwargs):
        kwargs.setdefault("name", "with_branch_losses")
        super().__init__(**kwargs)
        self.weight, self.label_smoothing = weight, label_smoothing

    def call(self, y_true, y_pred):
        y_true = ops.broadcast_to(
            ops.reshape(ops.cast(y_true, y_pred.dtype), (-1, 1)), ops.shape(y_pred)
        )
        # one cross-entropy per column: (batch, answers)
        each = keras.losses.binary_crossentropy(
            ops.expand_dims(y_true, -1),
            ops.expand_dims(y_pred, -1),
            label_smoothing=self.label_smoothing,
        )
        return each[:, 0] + self.weight * ops.sum(each[:, 1:], axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "weight": self.weight,
            "label_smoothing": self.label_smoothing,
        }


def _ngram_bag(config: Config, vocab_size: int, ids):
    """The mean of a review's hashed character n-gram vectors (a fastText-style bag)."""
    ngrams = HashedNgrams(vocab_size, config.ngram_order, config.ngram_buckets, name="ngrams")
    rows = ngrams(ids)
    vectors = layers.Embedding(ngrams.table_size, config.ngram_dim, name="ngram_embedding")(rows)
    return MaskedBagMean(config.ngram_dropout, seed=config.seed, name="ngram_bag")([vectors, rows])


def _learning_rate(config: Config, rate: float, epochs: int, steps_per_epoch: int | None):
    """`rate`, after `warmup_epochs` of linear warmup, decayed to 0 by a cosine over the rest."""
    if config.lr_schedule != "cosine" or not steps_per_epoch:
        return rate
    warmup = round(config.warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else rate,
        decay_steps=epochs * steps_per_epoch - warmup,
        warmup_target=rate if warmup else None,
        warmup_steps=warmup,
    )
