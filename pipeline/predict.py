"""Load model and tokenizer once; clean -> encode -> score reviews in length-sorted batches."""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import gc
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.cleaning import clean_texts
from pipeline.errors import PipelineError
from pipeline.labels import NEGATIVE, POSITIVE, THRESHOLD, is_positive, label_of  # noqa: F401
from pipeline.tokenizer import CharTokenizer, trim_padding

DEFAULT_ARTIFACTS = Path("artifacts")
LENGTH_STEP = 8  # a batch is cut into calls only where its width crosses a multiple of this
CALL_COST = 256  # what one more model call costs, in padded cells (rows x width) of compute
IN_FLIGHT = 2  # model calls running at once


def _as_text_list(texts: str | Iterable[str]) -> list[str]:
    """Accept a string or an iterable of strings; name the position of anything else."""
    if isinstance(texts, str):
        return [texts]
    if texts is None or not isinstance(texts, Iterable):
        raise TypeError(
            f"reviews must be a string or an iterable of strings, not {type(texts).__name__}"
        )
    items = list(texts)
    for position, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"review at position {position} is {type(item).__name__}, not str")
    return items


class Predictor:
    """A trained model with its tokenizer, ready to score reviews.

    A review with nothing left after cleaning (empty, only emoji or Latin letters) has no
    characters the model reads: it gets the score of an empty review, the model's prior.
    """

    def __init__(
        self,
        artifacts_dir: str | Path = DEFAULT_ARTIFACTS,
        batch_size: int = 512,
    ):
        import keras  # heavy: imported when a predictor is made, not when the package is

        import pipeline.layers  # noqa: F401  registers our layers for safe-mode loading

        self.artifacts_dir = artifacts_dir = Path(artifacts_dir)
        self.tokenizer = CharTokenizer.load(artifacts_dir / "tokenizer.json")
        model_path = artifacts_dir / "model.keras"
        if not model_path.is_file():
            raise PipelineError(
                f"{model_path} is missing; train a model with `python -m pipeline run` first"
            )
        try:
            self.model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a bad file; all mean the same
            raise PipelineError(
                f"{model_path} cannot be loaded ({type(exc).__name__}: {exc}); retrain with "
                "`python -m pipeline train`"
            ) from None
        embedding = self._embedding_layer()
        if embedding.input_dim != self.tokenizer.vocab_size:
            raise PipelineError(
                f"{artifacts_dir / 'tokenizer.json'} has {self.tokenizer.vocab_size} indices but "
                f"{model_path} embeds {embedding.input_dim}: they come from different runs; rerun "
                "`python -m pipeline train`"
            )
        # Without masking the model saw full-length padded inputs, so it must keep seeing them.
        self._trim = bool(embedding.mask_zero)
        self.batch_size = batch_size
        self._forward = _forward_pass(self.model)

    def _embedding_layer(self):
        import keras

        for layer in self.model.layers:
            if isinstance(layer, keras.layers.Embedding):
                return layer
        raise PipelineError("the saved model has no Embedding layer; it is not a model of ours")

    def encode(self, texts: str | Iterable[str]) -> np.ndarray:
        """Clean and encode exactly as at training time: an (n, maxlen) int32 matrix."""
        return self.tokenizer.encode(clean_texts(_as_text_list(texts)))

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Positive-class probabilities of encoded rows, scored in length-sorted batches.

        Two batches are in flight at once (the model releases the GIL), so one's Python glue
        and the other's compute overlap and a second core is used even when an op is small.
        """
        probs = np.empty(len(encoded), dtype=np.float32)
        pending: collections.deque = collections.deque()
        for index, batch in self._batches(encoded):
            if len(pending) == IN_FLIGHT:
                done, future = pending.popleft()
                probs[done] = future.result()
            pending.append((index, _pool().submit(self._forward, batch)))
        for done, future in pending:
            probs[done] = future.result()
        return probs

    def _batches(self, encoded: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row indices, their padded batch) in length order, each cut to its longest review."""
        lengths = np.count_nonzero(encoded, axis=1)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(encoded), self.batch_size):
            chunk = order[start : start + self.batch_size]
            if not self._trim:
                yield chunk, encoded[chunk]
                continue
            # A chunk of very different lengths (a service's micro-batch) runs as a few calls,
            # each cut to its own longest review, when that costs less than one wide call.
            for lo, hi in split_by_width(lengths[chunk]):
                index = chunk[lo:hi]
                width = int(lengths[index[-1]])
                yield index, trim_padding(encoded[index], width, self.tokenizer.padding)

    def predict_proba(self, texts: str | Iterable[str]) -> np.ndarray:
        """Probability that each review is positive, as a float array in input order."""
        return self.predict_encoded(self.encode(texts))

    def predict(self, texts: str | Iterable[str]) -> str | list[str]:
        """'긍정' or '부정' per review; a single string gives a single label."""
        labels = [label_of(p) for p in self.predict_proba(texts)]
        return labels[0] if isinstance(texts, str) else labels

    def predict_stream(
        self, lines: Iterable[str], chunk: int = 8192
    ) -> Iterator[tuple[str, float]]:
        """(label, probability) for each line of an arbitrarily long stream, in constant memory."""
        buffer: list[str] = []
        for line in lines:
            buffer.append(line)
            if len(buffer) == chunk:
                yield from self._label_chunk(buffer)
                buffer = []
        if buffer:
            yield from self._label_chunk(buffer)

    def _label_chunk(self, texts: list[str]) -> Iterator[tuple[str, float]]:
        for p in self.predict_proba(texts):
            yield label_of(p), float(p)


def _forward_pass(model) -> Callable[[np.ndarray], np.ndarray]:
    """Padded int32 ids (batch, length) -> probabilities (batch,): one traced graph, any shape.

    No XLA: the service is bound by HTTP, not the model (benchmarks/RESULTS.md, "XLA in the
    service"), and XLA's compiled executables outlive the model they were compiled for.
    """
    import keras

    if keras.backend.backend() != "tensorflow":  # the backend's own path
        return lambda x: np.asarray(model.predict_on_batch(x)).reshape(-1)
    import tensorflow as tf

    spec = tf.TensorSpec(shape=(None, None), dtype=tf.int32)
    graph = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    # Trace here, in one thread: tracing one Keras model from two threads at once breaks it,
    # and calls run on a pool.
    graph.get_concrete_function()
    return lambda x: graph(tf.constant(x)).numpy().reshape(-1)


def split_by_width(lengths: np.ndarray) -> list[tuple[int, int]]:
    """Cut ascending `lengths` into runs, one model call each, minimizing the estimated cost.

    A call costs its rows times its width, plus CALL_COST for being a call at all; cuts are
    tried only where the width (in steps of LENGTH_STEP) changes, so this is a tiny search.
    """
    steps = -(-lengths // LENGTH_STEP)
    edges = [0, *(np.flatnonzero(np.diff(steps)) + 1).tolist(), len(lengths)]
    best = [0.0] + [float("inf")] * (len(edges) - 1)
    cut = [0] * len(edges)
    for j in range(1, len(edges)):
        width = int(steps[edges[j] - 1]) * LENGTH_STEP
        for i in range(j):
            cost = best[i] + (edges[j] - edges[i]) * width + CALL_COST
            if cost < best[j]:
                best[j], cut[j] = cost, i
    runs, j = [], len(edges) - 1
    while j:
        runs.append((edges[cut[j]], edges[j]))
        j = cut[j]
    return runs[::-1]


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads model calls run on, shared by every predictor."""
    return concurrent.futures.ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="predict")


def _stamp(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def artifact_stamps(artifacts_dir: str | Path) -> tuple[int, int]:
    """Modification times of model.keras and tokenizer.json (0 if missing): a change reloads."""
    folder = Path(artifacts_dir)
    return _stamp(folder / "model.keras"), _stamp(folder / "tokenizer.json")


# One predictor per artifacts folder: a changed file replaces it, so an old model (and its
# compiled graphs) is never kept alive beside the new one.
_PREDICTORS: dict[Path, tuple[tuple[int, int], Predictor]] = {}
_PREDICTORS_LOCK = threading.Lock()


def get_predictor(artifacts_dir: str | Path = DEFAULT_ARTIFACTS) -> Predictor:
    """The folder's predictor, loaded once and reloaded only when a file changes."""
    folder = Path(artifacts_dir).resolve()
    key = artifact_stamps(folder)
    with _PREDICTORS_LOCK:
        cached = _PREDICTORS.get(folder)
        if cached is not None and cached[0] == key:
            return cached[1]
        stale = _PREDICTORS.pop(folder, None)
        predictor = Predictor(folder)
        _PREDICTORS[folder] = (key, predictor)
        if stale is not None:
            # A Keras model is full of reference cycles: only a collection frees the old one.
            del stale
            gc.collect()
        return predictor


def sentiment_predict(
    texts: str | Iterable[str], artifacts_dir: str | Path = DEFAULT_ARTIFACTS
) -> str | list[str]:
    """Label reviews '긍정' (positive) or '부정' (negative) with the trained model."""
    return get_predictor(artifacts_dir).predict(texts)
