"""Load model and tokenizer once; clean -> encode -> score reviews in length-sorted batches."""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import gc
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.batches import batch_indices, chunks, lengths_of
from pipeline.cleaning import clean_texts
from pipeline.config import Config
from pipeline.engines import open_engine
from pipeline.errors import PipelineError
from pipeline.files import sha256_file
from pipeline.labels import NEGATIVE, POSITIVE, THRESHOLD, is_positive, label_of  # noqa: F401
from pipeline.records import record_path
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

    `engine`: "auto" runs model.onnx on ONNX Runtime when it is the one the last training
    wrote, else model.keras on Keras; "onnx" or "keras" insist. `batch_size`: rows per model
    call (None: the engine's own). `threads`: threads per model call (0: the engine's default).
    A review with nothing left after cleaning (empty, only emoji or Latin letters) has no
    characters the model reads: it gets the score of an empty review, the model's prior.
    """

    def __init__(
        self,
        artifacts_dir: str | Path = DEFAULT_ARTIFACTS,
        batch_size: int | None = None,
        engine: str = "auto",
        threads: int = 0,
    ):
        self.artifacts_dir = artifacts_dir = Path(artifacts_dir)
        paths = Config(artifacts_dir=artifacts_dir)
        self.tokenizer = CharTokenizer.load(paths.tokenizer_path)
        self._model, known_sha256 = open_engine(artifacts_dir, engine, threads)
        self.engine = self._model.name
        self.model_file = artifacts_dir / self._model.file
        if known_sha256 is not None:
            self.model_sha256 = known_sha256
        if self._model.vocab_size != self.tokenizer.vocab_size:
            raise PipelineError(
                f"{paths.tokenizer_path} has {self.tokenizer.vocab_size} indices but "
                f"{self.model_file} embeds {self._model.vocab_size}: they come from different "
                "runs; rerun `python -m pipeline train`"
            )
        self.parameters = self._model.parameters
        self._trim = self._model.masks_padding
        self.batch_size = batch_size or self._model.batch_size

    @functools.cached_property
    def model_sha256(self) -> str:
        """The model's identity: its model.keras's sha256 (model.onnx's where that is all)."""
        keras_file = Config(artifacts_dir=self.artifacts_dir).model_path
        return sha256_file(keras_file if keras_file.is_file() else self.model_file)

    @property
    def model(self):
        """The Keras model (keras engine only): for tools that need the layers themselves."""
        if self.engine != "keras":
            raise AttributeError("an ONNX predictor has no Keras model; use engine='keras'")
        return self._model.model

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
            pending.append((index, _pool().submit(self._model, batch)))
        for done, future in pending:
            probs[done] = future.result()
        return probs

    def _batches(self, encoded: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row indices, their padded batch) in length order, each cut to its longest review."""
        lengths = lengths_of(encoded)
        for chunk in batch_indices(lengths, self.batch_size, rng=None):
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
        for texts in chunks(lines, chunk):
            yield from self._label_chunk(texts)

    def _label_chunk(self, texts: list[str]) -> Iterator[tuple[str, float]]:
        for p in self.predict_proba(texts):
            yield label_of(p), float(p)


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


def model_files(artifacts_dir: str | Path) -> tuple[Path, ...]:
    """What a predictor is made of: a change to any of them means a new model (train writes
    its record last, so model.onnx is trusted only once the record naming it is there)."""
    paths = Config(artifacts_dir=Path(artifacts_dir))
    train_record = record_path(paths.artifacts_dir, "train")
    return (
        paths.onnx_path,
        paths.onnx_weights_path,
        paths.model_path,
        paths.tokenizer_path,
        train_record,
    )


def artifact_stamps(artifacts_dir: str | Path) -> tuple[int, ...]:
    """Modification times of model_files (0 if missing): a change reloads the predictor."""
    return tuple(_stamp(path) for path in model_files(artifacts_dir))


# One predictor per artifacts folder and engine: a changed file replaces it, so an old model
# (and its compiled graphs) is never kept alive beside the new one. Spark's Python workers keep
# theirs here too.
_PREDICTORS: dict[tuple[Path, str, int], tuple[tuple[int, ...], Predictor]] = {}
_PREDICTORS_LOCK = threading.Lock()


def get_predictor(
    artifacts_dir: str | Path = DEFAULT_ARTIFACTS, engine: str = "auto", threads: int = 0
) -> Predictor:
    """The folder's predictor, loaded once and reloaded only when a file changes."""
    folder = Path(artifacts_dir).resolve()
    key = (folder, engine, threads)
    stamps = artifact_stamps(folder)
    with _PREDICTORS_LOCK:
        cached = _PREDICTORS.get(key)
        if cached is not None and cached[0] == stamps:
            return cached[1]
        stale = _PREDICTORS.pop(key, None)
        predictor = Predictor(folder, engine=engine, threads=threads)
        _PREDICTORS[key] = (stamps, predictor)
        if stale is not None and stale[1].engine == "keras":
            # A Keras model is full of reference cycles: only a collection frees the old one.
            del stale
            gc.collect()
        return predictor


def sentiment_predict(
    texts: str | Iterable[str], artifacts_dir: str | Path = DEFAULT_ARTIFACTS, engine: str = "auto"
) -> str | list[str]:
    """Label reviews '긍정' (positive) or '부정' (negative) with the trained model."""
    return get_predictor(artifacts_dir, engine).predict(texts)
