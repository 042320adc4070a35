"""The bar a neural model must clear: character n-gram TF-IDF + logistic regression, same split."""

from __future__ import annotations

import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from pipeline.config import Config
from pipeline.evaluate import classification_metrics, length_buckets
from pipeline.files import write_json_atomic
from pipeline.prepare import read_split


def baseline(config: Config, quiet: bool = False) -> dict:
    """Run the stage: fit on train, choose C on validation, report to baseline.json.

    Only the figures are kept: the fitted model is cheap to refit and never needs unpickling.
    """
    train, val, test = (read_split(config.split_path(s)) for s in ("train", "val", "test"))
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
    features = vectorizer.fit_transform(train["text"])
    val_features = vectorizer.transform(val["text"])
    # The bar the neural model faces is the best baseline, so C is tuned like any model's
    # setting: on validation. Each C is fitted from scratch: warm-started from the previous C's
    # answer, lbfgs stops at once (the change is within its tolerance) and every C scores alike.
    val_accuracy, val_loss, best = {}, {}, None
    for c in sorted(config.baseline_c):
        fitted = LogisticRegression(C=c, max_iter=1000).fit(features, train["label"])
        probs = fitted.predict_proba(val_features)[:, 1]
        val_accuracy[c] = float(((probs > 0.5) == val["label"]).mean())
        val_loss[c] = float(log_loss(val["label"], probs, labels=[0, 1]))
        if best is None or val_accuracy[c] > val_accuracy[best[0]]:
            best = (c, fitted)
    chosen_c, classifier = best
    seconds = time.perf_counter() - started

    result = {
        "model": "tf-idf char_wb 1-3 + logistic regression",
        "c": chosen_c,
        "val_accuracy_by_c": {str(c): a for c, a in val_accuracy.items()},
        "val_loss_by_c": {str(c): loss for c, loss in val_loss.items()},
        "fit_seconds": round(seconds, 1),
    }
    for name, frame in (("val", val), ("test", test)):
        probs = classifier.predict_proba(vectorizer.transform(frame["text"]))[:, 1]
        result[name] = classification_metrics(frame["label"].to_numpy(), probs)
        result[name]["accuracy_by_length"] = length_buckets(frame["text"], frame["label"], probs)
    write_json_atomic(config.artifacts_dir / "baseline.json", result)
    if not quiet:
        print(
            f"baseline: validation accuracy {result['val']['accuracy']:.4f} at C = {chosen_c:g} "
            f"(fit in {seconds:.0f} s)"
        )
    return {
        "c": chosen_c,
        "val_accuracy": result["val"]["accuracy"],
        "test_accuracy": result["test"]["accuracy"],
    }
