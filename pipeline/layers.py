"""Mask-aware layers Keras lacks, registered so models load in safe mode without custom code."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="pipeline")
class MaskedConv1D(layers.Conv1D):
    """A 'same' convolution over characters that sees padding as zeros and keeps the mask.

    Zeroing padded steps makes them look exactly like the convolution's own border, so a
    review's features do not depend on how much padding its batch gave it.
    """

    def __init__(self, filters: int, kernel_size: int, **kwargs):
        kwargs["padding"] = "same"
        super().__init__(filters, kernel_size, **kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            inputs = inputs * ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        return super().call(inputs)

    def compute_mask(self, inputs, mask=None):
        return mask


@keras.saving.register_keras_serializable(package="pipeline")
class MaskedMaxMeanPooling(layers.Layer):
    """Max and mean over the real time steps only, concatenated: (batch, 2 * features)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.concatenate([ops.max(inputs, axis=1), ops.mean(inputs, axis=1)], axis=-1)
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        count = ops.maximum(ops.sum(weights, axis=1), 1.0)
        mean = ops.sum(inputs * weights, axis=1) / count
        # Padded steps can never win the max; a review with no steps at all pools to zeros.
        masked = ops.where(weights > 0, inputs, ops.full_like(inputs, -1e9))
        peak = ops.where(ops.sum(weights, axis=1) > 0, ops.max(masked, axis=1), 0.0)
        return ops.concatenate([peak, mean], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])


@keras.saving.register_keras_serializable(package="pipeline")
class MaskedMaxPool1D(layers.Layer):
    """Max over each run of `pool_size` steps, so the RNN after it takes that many fewer steps.

    Windows are counted from the text's side (the end for 'pre' padding), so a review is pooled
    the same way however much padding its batch adds. Returns (pooled, mask): a window is real
    if any of its steps is, and the mask is passed on explicitly to the next layer.
    """

    def __init__(self, pool_size: int = 2, padding: str = "pre", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.padding = padding
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        low = ops.full_like(inputs, -1e9)  # padded steps must never win the max
        x = self._windows(ops.where(ops.expand_dims(mask, -1), inputs, low), -1e9)
        pooled = ops.max(x, axis=2)
        steps = ops.any(self._windows(ops.cast(mask, "int32"), 0) > 0, axis=2)
        return ops.where(ops.expand_dims(steps, -1), pooled, ops.zeros_like(pooled)), steps

    def _windows(self, x, fill):
        """(batch, steps, ...) -> (batch, steps / pool_size, pool_size, ...), padded first."""
        extra = (-ops.shape(x)[1]) % self.pool_size
        pad = [[0, 0], [extra, 0] if self.padding == "pre" else [0, extra]]
        x = ops.pad(x, pad + [[0, 0]] * (len(x.shape) - 2), constant_values=fill)
        return ops.reshape(x, (ops.shape(x)[0], -1, self.pool_size, *x.shape[2:]))

    def compute_mask(self, inputs, mask=None):
        return [None, None]

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "padding": self.padding}


@keras.saving.register_keras_serializable(package="pipeline")
class JamoEmbedding(layers.Layer):
    """Each character's jamo embeddings, summed: rare syllables share what their jamo know.

    `table[i]` lists the (up to 3) jamo ids of character index i, 0 for none; it is a constant
    of the model, saved with its weights, so prediction needs nothing but the model file.
    """

    def __init__(self, vocab_size: int, jamo_count: int, output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.jamo_count, self.output_dim = vocab_size, jamo_count, output_dim
        self.table = self.add_weight(
            shape=(vocab_size, 3),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="table",
        )
        self.embeddings = self.add_weight(
            shape=(jamo_count + 1, output_dim), initializer="uniform", name="embeddings"
        )
        self.supports_masking = True

    def call(self, inputs):
        ids = ops.take(self.table, inputs, axis=0)  # (batch, steps, 3)
        vectors = ops.take(self.embeddings, ids, axis=0)  # (batch, steps, 3, dim)
        present = ops.expand_dims(ops.cast(ids > 0, vectors.dtype), -1)
        return ops.sum(vectors * present, axis=2)

    def compute_mask(self, inputs, mask=None):
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "jamo_count": self.jamo_count,
            "output_dim": self.output_dim,
        }


@keras.saving.register_keras_serializable(package="pipeline")
class RightPad(layers.Layer):
    """Move each review's ids to the start of its row, the padding after them.

    cuDNN's recurrent kernels accept a mask only when every sequence is right-padded. The
    tokenizer keeps Keras' `pad_sequences` layout (padding 'pre' by default), so the model
    re-aligns its input itself: the same ids, in the same order, shifted left.
    """

    def __init__(self, padding: str = "pre", **kwargs):
        super().__init__(**kwargs)
        self.padding = padding

    def call(self, ids):
        if self.padding == "post":
            return ids
        real = ops.cast(ops.not_equal(ids, 0), "int32")
        column = ops.cumsum(ops.ones_like(ids), axis=1) - 1  # 0, 1, 2, ... in every row
        steps = ops.shape(ids)[1]
        padding = steps - ops.sum(real, axis=1, keepdims=True)
        # Output column t takes input column t + padding, wrapping round into the padding.
        source = column + padding
        source = ops.where(source < steps, source, source - steps)
        return ops.take_along_axis(ids, source, axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="pipeline")
class KeepFirstStep(layers.Layer):
    """Mark every review's first step as real, so no review reaches an RNN fully masked.

    An empty review would otherwise have an all-false mask, which cuDNN refuses. Its one step
    reads the padding embedding; `ZeroEmptyReviews` then discards whatever that produced.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        return inputs

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        first = ops.concatenate([ops.ones_like(mask[:, :1]), ops.zeros_like(mask[:, 1:])], axis=1)
        return ops.logical_or(mask, first)


@keras.saving.register_keras_serializable(package="pipeline")
class ZeroEmptyReviews(layers.Layer):
    """Zero the features of reviews with no ids at all: an empty review scores the prior.

    Called on [features, ids]; the output layer then sees only its bias for such a review.
    """

    def call(self, inputs):
        features, ids = inputs
        has_text = ops.any(ops.not_equal(ids, 0), axis=1, keepdims=True)
        return features * ops.cast(has_text, features.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="pipeline")
class HashedNgrams(layers.Layer):
    """Each position's character n-grams (orders 1..`max_order`) as rows of one embedding table.

    Called on padded ids (batch, steps), padding on either side; returns (batch, steps,
    max_order) table rows, 0 where there is no n-gram (padding). Unigrams keep their own id;
    longer n-grams are hashed into `buckets` rows per order, so the table needs no vocabulary of
    n-grams and the model stays one self-contained file. A review's end counts as padding, so an
    n-gram may end there ('요' + end); it is the same however much padding a batch adds.
    """

    def __init__(self, vocab_size: int, max_order: int, buckets: int, **kwargs):
        super().__init__(**kwargs)
        # (hash * (vocab_size + 1) + id) must stay inside int32 on every backend
        if buckets * (vocab_size + 1) + vocab_size >= 2**31:
            raise ValueError(f"ngram_buckets * vocab_size must stay below 2**31 ({buckets=})")
        self.vocab_size, self.max_order, self.buckets = vocab_size, max_order, buckets

    @property
    def table_size(self) -> int:
        return self.vocab_size + (self.max_order - 1) * self.buckets

    def call(self, ids):
        ids = ops.cast(ids, "int32")
        real = ops.not_equal(ids, 0)
        rows, shifted, hashed = [ids], ids, ids
        for order in range(2, self.max_order + 1):
            # the id `order - 1` steps ahead, 0 past the end of the row
            shifted = ops.pad(shifted[:, 1:], [[0, 0], [0, 1]])
            hashed = (hashed * (self.vocab_size + 1) + shifted) % self.buckets
            offset = self.vocab_size + (order - 2) * self.buckets
            rows.append(ops.where(real, hashed + offset, 0))
        return ops.stack(rows, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.max_order)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_order": self.max_order,
            "buckets": self.buckets,
        }


@keras.saving.register_keras_serializable(package="pipeline")
class MaskedBagMean(layers.Layer):
    """Mean of the n-gram vectors a review has: (batch, steps, orders, dim) -> (batch, dim).

    Row 0 of the table is 'no n-gram' and is left out, so padding never moves the mean. During
    training each n-gram is dropped with probability `rate` (n-gram dropout), so the model
    cannot lean on a few memorised n-grams.
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = rate, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        vectors, rows = inputs
        present = ops.cast(ops.not_equal(rows, 0), vectors.dtype)
        if training and self.rate > 0:
            keep = keras.random.uniform(ops.shape(present), seed=self.seed_generator) >= self.rate
            present = present * ops.cast(keep, present.dtype)
        present = ops.expand_dims(present, -1)
        total = ops.sum(vectors * present, axis=(1, 2))
        count = ops.maximum(ops.sum(present, axis=(1, 2)), 1.0)
        return total / count

    def compute_output_shape(self, input_shape):
        vectors_shape = input_shape[0]
        return (vectors_shape[0], vectors_shape[-1])

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="pipeline")
class Temperature(layers.Layer):
    """sigmoid(logit / temperature): the model's probability, calibrated.

    Training runs at temperature 1; `train` then fits the temperature on validation (a
    temperature above 1 softens an overconfident model). Dividing a logit by a positive number
    keeps its sign, so no label changes: only how sure the probability says the model is.
    """

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, not {temperature}")
        self.temperature = float(temperature)

    def call(self, logits):
        return ops.sigmoid(logits / self.temperature)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="pipeline")
class StepGather(layers.Layer):
    """The encoder's features for chosen characters, for masked-character prediction.

    Called on [steps (batch, steps, dim), places (batch, k)], places counting characters from
    the text's start. With `pool` characters per encoder step, character j is read from step
    j // pool, plus a learned vector for its place j % pool inside the step: (batch, k, dim).
    """

    def __init__(self, pool: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.pool = pool
        self.supports_masking = True  # places are real characters: no mask to pass on

    def compute_mask(self, inputs, mask=None):
        return None

    def build(self, input_shape):
        self.place = self.add_weight(
            shape=(self.pool, input_shape[0][-1]), initializer="zeros", name="place"
        )

    def call(self, inputs):
        steps, places = inputs
        places = ops.cast(places, "int32")
        rows = ops.take_along_axis(steps, ops.expand_dims(places // self.pool, -1), axis=1)
        return rows + ops.take(self.place, places % self.pool, axis=0)

    def compute_output_shape(self, input_shape):
        steps_shape, places_shape = input_shape
        return (*places_shape, steps_shape[-1])

    def get_config(self):
        return {**super().get_config(), "pool": self.pool}


@keras.saving.register_keras_serializable(package="pipeline")
class PlaceLogits(layers.Layer):
    """One logit per character place, for replaced-character detection.

    Each encoder step holds `pool` characters: its features give `pool` logits, laid out in the
    text's order, so (batch, steps, dim) -> (batch, steps * pool).
    """

    def __init__(self, pool: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.pool = pool
        self.supports_masking = True  # the targets' weights say which places are real

    def build(self, input_shape):
        self.dense = layers.Dense(self.pool, name="dense")
        self.dense.build(input_shape)

    def call(self, steps):
        logits = self.dense(steps)
        return ops.reshape(logits, (ops.shape(logits)[0], -1))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        steps = None if input_shape[1] is None else input_shape[1] * self.pool
        return (input_shape[0], steps)

    def get_config(self):
        return {**super().get_config(), "pool": self.pool}
