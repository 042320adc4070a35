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
    """Run the stage: fit on train, report validation and test metrics to baseline.json.

    Only the figures are kept: the fitted model is cheap to refit and never needs unpickling.
    """
    train, val, test = (read_split(config.split_path(s)) for s in ("train", "val", "test"))
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
    features = vectorizer.fit_transform(train["text"])
    classifier = LogisticRegression(C=config.baseline_c, max_iter=1000)
    classifier.fit(features, train["label"])
    seconds = time.perf_counter() - started

    result = {"model": "tf-idf char_wb 1-3 + logistic regression", "fit_seconds": round(seconds, 1)}
    for name, frame in (("val", val), ("test", test)):
        probs = classifier.predict_proba(vectorizer.transform(frame["text"]))[:, 1]
        result[name] = classification_metrics(frame["label"].to_numpy(), probs)
        result[name]["accuracy_by_length"] = length_buckets(frame["text"], frame["label"], probs)
    write_json_atomic(config.artifacts_dir / "baseline.json", result)
    if not quiet:
        print(
            f"baseline: validation accuracy {result['val']['accuracy']:.4f} "
            f"(fit in {seconds:.0f} s)"
        )
    return {"val_accuracy": result["val"]["accuracy"], "test_accuracy": result["test"]["accuracy"]}
