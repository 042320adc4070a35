"""Train the classifier on length-bucketed batches with early stopping, then calibrate it.

Starts from the pretrained encoder when `pretrain` is on; keeps the epoch with the lowest
validation loss; fits the temperature of the saved model's sigmoid on validation. With
`self_train_rounds`, the calibrated model then teaches noisy students (pipeline/selftrain.py)
and the better of them on validation is the one saved.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline import distributed, loop, to_onnx
from pipeline.batches import batch_indices, labelled_batches, lengths_of, load_encoded
from pipeline.config import Config
from pipeline.files import atomic_path, write_json_atomic
from pipeline.plots import plot_curves
from pipeline.tokenizer import CharTokenizer, trim_padding

SCORING_BATCH = 1024  # rows per call when scoring validation for the temperature
ONNX_CHECK_ROWS = 2048  # validation rows model.onnx must score as model.keras does


def train(config: Config, quiet: bool = False) -> dict | None:
    """Run the stage: encoded splits + tokenizer (+ pretrained encoder) in; model, history and
    curves out.

    With `distribute = "multi-worker"` every worker of the cluster trains; only the chief
    writes, and the other workers return None.
    """
    import keras

    from pipeline.model import build_model, load_pretrained

    data = load_encoded(config.encoded_path, ("x_train", "y_train", "x_val", "y_val"))
    tokenizer = CharTokenizer.load(config.tokenizer_path)
    # First: a cluster must be set up before TensorFlow starts its runtime.
    strategy, cluster = distributed.strategy_for(config.distribute, config.cluster_timeout)
    keras.utils.set_random_seed(config.seed)
    if cluster:
        distributed.check_same_inputs(strategy, cluster, config)

    def batches(x, y, seed):
        # Each replica keeps the configured batch size: the global batch grows with them.
        return labelled_batches(
            x, y, config.batch_size, tokenizer.padding, config.mask_padding, seed, strategy
        )

    train_data = batches(data["x_train"], data["y_train"], config.seed)
    val_data = batches(data["x_val"], data["y_val"], None)
    epoch_seconds: list[float] = []
    callbacks = [
        loop.epoch_timer(epoch_seconds),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        ),
    ]
    with distributed.peer_failures(cluster):
        with strategy.scope():
            jamo_table = tokenizer.jamo_table() if config.jamo_features else None
            model = build_model(config, tokenizer.vocab_size, train_data[1], jamo_table)
            started_from = None
            if config.pretrain != "none":
                pretrained = keras.saving.load_model(
                    config.pretrained_path, compile=False, safe_mode=True
                )
                started_from = load_pretrained(model, pretrained)
        started = time.perf_counter()
        history = loop.fit(
            model,
            strategy,
            answer_task,
            train_data,
            val_data,
            config.epochs,
            callbacks,
            verbose=not quiet,
        )
        seconds = time.perf_counter() - started
        final, temperature, logits = calibrated(
            model, data["x_val"], data["y_val"], tokenizer.padding, config.mask_padding
        )
        if cluster and not cluster.chief:
            distributed.save_as_worker(final)
            distributed.finish_together(cluster, config.cluster_timeout)
            return None
        self_training = None
        if config.self_train_rounds:  # one process (config refuses multi-worker)
            from pipeline.selftrain import self_train

            final, self_training = self_train(
                config, final, temperature, logits, data, tokenizer, strategy, quiet
            )

    # model.keras and model.onnx land together, just before the stage's record: a service
    # watching the folder sees the new pair and, moments later, the record that names it.
    with atomic_path(config.model_path) as keras_tmp:
        final.save(keras_tmp)
        onnx_model, onnx_difference = checked_onnx(keras_tmp, data["x_val"], tokenizer, config)
        best = int(np.argmin(history["val_loss"]))
        summary = {
            "epochs_run": len(history["val_loss"]),
            "best_epoch": best + 1,
            "val_loss": history["val_loss"][best],
            "val_accuracy": history["val_accuracy"][best],
            "temperature": round(temperature, 4),
            "val_log_loss_calibrated": round(log_loss(logits / temperature, data["y_val"]), 5),
            "pretrained_layers": started_from,
            "onnx_max_difference": onnx_difference,
            "train_seconds": round(seconds, 1),
            # the fastest epoch: the first one also traces the graph
            "train_samples_per_second": round(len(data["y_train"]) / min(epoch_seconds)),
            "parameters": final.count_params(),
            "replicas": strategy.num_replicas_in_sync,
            "workers": len(cluster.names) if cluster else 1,
        }
        if self_training:  # the figures above are the teacher's; this says which model was saved
            summary["self_training"] = self_training
        write_json_atomic(config.history_path, {**summary, "history": history})
        loss_title = "loss"
        if config.ngram_order and config.branch_loss_weight:
            # what training minimised, so its scale is not read as the answer's cross-entropy
            loss_title = f"loss (answer + {config.branch_loss_weight:g} x each branch's)"
        plot_curves(history, config.training_curves_path, loss_title)
        to_onnx.save(onnx_model, config.onnx_path, config.onnx_weights_path)
    if cluster:
        distributed.finish_together(cluster, config.cluster_timeout)
    return summary


def checked_onnx(keras_file: Path, x_val: np.ndarray, tokenizer: CharTokenizer, config: Config):
    """The saved model.keras as ONNX, checked against it on validation reviews and on texts
    that stress the graph (empty, emoji only, 5,000 characters, a lone jamo, digits); and the
    largest difference in probability."""
    import keras

    import pipeline.layers  # noqa: F401  registers our layers for safe-mode loading
    from pipeline.cleaning import clean_texts

    saved = keras.saving.load_model(keras_file, compile=False, safe_mode=True)
    hostile = ["", "😀😀😀", "좋아요 별로 " * 715, "ㅋ", "2024 12 07", "a", "배송 빠르고 좋아요"]
    sample = np.concatenate([x_val[:ONNX_CHECK_ROWS], tokenizer.encode(clean_texts(hostile))])
    return to_onnx.checked(saved, sample, config.mask_padding, tokenizer.padding)


def answer_task(model, x, y, training: bool):
    """Per review: the compiled loss (the answer's, plus the branches' if any), and whether the
    answer (column 0) is right."""
    import tensorflow as tf

    from pipeline.labels import THRESHOLD

    probs = model(x, training=training)
    losses = model.loss.call(y[:, None], probs)
    # y > THRESHOLD: a soft label counts as the class it leans to
    correct = tf.cast(tf.equal(probs[:, 0] > THRESHOLD, y > THRESHOLD), tf.float32)
    return losses, correct


def calibrated(model, x_val: np.ndarray, y_val: np.ndarray, padding: str, trim: bool):
    """The model a predictor needs with its temperature fitted on validation, that temperature,
    and the validation logits it was fitted on."""
    logits = answer_logits(model, x_val, padding, trim)
    temperature = fit_temperature(logits, y_val)
    return for_inference(model, temperature), temperature, logits


def for_inference(model, temperature: float = 1.0):
    """The model a predictor needs: its calibrated answer, without the optimizer's state.

    The same layers and weights, uncompiled, ending in a `Temperature` sigmoid of the logit.
    Adam keeps two moments per weight: saved along, they would triple model.keras for nothing a
    predictor uses; so would training-only heads.
    """
    import keras

    from pipeline.layers import Temperature

    answer = Temperature(temperature, name="positive")(model.get_layer("logit").output)
    return keras.Model(model.input, answer, name=model.name)


def answer_logits(model, x: np.ndarray, padding: str, trim: bool) -> np.ndarray:
    """The answer's logit for every row of x, scored in length-sorted batches."""
    import keras
    import tensorflow as tf

    logit = keras.Model(model.input, model.get_layer("logit").output)
    call = tf.function(lambda batch: logit(batch, training=False), reduce_retracing=True)
    lengths = lengths_of(x)
    out = np.empty(len(x), dtype=np.float64)
    for index in batch_indices(lengths, SCORING_BATCH, None):
        batch = trim_padding(x[index], int(lengths[index].max()), padding) if trim else x[index]
        out[index] = call(tf.constant(batch)).numpy().reshape(-1)
    return out


def log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(logits) against 0/1 labels."""
    # log(1 + e^z) - y z, written so large |z| never overflows
    return float(np.mean(np.logaddexp(0, logits) - labels * logits))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the log loss of sigmoid(logit / T): Newton's method on 1/T.

    The loss is convex in 1/T (a one-weight logistic regression on the logit), so Newton from
    T = 1 converges in a few steps; halving a step that would cross zero keeps T positive.
    """
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if not np.any(z):
        return 1.0  # nothing to scale (an untrained or empty model)
    a = 1.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-a * z))
        gradient = np.sum((p - y) * z)
        curvature = np.sum(p * (1 - p) * z * z)
        if curvature <= 0:
            break
        step = gradient / curvature
        while a - step <= 0:
            step /= 2
        a -= step
        if abs(step) < 1e-9 * a:
            break
    return 1 / a
