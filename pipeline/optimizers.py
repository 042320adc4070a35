"""Adam that updates only the embedding rows a batch touched, and lets some layers learn slower."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="pipeline")
class SparseAdam(keras.optimizers.Adam):
    """Adam, except that a sparse gradient (TensorFlow's IndexedSlices) updates only its rows.

    The n-gram table has millions of rows and a batch touches a few thousand: dense Adam would
    rewrite every row, its two moments and the weights at every step. Here the rows a batch
    did not touch keep their weights and moments as they are (the 'lazy Adam' rule); a touched
    row gets exactly Adam's update. Dense gradients, and every other backend, take plain Adam.

    The weights of `slow_layers` take `slow_scale` times the learning rate: a pretrained
    encoder fine-tuned more gently than the new layers on top of it (ULMFiT's discriminative
    learning rates). Scaling the gradient instead would change nothing: Adam's steps do not
    depend on the gradient's scale.
    """

    def __init__(self, *args, slow_layers=(), slow_scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.slow_layers, self.slow_scale = tuple(slow_layers), float(slow_scale)

    def _is_slow(self, variable) -> bool:
        if self.slow_scale == 1 or not self.slow_layers:
            return False
        # the backend may hand over its own variable: find the Keras one, which knows its path
        owner = self._trainable_variables[self._get_variable_index(variable)]
        return owner.path.split("/")[0] in self.slow_layers

    def update_step(self, gradient, variable, learning_rate):
        if self._is_slow(variable):
            learning_rate = learning_rate * self.slow_scale
        if keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        # One row per index: a row the batch used several times sums its gradients.
        rows, position = tf.unique(gradient.indices)
        values = tf.math.unsorted_segment_sum(
            ops.cast(gradient.values, variable.dtype), position, tf.shape(rows)[0]
        )
        step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1 = ops.cast(self.beta_1, variable.dtype)
        beta_2 = ops.cast(self.beta_2, variable.dtype)
        alpha = (
            ops.cast(learning_rate, variable.dtype)
            * ops.sqrt(1 - ops.power(beta_2, step))
            / (1 - ops.power(beta_1, step))
        )
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * ops.square(values)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        change = alpha * m_rows / (ops.sqrt(v_rows) + self.epsilon)
        self.assign_sub(variable, tf.IndexedSlices(change, rows))

    def get_config(self):
        return {
            **super().get_config(),
            "slow_layers": list(self.slow_layers),
            "slow_scale": self.slow_scale,
        }
