"""Train the model on length-bucketed batches, with early stopping and a best checkpoint."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.files import atomic_path, write_json_atomic
from pipeline.tokenizer import CharTokenizer, trim_padding

POOL_BATCHES = 50  # batches sorted together: enough to group similar lengths, little order bias


def load_encoded(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of the tokenize stage's .npz (each is read only when asked for)."""
    if not path.is_file():
        raise PipelineError(f"{path} is missing; run `python -m pipeline tokenize` first")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in keys}


def batch_indices(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, replicas: int = 1
):
    """Index batches of similar lengths: shuffle, sort within pools, shuffle the batches.

    With `rng=None` (validation) batches are simply consecutive in sorted order. A last batch
    too small to give each of `replicas` a row joins the batch before it (of similar lengths).
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        shuffled = rng.permutation(len(lengths))
        pool = batch_size * POOL_BATCHES
        batches = []
        for start in range(0, len(shuffled), pool):
            chunk = shuffled[start : start + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if len(batches) > 1 and len(batches[-1]) < replicas:
        batches[-2:] = [np.concatenate(batches[-2:])]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def labelled_batch(x, y, index, lengths, config: Config, padding: str):
    """Rows `index` of x (cut to their longest review when masked) and their float labels."""
    batch = x[index]
    if config.mask_padding:
        batch = trim_padding(batch, int(lengths[index].max()), padding)
    return batch, y[index].astype(np.float32)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    config: Config,
    padding: str,
    shuffle: bool,
    batch_size: int | None = None,
):
    """A tf.data pipeline of (batch, labels), each batch cut to its longest review when masked."""
    import tensorflow as tf

    batch_size = batch_size or config.batch_size
    lengths = np.count_nonzero(x, axis=1)
    rng = np.random.default_rng(config.seed) if shuffle else None

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for index in batch_indices(lengths, batch_size, rng):
            yield labelled_batch(x, y, index, lengths, config, padding)

    signature = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None,), tf.float32))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    # Pools are whole multiples of the batch size, so the count is the same as unpooled.
    count = -(-len(x) // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(count)).prefetch(2)


def train(config: Config, quiet: bool = False) -> dict | None:
    """Run the stage: encoded splits + tokenizer in; model, history and curves out.

    With `distribute = "multi-worker"` every worker of the cluster trains; only the chief
    writes, and the other workers return None.
    """
    import keras

    from pipeline import distributed
    from pipeline.model import build_model

    data = load_encoded(config.encoded_path, ("x_train", "y_train", "x_val", "y_val"))
    tokenizer = CharTokenizer.load(config.tokenizer_path)
    # First: a cluster must be set up before TensorFlow starts its runtime.
    strategy, cluster = distributed.strategy_for(config.distribute, config.cluster_timeout)
    keras.utils.set_random_seed(config.seed)
    replicas = strategy.num_replicas_in_sync
    if cluster:
        distributed.check_same_inputs(strategy, cluster, config)
    spread = replicas > 1 or cluster is not None
    if spread:
        # Each replica keeps the configured batch size: the global batch grows with them.
        train_ds = distributed.distributed_dataset(
            data["x_train"], data["y_train"], config, tokenizer.padding, True, strategy
        )
        val_ds = distributed.distributed_dataset(
            data["x_val"], data["y_val"], config, tokenizer.padding, False, strategy
        )
        steps = train_ds[1]
    else:
        train_ds = make_dataset(data["x_train"], data["y_train"], config, tokenizer.padding, True)
        val_ds = make_dataset(data["x_val"], data["y_val"], config, tokenizer.padding, False)
        steps = len(train_ds)

    # Each epoch's training steps alone, from its start to its last batch (not validation).
    clock, epoch_seconds = {}, []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: clock.update(start=time.perf_counter()),
        on_train_batch_end=lambda batch, logs: clock.update(end=time.perf_counter()),
        on_epoch_end=lambda epoch, logs: epoch_seconds.append(clock["end"] - clock["start"]),
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    with distributed.peer_failures(cluster):
        with strategy.scope():
            jamo_table = tokenizer.jamo_table() if config.jamo_features else None
            model = build_model(config, tokenizer.vocab_size, steps, jamo_table)
        started = time.perf_counter()
        if spread:
            history = distributed.fit(
                model, strategy, config, train_ds, val_ds, [timer, early_stopping], not quiet
            )
        else:
            history = _fit(model, config, train_ds, val_ds, [timer, early_stopping], quiet)
        seconds = time.perf_counter() - started
        if cluster and not cluster.chief:
            distributed.save_as_worker(for_inference(model))
            distributed.finish_together(cluster, config.cluster_timeout)
            return None
        with atomic_path(config.model_path) as tmp:
            for_inference(model).save(tmp)

    history = {k: [float(v) for v in values] for k, values in history.items()}
    best = int(np.argmin(history["val_loss"]))
    summary = {
        "epochs_run": len(history["val_loss"]),
        "best_epoch": best + 1,
        "val_loss": history["val_loss"][best],
        "val_accuracy": history["val_accuracy"][best],
        "train_seconds": round(seconds, 1),
        # the fastest epoch: the first one also traces the graph
        "train_samples_per_second": round(len(data["y_train"]) / min(epoch_seconds)),
        "parameters": model.count_params(),
        "replicas": replicas,
        "workers": len(cluster.names) if cluster else 1,
    }
    write_json_atomic(config.artifacts_dir / "history.json", {**summary, "history": history})
    loss_title = "loss"
    if config.ngram_order and config.branch_loss_weight:
        # what training minimised, so its scale is not read as the answer's cross-entropy alone
        loss_title = f"loss (answer + {config.branch_loss_weight:g} x each branch's)"
    plot_curves(history, config.artifacts_dir / "training_curves.png", loss_title)
    if cluster:
        distributed.finish_together(cluster, config.cluster_timeout)
    return summary


def for_inference(model):
    """The model a predictor needs: its `positive` answer, without the optimizer's state.

    The same layers and weights, uncompiled. Adam keeps two moments per weight: saved along,
    they would triple model.keras for nothing a predictor uses; so would training-only heads.
    """
    import keras

    return keras.Model(model.input, model.get_layer("positive").output, name=model.name)


def _fit(model, config: Config, train_ds, val_ds, callbacks: list, quiet: bool) -> dict:
    """Keras' own fit, with a best checkpoint in a scratch folder."""
    import keras

    # The checkpoint lives in a scratch folder: a killed run never touches model.keras.
    scratch = config.artifacts_dir / ".train"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    checkpoint = keras.callbacks.ModelCheckpoint(
        scratch / "best.keras", monitor="val_loss", save_best_only=True
    )
    verbose = 0 if quiet else (1 if sys.stdout.isatty() else 2)
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        callbacks=[*callbacks, checkpoint],
        verbose=verbose,
        shuffle=False,  # the dataset shuffles itself, by length pools
    ).history
    shutil.rmtree(scratch, ignore_errors=True)
    return history


def plot_curves(history: dict[str, list[float]], path: Path, loss_title: str = "loss") -> None:
    """Loss and accuracy per epoch, training against validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[metric], "o-", label="train")
        ax.plot(epochs, history[f"val_{metric}"], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(loss_title if metric == "loss" else metric)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
