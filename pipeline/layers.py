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
