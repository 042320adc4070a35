"""Score the test split through the same path users get (clean -> encode -> predict).

Reports the model beside the TF-IDF baseline, with accuracy by review length, calibration
(ECE), a confusion-matrix plot and a reliability diagram.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics

from pipeline.config import Config
from pipeline.files import write_json_atomic
from pipeline.labels import is_positive
from pipeline.plots import plot_confusion, plot_reliability
from pipeline.prepare import read_split
from pipeline.records import read_json

# Cleaned review length, in characters; the last bucket holds reviews the tokenizer truncates.
LENGTH_EDGES = (10, 20, 40, 70, 100)
CALIBRATION_BINS = 15  # equal-width bins of the confidence (the probability of the label given)


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, precision, recall, F1 and ROC-AUC at THRESHOLD, and the confusion matrix."""
    predicted = is_positive(probs).astype(int)
    return {
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "precision": float(metrics.precision_score(labels, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(labels, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(labels, probs)) if len(set(labels)) > 1 else None,
        # rows: true negative, positive; columns: predicted negative, positive
        "confusion_matrix": metrics.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        "log_loss": float(metrics.log_loss(labels, probs, labels=[0, 1])),
        "ece": reliability(labels, probs)["ece"],
        "rows": int(len(labels)),
    }


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Expected calibration error and the reliability diagram's bins (Guo et al., 2017).

    Each review's confidence is the probability of the label it is given (p or 1 - p); reviews
    are binned by it over [0, 1]. In a calibrated model each bin's accuracy equals its mean
    confidence; the ECE is the gap, averaged over reviews.
    """
    probs = np.asarray(probs, dtype=np.float64)
    predicted = is_positive(probs)
    confidence = np.where(predicted, probs, 1 - probs)
    correct = predicted == np.asarray(labels).astype(bool)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    ece, rows = 0.0, []
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        mean, accuracy = float(confidence[inside].mean()), float(correct[inside].mean())
        ece += inside.sum() / len(probs) * abs(mean - accuracy)
        rows.append(
            {
                "bin": [b / bins, (b + 1) / bins],
                "rows": int(inside.sum()),
                "confidence": mean,
                "accuracy": accuracy,
            }
        )
    return {"ece": float(ece), "bins": rows}


def length_buckets(texts: Sequence[str], labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy per bucket of review length: {'1-10': {'rows': n, 'accuracy': a}, ...}."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    correct = is_positive(probs) == np.asarray(labels).astype(bool)
    out, low = {}, 1
    for high in (*LENGTH_EDGES, None):
        inside = (lengths >= low) & (lengths <= high if high else True)
        name = f"{low}-{high}" if high else f"{low}+"
        if inside.any():
            out[name] = {"rows": int(inside.sum()), "accuracy": float(correct[inside].mean())}
        low = (high or 0) + 1
    return out


def evaluate(config: Config, quiet: bool = False) -> dict:
    """Run the stage: test split, model, tokenizer and baseline.json in; metrics.json,
    confusion_matrix.png and reliability.png out."""
    from pipeline.predict import Predictor

    test = read_split(config.split_path("test"))
    labels = test["label"].to_numpy()
    predictor = Predictor(config.artifacts_dir)
    probs = predictor.predict_proba(test["text"].tolist())
    result = classification_metrics(labels, probs)
    result["engine"] = predictor.engine
    result["accuracy_by_length"] = length_buckets(test["text"], labels, probs)
    result["reliability"] = reliability(labels, probs)["bins"]
    report = {"test": result}
    if baseline := read_json(config.baseline_path):
        report["baseline_test"] = baseline["test"]
    write_json_atomic(config.metrics_path, report)
    plot_confusion(result["confusion_matrix"], config.confusion_matrix_path)
    plot_reliability(result, config.reliability_path, CALIBRATION_BINS)
    if not quiet:
        print(format_table(report))
    return {
        "accuracy": result["accuracy"],
        "f1": result["f1"],
        "roc_auc": result["roc_auc"],
        "ece": result["ece"],
        "baseline_accuracy": report.get("baseline_test", {}).get("accuracy"),
    }


def format_table(report: dict) -> str:
    """The model's test metrics beside the baseline's, then accuracy by length and the matrix."""
    model, base = report["test"], report.get("baseline_test")
    header = f"  {'':<12}{'model':>8}" + (f"{'baseline':>10}" if base else "")
    lines = [f"evaluate: test split, {model['rows']:,} reviews", header]
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "ece"):
        row = f"  {name:<12}{_cell(model[name]):>8}"
        lines.append(row + (f"{_cell(base.get(name)):>10}" if base else ""))
    for bucket, cell in model["accuracy_by_length"].items():
        row = f"  len {bucket:<8}{_cell(cell['accuracy']):>8}"
        if base and bucket in base.get("accuracy_by_length", {}):
            row += f"{_cell(base['accuracy_by_length'][bucket]['accuracy']):>10}"
        lines.append(row + f"   ({cell['rows']:,} reviews)")
    (tn, fp), (fn, tp) = model["confusion_matrix"]
    lines.append(f"  confusion   true neg: {tn:,} predicted neg, {fp:,} predicted pos")
    lines.append(f"              true pos: {fn:,} predicted neg, {tp:,} predicted pos")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
