"""Our mask-aware layers: a review's output must not depend on how much padding surrounds it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import Config
from pipeline.model import build_model
from pipeline.train import for_inference

LENGTHS = (1, 2, 3, 7, 10)
SMALL_CONV_POOLED = dict(
    embedding_dim=4, rnn_units=(6, 3), conv_filters=8, conv_pool=2, pooling=True, jamo_features=0
)


def inference_model(config: Config, vocab_size: int, jamo_table=None):
    """The model users get (its own answer only), with the n-gram table at a toy size."""
    small_table = config.replace(ngram_buckets=min(config.ngram_buckets, 64), ngram_dim=4)
    return for_inference(build_model(small_table, vocab_size, jamo_table=jamo_table))


def padded(lengths, width, padding, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((len(lengths), width), dtype="int32")
    for row, length in enumerate(lengths):
        tokens = rng.integers(2, 30, length)
        if padding == "pre":
            x[row, width - length :] = tokens
        else:
            x[row, :length] = tokens
    return x


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize(
    "layers",
    [
        dict(conv_filters=8),
        dict(conv_filters=8, conv_pool=2, pooling=True),
        dict(conv_filters=8, conv_pool=3, bidirectional=True),
        dict(pooling=True, cell="gru"),
        dict(conv_filters=8, conv_pool=2, ngram_order=3, ngram_buckets=64, ngram_dim=4),
    ],
)
def test_output_is_the_same_at_every_padded_width(padding, layers):
    config = Config(embedding_dim=4, rnn_units=(6, 3), padding=padding, jamo_features=0, **layers)
    model = inference_model(config, vocab_size=30)
    x = padded(LENGTHS, 12, padding)
    call = tf.function(model, input_signature=[tf.TensorSpec((None, None), tf.int32)])
    widest = call(x).numpy().ravel()
    lengths = np.array(LENGTHS)
    for width in range(1, 12):  # every review that fits, cut to this width, in one batch
        rows = np.flatnonzero(lengths <= width)
        cut = x[rows, -width:] if padding == "pre" else x[rows, :width]
        np.testing.assert_allclose(call(cut).numpy().ravel(), widest[rows], atol=1e-5)


def test_an_all_padding_row_gives_a_finite_answer():
    config = Config(**SMALL_CONV_POOLED)
    out = inference_model(config, vocab_size=30)(np.zeros((2, 5), dtype="int32")).numpy()
    assert np.isfinite(out).all()


def test_models_with_our_layers_load_in_safe_mode(tmp_path):
    config = Config(**SMALL_CONV_POOLED, bidirectional=True, ngram_order=3, ngram_buckets=64)
    model = inference_model(config, vocab_size=30)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    x = padded(LENGTHS, 12, "pre")
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), atol=1e-6)
    kinds = {type(layer).__name__ for layer in again.layers}
    assert {"MaskedConv1D", "MaskedMaxPool1D", "MaskedMaxMeanPooling", "HashedNgrams"} <= kinds


def test_jamo_features_keep_the_contract_and_travel_with_the_model(tmp_path):
    from pipeline.tokenizer import CharTokenizer

    tok = CharTokenizer(maxlen=12).fit(["각가 나ㅋ1", "한글 좋아요"])
    config = Config(jamo_features=8, embedding_dim=4, rnn_units=(6, 3))
    model = inference_model(config, tok.vocab_size, jamo_table=tok.jamo_table())
    x = tok.encode(["각가", "나ㅋ1 한글", ""])
    widest = model(x).numpy().ravel()
    for row in range(2):
        length = int((x[row] > 0).sum())
        for width in range(length, 12):
            assert model(x[row : row + 1, -width:]).numpy().ravel()[0] == pytest.approx(
                widest[row], abs=1e-5
            )
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), atol=1e-6)
    np.testing.assert_array_equal(again.get_layer("jamo").table.numpy(), tok.jamo_table()[0])


def _record_rnn_masks(monkeypatch):
    """Record the mask every recurrent layer is called with (eagerly, so masks are values)."""
    seen = []
    for cls in (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN):
        original = cls.call

        def call(self, sequences, *args, _original=original, **kwargs):
            seen.append((self.name, kwargs.get("mask")))
            return _original(self, sequences, *args, **kwargs)

        monkeypatch.setattr(cls, "call", call)
    return seen


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize(
    "layers",
    [
        dict(),
        dict(conv_filters=8, conv_pool=2, pooling=True, bidirectional=True),
        dict(conv_filters=8, conv_pool=3, cell="gru", jamo_features=0),
        dict(pooling=False, bidirectional=True, cell="simplernn"),
    ],
)
def test_every_rnn_mask_is_right_padded_and_never_all_false(monkeypatch, padding, layers):
    """What cuDNN demands of a mask on a GPU, checked on the CPU: text first, then padding,
    and at least one real step per review (an empty review included)."""
    from pipeline.tokenizer import CharTokenizer

    settings = dict(embedding_dim=4, rnn_units=(6, 3), jamo_features=4, padding=padding)
    tok = CharTokenizer(maxlen=12, padding=padding).fit(["각가 나ㅋ1", "한글 좋아요 123"])
    model = inference_model(Config(**{**settings, **layers}), tok.vocab_size, tok.jamo_table())
    seen = _record_rnn_masks(monkeypatch)
    x = tok.encode(["각가", "", "나ㅋ1 한글 좋아요 좋아요", "한"])
    model(x)
    assert len(seen) >= len(settings["rnn_units"])
    for name, mask in seen:
        assert mask is not None, f"{name} got no mask"
        mask = np.asarray(mask).astype(bool)
        assert mask.any(axis=1).all(), f"{name}: a review is fully masked"
        # right-padded: once a step is padding, every later step is padding
        assert (np.diff(mask.astype(int), axis=1) <= 0).all(), f"{name}: mask not right-padded"


def test_an_empty_review_scores_the_output_layers_prior():
    """Its one forced step is discarded: the head sees zeros, so the score is sigmoid(bias)."""
    config = Config(**SMALL_CONV_POOLED)
    model = inference_model(config, vocab_size=30)
    bias = float(model.get_layer("logit").bias.numpy()[0]) + 0.7
    model.get_layer("logit").bias.assign([bias])
    out = model(np.zeros((3, 6), dtype="int32")).numpy().ravel()
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-bias)), atol=1e-6)


def test_hashed_ngrams_number_each_ngram_and_end_at_the_reviews_end():
    from pipeline.layers import HashedNgrams

    vocab, buckets = 10, 7
    rows = HashedNgrams(vocab, 3, buckets)(np.array([[4, 5, 6, 0], [9, 0, 0, 0]])).numpy()
    assert rows.shape == (2, 4, 3)
    np.testing.assert_array_equal(rows[0, :, 0], [4, 5, 6, 0])  # unigrams keep their id

    def bigram(a, b):
        return vocab + (a * (vocab + 1) + b) % buckets

    def trigram(a, b, c):
        return vocab + buckets + ((a * (vocab + 1) + b) % buckets * (vocab + 1) + c) % buckets

    np.testing.assert_array_equal(rows[0, :, 1], [bigram(4, 5), bigram(5, 6), bigram(6, 0), 0])
    np.testing.assert_array_equal(
        rows[0, :3, 2], [trigram(4, 5, 6), trigram(5, 6, 0), trigram(6, 0, 0)]
    )
    np.testing.assert_array_equal(rows[1], [[9, bigram(9, 0), trigram(9, 0, 0)]] + [[0, 0, 0]] * 3)
    assert rows.max() < HashedNgrams(vocab, 3, buckets).table_size


def test_hashed_ngrams_refuse_a_table_that_would_overflow_int32():
    from pipeline.layers import HashedNgrams

    with pytest.raises(ValueError, match="2\\*\\*31"):
        HashedNgrams(vocab_size=5000, max_order=3, buckets=2**20)


def test_ngram_dropout_acts_in_training_only():
    from pipeline.layers import MaskedBagMean

    vectors = np.ones((1, 50, 3, 2), dtype="float32") * np.arange(150, dtype="float32").reshape(
        1, 50, 3, 1
    )
    rows = np.ones((1, 50, 3), dtype="int32")
    bag = MaskedBagMean(rate=0.5, seed=1)
    np.testing.assert_allclose(bag([vectors, rows]).numpy(), [[74.5, 74.5]])
    assert not np.allclose(bag([vectors, rows], training=True).numpy(), [[74.5, 74.5]])
