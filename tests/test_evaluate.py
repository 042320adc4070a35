import json

import numpy as np
import pytest

from pipeline.baseline import baseline
from pipeline.evaluate import classification_metrics, format_table, length_buckets


def test_metrics_match_a_hand_count():
    labels = np.array([1, 1, 0, 0, 1])
    probs = np.array([0.9, 0.2, 0.1, 0.7, 0.6])
    m = classification_metrics(labels, probs)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert (m["precision"], m["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert m["roc_auc"] == pytest.approx(4 / 6)  # 4 of the 6 positive/negative pairs in order


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
