"""Load model and tokenizer once; clean -> encode -> score reviews in length-sorted batches."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.cleaning import clean_texts
from pipeline.errors import PipelineError
from pipeline.tokenizer import CharTokenizer, trim_padding

POSITIVE, NEGATIVE = "긍정", "부정"  # the original notebook's labels
DEFAULT_ARTIFACTS = Path("artifacts")


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

    def __init__(self, artifacts_dir: str | Path = DEFAULT_ARTIFACTS, batch_size: int = 512):
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
        self._forward = self._compile_forward()

    def _embedding_layer(self):
        import keras

        for layer in self.model.layers:
            if isinstance(layer, keras.layers.Embedding):
                return layer
        raise PipelineError("the saved model has no Embedding layer; it is not a model of ours")

    def _compile_forward(self):
        """One traced graph for any (batch, length): far cheaper per call than model.predict."""
        import keras

        if keras.backend.backend() != "tensorflow":
            return lambda x: np.asarray(self.model.predict_on_batch(x))
        import tensorflow as tf

        spec = tf.TensorSpec(shape=(None, None), dtype=tf.int32)
        fn = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])
        return lambda x: fn(tf.constant(x)).numpy()

    def encode(self, texts: str | Iterable[str]) -> np.ndarray:
        """Clean and encode exactly as at training time: an (n, maxlen) int32 matrix."""
        return self.tokenizer.encode(clean_texts(_as_text_list(texts)))

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Positive-class probabilities of encoded rows, scored in length-sorted batches."""
        lengths = np.count_nonzero(encoded, axis=1)
        order = np.argsort(lengths, kind="stable")
        probs = np.empty(len(encoded), dtype=np.float32)
        for start in range(0, len(encoded), self.batch_size):
            index = order[start : start + self.batch_size]
            batch = encoded[index]
            if self._trim:
                batch = trim_padding(batch, int(lengths[index].max()), self.tokenizer.padding)
            probs[index] = self._forward(batch).reshape(-1)
        return probs

    def predict_proba(self, texts: str | Iterable[str]) -> np.ndarray:
        """Probability that each review is positive, as a float array in input order."""
        return self.predict_encoded(self.encode(texts))

    def predict(self, texts: str | Iterable[str]) -> str | list[str]:
        """'긍정' or '부정' per review; a single string gives a single label."""
        labels = [POSITIVE if p > 0.5 else NEGATIVE for p in self.predict_proba(texts)]
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
            yield (POSITIVE if p > 0.5 else NEGATIVE), float(p)


@functools.lru_cache(maxsize=4)
def _cached_predictor(artifacts_dir: Path, model_stamp: int, tokenizer_stamp: int) -> Predictor:
    return Predictor(artifacts_dir)


def _stamp(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def get_predictor(artifacts_dir: str | Path = DEFAULT_ARTIFACTS) -> Predictor:
    """A predictor per artifacts folder, loaded once and reloaded only when a file changes."""
    folder = Path(artifacts_dir).resolve()
    return _cached_predictor(
        folder, _stamp(folder / "model.keras"), _stamp(folder / "tokenizer.json")
    )


def sentiment_predict(
    texts: str | Iterable[str], artifacts_dir: str | Path = DEFAULT_ARTIFACTS
) -> str | list[str]:
    """Label reviews '긍정' (positive) or '부정' (negative) with the trained model."""
    return get_predictor(artifacts_dir).predict(texts)
