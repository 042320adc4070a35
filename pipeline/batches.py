"""Batches: encoded rows in, length-bucketed batches out (split over any replicas to train).

Rows are grouped by length so each batch is cut to its longest review (no time spent on
padding). Every replica of every worker computes the same global batches from the same seed and
reads only its own part of each: all run the same number of steps and no row is dropped. One
process is the case of one replica.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from pipeline.errors import PipelineError
from pipeline.tokenizer import trim_padding

T = TypeVar("T")
POOL_BATCHES = 50  # batches sorted together: enough to group similar lengths, little order bias


def load_encoded(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of the tokenize stage's .npz (each is read only when asked for)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in keys}


def lengths_of(x: np.ndarray) -> np.ndarray:
    """Ids per padded row (padding is 0)."""
    return np.count_nonzero(x, axis=1)


def batch_indices(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, replicas: int = 1
) -> list[np.ndarray]:
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


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` consecutive items (the last may be shorter), in constant memory."""
    buffer: list[T] = []
    for item in items:
        buffer.append(item)
        if len(buffer) == size:
            yield buffer
            buffer = []
    if buffer:
        yield buffer


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


# A part of a global batch -> the arrays one replica trains on: (inputs, targets, weights).
# `weight` is 1 / the rows of the global batch; weights summed over a global batch give 1, so
# weighted losses summed over replicas are the global batch's mean, however unevenly it split.
MakePart = Callable[[np.ndarray, np.float32], tuple]


def distributed_batches(
    lengths: np.ndarray,
    batch_size: int,
    seed: int | None,
    strategy,
    make_part: MakePart,
    signature: tuple,
):
    """Per-replica parts of length-bucketed global batches for `strategy`, and steps per epoch.

    `seed=None` keeps one fixed order (validation); a seed shuffles anew every epoch. The
    dataset repeats forever: the loop takes `steps` per epoch.
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    if len(lengths) < replicas:
        raise PipelineError(
            f"{len(lengths)} reviews cannot give each of {replicas} replicas a batch; "
            "use more data or fewer replicas"
        )
    steps = len(replica_parts(lengths, batch_size, replicas, None))
    rng = np.random.default_rng(seed) if seed is not None else None

    def dataset_fn(context):
        local = replicas // context.num_input_pipelines  # this worker's replicas
        first = context.input_pipeline_id * local

        def parts() -> Iterator[tuple]:
            for step in replica_parts(lengths, batch_size, replicas, rng):
                weight = np.float32(1 / sum(len(part) for part in step))
                for part in step[first : first + local]:
                    yield make_part(part, weight)

        dataset = tf.data.Dataset.from_generator(parts, output_signature=signature)
        return dataset.repeat().prefetch(2)

    return strategy.distribute_datasets_from_function(dataset_fn), steps


def labelled_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    padding: str,
    trim: bool,
    seed: int | None,
    strategy,
):
    """(dataset, steps) of rows and labels for `strategy`; each replica gets `batch_size` rows."""
    part = labelled_part(x, y, padding, trim)
    return distributed_batches(
        lengths_of(x), batch_size, seed, strategy, part, labelled_signature()
    )


def labelled_part(x: np.ndarray, y: np.ndarray, padding: str, trim: bool) -> MakePart:
    """Rows of x (cut to their longest review when `trim`), their float labels and weights."""
    lengths = lengths_of(x)

    def make_part(index: np.ndarray, weight: np.float32) -> tuple:
        batch = x[index]
        if trim:
            batch = trim_padding(batch, int(lengths[index].max()), padding)
        labels = y[index].astype(np.float32)
        return batch, labels, np.full(len(index), weight, dtype=np.float32)

    return make_part


def labelled_signature():
    """The tf.data signature of `labelled_part`'s arrays."""
    import tensorflow as tf

    return (
        tf.TensorSpec((None, None), tf.int32),
        tf.TensorSpec((None,), tf.float32),
        tf.TensorSpec((None,), tf.float32),
    )
