"""The mission's rules, one test each, named after the rule it pins.

They run the stages users run (`prepare`, `tokenize`, then `Predictor`) on the fixture's real
lines, plus lines a test adds where a rule needs a case the sample lacks (ratings of 3, reviews
that differ only before cleaning, characters that occur once). Where a rule needs an exact
probability, a real Keras model with hand-set weights stands in for a trained one
(tests/known_model.py). Each rule is checked through what a stage writes or what `Predictor`
answers, so the tests hold whatever the code behind them becomes.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.cleaning import clean_text
from pipeline.prepare import SPLITS, read_split
from pipeline.stages import run_pipeline
from pipeline.tokenizer import OOV_INDEX
from tests.conftest import tiny_config
from tests.known_model import save_known_model

POSITIVE, NEGATIVE = "긍정", "부정"


@pytest.fixture(scope="module")
def real_lines(sample_path) -> list[tuple[int, str]]:
    lines = sample_path.read_text(encoding="utf-8").splitlines()
    return [(int(rating), review) for rating, review in (line.split("\t", 1) for line in lines)]


def run_stages(root, lines, *names, **settings):
    """Write `lines` as the raw file and run the named stages on it, as the CLI does."""
    config = tiny_config(root, "unused", **settings)
    config.raw_path.parent.mkdir(parents=True, exist_ok=True)
    config.raw_path.write_text("".join(f"{r}\t{review}\n" for r, review in lines), "utf-8")
    run_pipeline(config, names=names, force=True, quiet=True)
    return config


def read_splits(config) -> dict[str, pd.DataFrame]:
    return {name: read_split(config.split_path(name)) for name in SPLITS}


def unused_syllables(lines, count):
    """Syllables that occur nowhere in `lines`: each marks one review as the only one with it."""
    seen = set("".join(review for _, review in lines))
    return [chr(c) for c in range(0xAC00, 0xD7A4) if chr(c) not in seen][:count]


@pytest.fixture(scope="module")
def project(tmp_path_factory, real_lines):
    """The real lines plus 40 reviews that each hold a syllable found nowhere else, prepared and
    tokenized with the default settings: about 8 of the 40 land in validation or test."""
    rare = [
        (5 if i % 2 else 1, f"{ch}{ch} 배송 {i}번")
        for i, ch in enumerate(unused_syllables(real_lines, 40))
    ]
    lines = real_lines + rare
    config = run_stages(tmp_path_factory.mktemp("rules"), lines, "prepare", "tokenize")
    return config, lines, read_splits(config)


# -- labels --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def relabelled(tmp_path_factory, real_lines):
    """The real lines with every 7th given rating 3, through the prepare stage."""
    lines = [(3 if i % 7 == 0 else r, review) for i, (r, review) in enumerate(real_lines)]
    config = run_stages(tmp_path_factory.mktemp("ratings"), lines, "prepare")
    return lines, pd.concat(read_splits(config).values())


@pytest.mark.parametrize("rating,label", [(1, 0), (2, 0), (3, None), (4, 1), (5, 1)])
def test_rating_above_3_is_positive_below_3_is_negative_and_3_is_dropped(relabelled, rating, label):
    lines, rows = relabelled
    texts = {clean_text(review) for r, review in lines if r == rating}
    elsewhere = {clean_text(review) for r, review in lines if r != rating}
    only_this = texts - elsewhere - {""}  # a review also rated otherwise is kept under that rating
    assert len(only_this) >= 20
    found = rows[rows["text"].isin(only_this)]
    if label is None:
        assert found.empty, "reviews rated 3 must not reach any split"
    else:
        assert len(found) == len(only_this)
        assert found["label"].tolist() == [label] * len(found)
        assert found["rating"].tolist() == [rating] * len(found)


# -- cleaning and duplicates ---------------------------------------------------------------------
def test_duplicates_are_judged_after_cleaning_and_the_first_one_is_kept(tmp_path, real_lines):
    originals = real_lines[:120]
    # Each later copy differs before cleaning only (punctuation, Latin, emoji, spacing), and has
    # the opposite label: a kept copy would show as a second row or a flipped label.
    copies = [
        (1 if r > 3 else 5, variant)
        for r, review in originals[:40]
        for variant in (f"  {review}!! ok 😀", review.replace(" ", "   ") + "\u3000")
    ]
    # Reviews that differ after cleaning are different reviews, however close.
    near = [(5, "정말 좋아요"), (1, "정말좋아요"), (4, "좋아요 1"), (2, "좋아요 2")]
    lines = originals + copies + near
    config = run_stages(tmp_path, lines, "prepare")
    rows = pd.concat(read_splits(config).values())

    first_label = {}
    for r, review in lines:
        first_label.setdefault(clean_text(review), int(r > 3))
    first_label.pop("", None)
    assert rows["text"].is_unique
    assert sorted(rows["text"]) == sorted(first_label)
    assert dict(zip(rows["text"], rows["label"], strict=True)) == first_label


# -- the split -----------------------------------------------------------------------------------
def test_split_is_stratified_80_10_10_with_no_review_in_two_splits(project):
    config, lines, splits = project
    distinct = {clean_text(review) for _, review in lines} - {""}
    total = len(distinct)
    positive_share = sum(f["label"].sum() for f in splits.values()) / total
    sizes = {name: len(frame) for name, frame in splits.items()}

    assert sum(sizes.values()) == total
    assert set().union(*(set(f["text"]) for f in splits.values())) == distinct
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not set(splits[a]["text"]) & set(splits[b]["text"]), f"{a} and {b} share a review"
    # val and test are rounded up from 10%; train takes the rest
    assert abs(sizes["val"] - 0.1 * total) < 1 and abs(sizes["test"] - 0.1 * total) < 1
    assert abs(sizes["train"] - 0.8 * total) < 2
    for name, frame in splits.items():
        # stratified: each split holds its share of positives, to within one row
        assert abs(frame["label"].sum() - positive_share * len(frame)) <= 1, name


# -- the tokenizer -------------------------------------------------------------------------------
def test_tokenizer_indexes_exactly_the_characters_of_the_training_split(project):
    config, _, splits = project
    index = json.loads(config.tokenizer_path.read_text(encoding="utf-8"))["word_index"]
    assert set(index) - {config.oov_token} == set("".join(splits["train"]["text"]))


def test_a_character_only_in_validation_or_test_encodes_as_oov(project):
    config, _, splits = project
    index = json.loads(config.tokenizer_path.read_text(encoding="utf-8"))["word_index"]
    train_chars = set("".join(splits["train"]["text"]))
    encoded = np.load(config.encoded_path)
    unseen_total = 0
    for name in ("val", "test"):
        texts = splits[name]["text"].tolist()
        unseen = set("".join(texts)) - train_chars
        assert unseen, f"the {name} split should hold characters the training split lacks"
        assert not unseen & set(index)
        for text, row in zip(texts, encoded[f"x_{name}"], strict=True):
            ids = row[row != 0].tolist()
            assert ids == [index.get(ch, OOV_INDEX) for ch in text[-config.maxlen :]]
            unseen_total += sum(ch in unseen for ch in text[-config.maxlen :])
        assert unseen_total
    assert encoded["x_train"].min() == 0 and OOV_INDEX not in encoded["x_train"]


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
def test_reviews_are_padded_and_truncated_to_maxlen_on_the_configured_sides(
    tmp_path, real_lines, padding, truncating
):
    maxlen = 12
    config = run_stages(
        tmp_path,
        real_lines[:150],
        "prepare",
        "tokenize",
        maxlen=maxlen,
        padding=padding,
        truncating=truncating,
    )
    index = json.loads(config.tokenizer_path.read_text(encoding="utf-8"))["word_index"]
    encoded = np.load(config.encoded_path)
    lengths = set()
    for name, frame in read_splits(config).items():
        rows = []
        for text in frame["text"]:
            ids = [index.get(ch, OOV_INDEX) for ch in text]
            kept = ids[-maxlen:] if truncating == "pre" else ids[:maxlen]
            pad = [0] * (maxlen - len(kept))
            rows.append(pad + kept if padding == "pre" else kept + pad)
            lengths.add(len(text))
        assert encoded[f"x_{name}"].tolist() == rows, name
    assert min(lengths) < maxlen < max(lengths)  # both padding and truncation were exercised


# -- prediction ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def known_predictor(project):
    """A Predictor over the project's tokenizer and a model whose every score is known."""
    from pipeline.predict import Predictor

    config, _, _ = project
    tokenizer = json.loads(config.tokenizer_path.read_text(encoding="utf-8"))
    rng = np.random.default_rng(0)
    chars = [ch for ch in tokenizer["word_index"] if ch != config.oov_token]
    scores = dict(zip(chars, rng.uniform(-20, 20, len(chars)).round(3).tolist(), strict=True))
    save_known_model(config.artifacts_dir, scores, oov_score=7.0)
    return Predictor(config.artifacts_dir), scores


def test_prediction_cleans_a_raw_review_exactly_as_training_did(project, known_predictor):
    """Every raw line's score equals the score of the row training made of it."""
    config, lines, splits = project
    predictor, scores = known_predictor
    encoded = np.load(config.encoded_path)
    index = json.loads(config.tokenizer_path.read_text(encoding="utf-8"))["word_index"]
    by_id = {i: scores.get(ch, 7.0) for ch, i in index.items()}
    trained_row = {}
    for name, frame in splits.items():
        trained_row.update(zip(frame["text"], encoded[f"x_{name}"], strict=True))

    raw = [review for _, review in lines if clean_text(review) in trained_row]
    assert len(raw) > 500 and any(r != clean_text(r) for r in raw)
    expected = [
        1 / (1 + np.exp(-sum(by_id.get(int(i), 0.0) for i in trained_row[clean_text(r)]) / 100))
        for r in raw
    ]
    np.testing.assert_allclose(predictor.predict_proba(raw), expected, rtol=0, atol=1e-6)


def test_reviews_that_differ_only_before_cleaning_score_the_same(known_predictor, real_lines):
    predictor, _ = known_predictor
    for _, review in real_lines[:30]:
        variants = [
            review,
            clean_text(review),
            f"  {review} !!! ABC 😀",
            review.replace(" ", " \t\u3000 ") + "\n",
            "".join(f"{ch}~" for ch in review),
        ]
        probs = predictor.predict_proba(variants)
        assert probs.tolist() == [probs[0]] * len(variants), review
    # and a review that cleans differently scores differently: cleaning is not a no-op
    assert predictor.predict_proba("좋아요")[0] != predictor.predict_proba("좋아 요")[0]


@pytest.fixture(scope="module")
def threshold_predictor(tmp_path_factory):
    """Scores: 가 just above 0.5, 나 just below, 가나 and the empty review exactly 0.5."""
    from pipeline.predict import Predictor
    from pipeline.tokenizer import CharTokenizer

    folder = tmp_path_factory.mktemp("threshold")
    CharTokenizer().fit(["가나다"]).save(folder / "tokenizer.json")
    save_known_model(folder, {"가": 0.001, "나": -0.001, "다": 0.0})
    return Predictor(folder), folder


def test_probability_above_half_is_positive_and_half_or_below_is_negative(threshold_predictor):
    from pipeline.predict import sentiment_predict

    predictor, folder = threshold_predictor
    reviews = ["가", "나", "가나", "", "다"]
    probs = predictor.predict_proba(reviews)
    assert probs[0] > 0.5 > probs[1]
    assert probs[2] == probs[3] == probs[4] == 0.5  # exactly: the rule is p > 0.5
    expected = [POSITIVE, NEGATIVE, NEGATIVE, NEGATIVE, NEGATIVE]
    assert predictor.predict(reviews) == expected
    assert [label for label, _ in predictor.predict_stream(reviews)] == expected
    assert sentiment_predict(reviews, folder) == expected
    assert predictor.predict("가") == POSITIVE and predictor.predict("가나") == NEGATIVE
