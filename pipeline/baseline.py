"""The bar a neural model must clear: character n-gram TF-IDF + logistic regression, same split."""

from __future__ import annotations

import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

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
    # setting: on validation. Ascending C with warm starts: each fit starts near its answer.
    classifier = LogisticRegression(max_iter=1000, warm_start=True)
    val_accuracy, best = {}, None
    for c in sorted(config.baseline_c):
        classifier.set_params(C=c).fit(features, train["label"])
        val_accuracy[c] = float((classifier.predict(val_features) == val["label"]).mean())
        if best is None or val_accuracy[c] > val_accuracy[best[0]]:
            best = (c, classifier.coef_.copy(), classifier.intercept_.copy())
    chosen_c, classifier.coef_, classifier.intercept_ = best
    seconds = time.perf_counter() - started

    result = {
        "model": "tf-idf char_wb 1-3 + logistic regression",
        "c": chosen_c,
        "val_accuracy_by_c": {str(c): a for c, a in val_accuracy.items()},
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
