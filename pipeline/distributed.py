"""Training on several replicas or machines with tf.distribute: the cluster, the input, the loop.

`--distribute mirrored` uses every local GPU (or CPU); `--distribute multi-worker` a cluster
named by TF_CONFIG, every worker started with the same command. Keras 3's `fit` cannot train
under MultiWorkerMirroredStrategy (it averages input batches and scalar metrics across workers
in ways that fail: keras-team/keras#20585), so distributed runs use the small loop below, the
one TensorFlow's multi-worker guides write: `strategy.run` per step, gradients summed across
replicas by the optimizer, loss and accuracy summed across replicas once per step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.files import sha256_file
from pipeline.train import batch_indices, labelled_batch

ROLES = ("chief", "worker")  # the tasks that train; TF_CONFIG may name others (evaluator, ps)
# TensorFlow's errors when a peer is gone: its socket closed, its heartbeats stopped, a deadline.
PEER_ERRORS = ("UnavailableError", "DeadlineExceededError", "AbortedError", "CancelledError")
LOGS = ["accuracy", "loss", "val_accuracy", "val_loss"]  # what an epoch reports, as under fit


@dataclass(frozen=True)
class Cluster:
    """The training tasks of a TF_CONFIG cluster, in order (the chief first), and this one."""

    addresses: tuple[str, ...]
    names: tuple[str, ...]  # "worker 1 (host:port)", for messages
    index: int  # this process, in that order

    @property
    def chief(self) -> bool:
        """Whether this process writes the artifacts: the chief task, else worker 0."""
        return self.index == 0

    @property
    def me(self) -> str:
        return self.names[self.index]

    def others(self) -> list[str]:
        return [name for i, name in enumerate(self.names) if i != self.index]


def read_tf_config() -> Cluster:
    """The cluster named by TF_CONFIG, checked, or a PipelineError saying what is wrong."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise PipelineError(
            "--distribute multi-worker needs TF_CONFIG naming the cluster and this worker, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        tasks = [(role, i, a) for role in ROLES for i, a in enumerate(cluster.get(role) or [])]
        me = [(role, i) for role, i, _ in tasks].index((task["type"], int(task["index"])))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PipelineError(
            "TF_CONFIG is not a valid cluster for training: it needs "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}} '
            "with N the position of this worker in that list"
        ) from None
    return Cluster(
        addresses=tuple(a for _, _, a in tasks),
        names=tuple(f"{role} {i} ({a})" for role, i, a in tasks),
        index=me,
    )


def strategy_for(name: str, cluster_timeout: float = 300.0):
    """(strategy, cluster): TensorFlow's own engine for `distribute`, and the TF_CONFIG cluster
    for multi-worker (None otherwise)."""
    import tensorflow as tf

    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices]), None
    if name != "multi-worker":
        return tf.distribute.get_strategy(), None
    cluster = read_tf_config()
    _coordinate(cluster, cluster_timeout)
    with peer_failures(cluster, joining_within=cluster_timeout):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return strategy, cluster


def _coordinate(cluster: Cluster, timeout: float) -> None:
    """Set up TensorFlow's coordination service as the strategy would, with a deadline.

    The strategy's own setup waits forever, deaf even to Ctrl-C, for a worker that never
    starts; registering through a barrier with a timeout makes that a DeadlineExceededError
    naming the missing workers. The service also checks every worker's heartbeat, so one that
    dies or hangs later is reported within seconds.
    """
    from tensorflow.python.eager import context

    leader = cluster.names[0].split()[0]  # the chief, else worker 0
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{leader}/replica:0/task:0",
        cluster_register_timeout_in_ms=int(timeout * 1000),
    )
    context.context().coordination_service.cluster_register_with_barrier = True


@contextlib.contextmanager
def peer_failures(cluster: Cluster | None, joining_within: float | None = None) -> Iterator[None]:
    """Turn TensorFlow's errors about an unreachable or dead worker into one sentence.

    `joining_within`: the cluster is forming, and this many seconds were given to it.
    """
    try:
        yield
    except Exception as exc:
        if cluster is None or type(exc).__name__ not in PEER_ERRORS:
            raise
        # TensorFlow names tasks /job:worker/replica:0/task:1; the unhealthy or timed-out
        # ones are listed last, after the task that noticed.
        text = str(exc)
        for marker in ("unhealthy", "timed out task names", "remote target"):
            if marker in text:
                text = text[text.find(marker) :]
                break
        tasks = re.findall(r"/job:(chief|worker)/(?:replica:\d+/)?task:(\d+)", text)
        named = [f"{role} {index} " for role, index in tasks]
        who = [n for n in cluster.others() if any(n.startswith(t) for t in named)]
        who = ", ".join(who or cluster.others())
        if joining_within is not None:
            message = (
                f"{who} could not be reached within {joining_within:.0f} s (cluster_timeout); "
                "start every worker with the same command and its own TF_CONFIG, and check the "
                "addresses"
            )
        else:
            message = (
                f"{who} stopped responding ({type(exc).__name__}), so training stopped and "
                "model.keras was left as it was; restart every worker with the same command"
            )
        raise PipelineError(message) from None


def check_same_inputs(strategy, cluster: Cluster, config: Config) -> None:
    """Every worker must train on the same data and settings, or their steps would not match."""
    import tensorflow as tf

    digest = hashlib.sha256(json.dumps(_train_settings(config), sort_keys=True).encode())
    for path in (config.encoded_path, config.tokenizer_path):
        digest.update(sha256_file(path).encode())
    words = np.frombuffer(digest.digest()[:16], dtype=np.int32)
    with peer_failures(cluster):
        seen = strategy.gather(tf.constant(words[None, :]), axis=0).numpy()
    if (seen != words).any():
        raise PipelineError(
            "the workers' prepared data, tokenizer or training settings differ; give every "
            "worker the same copy of data/processed/encoded.npz, artifacts/tokenizer.json and "
            "the same command"
        )


def _train_settings(config: Config) -> dict:
    settings = config.to_dict()
    return {name: settings[name] for name in Config.settings_of("train")}


def save_as_worker(model) -> None:
    """Save as the chief does, into a folder that is then deleted.

    Saving reads variables that MultiWorkerMirroredStrategy may sync with collective ops, which
    every worker must join; only the chief's copy is kept.
    """
    scratch = Path(tempfile.mkdtemp(prefix="pipeline-worker-"))
    try:
        model.save(scratch / "model.keras")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def finish_together(cluster: Cluster, timeout: float) -> None:
    """Wait until every worker has done its part, the chief's being to write the model.

    A worker that exits 0 has thus seen the chief's model written; if the chief dies first,
    the worker fails naming it. The chief's work is done by then: a worker that vanishes at
    this point changes nothing, so the chief does not wait for stragglers.
    """
    from tensorflow.python.eager import context

    try:
        with peer_failures(cluster):
            context.context().wait_at_barrier("train-written", int(timeout * 1000))
    except PipelineError:
        if not cluster.chief:
            raise


def replica_parts(
    lengths: np.ndarray, batch_size: int, replicas: int, rng: np.random.Generator | None
) -> list[list[np.ndarray]]:
    """Every step's rows for each replica: a global batch of batch_size x replicas rows of
    similar lengths, split into `replicas` parts whose sizes differ by at most one.

    Every row is used once. A last batch with fewer rows than replicas joins the batch before
    it, so no replica ever gets an empty part.
    """
    steps = batch_indices(lengths, batch_size * replicas, rng, replicas)
    return [np.array_split(index, replicas) for index in steps]


def distributed_dataset(
    x: np.ndarray, y: np.ndarray, config: Config, padding: str, shuffle: bool, strategy
):
    """Per-replica (batch, labels, weights) for a tf.distribute strategy, and steps per epoch.

    Every worker computes the same steps (same data, same seed) and reads only its own
    replicas' parts of each: each worker reads its own shard, all run the same number of steps,
    and no review is dropped. Each part is cut to its own longest review. A row weighs
    1 / the rows of its global batch, so the weighted losses summed over replicas are the
    global batch's mean loss, however unevenly its rows split.
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    if len(x) < replicas:
        raise PipelineError(
            f"{len(x)} reviews cannot give each of {replicas} replicas a batch; "
            "use more data or fewer replicas"
        )
    lengths = np.count_nonzero(x, axis=1)
    steps = len(replica_parts(lengths, config.batch_size, replicas, None))
    rng = np.random.default_rng(config.seed) if shuffle else None

    def dataset_fn(context):
        local = replicas // context.num_input_pipelines  # this worker's replicas
        first = context.input_pipeline_id * local

        def parts() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            for step in replica_parts(lengths, config.batch_size, replicas, rng):
                weight = np.float32(1 / sum(len(part) for part in step))
                for part in step[first : first + local]:
                    batch, labels = labelled_batch(x, y, part, lengths, config, padding)
                    yield batch, labels, np.full(len(part), weight, dtype=np.float32)

        signature = (
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None,), tf.float32),
            tf.TensorSpec((None,), tf.float32),
        )
        dataset = tf.data.Dataset.from_generator(parts, output_signature=signature)
        # Endless: the loop takes `steps` per epoch, so each pass is one epoch, freshly shuffled.
        return dataset.repeat().prefetch(2)

    return strategy.distribute_datasets_from_function(dataset_fn), steps


def fit(model, strategy, config: Config, train, val, callbacks, verbose: bool) -> dict:
    """Train `model` (built under `strategy`) on (dataset, steps) pairs; Keras-style history.

    `callbacks` (e.g. EarlyStopping) see the same epoch logs as under `fit`, computed over all
    replicas, so every worker makes the same decisions.
    """
    import keras
    import tensorflow as tf

    loss_fn = model.loss  # the compiled loss; .call gives one value per review

    def sums(x, y, probs):
        losses = loss_fn.call(y[:, None], probs)
        correct = tf.cast(tf.equal(tf.cast(probs[:, 0] > 0.5, tf.float32), y), tf.float32)
        count = tf.cast(tf.shape(y)[0], tf.float32)
        return losses, tf.stack([tf.reduce_sum(losses), tf.reduce_sum(correct), count])

    def train_step(x, y, weight):
        with tf.GradientTape() as tape:
            losses, totals = sums(x, y, model(x, training=True))
            # Each row weighs 1 / its global batch: the optimizer sums gradients over replicas.
            loss = tf.reduce_sum(losses * weight)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return totals

    def val_step(x, y, weight):
        return sums(x, y, model(x, training=False))[1]

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
    for epoch in range(config.epochs):
        bar = None
        if verbose:  # Keras' own progress bar, as fit shows it
            print(f"Epoch {epoch + 1}/{config.epochs}", flush=True)
            bar = keras.utils.Progbar(
                steps, verbose=1 if sys.stdout.isatty() else 2, stateful_metrics=LOGS
            )
        callbacks.on_epoch_begin(epoch)
        totals = np.zeros(3)  # loss, correct, reviews: summed over replicas and steps
        for step in range(steps):
            totals += train_run(train_it).numpy()
            callbacks.on_train_batch_end(step)
            if bar:
                bar.update(step + 1, [("accuracy", totals[1] / totals[2])], finalize=False)
        val_totals = sum(val_run(val_it).numpy() for _ in range(val_steps))
        logs = {
            "accuracy": totals[1] / totals[2],
            "loss": totals[0] / totals[2],
            "val_accuracy": val_totals[1] / val_totals[2],
            "val_loss": val_totals[0] / val_totals[2],
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
