"""label_fraction and self-training: the split it leaves, the pool the teacher labels, the rule
that only a student that beats its teacher is saved, and a failed student that changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import pipeline.selftrain as selftrain
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.prepare import read_split
from pipeline.records import read_record
from pipeline.stages import STAGE_NAMES, STAGES, run_pipeline, stage_state
from pipeline.tokenizer import OOV_INDEX
from pipeline.train import fit_temperature, log_loss
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # trains tiny teachers and students

SELF_TRAINING = dict(label_fraction=0.5, self_train_rounds=1)


def _prepared(root: Path, source: Path, **changes):
    config = tiny_config(root, source, **changes)
    run_pipeline(config, names=("download", "prepare"), quiet=True)
    return config


def test_label_fraction_keeps_a_stratified_share_and_writes_the_rest_unlabeled(
    tmp_path, sample_path
):
    whole = _prepared(tmp_path / "whole", sample_path)
    part = _prepared(tmp_path / "part", sample_path, label_fraction=0.25)
    for name in ("val", "test"):  # judged on the same reviews at any fraction
        assert part.split_path(name).read_bytes() == whole.split_path(name).read_bytes()
    all_train, kept = read_split(whole.split_path("train")), read_split(part.split_path("train"))
    for label in (0, 1):
        assert (kept["label"] == label).sum() == round(0.25 * (all_train["label"] == label).sum())
    left_out = part.train_unlabeled_path.read_text("utf-8").splitlines()
    # every training review once: labelled or not, in the split's order
    assert sorted(kept["text"].tolist() + left_out) == sorted(all_train["text"])
    assert left_out == [t for t in all_train["text"] if t not in set(kept["text"])]
    assert read_record(part.data_dir, "prepare")["result"]["train_unlabeled"] == len(left_out)
    assert not whole.train_unlabeled_path.exists()
    # the same seed keeps the same labels; another keeps others
    again = _prepared(tmp_path / "again", sample_path, label_fraction=0.25)
    assert again.split_path("train").read_bytes() == part.split_path("train").read_bytes()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"label_fraction": 0.0}, "label_fraction must be above 0"),
        ({"label_fraction": 1.5}, "label_fraction must be above 0"),
        ({"self_train_rounds": 4}, "self_train_rounds must be 0"),
        ({"self_train_weight": [0.0]}, "self_train_weight must list"),
        ({"self_train_noise": 1.0}, "self_train_noise must be"),
        ({"self_train_rounds": 1, "distribute": "multi-worker"}, "one process"),
    ],
)
def test_bad_self_training_settings_are_refused(changes, message):
    with pytest.raises(PipelineError, match=message):
        load_config(**changes)


def test_the_pool_leaves_out_reviews_of_any_split_and_repeats_and_counts_them(
    tmp_path, sample_path
):
    config = _prepared(tmp_path, sample_path, **SELF_TRAINING)
    val, test = read_split(config.split_path("val")), read_split(config.split_path("test"))
    left_out = config.train_unlabeled_path.read_text("utf-8").splitlines()
    rated = read_split(config.split_path("train"))["text"][0]
    extra = tmp_path / "more.txt"
    lines = [
        val["text"][0],
        test["text"][0],
        left_out[0],
        rated,
        "새 리뷰 좋아요",
        "새 리뷰 좋아요",
    ]
    extra.write_text("\n".join(lines) + "\n", "utf-8")
    config = config.replace(unlabeled=(str(extra),))
    splits = {name: read_split(config.split_path(name)) for name in ("train", "val", "test")}
    pool, counts = selftrain.unlabeled_pool(config, splits)
    assert counts["train_unlabeled.txt"] == {"read": len(left_out), "kept": len(left_out)}
    assert counts["more.txt"] == {"read": 6, "in_validation_or_test": 2, "duplicates": 3, "kept": 1}
    assert pool == left_out + ["새 리뷰 좋아요"]


@pytest.mark.parametrize("informative, share", [("baseline", 1.0), ("model", 0.0), (None, 0.0)])
def test_the_teacher_mixes_in_the_baseline_as_far_as_validation_log_loss_says(informative, share):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4000)
    signal, noise = 3 * (2 * labels - 1) + rng.normal(0, 2, 4000), rng.normal(0, 2, 4000)
    model_logits = signal if informative == "model" else noise
    baseline = None
    if informative:
        baseline_logits = signal if informative == "baseline" else noise
        baseline = selftrain.BaselineTeacher(1.0, 0.5, baseline_logits, baseline_logits[:10])
    teacher = selftrain.Candidate(None, 2.0, 2 * model_logits, 0.5)  # calibrated: logits / 2
    mix = selftrain.teacher_mix(teacher, baseline, labels)
    assert mix.share == share
    best = signal if informative else noise
    # the mix is calibrated: its temperature is the one fitted to its own logits
    assert mix.temperature == pytest.approx(fit_temperature(best, labels), rel=1e-6)
    assert mix.val_log_loss == pytest.approx(log_loss(best / mix.temperature, labels))
    assert mix.val_accuracy == np.mean((best > 0) == labels)


def test_noise_hides_characters_of_teacher_labelled_rows_only_and_weights_them():
    x = np.full((4, 50), 5, dtype=np.int32)
    x[:, :10] = 0  # padding
    y = np.array([1, 0, 0.9, 0.2], dtype=np.float32)
    noisy = np.array([False, False, True, True])
    part = selftrain.noisy_part(x, y, np.array([1, 1, 3, 3]), noisy, "pre", True, 0.5, seed=0)
    batch, labels, weights = part(np.arange(4), np.float32(0.25))
    assert batch.shape == (4, 40) and (x == np.where(x > 0, 5, 0)).all()  # x untouched
    assert (batch[:2] == 5).all()
    hidden = batch[2:] == OOV_INDEX
    assert 0.3 < hidden.mean() < 0.7 and (batch[2:][~hidden] == 5).all()
    assert labels.tolist() == pytest.approx(y.tolist())
    assert weights.tolist() == [0.25, 0.25, 0.75, 0.75]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, sample_path):
    """The fixture split with half the labels, tokenized, ready to train with self-training."""
    config = tiny_config(tmp_path_factory.mktemp("selftrain"), sample_path, **SELF_TRAINING)
    run_pipeline(config, names=("download", "prepare", "tokenize", "baseline"), quiet=True)
    return config


def _copy(config, root: Path):
    shutil.copytree(config.data_dir, root / "data")
    shutil.copytree(config.artifacts_dir, root / "artifacts")
    return config.replace(data_dir=root / "data", artifacts_dir=root / "artifacts")


def _forced(monkeypatch, val_accuracy: float) -> dict:
    """Students whose validation accuracy is set to `val_accuracy`; the teacher's and each
    student's weights are noted."""
    seen = {"students": []}
    real_self_train, real_student = selftrain.self_train, selftrain.train_student

    def self_train(config, teacher, *args, **kwargs):
        seen["teacher"] = teacher.get_weights()
        return real_self_train(config, teacher, *args, **kwargs)

    def train_student(*args, **kwargs):
        student = real_student(*args, **kwargs)
        student.val_accuracy = val_accuracy
        seen["students"].append(student.model.get_weights())
        return student

    monkeypatch.setattr(selftrain, "self_train", self_train)
    monkeypatch.setattr(selftrain, "train_student", train_student)
    return seen


def _saved_weights(config):
    import keras

    model = keras.saving.load_model(config.model_path, compile=False, safe_mode=True)
    return model.get_weights()


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_student_that_beats_its_teacher_is_saved_and_the_record_says_so(
    prepared, tmp_path, monkeypatch
):
    from pipeline.predict import Predictor

    config = _copy(prepared, tmp_path)
    seen = _forced(monkeypatch, val_accuracy=1.0)
    run_pipeline(config, names=("train",), quiet=True)
    (student,) = seen["students"]
    assert _same(_saved_weights(config), student)
    assert not _same(student, seen["teacher"])
    result = read_record(config.artifacts_dir, "train")["result"]["self_training"]
    assert result["winner"] == "student of round 1"
    assert result["final_val_accuracy"] == 1.0
    assert result["gain_points"] == round(100 * (1.0 - result["teacher_val_accuracy"]), 3)
    # model.onnx is the student too, and the predictor trusts it
    predictor = Predictor(config.artifacts_dir)
    assert predictor.engine == "onnx"
    texts = read_split(config.split_path("val"))["text"].tolist()[:50]
    keras_probs = Predictor(config.artifacts_dir, engine="keras").predict_proba(texts)
    assert np.allclose(predictor.predict_proba(texts), keras_probs, atol=1e-5)


def test_a_student_that_does_not_beat_its_teacher_is_not_saved(prepared, tmp_path, monkeypatch):
    config = _copy(prepared, tmp_path).replace(self_train_rounds=3)
    seen = _forced(monkeypatch, val_accuracy=0.0)
    run_pipeline(config, names=("train",), quiet=True)
    assert len(seen["students"]) == 1  # a losing student ends the rounds
    assert _same(_saved_weights(config), seen["teacher"])
    result = read_record(config.artifacts_dir, "train")["result"]["self_training"]
    assert result["winner"] == "teacher" and result["gain_points"] == 0
    (only,) = json.loads(config.self_training_path.read_text("utf-8"))["rounds"]
    assert only["student_won"] is False and only["student_val_accuracy"] == 0.0


@pytest.fixture(scope="module")
def self_trained(prepared, tmp_path_factory):
    """A real run of two rounds with two weights, nothing forced; then evaluate."""
    config = _copy(prepared, tmp_path_factory.mktemp("self-trained")).replace(
        self_train_rounds=2, self_train_weight=(0.5, 2.0)
    )
    run_pipeline(config, quiet=True)
    return config


def test_a_real_run_trains_students_and_keeps_the_better_model(self_trained):
    record = json.loads(self_trained.self_training_path.read_text("utf-8"))
    best, winner = record["teacher_val_accuracy"], "teacher"
    for number, round_ in enumerate(record["rounds"], start=1):
        assert round_["teacher_val_accuracy"] == best
        assert [s["weight"] for s in round_["students"]] == [0.5, 2.0]
        assert all(s["epochs"] >= 1 for s in round_["students"])
        chosen = max(round_["students"], key=lambda s: s["val_accuracy"])
        assert round_["chosen_weight"] == chosen["weight"]
        assert round_["student_won"] == (chosen["val_accuracy"] > best)
        if round_["student_won"]:
            best, winner = chosen["val_accuracy"], f"student of round {number}"
        else:
            assert number == len(record["rounds"])  # a loss ends the rounds
    assert record["final_val_accuracy"] == best
    assert record["winner"] == winner
    assert record["pseudo_labelled"] == len(
        self_trained.train_unlabeled_path.read_text("utf-8").splitlines()
    )
    assert self_trained.self_training_curves_path.stat().st_size > 0
    # the baseline that taught is the baseline stage's own (the same rated reviews, C on
    # validation), and the first teacher's mix is no worse than the model alone on validation
    baseline = json.loads(self_trained.baseline_path.read_text("utf-8"))
    assert record["baseline"] == {"c": baseline["c"], "val_accuracy": baseline["val"]["accuracy"]}
    first = record["rounds"][0]["teacher"]
    assert first["baseline_share"] in selftrain.BASELINE_SHARES
    model_alone = json.loads(self_trained.history_path.read_text("utf-8"))
    assert first["val_log_loss"] <= model_alone["val_log_loss_calibrated"] + 1e-5


def test_a_second_run_is_fresh_and_a_changed_weight_retrains(self_trained):
    assert run_pipeline(self_trained, quiet=True) == [(n, "skipped") for n in STAGE_NAMES]
    changed = self_trained.replace(self_train_weight=(1.0,))
    states = {s.name: stage_state(s, changed)[0] for s in STAGES}
    assert states["train"] == "stale" and states["tokenize"] == "fresh"


def test_evaluate_scores_the_saved_model(self_trained):
    from pipeline.evaluate import classification_metrics
    from pipeline.predict import Predictor

    test = read_split(self_trained.split_path("test"))
    probs = Predictor(self_trained.artifacts_dir).predict_proba(test["text"].tolist())
    metrics = read_record(self_trained.artifacts_dir, "evaluate")["result"]
    assert (
        metrics["accuracy"] == classification_metrics(test["label"].to_numpy(), probs)["accuracy"]
    )


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_a_killed_or_failed_student_leaves_the_model_files_and_record_unchanged(
    self_trained, tmp_path, monkeypatch, failure
):
    config = _copy(self_trained, tmp_path)
    kept = ("model.keras", "model.onnx", "stages/train.json", "self_training.json")
    before = {name: (config.artifacts_dir / name).read_bytes() for name in kept}

    def dies(*args, **kwargs):
        raise failure("killed while training the student")

    monkeypatch.setattr(selftrain, "train_student", dies)
    with pytest.raises((failure, PipelineError)):
        run_pipeline(config, names=("train",), force=True, quiet=True)
    assert {name: (config.artifacts_dir / name).read_bytes() for name in kept} == before
    assert not list(config.artifacts_dir.glob(".*.tmp*"))  # no half-written file left
    assert stage_state(STAGES[STAGE_NAMES.index("train")], config)[0] == "fresh"


def test_self_training_without_unlabeled_reviews_says_what_to_pass(prepared, tmp_path):
    config = _copy(prepared, tmp_path).replace(label_fraction=1.0)
    run_pipeline(config, names=("prepare", "tokenize"), quiet=True)
    with pytest.raises(PipelineError, match="no unlabeled reviews .* --unlabeled"):
        run_pipeline(config, names=("train",), quiet=True)
