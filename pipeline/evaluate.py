"""Score the test split through the same path users get (clean -> encode -> predict)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics

from pipeline.config import Config
from pipeline.files import write_json_atomic
from pipeline.prepare import read_split


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, precision, recall, F1 and ROC-AUC at threshold 0.5, and the confusion matrix."""
    predicted = (probs > 0.5).astype(int)
    return {
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "precision": float(metrics.precision_score(labels, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(labels, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(labels, probs)) if len(set(labels)) > 1 else None,
        # rows: true negative, positive; columns: predicted negative, positive
        "confusion_matrix": metrics.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        "rows": int(len(labels)),
    }


def evaluate(config: Config, quiet: bool = False) -> dict:
    """Run the stage: test split + model in, metrics.json out."""
    from pipeline.predict import Predictor

    test = read_split(config.split_path("test"))
    probs = Predictor(config.artifacts_dir).predict_proba(test["text"].tolist())
    result = classification_metrics(test["label"].to_numpy(), probs)
    write_json_atomic(config.artifacts_dir / "metrics.json", {"test": result})
    if not quiet:
        print(format_table(result))
    return result


def format_table(result: dict) -> str:
    (tn, fp), (fn, tp) = result["confusion_matrix"]
    lines = [f"evaluate: test split, {result['rows']:,} reviews"]
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        value = result[name]
        lines.append(f"  {name:<10} {value:.4f}" if value is not None else f"  {name:<10} n/a")
    lines.append(f"  confusion  true neg: {tn:,} predicted neg, {fp:,} predicted pos")
    lines.append(f"             true pos: {fn:,} predicted neg, {tp:,} predicted pos")
    return "\n".join(lines)
