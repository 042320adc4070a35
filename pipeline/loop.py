"""The one training loop, for training and pretraining, on one process or a tf.distribute cluster.

Keras 3's `fit` cannot train under MultiWorkerMirroredStrategy (it averages input batches and
scalar metrics across workers in ways that fail: keras-team/keras#20585), so every run uses this
small loop, the one TensorFlow's multi-worker guides write: `strategy.run` per step, gradients
summed across replicas by the optimizer, loss and accuracy summed across replicas once per step.
One process is simply the default strategy: one replica.

A task says what a batch means: `task(model, inputs, targets, training)` returns (losses,
correct), each shaped like the batch's weights (one per review, or one per predicted character).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

LOGS = ["accuracy", "loss", "val_accuracy", "val_loss"]  # what an epoch reports, as under fit

Task = Callable[..., tuple]


def fit(model, strategy, task: Task, train, val, epochs: int, callbacks, verbose: bool) -> dict:
    """Train `model` (built under `strategy`) on (dataset, steps) pairs; Keras-style history.

    `callbacks` (e.g. EarlyStopping) see the same epoch logs as under `fit`, computed over all
    replicas, so every worker makes the same decisions. The model's optimizer is used.
    """
    import keras
    import tensorflow as tf

    def totals(losses, correct, weights):
        seen = tf.cast(weights > 0, losses.dtype)
        sums = [tf.reduce_sum(losses * seen), tf.reduce_sum(correct * seen), tf.reduce_sum(seen)]
        return tf.stack(sums)

    def train_step(inputs, targets, weights):
        with tf.GradientTape() as tape:
            losses, correct = task(model, inputs, targets, training=True)
            # Weights sum to 1 over a global batch: the optimizer sums gradients over replicas.
            loss = tf.reduce_sum(losses * weights)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return totals(losses, correct, weights)

    def val_step(inputs, targets, weights):
        return totals(*task(model, inputs, targets, training=False), weights)

    def runner(step):
        @tf.function(reduce_retracing=True)
        def run(iterator):
            return strategy.reduce("SUM", strategy.run(step, args=next(iterator)), axis=None)

        return run

    with strategy.scope():  # its slots are created once, mirrored, not inside a traced step
        model.optimizer.build(model.trainable_variables)
    train_run, val_run = runner(train_step), runner(val_step)
    (train_ds, steps), (val_ds, val_steps) = train, val
    train_it, val_it = iter(train_ds), iter(val_ds)

    callbacks = keras.callbacks.CallbackList(callbacks, model=model)
    history: dict[str, list[float]] = {}
    model.stop_training = False
    callbacks.on_train_begin()
    for epoch in range(epochs):
        bar = None
        if verbose:  # Keras' own progress bar, as fit shows it
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            bar = keras.utils.Progbar(
                steps, verbose=1 if sys.stdout.isatty() else 2, stateful_metrics=LOGS
            )
        callbacks.on_epoch_begin(epoch)
        sums = np.zeros(3)  # loss, correct, count: summed over replicas and steps
        for step in range(steps):
            sums += train_run(train_it).numpy()
            callbacks.on_train_batch_end(step)
            if bar:
                bar.update(step + 1, [("accuracy", sums[1] / sums[2])], finalize=False)
        val_sums = sum(val_run(val_it).numpy() for _ in range(val_steps))
        logs = {
            "accuracy": sums[1] / sums[2],
            "loss": sums[0] / sums[2],
            "val_accuracy": val_sums[1] / val_sums[2],
            "val_loss": val_sums[0] / val_sums[2],
        }
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        if bar:
            bar.update(steps, list(logs.items()), finalize=True)
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end()
    return history


def epoch_timer(epoch_seconds: list[float], after_first_step: bool = False):
    """A callback that appends each epoch's training seconds (first to last step) to the list.

    `after_first_step` starts the clock when the first step ends instead: the graph's tracing
    left out (benchmarks/speed.py compares steady rates). Works with Keras' fit as with ours.
    """
    import time

    import keras

    clock: dict[str, float] = {}

    def step_end(step: int, logs=None) -> None:
        clock["end"] = time.perf_counter()
        if after_first_step and step == 0:
            clock["start"] = clock["end"]

    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: clock.update(start=time.perf_counter()),
        on_train_batch_end=step_end,
        on_epoch_end=lambda epoch, logs: epoch_seconds.append(clock["end"] - clock["start"]),
    )
