import shutil

import keras
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.predict import NEGATIVE, POSITIVE, Predictor, get_predictor, sentiment_predict
from pipeline.tokenizer import CharTokenizer

REVIEWS = ["배송 빠르고 좋아요", "별로에요 다시는 안 사요"]


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor(trained.artifacts_dir)


def test_a_reviews_probability_does_not_depend_on_its_batch(predictor):
    review = "배송 빠르고 좋아요"
    alone = predictor.predict_proba([review])[0]
    with_short = predictor.predict_proba(["좋아", review, "별로", "음"])[1]
    with_long = predictor.predict_proba(["가나다라마바사" * 20, review])[1]
    assert with_short == pytest.approx(alone, abs=1e-5)
    assert with_long == pytest.approx(alone, abs=1e-5)


def test_batches_of_many_lengths_match_one_by_one(predictor, sample_path):
    lines = sample_path.read_text(encoding="utf-8").splitlines()[:40]
    texts = [line.split("\t", 1)[1] for line in lines]
    predictor_small_batches = Predictor(predictor.artifacts_dir, batch_size=7)
    together = predictor_small_batches.predict_proba(texts)
    one_by_one = np.array([predictor.predict_proba(t)[0] for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_text_with_nothing_left_after_cleaning_gets_the_empty_reviews_score(predictor):
    empty = predictor.predict_proba("")[0]
    probs = predictor.predict_proba(["   ", "😀😀", "great!!!", "\x00\x1f"])
    np.testing.assert_allclose(probs, empty, atol=1e-6)


def test_huge_review_is_truncated_like_any_other(predictor):
    huge = "좋아요 " * 250_000  # about 1 MB
    assert predictor.predict_proba(huge)[0] == pytest.approx(
        predictor.predict_proba(huge[-200:])[0], abs=1e-5
    )


def test_streaming_never_materializes_its_input(predictor):
    import itertools

    endless = itertools.cycle(REVIEWS)  # a stream with no end: a list of it would never finish
    first = list(itertools.islice(predictor.predict_stream(endless, chunk=64), 150))
    assert len(first) == 150
    expected = predictor.predict_proba(REVIEWS)
    assert [p for _, p in first[:2]] == pytest.approx(expected.tolist(), abs=1e-6)


# -- fast: a model with hand-set weights, so every probability is known (tests/known_model.py) ---
SCORES = {
    "가": 1.0,
    "나": 2.0,
    "다": -4.0,
    "라": 8.0,
    "마": -16.0,
    "바": 0.5,
    "사": 0.25,
    " ": 0.125,
}
OOV_SCORE = 3.0
MAXLEN = 8


def expected_probability(review: str, side: str, width: int | None) -> float:
    """What the known model must answer: cleaned, cut to MAXLEN on `side`, scored, squashed."""
    from pipeline.cleaning import clean_text

    text = clean_text(review)
    kept = text[-MAXLEN:] if side == "pre" else text[:MAXLEN]
    total = sum(SCORES.get(ch, OOV_SCORE) for ch in kept)
    return 1 / (1 + np.exp(-total / (width or len(kept))))


def make_known(tmp_path_factory, side: str, masked: bool):
    """(folder, side, masked): padding and truncating on `side`; masked models are trimmed."""
    from tests.known_model import save_known_model

    folder = tmp_path_factory.mktemp(f"known-{side}-{masked}")
    tokenizer = CharTokenizer(maxlen=MAXLEN, padding=side, truncating=side)
    tokenizer.fit(["가나다라 마바사"]).save(folder / "tokenizer.json")
    save_known_model(folder, SCORES, oov_score=OOV_SCORE, mask_zero=masked)
    return folder, side, masked


@pytest.fixture(scope="module", params=[("pre", True), ("post", True), ("pre", False)])
def known(request, tmp_path_factory):
    """Each padding side and masking: for what depends on them."""
    return make_known(tmp_path_factory, *request.param)


@pytest.fixture(scope="module")
def known_one(tmp_path_factory):
    """One known model: for what does not depend on padding or masking."""
    return make_known(tmp_path_factory, "pre", True)


# of every length from 1 to past MAXLEN, with characters to clean away and unseen ones (OOV)
MIXED = [
    "가",
    "라라라라라라라라라라마",
    "나 다!",
    "마바사 가나다라 마바",
    "밥",
    "사사",
    "Ok 가나",
    "다라마바사가나",
]


def test_every_review_gets_its_own_probability_in_input_order_in_any_batch(known):
    folder, side, masked = known
    width = None if masked else MAXLEN
    expected = [expected_probability(r, side, width) for r in MIXED]
    for batch_size in (1, 3, 512):
        probs = Predictor(folder, batch_size=batch_size).predict_proba(MIXED)
        np.testing.assert_allclose(probs, expected, rtol=1e-5, err_msg=f"batch {batch_size}")
        assert probs.dtype == np.float32


def test_labels_and_streams_follow_the_probabilities(known):
    folder, side, masked = known
    predictor = Predictor(folder)
    probs = predictor.predict_proba(MIXED)
    labels = [POSITIVE if p > 0.5 else NEGATIVE for p in probs]
    assert set(labels) == {POSITIVE, NEGATIVE}
    assert predictor.predict(MIXED) == labels
    assert predictor.predict(MIXED[0]) == labels[0]  # one string in, one label out
    assert predictor.predict(tuple(MIXED)) == labels
    assert predictor.predict(iter(MIXED)) == labels
    for chunk in (1, 3, 8, 100):
        streamed = list(predictor.predict_stream(iter(MIXED), chunk=chunk))
        assert [label for label, _ in streamed] == labels
        np.testing.assert_allclose([p for _, p in streamed], probs, rtol=1e-6)
        assert all(type(p) is float for _, p in streamed)
    assert list(predictor.predict_stream(iter([]))) == []
    assert predictor.predict([]) == [] and predictor.predict_proba([]).shape == (0,)


@pytest.mark.parametrize(
    "bad,message",
    [
        (None, "reviews must be a string or an iterable of strings, not NoneType"),
        (5, "reviews must be a string or an iterable of strings, not int"),
        (["좋아", None], "review at position 1 is NoneType, not str"),
        ([b"bytes"], "review at position 0 is bytes, not str"),
    ],
)
def test_anything_but_strings_is_a_type_error_saying_what_and_where(known_one, bad, message):
    with pytest.raises(TypeError, match=f"^{message}$"):
        Predictor(known_one[0]).predict(bad)


def test_sentiment_predict_reads_the_artifacts_folder_of_the_working_directory(
    known_one, tmp_path, monkeypatch
):
    folder, side, masked = known_one
    shutil.copytree(folder, tmp_path / "artifacts")
    monkeypatch.chdir(tmp_path)
    assert sentiment_predict(MIXED) == Predictor(folder).predict(MIXED)
    assert sentiment_predict("라") == POSITIVE


def test_predictor_is_reloaded_when_its_tokenizer_changes(known_one, tmp_path):
    folder = tmp_path / "artifacts"
    shutil.copytree(known_one[0], folder)
    first = get_predictor(folder)
    assert get_predictor(str(folder)) is first  # the same folder however it is named
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes())
    assert get_predictor(folder) is not first


def test_a_folder_without_artifacts_says_what_is_missing(tmp_path, known_one):
    with pytest.raises(PipelineError, match="tokenizer.json is missing; run `python -m pipeline"):
        get_predictor(tmp_path)
    shutil.copy(known_one[0] / "tokenizer.json", tmp_path)
    with pytest.raises(PipelineError, match="model.keras is missing; train a model with"):
        Predictor(tmp_path)


def test_a_model_without_an_embedding_is_refused(known_one, tmp_path):
    shutil.copy(known_one[0] / "tokenizer.json", tmp_path)
    inputs = keras.Input((None,), dtype="int32")
    outputs = keras.layers.Dense(1)(keras.layers.CategoryEncoding(20, output_mode="count")(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "model.keras")
    with pytest.raises(PipelineError, match="^the saved model has no Embedding layer; it is not a"):
        Predictor(tmp_path)


def test_a_tokenizer_of_another_size_names_both_sizes(known_one, tmp_path):
    shutil.copy(known_one[0] / "model.keras", tmp_path)
    CharTokenizer().fit(["가나다"]).save(tmp_path / "tokenizer.json")
    message = (
        r"tokenizer.json has 5 indices but .*model.keras embeds 10: they come from different "
        r"runs; rerun `python -m pipeline train`$"
    )
    with pytest.raises(PipelineError, match=message):
        Predictor(tmp_path)


def test_streams_are_scored_a_chunk_at_a_time(known_one):
    pulled = []

    def lines():
        for i, line in enumerate(MIXED):
            pulled.append(i)
            yield line

    stream = Predictor(known_one[0]).predict_stream(lines(), chunk=3)
    next(stream)
    assert len(pulled) == 3  # the first answer waits for a whole chunk, not one line
    assert len(list(stream)) == len(MIXED) - 1


def test_predictor_is_reloaded_when_its_model_changes_and_the_old_one_let_go(known_one, tmp_path):
    import gc
    import weakref

    folder = tmp_path / "artifacts"
    shutil.copytree(known_one[0], folder)
    model = folder / "model.keras"
    old = []
    for _ in range(3):
        # Keras models hold reference cycles: refcounts alone never free them
        old.append(weakref.ref(get_predictor(folder).model))
        model.write_bytes(model.read_bytes())  # same bytes, new modification time
    latest = get_predictor(folder)
    assert all(latest.model is not ref() for ref in old)  # reloaded each time
    gc.collect()
    assert [ref() for ref in old] == [None, None, None]  # one per folder: none kept
    assert get_predictor(folder) is latest


def test_a_model_with_code_in_it_is_refused_and_a_broken_one_explained(known_one, tmp_path):
    shutil.copy(known_one[0] / "tokenizer.json", tmp_path)
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 1)(inputs)
    x = keras.layers.Lambda(lambda t: t * 2)(x)  # arbitrary code: must never be deserialized
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "model.keras")
    message = (
        r"model.keras cannot be loaded \((\w+Error): .*\); retrain with `python -m pipeline train`$"
    )
    with pytest.raises(PipelineError, match=message) as info:
        Predictor(tmp_path)
    assert "NoneType" not in str(info.value)
    (tmp_path / "model.keras").write_bytes(b"not a zip file")
    with pytest.raises(PipelineError, match=message):
        Predictor(tmp_path)
