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


@pytest.fixture
def artifacts_copy(trained, tmp_path):
    folder = tmp_path / "artifacts"
    shutil.copytree(trained.artifacts_dir, folder)
    return folder


def test_single_string_gives_a_label_and_a_list_gives_a_list(trained):
    assert sentiment_predict(REVIEWS[0], trained.artifacts_dir) in (POSITIVE, NEGATIVE)
    labels = sentiment_predict(REVIEWS, trained.artifacts_dir)
    assert len(labels) == 2 and set(labels) <= {POSITIVE, NEGATIVE}
    assert sentiment_predict([], trained.artifacts_dir) == []


def test_labels_agree_with_probabilities_in_input_order(predictor):
    texts = REVIEWS * 3 + ["최고", "최악"]
    probs = predictor.predict_proba(texts)
    assert probs.shape == (8,) and ((probs >= 0) & (probs <= 1)).all()
    assert predictor.predict(texts) == [POSITIVE if p > 0.5 else NEGATIVE for p in probs]
    assert probs[0] == pytest.approx(predictor.predict_proba(texts[0])[0], abs=1e-6)


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


@pytest.mark.parametrize(
    "bad,position", [(None, None), (["좋아", None], 1), ([b"bytes"], 0), (5, None)]
)
def test_non_strings_are_type_errors_naming_the_position(predictor, bad, position):
    with pytest.raises(TypeError) as info:
        predictor.predict(bad)
    if position is not None:
        assert f"position {position}" in str(info.value)


def test_generators_are_accepted(predictor):
    assert len(predictor.predict(r for r in REVIEWS)) == 2


def test_missing_artifacts_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match="tokenizer.json is missing"):
        Predictor(tmp_path)


def test_corrupt_model_is_a_clear_error(artifacts_copy):
    (artifacts_copy / "model.keras").write_bytes(b"not a zip file")
    with pytest.raises(PipelineError, match="model.keras cannot be loaded"):
        Predictor(artifacts_copy)


def test_tokenizer_from_another_run_is_refused(artifacts_copy):
    CharTokenizer().fit(["가나다"]).save(artifacts_copy / "tokenizer.json")
    with pytest.raises(PipelineError, match="come from different runs"):
        Predictor(artifacts_copy)


def test_models_load_in_safe_mode(artifacts_copy):
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(CharTokenizer.load(artifacts_copy / "tokenizer.json").vocab_size, 4)(
        inputs
    )
    x = keras.layers.Lambda(lambda t: t * 2)(x)  # arbitrary code: must never be deserialized
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x))
    keras.Model(inputs, outputs).save(artifacts_copy / "model.keras")
    with pytest.raises(PipelineError, match="cannot be loaded"):
        Predictor(artifacts_copy)


def test_predictor_is_loaded_once_and_reloaded_when_the_model_changes(artifacts_copy):
    first = get_predictor(artifacts_copy)
    assert get_predictor(artifacts_copy) is first
    model = artifacts_copy / "model.keras"
    model.write_bytes(model.read_bytes())  # same bytes, new modification time
    assert get_predictor(artifacts_copy) is not first


def test_streaming_never_materializes_its_input(predictor):
    import itertools

    endless = itertools.cycle(REVIEWS)  # a stream with no end: a list of it would never finish
    first = list(itertools.islice(predictor.predict_stream(endless, chunk=64), 150))
    assert len(first) == 150
    expected = predictor.predict_proba(REVIEWS)
    assert [p for _, p in first[:2]] == pytest.approx(expected.tolist(), abs=1e-6)


def test_xla_path_scores_like_the_graph_in_padded_recurring_shapes(predictor, sample_path):
    """jit_compile pads to recurring shapes and compiles them; scores must not move."""
    lines = sample_path.read_text(encoding="utf-8").splitlines()[:9]
    texts = [line.split("\t", 1)[1] for line in lines] + ["좋아요 " * 80]  # 8 + 2 rows
    jit = Predictor(predictor.artifacts_dir, batch_size=8, jit_compile=True)
    expected = predictor.predict_proba(texts)
    np.testing.assert_allclose(jit.predict_proba(texts), expected, atol=1e-6)  # graph, queued
    assert jit.wait_for_compiles(timeout=300)
    shapes = jit._forward._ready
    assert jit._forward.jit_compile and shapes, "XLA failed or compiled nothing"
    maxlen = jit.tokenizer.maxlen
    for rows, width in shapes:
        assert rows & (rows - 1) == 0 and rows <= 8
        assert width % 8 == 0 or width == maxlen
    compiled = len(shapes)
    together = jit.predict_proba(texts)  # now through XLA, rows padded to powers of two
    np.testing.assert_allclose(together, expected, atol=1e-5)
    assert len(jit._forward._ready) == compiled, "the same batches needed new shapes"
    jit.predict_proba(texts[0])  # a single review: compiled in turn, then scored by XLA
    assert jit.wait_for_compiles(timeout=300)
    assert jit.predict_proba(texts[0])[0] == pytest.approx(expected[0], abs=1e-5)


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


@pytest.fixture(scope="module", params=[("pre", True), ("post", True), ("pre", False)])
def known(request, tmp_path_factory):
    """(folder, side, masked): padding and truncating on `side`; masked models are trimmed."""
    from tests.known_model import save_known_model

    side, masked = request.param
    folder = tmp_path_factory.mktemp(f"known-{side}-{masked}")
    tokenizer = CharTokenizer(maxlen=MAXLEN, padding=side, truncating=side)
    tokenizer.fit(["가나다라 마바사"]).save(folder / "tokenizer.json")
    save_known_model(folder, SCORES, oov_score=OOV_SCORE, mask_zero=masked)
    return folder, side, masked


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
def test_anything_but_strings_is_a_type_error_saying_what_and_where(known, bad, message):
    with pytest.raises(TypeError, match=f"^{message}$"):
        Predictor(known[0]).predict(bad)


def test_sentiment_predict_reads_the_artifacts_folder_of_the_working_directory(
    known, tmp_path, monkeypatch
):
    folder, side, masked = known
    shutil.copytree(folder, tmp_path / "artifacts")
    monkeypatch.chdir(tmp_path)
    assert sentiment_predict(MIXED) == Predictor(folder).predict(MIXED)
    assert sentiment_predict("라") == POSITIVE


def test_predictor_is_reloaded_when_its_tokenizer_changes(known, tmp_path):
    folder = tmp_path / "artifacts"
    shutil.copytree(known[0], folder)
    first = get_predictor(folder)
    assert get_predictor(str(folder)) is first  # the same folder however it is named
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes())
    assert get_predictor(folder) is not first


def test_a_folder_without_artifacts_says_what_is_missing(tmp_path, known):
    with pytest.raises(PipelineError, match="tokenizer.json is missing; run `python -m pipeline"):
        get_predictor(tmp_path)
    shutil.copy(known[0] / "tokenizer.json", tmp_path)
    with pytest.raises(PipelineError, match="model.keras is missing; train a model with"):
        Predictor(tmp_path)


def test_a_model_without_an_embedding_is_refused(known, tmp_path):
    shutil.copy(known[0] / "tokenizer.json", tmp_path)
    inputs = keras.Input((None,), dtype="int32")
    outputs = keras.layers.Dense(1)(keras.layers.CategoryEncoding(20, output_mode="count")(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "model.keras")
    with pytest.raises(PipelineError, match="^the saved model has no Embedding layer; it is not a"):
        Predictor(tmp_path)


def test_a_tokenizer_of_another_size_names_both_sizes(known, tmp_path):
    shutil.copy(known[0] / "model.keras", tmp_path)
    CharTokenizer().fit(["가나다"]).save(tmp_path / "tokenizer.json")
    message = (
        r"tokenizer.json has 5 indices but .*model.keras embeds 10: they come from different "
        r"runs; rerun `python -m pipeline train`$"
    )
    with pytest.raises(PipelineError, match=message):
        Predictor(tmp_path)


def test_streams_are_scored_a_chunk_at_a_time(known):
    pulled = []

    def lines():
        for i, line in enumerate(MIXED):
            pulled.append(i)
            yield line

    stream = Predictor(known[0]).predict_stream(lines(), chunk=3)
    next(stream)
    assert len(pulled) == 3  # the first answer waits for a whole chunk, not one line
    assert len(list(stream)) == len(MIXED) - 1


def test_predictor_is_reloaded_when_its_model_changes_and_the_old_one_let_go(known, tmp_path):
    import gc
    import weakref

    folder = tmp_path / "artifacts"
    shutil.copytree(known[0], folder)
    first = get_predictor(folder)
    old = [weakref.ref(first)]
    model = folder / "model.keras"
    for _ in range(3):
        model.write_bytes(model.read_bytes())  # same bytes, new modification time
        latest = get_predictor(folder)
        assert latest is not first
        first = latest
        old.append(weakref.ref(latest))
    del first, latest
    gc.collect()
    assert [ref() is None for ref in old] == [True, True, True, False]  # one per folder


def test_a_model_with_code_in_it_is_refused_and_a_broken_one_explained(known, tmp_path):
    shutil.copy(known[0] / "tokenizer.json", tmp_path)
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
