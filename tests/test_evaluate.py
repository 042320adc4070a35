import json
import shutil

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from pipeline.baseline import baseline
from pipeline.evaluate import classification_metrics, format_table, length_buckets, reliability
from pipeline.prepare import read_split


def test_metrics_match_a_hand_count():
    labels = np.array([1, 1, 0, 0, 1])
    probs = np.array([0.9, 0.2, 0.1, 0.7, 0.6])
    m = classification_metrics(labels, probs)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert (m["precision"], m["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert m["roc_auc"] == pytest.approx(4 / 6)  # 4 of the 6 positive/negative pairs in order


def test_calibration_error_is_the_reviews_weighted_gap_between_confidence_and_accuracy():
    # 10 reviews at 0.05 (label negative, confidence 0.95), 1 of them positive; 10 at 0.95,
    # half positive: one bin, confidence 0.95, accuracy (9 + 5) / 20. 4 at exactly 0.5: labelled
    # negative with confidence 0.5, 2 right: calibrated.
    probs = np.array([0.05] * 10 + [0.95] * 10 + [0.5] * 4)
    labels = np.array([1] + [0] * 9 + [1] * 5 + [0] * 5 + [1, 0, 1, 0])
    result = reliability(labels, probs)
    assert result["ece"] == pytest.approx(20 * abs(0.95 - 0.7) / 24)
    assert [b["rows"] for b in result["bins"]] == [4, 20]
    assert result["bins"][0]["bin"] == [7 / 15, 8 / 15] and result["bins"][1]["bin"][1] == 1.0
    assert [b["accuracy"] for b in result["bins"]] == [0.5, 0.7]
    assert classification_metrics(labels, probs)["ece"] == result["ece"]
    assert reliability(np.array([0, 1]), np.array([0.0, 1.0]))["ece"] == 0.0  # sure and right


def test_length_buckets_count_every_review_once():
    texts = ["가" * n for n in (1, 10, 11, 45, 100, 300)]
    buckets = length_buckets(
        texts, np.array([1, 0, 1, 1, 0, 0]), np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    )
    assert {k: v["rows"] for k, v in buckets.items()} == {
        "1-10": 2,
        "11-20": 1,
        "41-70": 1,
        "71-100": 1,
        "101+": 1,
    }
    assert buckets["1-10"]["accuracy"] == 0.5 and buckets["101+"]["accuracy"] == 1.0


def test_evaluation_reports_model_beside_baseline(trained):
    report = json.loads((trained.artifacts_dir / "metrics.json").read_text(encoding="utf-8"))
    table = format_table(report)
    assert "baseline" in table.splitlines()[1]
    assert report["baseline_test"]["rows"] == report["test"]["rows"]
    assert (
        sum(b["rows"] for b in report["test"]["accuracy_by_length"].values())
        == report["test"]["rows"]
    )
    assert (trained.artifacts_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (trained.artifacts_dir / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "ece" in table and report["test"]["reliability"]


def test_baseline_learns_the_sample_well_above_chance(trained, tmp_path):
    config = trained.replace(artifacts_dir=tmp_path)
    result = baseline(config, quiet=True)
    assert result["val_accuracy"] > 0.75  # real shopping reviews: n-grams carry the sentiment
    saved = json.loads((tmp_path / "baseline.json").read_text(encoding="utf-8"))
    assert saved["test"]["accuracy"] == result["test_accuracy"]


def test_baseline_c_is_chosen_on_validation_only(trained, tmp_path):
    """The bar is the best baseline: each candidate C is scored on validation, the best kept."""
    config = trained.replace(artifacts_dir=tmp_path, baseline_c=(0.01, 1.0, 100.0))
    result = baseline(config, quiet=True)
    saved = json.loads((tmp_path / "baseline.json").read_text(encoding="utf-8"))
    by_c = {float(c): a for c, a in saved["val_accuracy_by_c"].items()}
    assert set(by_c) == {0.01, 1.0, 100.0}
    assert result["c"] == saved["c"] == max(by_c, key=lambda c: (by_c[c], -c))
    assert saved["val"]["accuracy"] == pytest.approx(by_c[saved["c"]])
    # one candidate: no search, and a single number is accepted where a list is expected
    single = baseline(trained.replace(artifacts_dir=tmp_path / "one", baseline_c=0.01), quiet=True)
    assert single["c"] == 0.01 and single["val_accuracy"] == pytest.approx(by_c[0.01])
    # each C's figure is that C's own model (warm starts once left every C at the first answer)
    train, val = (read_split(trained.split_path(s)) for s in ("train", "val"))
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
    features = vectorizer.fit_transform(train["text"])
    val_features = vectorizer.transform(val["text"])
    for c, accuracy in by_c.items():
        fitted = LogisticRegression(C=c, max_iter=1000).fit(features, train["label"])
        assert accuracy == pytest.approx((fitted.predict(val_features) == val["label"]).mean())
    assert len(set(by_c.values())) > 1, "C from 0.01 to 100 changed nothing on validation"


def test_every_baseline_c_is_its_own_fit_on_a_large_training_split(trained, tmp_path):
    """At 150k training rows, C's pull on the loss is below lbfgs's tolerance: a fit
    warm-started from another C's answer stops at once, and every C scored alike."""
    data = tmp_path / "data"
    shutil.copytree(trained.data_dir, data)
    train_path = trained.replace(data_dir=data).split_path("train")
    rows = train_path.read_text(encoding="utf-8").splitlines(keepends=True)
    train_path.write_text(rows[0] + "".join(rows[1:] * 300), encoding="utf-8")
    config = trained.replace(data_dir=data, artifacts_dir=tmp_path / "a", baseline_c=(1.0, 3.0))
    baseline(config, quiet=True)
    saved = json.loads((config.artifacts_dir / "baseline.json").read_text(encoding="utf-8"))
    losses = saved["val_loss_by_c"]
    assert losses["1.0"] != losses["3.0"], "the second C reused the first C's model"
