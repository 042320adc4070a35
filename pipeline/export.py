"""The SavedModel for serving engines: raw review strings in, positive probabilities out.

Cleaning, the tokenizer's lookup, truncation and padding are re-expressed in TensorFlow ops on
Unicode code points, so TF Serving (or any engine that loads a SavedModel) runs the whole
prediction path without this package. tests/test_export.py holds the graph equal to `Predictor`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.cleaning import KEPT_RANGES
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.files import atomic_dir, sha256_file, write_json_atomic
from pipeline.tokenizer import OOV_INDEX, CharTokenizer

SIGNATURE, INPUT, OUTPUT = "serving_default", "reviews", "positive_probability"

# Every code point Python's str.isspace() accepts, which is what `re`'s \s and str.split() use;
# RE2's \s is ASCII only, hence code points rather than a regex. A test derives it from Python.
WHITESPACE = (
    *range(0x09, 0x0E),
    *range(0x1C, 0x21),
    0x85,
    0xA0,
    0x1680,
    *range(0x2000, 0x200B),
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
)
SPACE = 0x20
# Hangul syllable arithmetic (Unicode ch. 3.12): S = 0xAC00 + (L * 21 + V) * 28 + T.
_S_BASE, _L_BASE, _V_BASE, _T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
_SYLLABLES, _V_T, _T_COUNT = 11172, 21 * 28, 28


def _shifted(x: tf.Tensor, fill, step: int) -> tf.Tensor:
    """x moved one place right (step 1: each element sees its predecessor) or left (step -1)."""
    fill = tf.fill([1], tf.cast(fill, x.dtype))
    return tf.concat([fill, x], 0)[:-1] if step == 1 else tf.concat([x, fill], 0)[1:]


def clean_codes(reviews: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """clean_text in TF ops: UTF-8 strings -> (code points, row of each), all reviews flat."""
    # Bytes that are not UTF-8 become U+FFFD, which cleaning drops: the same as decoding them
    # with Python's errors="replace" and calling clean_text.
    decoded = tf.strings.unicode_decode(reviews, "UTF-8", errors="replace")
    codes, rows = decoded.flat_values, decoded.value_rowids()
    space = tf.reduce_any(codes[:, None] == tf.constant(WHITESPACE, tf.int32)[None, :], axis=1)
    keep = space
    for low, high in KEPT_RANGES:
        keep |= (codes >= low) & (codes <= high)
    codes, rows, space = (tf.boolean_mask(t, keep) for t in (codes, rows, space))
    # A whitespace character survives only right after a kept one of its own review: runs fold
    # to one and leading whitespace goes; then a space ending its review goes.
    first = rows != _shifted(rows, -1, 1)
    keep = ~space | ~(_shifted(space, True, 1) | first)
    codes, rows, space = (tf.boolean_mask(t, keep) for t in (codes, rows, space))
    last = rows != _shifted(rows, -1, -1)
    keep = ~(space & last)
    codes = tf.where(space, SPACE, codes)
    return tf.boolean_mask(codes, keep), tf.boolean_mask(rows, keep)


def decompose_hangul(codes: tf.Tensor, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """NFD of cleaned text: each syllable becomes its initial, medial and (if any) final jamo.

    Everything else cleaning keeps (digits, the space, compatibility jamo) is its own NFD.
    """
    index = codes - _S_BASE
    syllable = (index >= 0) & (index < _SYLLABLES)
    parts = tf.stack(
        [
            tf.where(syllable, _L_BASE + index // _V_T, codes),
            _V_BASE + index % _V_T // _T_COUNT,
            _T_BASE + index % _T_COUNT,
        ],
        axis=1,
    )
    present = tf.stack(
        [tf.ones_like(syllable), syllable, syllable & (index % _T_COUNT > 0)], axis=1
    )
    rows = tf.repeat(rows[:, None], 3, axis=1)
    return tf.boolean_mask(parts, present), tf.boolean_mask(rows, present)


def pad_rows(
    ids: tf.Tensor, rows: tf.Tensor, batch: tf.Tensor, tokenizer: CharTokenizer
) -> tf.Tensor:
    """Flat ids with their rows -> (batch, maxlen) int32, truncated and padded on its sides."""
    maxlen = tokenizer.maxlen
    ragged = tf.RaggedTensor.from_value_rowids(ids, rows, nrows=batch)
    lengths, starts = ragged.row_lengths(), ragged.row_starts()
    kept = tf.minimum(lengths, maxlen)
    skip = lengths - kept if tokenizer.truncating == "pre" else tf.zeros_like(kept)
    first = maxlen - kept if tokenizer.padding == "pre" else tf.zeros_like(kept)
    place = tf.range(maxlen, dtype=tf.int64)[None, :] - first[:, None]  # place in the kept text
    real = (place >= 0) & (place < kept[:, None])
    source = tf.where(real, starts[:, None] + skip[:, None] + place, 0)
    values = tf.concat([ids, [0]], 0)  # so index 0 exists even when no review kept anything
    return tf.where(real, tf.gather(values, source), 0)


def encode_reviews(reviews: tf.Tensor, tokenizer: CharTokenizer) -> tf.Tensor:
    """Predictor.encode in TF ops: (batch,) UTF-8 strings -> (batch, maxlen) int32 ids."""
    # tokenizer.lower needs nothing: what cleaning keeps has no case (a test checks it).
    codes, rows = clean_codes(reviews)
    if tokenizer.unit == "jamo":
        codes, rows = decompose_hangul(codes, rows)
    table = tf.constant(tokenizer.lookup_table())
    size = int(table.shape[0])
    ids = tf.where(codes < size, tf.gather(table, tf.minimum(codes, size - 1)), OOV_INDEX)
    return pad_rows(ids, rows, tf.shape(reviews, out_type=tf.int64)[0], tokenizer)


def serving_function(model, tokenizer: CharTokenizer) -> Callable[[tf.Tensor], dict]:
    """The signature's body: raw reviews -> {positive_probability}; full maxlen-padded rows.

    The model is a black box over the padded id matrix; its scores do not depend on padding.
    """

    def serve(reviews):
        ids = encode_reviews(reviews, tokenizer)
        # An empty batch never reaches the model: some layers cannot reshape zero rows.
        probs = tf.cond(
            tf.shape(ids)[0] > 0,
            lambda: tf.reshape(tf.cast(model(ids, training=False), tf.float32), [-1]),
            lambda: tf.zeros([0], tf.float32),
        )
        return {OUTPUT: probs}

    return serve


# Scored by the export and by Predictor before the export is moved into place.
CHECK_REVIEWS = [
    "배송 빠르고 좋아요",
    "별로에요 다시는 안 사요",
    "",
    "  좋아\t\t요\n최고\u3000 ",
    "good😀좋아요...굿 ㅋㅋㅋ ㅠㅠ 10점",
    "가성비 최고 " * 40,
]


def export_savedmodel(config: Config, output: Path, quiet: bool = False) -> dict:
    """Write the SavedModel of `config.artifacts_dir`'s model to `output`; record it."""
    import keras

    from pipeline.predict import Predictor
    from pipeline.stages import library_versions, lock_folders, write_manifest

    output = Path(output)
    if not config.artifacts_dir.is_dir():
        raise PipelineError(
            f"{config.artifacts_dir} does not exist; train a model with `python -m pipeline run` "
            "or pass the --artifacts-dir it was trained into"
        )
    if output.exists() and not (output / "saved_model.pb").is_file():
        raise PipelineError(
            f"{output} exists and is not a SavedModel export; choose another --output or "
            "remove it first"
        )
    # Export reads and writes only the artifacts folder: lock that one alone.
    with lock_folders(config.artifacts_dir):
        model_path, tokenizer_path = config.model_path, config.tokenizer_path
        predictor = Predictor(config.artifacts_dir, engine="keras")  # the graph it exports
        sources = {p.name: sha256_file(p) for p in (model_path, tokenizer_path)}
        # No archive.track(model): the endpoint's trace already captures every weight, and tracking
        # the model as well stores each weight twice (keras-team/keras#23553; 2x the export and
        # 2x the memory in TF Serving).
        archive = keras.export.ExportArchive()
        archive.add_endpoint(
            SIGNATURE,
            serving_function(predictor.model, predictor.tokenizer),
            input_signature=[tf.TensorSpec([None], tf.string, name=INPUT)],
        )
        with atomic_dir(output) as tmp:
            archive.write_out(str(tmp), verbose=False)
            _check_against(tmp, predictor)
        record = {
            "path": str(output.resolve()),
            "saved_model_pb_sha256": sha256_file(output / "saved_model.pb"),
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "sources": sources,
            "signature": {"name": SIGNATURE, "input": INPUT, "output": OUTPUT},
            "versions": library_versions(),
        }
        write_json_atomic(config.export_record_path, record)
        write_manifest(config, export=record)
    if not quiet:
        print(f"export written to {output} (signature {SIGNATURE}: {INPUT} -> {OUTPUT})")
    return record


def _check_against(folder: Path, predictor) -> None:
    """Load the written SavedModel back and hold it to Predictor on a few reviews."""
    serve = tf.saved_model.load(str(folder)).signatures[SIGNATURE]
    got = serve(reviews=tf.constant(CHECK_REVIEWS))[OUTPUT].numpy()
    want = predictor.predict_proba(CHECK_REVIEWS)
    if not np.allclose(got, want, rtol=0, atol=1e-5):
        raise PipelineError(
            f"the exported graph scores differently from Predictor ({got} vs {want}); this is "
            "a bug in pipeline/export.py, please report it"
        )
