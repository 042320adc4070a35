"""Pretraining: what each objective hides or replaces, what it learns from, what train keeps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import Config
from pipeline.model import build_model, build_pretrainer, load_pretrained
from pipeline.pretrain import MASK_INDEX, _masked_part, _replaced_part
from pipeline.stages import get_stage, run_pipeline, stage_state
from pipeline.tokenizer import OOV_INDEX
from tests.conftest import tiny_config


def rows_of(lengths, width, padding, vocab=40, seed=0):
    """Padded rows of random ids 2..vocab-1 (a few OOV), the tokenizer's layout."""
    rng = np.random.default_rng(seed)
    x = np.zeros((len(lengths), width), dtype=np.int32)
    for row, length in enumerate(lengths):
        ids = rng.integers(2, vocab, length)
        ids[rng.random(length) < 0.05] = OOV_INDEX
        if padding == "pre":
            x[row, width - length :] = ids
        else:
            x[row, :length] = ids
    return x


def text_order(rows, padding):
    """Each row's ids from its text's first character on (what places count)."""
    return [row[row != 0] if padding == "pre" else row[: np.count_nonzero(row)] for row in rows]


def uniform(vocab=40):
    frequencies = np.ones(vocab)
    frequencies[: OOV_INDEX + 1] = 0
    return frequencies / frequencies.sum()


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_mlm_hides_chosen_characters_and_asks_for_exactly_them(padding):
    lengths = [1, 5, 17, 30, 30, 2, 29]
    x = rows_of(lengths * 40, 30, padding)
    rng = np.random.default_rng(1)
    make = _masked_part(x, padding, 0.15, 1, uniform(), lambda index: rng)
    index = np.arange(len(x))
    (inputs, places), targets, weights = make(index, np.float32(1 / len(x)))
    texts = text_order(x, padding)
    hidden = kept = swapped = 0
    for row in range(len(x)):
        chosen = weights[row] > 0
        text, seen = texts[row], text_order(inputs[row : row + 1], padding)[0]
        assert len(seen) == len(text)  # masking never turns a character into padding
        for place, target in zip(places[row][chosen], targets[row][chosen], strict=True):
            assert target == text[place] and target != OOV_INDEX  # the original character
            hidden += seen[place] == MASK_INDEX
            kept += seen[place] == target
            swapped += seen[place] not in (MASK_INDEX, target)
        untouched = np.setdiff1d(np.arange(len(text)), places[row][chosen])
        assert (seen[untouched] == text[untouched]).all()  # only chosen places change
    total = hidden + kept + swapped
    real = sum(int((t > OOV_INDEX).sum()) for t in texts)
    assert 0.12 < total / real < 0.18  # about mask_rate of the real characters
    assert 0.75 < hidden / total < 0.85 and 0.05 < kept / total < 0.15  # BERT's 80/10/10
    assert weights.sum() == pytest.approx(1.0, rel=1e-5)  # this part is the whole global batch


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("pool", [1, 2, 3])
def test_rtd_labels_every_replaced_character_in_text_order(padding, pool):
    lengths = [1, 4, 11, 12, 7]
    x = rows_of(lengths * 30, 12, padding)
    rng = np.random.default_rng(2)
    make = _replaced_part(x, padding, 0.3, pool, uniform(), lambda index: rng)
    inputs, labels, weights = make(np.arange(len(x)), np.float32(1 / len(x)))
    assert labels.shape[1] % pool == 0 and labels.shape[1] >= 12
    replaced = 0
    for row, (before, after) in enumerate(
        zip(text_order(x, padding), text_order(inputs, padding), strict=True)
    ):
        n = len(before)
        assert len(after) == n
        np.testing.assert_array_equal(labels[row, :n], (before != after).astype(np.float32))
        assert (weights[row, :n] > 0).all() and (weights[row, n:] == 0).all()
        assert (labels[row, n:] == 0).all()
        replaced += int((before != after).sum())
    assert 0.2 < replaced / sum(len(t) for t in text_order(x, padding)) < 0.35
    assert weights.sum() == pytest.approx(1.0, rel=1e-5)


def test_step_gather_reads_each_character_from_its_pooled_step():
    from pipeline.layers import StepGather

    steps = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 3, 4)
    places = np.array([[0, 1, 5], [2, 3, 0]], dtype="int32")
    layer = StepGather(pool=2)
    layer.build([steps.shape, places.shape])
    layer.place.assign(np.array([[0, 0, 0, 0], [100, 100, 100, 100]], dtype="float32"))
    out = layer([steps, places]).numpy()
    expected = np.stack(
        [np.stack([steps[b, p // 2] + (100 if p % 2 else 0) for p in places[b]]) for b in range(2)]
    )
    np.testing.assert_array_equal(out, expected)


ENCODER = dict(embedding_dim=8, rnn_units=(6, 4), conv_filters=8, jamo_features=0)


@pytest.mark.parametrize("objective", ["mlm", "rtd"])
def test_the_classifier_starts_from_every_pretrained_encoder_weight(objective):
    config = Config(**ENCODER, pretrain=objective, ngram_buckets=64, ngram_dim=4)
    pretrained = build_pretrainer(config, vocab_size=30)
    for layer in pretrained.layers:  # weights no fresh classifier could have by chance
        layer.set_weights([np.full(w.shape, 0.25, w.dtype) for w in layer.get_weights()])
    model = build_model(config, vocab_size=30)
    copied = load_pretrained(model, pretrained)
    assert set(copied) == {"embedding", "char_ngrams", "bi_lstm_1", "bi_lstm_2"}
    for name in copied:
        for mine, theirs in zip(
            model.get_layer(name).get_weights(),
            pretrained.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(mine, theirs)
    assert not np.all(model.get_layer("logit").get_weights()[0] == 0.25)  # the head is new


# -- the stage ---------------------------------------------------------------------------------
PRETRAIN = dict(pretrain="mlm", pretrain_epochs=1, pretrain_batch_size=64)


@pytest.fixture(scope="module")
def pretrained_project(tmp_path_factory, sample_path):
    """The fixture prepared and pretrained, with an unlabeled file that repeats a test review."""
    from pipeline.prepare import read_split

    root = tmp_path_factory.mktemp("pretrain")
    config = tiny_config(root, sample_path, **PRETRAIN)
    run_pipeline(config, names=("download", "prepare", "tokenize"), quiet=True)
    test_texts = read_split(config.split_path("test"))["text"].tolist()
    unlabeled = root / "unlabeled.txt"
    lines = ["완전 만족합니다 또 살게요", "별로 였어요 ㅠㅠ", test_texts[0] + "!!", "", "😀"] * 3
    unlabeled.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = config.replace(unlabeled=(str(unlabeled),))
    run_pipeline(config, names=("pretrain",), quiet=True)
    return config


def test_pretraining_leaves_out_reviews_of_validation_or_test_and_repeats(pretrained_project):
    record = json.loads(get_stage("pretrain").record_path(pretrained_project).read_text())
    counts = record["result"]["unlabeled.txt"]
    assert counts == {
        "read": 15,
        "empty_after_cleaning": 6,
        "in_validation_or_test": 3,
        "duplicates": 4,
        "kept": 2,
    }
    assert record["result"]["texts"] == record["result"]["training_texts"] + 2


def test_a_changed_unlabeled_file_stales_pretrain_and_train_but_not_tokenize(
    pretrained_project, tmp_path
):
    config = pretrained_project
    assert stage_state(get_stage("pretrain"), config)[0] == "fresh"
    changed = tmp_path / "more.txt"
    changed.write_text("새로운 리뷰 입니다\n", encoding="utf-8")
    other = config.replace(unlabeled=(*config.unlabeled, str(changed)))
    state, why = stage_state(get_stage("pretrain"), other)
    assert state == "stale" and "unlabeled" in why
    assert stage_state(get_stage("tokenize"), other)[0] == "fresh"
    encoder = {"pretrain_epochs", "mask_rate", "embedding_dim", "rnn_units", "conv_filters"}
    assert encoder <= set(Config.settings_of("pretrain"))


def test_a_missing_unlabeled_file_is_named_and_nothing_is_run(pretrained_project, tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.stages import run_stage

    config = pretrained_project.replace(unlabeled=(str(tmp_path / "nowhere.txt"),))
    before = config.pretrained_path.read_bytes()
    with pytest.raises(PipelineError, match="unlabeled file .*nowhere.txt does not exist"):
        run_stage(get_stage("pretrain"), config, quiet=True)
    assert config.pretrained_path.read_bytes() == before


def test_a_table_of_unlabeled_reviews_is_read_by_its_column(pretrained_project, tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.pretrain import unlabeled_texts

    table = tmp_path / "reviews.csv"
    table.write_text('id,review\n1,"좋아요, 정말"\n2,별로\n3,좋아요 정말\n', encoding="utf-8")
    config = pretrained_project.replace(unlabeled_column="review")
    known = {"train": set(), "val": set(), "test": {"별로"}}
    texts, counts = unlabeled_texts(table, config, known)
    assert texts == ["좋아요 정말"]
    assert counts == {"read": 3, "in_validation_or_test": 1, "duplicates": 1, "kept": 1}
    with pytest.raises(PipelineError, match="has no column 'text'.*'id', 'review'"):
        unlabeled_texts(table, config.replace(unlabeled_column="text"), known)
