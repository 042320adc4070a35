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
