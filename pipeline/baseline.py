"""The bar a neural model must clear: character n-gram TF-IDF + logistic regression, same split."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from pipeline.config import Config
from pipeline.evaluate import classification_metrics, length_buckets
from pipeline.files import write_json_atomic
from pipeline.labels import is_positive
from pipeline.prepare import read_split


@dataclass
class FittedBaseline:
    """The vectorizer and the classifier of the C that scored best on validation."""

    vectorizer: TfidfVectorizer
    classifier: LogisticRegression
    c: float
    val_accuracy: dict[float, float]  # every C tried
    val_loss: dict[float, float]

    def predict_proba(self, texts) -> np.ndarray:
        return self.classifier.predict_proba(self.vectorizer.transform(texts))[:, 1]


def fit_baseline(train: pd.DataFrame, val: pd.DataFrame, c_values) -> FittedBaseline:
    """Fit on train once per C; keep the C with the best validation accuracy (the smallest on ties).

    The bar the neural model faces is the best baseline, so C is tuned like any model's setting:
    on validation. Each C is fitted from scratch: warm-started from the previous C's answer,
    lbfgs stops at once (the change is within its tolerance) and every C scores alike.
    """
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
    features = vectorizer.fit_transform(train["text"])
    val_features = vectorizer.transform(val["text"])
    val_accuracy, val_loss, best = {}, {}, None
    for c in sorted(c_values):
        fitted = LogisticRegression(C=c, max_iter=1000).fit(features, train["label"])
        probs = fitted.predict_proba(val_features)[:, 1]
        val_accuracy[c] = float((is_positive(probs) == val["label"]).mean())
        val_loss[c] = float(log_loss(val["label"], probs, labels=[0, 1]))
        if best is None or val_accuracy[c] > val_accuracy[best[0]]:
            best = (c, fitted)
    chosen_c, classifier = best
    return FittedBaseline(vectorizer, classifier, chosen_c, val_accuracy, val_loss)


def baseline(config: Config, quiet: bool = False) -> dict:
    """Run the stage: fit on train, choose C on validation, report to baseline.json.

    Only the figures are kept: the fitted model is cheap to refit and never needs unpickling.
    """
    train, val, test = (read_split(config.split_path(s)) for s in ("train", "val", "test"))
    started = time.perf_counter()
    fitted = fit_baseline(train, val, config.baseline_c)
    seconds = time.perf_counter() - started

    result = {
        "model": "tf-idf char_wb 1-3 + logistic regression",
        "c": fitted.c,
        "val_accuracy_by_c": {str(c): a for c, a in fitted.val_accuracy.items()},
        "val_loss_by_c": {str(c): loss for c, loss in fitted.val_loss.items()},
        "fit_seconds": round(seconds, 1),
    }
    for name, frame in (("val", val), ("test", test)):
        probs = fitted.predict_proba(frame["text"])
        result[name] = classification_metrics(frame["label"].to_numpy(), probs)
        result[name]["accuracy_by_length"] = length_buckets(frame["text"], frame["label"], probs)
    write_json_atomic(config.baseline_path, result)
    if not quiet:
        print(
            f"baseline: validation accuracy {result['val']['accuracy']:.4f} at C = {fitted.c:g} "
            f"(fit in {seconds:.0f} s)"
        )
    return {
        "c": fitted.c,
        "val_accuracy": result["val"]["accuracy"],
        "test_accuracy": result["test"]["accuracy"],
    }
