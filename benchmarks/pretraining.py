"""What pretraining buys, on validation: each objective, with and without unlabeled reviews,
and the learning curve of fine-tuning on a fraction of the labels with and without it.

Reads the splits and tokenizer a normal run left, then for each variant runs the pipeline's own
`pretrain` and `train` stages in a scratch artifacts folder and scores validation through
`Predictor`, the path users get (test is left alone: settings are chosen on validation):

    python -m pipeline run --source ../shared/data/nsmc_reviews_200k.txt
    python benchmarks/pretraining.py --data-dir data --artifacts-dir artifacts \
        --unlabeled ../shared/data/nsmc_unlabeled_400k.txt \
        --variants none mlm rtd mlm+unlabeled rtd+unlabeled --fractions 0.1 0.3

A variant is an objective (`none`, `mlm`, `rtd`), `+unlabeled` to add the --unlabeled files to
the training split's texts. `--fractions` fine-tunes on that share of the training labels (a
stratified sample, the same for every model), once from scratch and once from the encoder of
`--curve-variant`, pretrained on every training text: a shop with few ratings and many reviews.
Prints one JSON line per run; `--set KEY=VALUE` changes any setting of every run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import parse_settings, scratch_artifacts

from pipeline.config import load_config
from pipeline.evaluate import classification_metrics
from pipeline.predict import Predictor
from pipeline.prepare import read_split
from pipeline.stages import get_stage, read_record, run_pipeline


def label_fraction(config, fraction: float) -> Path:
    """A data folder whose encoded training split keeps `fraction` of its rows, per label."""
    folder = config.replace(data_dir=Path(tempfile.mkdtemp(prefix=f"labels-{fraction:g}-")))
    shutil.copytree(config.processed_dir, folder.processed_dir)
    with np.load(config.encoded_path) as data:
        arrays = dict(data)
    rng = np.random.default_rng(config.seed)
    keep = np.concatenate(
        [
            rng.choice(np.flatnonzero(arrays["y_train"] == label), round(fraction * count), False)
            for label, count in enumerate(np.bincount(arrays["y_train"]))
        ]
    )
    keep.sort()
    arrays["x_train"], arrays["y_train"] = arrays["x_train"][keep], arrays["y_train"][keep]
    np.savez(folder.encoded_path, **arrays)
    return folder.data_dir


def validation_scores(config) -> dict:
    val = read_split(config.split_path("val"))
    probs = Predictor(config.artifacts_dir).predict_proba(val["text"].tolist())
    m = classification_metrics(val["label"].to_numpy(), probs)
    return {"val_accuracy": round(m["accuracy"], 4), "val_ece": round(m["ece"], 4)}


def run(config, names: tuple[str, ...]) -> dict:
    """Run the stages; the seconds each took, and the figures they recorded."""
    started = time.perf_counter()
    run_pipeline(config, names=names, force=True, quiet=True)
    row = {"wall_seconds": round(time.perf_counter() - started, 1)}
    for name in names:
        record = read_record(get_stage(name), config)
        row[f"{name}_seconds"] = record["seconds"]
        if name == "pretrain":
            result = record["result"]
            row["pretrain_texts"] = result["texts"]
            row["pretrain_val_loss"] = round(result["val_loss"], 4)
            row["pretrain_val_accuracy"] = round(result["val_accuracy"], 4)
        if name == "train":
            result = record["result"]
            row["best_epoch"] = result["best_epoch"]
            row["temperature"] = result["temperature"]
    if "train" not in names:
        return row
    return {**row, **validation_scores(config)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--config", type=Path, help="TOML settings of every run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--unlabeled", nargs="*", default=[], type=Path)
    parser.add_argument("--variants", nargs="*", default=["none", "mlm", "mlm+unlabeled"])
    parser.add_argument("--fractions", nargs="*", type=float, default=[])
    parser.add_argument("--curve-variant", default="mlm", help="the pretrained arm of the curve")
    parser.add_argument(
        "--pretrain-only",
        action="store_true",
        help="pretrain the variants without fine-tuning them on all labels (for --fractions)",
    )
    args = parser.parse_args()

    settings = parse_settings(args.set)
    base = load_config(args.config, data_dir=args.data_dir, **settings)
    encoders: dict[str, Path] = {}
    for variant in args.variants:
        objective, _, extra = variant.partition("+")
        unlabeled = tuple(map(str, args.unlabeled)) if extra == "unlabeled" else ()
        config = base.replace(
            artifacts_dir=scratch_artifacts(args.artifacts_dir),
            pretrain=objective,
            unlabeled=unlabeled,
        )
        names = ("train",) if objective == "none" else ("pretrain", "train")
        if args.pretrain_only:
            names = names[:-1]
            if not names:
                continue
        row = {"variant": variant, "labels": 1.0, "settings": settings, **run(config, names)}
        print(json.dumps(row), flush=True)
        encoders[variant] = config.artifacts_dir

    for fraction in args.fractions:
        data_dir = label_fraction(base, fraction)
        for variant in ("none", args.curve_variant):
            pretrained = encoders.get(variant) if variant != "none" else None
            if variant != "none" and pretrained is None:
                raise SystemExit(f"--curve-variant {variant} must be one of --variants")
            objective = variant.partition("+")[0]
            config = base.replace(
                data_dir=data_dir,
                artifacts_dir=scratch_artifacts(args.artifacts_dir, pretrained),
                pretrain=objective,
            )
            row = {"variant": variant, "labels": fraction, "settings": settings}
            print(json.dumps({**row, **run(config, ("train",))}), flush=True)
            shutil.rmtree(config.artifacts_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    for folder in encoders.values():
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
