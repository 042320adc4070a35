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
