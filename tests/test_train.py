from pathlib import Path

import numpy as np
import pytest

from pipeline.batches import batch_indices, distributed_batches, labelled_part, labelled_signature
from pipeline.config import Config
from pipeline.model import build_model
from pipeline.train import for_inference


@pytest.mark.parametrize("cell", ["lstm", "gru", "simplernn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_builds_every_cell_with_any_input_length(cell, bidirectional):
    config = Config(
        cell=cell, bidirectional=bidirectional, embedding_dim=4, rnn_units=(6, 3), jamo_features=0
    )
    model = build_model(config.replace(ngram_buckets=64), vocab_size=30)
    for length in (1, 17, 100):
        # in training: the answer, then the LSTM's and the n-grams' own; a predictor: the answer
        assert tuple(model(np.ones((2, length), dtype="int32")).shape) == (2, 3)
        assert tuple(for_inference(model)(np.ones((2, length), dtype="int32")).shape) == (2, 1)
    assert model.get_layer("embedding").input_dim == 30


def test_default_model_is_a_stacked_lstm_over_characters():
    from pipeline.tokenizer import CharTokenizer

    tokenizer = CharTokenizer().fit(["배송 빠르고 좋아요"])
    trainable = build_model(Config(), tokenizer.vocab_size, jamo_table=tokenizer.jamo_table())
    model = for_inference(trainable)  # what model.keras holds
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    # the sequence view and the n-gram bag, interleaved in Keras' order of building
    assert kinds == [
        "RightPad",
        "Embedding",
        "JamoEmbedding",
        "Concatenate",
        "SpatialDropout1D",
        "KeepFirstStep",
        "MaskedConv1D",
        "MaskedMaxPool1D",
        "Bidirectional",
        "HashedNgrams",
        "Bidirectional",
        "Embedding",
        "MaskedMaxMeanPooling",
        "MaskedBagMean",
        "Concatenate",
        "ZeroEmptyReviews",
        "Dropout",
        "Dense",
        "Temperature",  # the calibrated sigmoid of the logit
    ]
    names = {layer.name for layer in model.layers}
    training_only = {layer.name for layer in trainable.layers} - names
    assert training_only == {
        "rnn_alone_dropout",
        "rnn_alone",
        "ngrams_alone",
        "with_branch_answers",
    }
    bidirectional = [layer for layer in model.layers if type(layer).__name__ == "Bidirectional"]
    assert [type(layer.forward_layer).__name__ for layer in bidirectional] == ["LSTM", "LSTM"]


def test_jamo_features_need_the_tokenizers_table():
    with pytest.raises(ValueError, match="jamo_table"):
        build_model(Config(jamo_features=8), vocab_size=30)


def test_the_original_notebook_recipe_is_one_config_away():
    from pipeline.config import load_config

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "benchmarks" / "configs" / "original_recipe.toml")
    model = build_model(config, vocab_size=100)
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == ["Embedding", "LSTM", "LSTM", "Dense", "Temperature"]
    assert [model.layers[2].units, model.layers[3].units] == [64, 32]
    assert model.get_layer("embedding").output_dim == 16
    assert (config.batch_size, config.epochs, config.mask_padding) == (32, 2, False)


def test_shuffled_batches_cover_every_row_once_and_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, 5000)
    batches = batch_indices(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(5000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 10  # random batches of 32 would spread over ~90
    again = batch_indices(lengths, 32, np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))


def test_dataset_trims_each_batch_to_its_longest_review():
    import tensorflow as tf

    x = np.zeros((6, 10), dtype=np.int32)
    for row, length in enumerate([1, 2, 3, 7, 8, 9]):
        x[row, 10 - length :] = 5
    y = np.arange(6) % 2
    lengths = np.count_nonzero(x, axis=1)
    strategy = tf.distribute.get_strategy()

    def widths(trim: bool) -> list[int]:
        part = labelled_part(x, y, "pre", trim)
        data, steps = distributed_batches(lengths, 3, None, strategy, part, labelled_signature())
        batches = iter(data)
        return sorted(int(next(batches)[0].shape[1]) for _ in range(steps))

    assert widths(trim=True) == [3, 9]
    assert widths(trim=False) == [10, 10]


MIRRORED_SCRIPT = """
import sys, json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pipeline.config import Config
from pipeline.train import train
config = Config(**json.loads(sys.argv[1]))
print(json.dumps(train(config, quiet=True)))
"""


def test_mirrored_training_on_two_logical_cpus_keeps_the_contract(trained, tmp_path):
    """tf.distribute for real: two replicas, global batch doubled, model obeys the contract."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from pipeline.predict import Predictor

    shutil.copytree(trained.artifacts_dir, tmp_path / "artifacts")
    settings = {
        "data_dir": str(trained.data_dir),
        "artifacts_dir": str(tmp_path / "artifacts"),
        "embedding_dim": 8,
        "rnn_units": [8, 4],
        "ngram_buckets": 2**10,  # the fixture's small table, not the default's 25 M weights
        "ngram_dim": 8,
        "batch_size": 32,
        "epochs": 1,
        "distribute": "mirrored",
    }
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, json.dumps(settings)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["replicas"] == 2

    predictor = Predictor(tmp_path / "artifacts")
    review = "배송 빠르고 좋아요"
    alone = predictor.predict_proba([review])[0]
    assert predictor.predict_proba(["가" * 100, review, "별로"])[1] == pytest.approx(
        alone, abs=1e-5
    )


BRANCHED = dict(
    embedding_dim=4,
    rnn_units=(4,),
    conv_filters=4,
    jamo_features=0,
    ngram_order=3,
    ngram_buckets=64,
    ngram_dim=4,
    branch_loss_weight=0.3,
)


def test_branch_losses_add_each_branchs_own_cross_entropy():
    from pipeline.model import WithBranchLosses

    y = np.array([1.0, 0.0])
    answers = np.array([[0.9, 0.6, 0.2], [0.3, 0.5, 0.1]], dtype="float32")

    def bce(label, p):
        return -(label * np.log(p) + (1 - label) * np.log(1 - p))

    expected = [
        bce(t, row[0]) + 0.5 * (bce(t, row[1]) + bce(t, row[2]))
        for t, row in zip(y, answers, strict=True)
    ]
    got = WithBranchLosses(0.5)(y, answers)  # the mean over the batch
    assert float(got) == pytest.approx(np.mean(expected), rel=1e-5)


def test_the_branch_answers_train_but_the_saved_model_gives_one_answer(tmp_path):
    import keras

    from pipeline.train import for_inference

    model = build_model(Config(**BRANCHED), vocab_size=30, steps_per_epoch=4)
    x = np.random.default_rng(0).integers(0, 30, (32, 8)).astype("int32")
    model.fit(x, np.arange(32) % 2, epochs=1, batch_size=8, verbose=0)
    assert tuple(model(x).shape) == (32, 3)  # the model's answer, the RNN's, the n-grams'
    for_inference(model).save(tmp_path / "model.keras")
    saved = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(saved(x).numpy(), model(x).numpy()[:, :1], atol=1e-6)
    names = {layer.name for layer in saved.layers}
    assert "positive" in names and not names & {"rnn_alone", "ngrams_alone"}


def test_without_the_ngram_bag_there_are_no_branch_answers():
    model = build_model(Config(**{**BRANCHED, "ngram_order": 0}), vocab_size=30)
    assert tuple(model(np.ones((2, 5), dtype="int32")).shape) == (2, 1)


def test_the_fitted_temperature_is_the_one_that_made_the_labels():
    from pipeline.train import fit_temperature, log_loss

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 40_000)
    for true in (0.6, 1.0, 1.7):
        labels = (rng.random(len(logits)) < 1 / (1 + np.exp(-logits / true))).astype(float)
        fitted = fit_temperature(logits, labels)
        assert fitted == pytest.approx(true, rel=0.05)
        best = log_loss(logits / fitted, labels)
        assert best < log_loss(logits / (fitted * 1.1), labels)
        assert best < log_loss(logits / (fitted / 1.1), labels)
    assert fit_temperature(np.zeros(5), np.array([0, 1, 0, 1, 1])) == 1.0


def test_the_saved_model_divides_its_logit_by_the_temperature_and_keeps_every_label(tmp_path):
    import keras

    model = build_model(Config(**BRANCHED), vocab_size=30)
    x = np.random.default_rng(0).integers(0, 30, (64, 8)).astype("int32")
    logits = keras.Model(model.input, model.get_layer("logit").output)(x).numpy().ravel()
    for_inference(model, 2.5).save(tmp_path / "model.keras")
    saved = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    calibrated = saved(x).numpy().ravel()
    np.testing.assert_allclose(calibrated, 1 / (1 + np.exp(-logits / 2.5)), atol=1e-6)
    np.testing.assert_array_equal(calibrated > 0.5, logits > 0)
    assert saved.get_layer("positive").temperature == 2.5


def test_the_learning_rate_warms_up_then_decays_and_the_pretrained_encoder_learns_slower():
    config = Config(**BRANCHED, epochs=3, warmup_epochs=1, pretrain="mlm", pretrained_lr_scale=0.5)
    optimizer = build_model(config, vocab_size=30, steps_per_epoch=10).optimizer
    schedule = optimizer._learning_rate  # the schedule itself, not its current value
    rates = [float(schedule(step)) for step in (0, 5, 10, 20, 30)]
    assert rates[0] == 0 and rates[1] == pytest.approx(config.learning_rate / 2)
    assert rates[2] == pytest.approx(config.learning_rate) and rates[2] > rates[3] > rates[4]
    assert rates[4] == pytest.approx(0, abs=1e-9)
    assert optimizer.slow_layers == ("embedding", "char_ngrams", "bi_lstm_1")
    assert optimizer.slow_scale == 0.5
    scratch = build_model(config.replace(pretrain="none"), vocab_size=30).optimizer
    assert scratch.slow_layers == ()  # nothing pretrained: nothing to spare
