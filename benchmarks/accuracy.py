"""The chosen model against the tuned baseline: several training seeds, and a second domain.

Reads the splits and tokenizer a normal run left, trains the configured model once per seed
through the pipeline's own `train()` (the split stays the run's), and scores validation and
test through `Predictor`, the path users get. The baseline is refit the way its stage fits it
(C chosen on validation). Both are also scored on a file of another domain, e.g. the real
shopping sample when the models were trained on the movie-review stand-in:

    python -m pipeline run --source ../shared/data/nsmc_reviews_200k.txt
    python benchmarks/accuracy.py --data-dir data --artifacts-dir artifacts --seeds 1 2 3 \
        --cross-domain ../shared/data/naver_shopping_sample_2k.txt
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from common import scratch_artifacts

from pipeline.baseline import fit_baseline
from pipeline.config import load_config
from pipeline.labels import is_positive
from pipeline.predict import Predictor
from pipeline.prepare import label_and_clean, parse_lines, read_split
from pipeline.train import train


def cross_domain_set(path: Path) -> tuple[list[str], np.ndarray]:
    """A RATING<TAB>REVIEW file through prepare: labelled, cleaned, non-empty, deduplicated."""
    frame, _ = label_and_clean(parse_lines(path.read_bytes()))
    return frame["text"].tolist(), frame["label"].to_numpy()


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((is_positive(probs) == labels.astype(bool)).mean())


def baseline_scores(splits: dict, c_values: tuple[float, ...], other: list[str]) -> dict:
    """The baseline stage's model, C chosen on validation, scored on every set."""
    fitted = fit_baseline(splits["train"], splits["val"], c_values)
    scores = {"c": fitted.c}
    for name in ("val", "test"):
        probs = fitted.predict_proba(splits[name]["text"])
        scores[name] = accuracy(probs, splits[name]["label"].to_numpy())
    scores["other"] = fitted.predict_proba(other)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--config", type=Path, help="TOML settings of the model to train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--cross-domain", type=Path, required=True)
    args = parser.parse_args()

    base = load_config(args.config, data_dir=args.data_dir)
    splits = {name: read_split(base.split_path(name)) for name in ("train", "val", "test")}
    other_texts, other_labels = cross_domain_set(args.cross_domain)
    started = time.perf_counter()
    baseline = baseline_scores(splits, base.baseline_c, other_texts)
    baseline["other"] = accuracy(baseline["other"], other_labels)
    baseline["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"model": "baseline", **baseline}), flush=True)

    rows = []
    for seed in args.seeds:
        scratch = scratch_artifacts(args.artifacts_dir)
        started = time.perf_counter()
        summary = train(base.replace(artifacts_dir=scratch, seed=seed), quiet=True)
        seconds = time.perf_counter() - started
        predictor = Predictor(scratch)
        row = {"model": "rnn", "seed": seed, "train_seconds": round(seconds, 1)}
        for name in ("val", "test"):
            probs = predictor.predict_proba(splits[name]["text"].tolist())
            row[name] = accuracy(probs, splits[name]["label"].to_numpy())
        row["other"] = accuracy(predictor.predict_proba(other_texts), other_labels)
        row["best_epoch"] = summary["best_epoch"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(scratch, ignore_errors=True)

    summary = {"model": "rnn, over seeds", "seeds": args.seeds, "other_rows": len(other_texts)}
    for name in ("val", "test", "other"):
        values = [row[name] for row in rows]
        summary[name] = {
            "mean": round(statistics.mean(values), 4),
            "min": round(min(values), 4),
            "max": round(max(values), 4),
            "margin_over_baseline": round(statistics.mean(values) - baseline[name], 4),
        }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
