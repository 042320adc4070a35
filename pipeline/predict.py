"""Load model and tokenizer once; clean -> encode -> score reviews in length-sorted batches."""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import functools
import logging
import os
import queue
import threading
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.cleaning import clean_texts
from pipeline.errors import PipelineError
from pipeline.tokenizer import CharTokenizer, trim_padding

POSITIVE, NEGATIVE = "긍정", "부정"  # the original notebook's labels
DEFAULT_ARTIFACTS = Path("artifacts")
LENGTH_STEP = 8  # with jit_compile, batch widths are rounded up to a multiple of this
CALL_COST = 256  # what one more model call costs, in padded cells (rows x width) of compute
IN_FLIGHT = 2  # model calls running at once

log = logging.getLogger(__name__)


THRESHOLD = 0.5  # a review is positive when its probability is above this


def is_positive(probabilities: float | np.ndarray) -> np.ndarray:
    """True where a probability is above THRESHOLD: the one threshold, label_of's too."""
    return np.asarray(probabilities) > THRESHOLD


def label_of(probability: float) -> str:
    """'긍정' above THRESHOLD, else '부정'."""
    return POSITIVE if is_positive(probability) else NEGATIVE


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

    `jit_compile=True` is for long-lived processes (the service, benchmarks): batches are padded
    to a few recurring shapes, each compiled with XLA in the background once it is first seen.
    """

    def __init__(
        self,
        artifacts_dir: str | Path = DEFAULT_ARTIFACTS,
        batch_size: int = 512,
        jit_compile: bool = False,
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
        self._forward = _Forward(self.model, jit_compile)

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
            for lo, hi in self._forward.split(lengths[chunk]):
                index = chunk[lo:hi]
                width = self._forward.width(int(lengths[index[-1]]), encoded.shape[1])
                yield index, trim_padding(encoded[index], width, self.tokenizer.padding)

    def xla_status(self) -> dict:
        """Whether XLA is on, and how many shapes are compiled and still queued."""
        forward = self._forward
        return {
            "enabled": forward.jit_compile,
            "compiled_shapes": len(forward._ready),
            "queued_shapes": len(forward._queued),
        }

    def wait_for_compiles(self, timeout: float | None = None) -> bool:
        """Block until every shape seen so far is XLA-compiled (jit_compile only); True if so."""
        return self._forward.wait(timeout)

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


class _Forward:
    """The model's forward pass: padded int32 ids (batch, length) -> probabilities (batch,).

    Always one traced graph for any shape. With jit_compile, rows are padded to a power of two
    (widths are already multiples of LENGTH_STEP), so shapes recur, and each new shape is queued
    for an XLA compile in a background thread: until it is ready the graph serves that shape, so
    no call waits seconds for a compile. Padding rows repeat a real review: never an empty one.
    """

    def __init__(self, model, jit_compile: bool) -> None:
        import keras

        self._ready: set[tuple[int, int]] = set()
        self._queued: set[tuple[int, int]] = set()
        self._idle = threading.Condition()
        if keras.backend.backend() != "tensorflow":  # no XLA to ask for: the backend's own path
            self._graph = lambda x: np.asarray(model.predict_on_batch(x))
            self.jit_compile = False
            return
        import tensorflow as tf

        spec = tf.TensorSpec(shape=(None, None), dtype=tf.int32)
        graph = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self._graph = lambda x: graph(tf.constant(x)).numpy()
        self.jit_compile = jit_compile
        # Trace here, in one thread: tracing one Keras model from two threads at once breaks
        # it, and calls run on a pool. XLA then compiles per shape at run time, not tracing.
        graph.get_concrete_function()
        if jit_compile:
            self._xla = tf.function(
                lambda x: model(x, training=False), input_signature=[spec], jit_compile=True
            )
            self._xla.get_concrete_function()

    def width(self, longest: int, maxlen: int) -> int:
        """Columns to keep for a batch whose longest review has `longest` ids."""
        if not self.jit_compile:
            return max(longest, 1)
        return min(max(-(-longest // LENGTH_STEP), 1) * LENGTH_STEP, maxlen)

    def rows(self, count: int) -> int:
        """Rows a batch of `count` reviews is run with: the next power of two under XLA."""
        return 1 << (count - 1).bit_length() if self.jit_compile else count

    def split(self, lengths: np.ndarray) -> list[tuple[int, int]]:
        """Cut ascending `lengths` into runs, one call each, minimizing the estimated cost.

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
                cost = best[i] + self.rows(edges[j] - edges[i]) * width + CALL_COST
                if cost < best[j]:
                    best[j], cut[j] = cost, i
        runs, j = [], len(edges) - 1
        while j:
            runs.append((edges[cut[j]], edges[j]))
            j = cut[j]
        return runs[::-1]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        rows = len(batch)
        if self.jit_compile:
            shape = (self.rows(rows), batch.shape[1])
            if shape in self._ready:
                if shape[0] > rows:
                    batch = np.concatenate([batch, np.repeat(batch[:1], shape[0] - rows, 0)])
                return self._xla(batch).numpy().reshape(-1)[:rows]
            if shape not in self._queued:
                self._queued.add(shape)
                _COMPILER.submit(self, shape)
        return self._graph(batch).reshape(-1)

    def compile(self, shape: tuple[int, int]) -> None:
        """Compile one shape (in the compiler thread); any failure turns XLA off for good."""
        try:
            if self.jit_compile:
                self._xla(np.ones(shape, dtype=np.int32))
                self._ready.add(shape)
        except Exception as exc:  # e.g. an op XLA cannot compile on this device
            log.warning("XLA compile failed (%s: %s); using the traced graph", type(exc), exc)
            self.jit_compile = False
        finally:
            with self._idle:
                self._queued.discard(shape)
                self._idle.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._queued, timeout)


class _Compiler:
    """One low-priority background thread that XLA-compiles queued shapes, one at a time."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, forward: _Forward, shape: tuple[int, int]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="xla-compile", daemon=True)
                self._thread.start()
        self._jobs.put((weakref.ref(forward), shape))

    def _run(self) -> None:
        try:  # compiling is background work: let serving threads have the cores first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while (job := self._jobs.get()) is not None:
            forward = job[0]()
            if forward is not None:
                forward.compile(job[1])

    def close(self) -> None:
        """Drop queued shapes and wait for the one being compiled, so exit never cuts into it."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        while True:
            try:
                ref, shape = self._jobs.get_nowait()
            except queue.Empty:
                break
            if (forward := ref()) is not None:  # release anyone waiting on it
                with forward._idle:
                    forward._queued.discard(shape)
                    forward._idle.notify_all()
        self._jobs.put(None)
        thread.join()


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads model calls run on, shared by every predictor."""
    return concurrent.futures.ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="predict")


_COMPILER = _Compiler()
atexit.register(_COMPILER.close)


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
_PREDICTORS: dict[Path, tuple[tuple[int, int, bool], Predictor]] = {}
_PREDICTORS_LOCK = threading.Lock()


def get_predictor(
    artifacts_dir: str | Path = DEFAULT_ARTIFACTS, jit_compile: bool = False
) -> Predictor:
    """The folder's predictor, loaded once and reloaded only when a file changes."""
    folder = Path(artifacts_dir).resolve()
    key = (*artifact_stamps(folder), jit_compile)
    with _PREDICTORS_LOCK:
        cached = _PREDICTORS.get(folder)
        if cached is not None and cached[0] == key:
            return cached[1]
        _PREDICTORS.pop(folder, None)  # let go of the old one before loading the new
        predictor = Predictor(folder, jit_compile=jit_compile)
        _PREDICTORS[folder] = (key, predictor)
        return predictor


def sentiment_predict(
    texts: str | Iterable[str], artifacts_dir: str | Path = DEFAULT_ARTIFACTS
) -> str | list[str]:
    """Label reviews '긍정' (positive) or '부정' (negative) with the trained model."""
    return get_predictor(artifacts_dir).predict(texts)
