"""Variants of the model trained on the splits a normal run left, compared on validation: model
settings, seeds, pretraining on unlabeled reviews, fewer labels.

    python -m pipeline run --source ../shared/data/nsmc_reviews_200k.txt   # splits + tokenizer
    python benchmarks/search.py --variants defaults conv_bigru_pool --set epochs=2
    python benchmarks/search.py --seeds 1 2 3 \
        --cross-domain ../shared/data/naver_shopping_sample_2k.txt
    python benchmarks/search.py --variants none mlm mlm+unlabeled \
        --unlabeled ../shared/data/nsmc_unlabeled_400k.txt
    python benchmarks/search.py --variants none mlm --pretrain-only --fractions 0.1

A variant is a model of VARIANTS, then `+mlm` or `+rtd` to pretrain its encoder first
(`+unlabeled`: on the --unlabeled files too); `none`, `mlm`, `rtd` are the defaults'. Each is
trained per --seeds by the pipeline's own `pretrain` and `train` in a scratch folder; one JSON
line each: what train returned, seconds, and validation accuracy and ECE through Predictor.
--cross-domain also scores test, another domain's file and the TF-IDF baseline (refit as its
stage does), with the mean over seeds and the margin. --fractions fine-tunes on a stratified
share of the labels, from scratch or from the encoder. --checkpoint-cost trains nothing: it
times one checkpoint save of each variant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import NOTEBOOK_MODEL as NOTEBOOK
from common import best_of, parse_settings

from pipeline.baseline import fit_baseline
from pipeline.config import load_config
from pipeline.evaluate import classification_metrics
from pipeline.model import build_model
from pipeline.predict import Predictor
from pipeline.prepare import keep_labels, label_and_clean, parse_lines, read_split
from pipeline.pretrain import pretrain
from pipeline.records import read_json
from pipeline.tokenizer import CharTokenizer
from pipeline.train import train

# Every variant spells out its whole model over the notebook's (configs/original_recipe.toml),
# so a row of RESULTS.md stays reproducible whatever the defaults become; training settings
# (epochs, learning rate, schedule) come from the defaults and --set.
CONV = {**NOTEBOOK, "embedding_dim": 64, "conv_filters": 128, "pooling": True}
# the convolution's output max-pooled by 2: half the RNN steps pay for a bidirectional LSTM
CONV_POOL2_BILSTM = {**CONV, "conv_pool": 2, "bidirectional": True}

VARIANTS: dict[str, dict] = {
    "defaults": {},  # pipeline/config.py as it is now
    "wide_lstm_pool": {**NOTEBOOK, "embedding_dim": 64, "pooling": True},
    "conv_lstm_pool": CONV,
    "conv_gru_pool": {**CONV, "cell": "gru"},
    "conv_bigru_pool": {**CONV, "cell": "gru", "rnn_units": (48, 32), "bidirectional": True},
    "bilstm_pool": {**NOTEBOOK, "embedding_dim": 64, "bidirectional": True, "pooling": True},
    "conv_pool2_bilstm": CONV_POOL2_BILSTM,
    "conv_pool2_lstm_wide": {**CONV, "conv_pool": 2, "rnn_units": (128, 64)},
    "conv256k5_pool2_bilstm": {**CONV_POOL2_BILSTM, "conv_filters": 256, "conv_kernel": 5},
    "conv_pool2_bilstm_dropout": (
        {**CONV_POOL2_BILSTM, "spatial_dropout": 0.15, "head_dropout": 0.3}
    ),
    # for data tokenized with token_unit="jamo", maxlen=250: 7 jamo span ~3 syllables, and
    # pooling by 3 brings the RNN back to about one step per syllable
    "jamo_conv_pool3_bilstm": (
        {**CONV_POOL2_BILSTM, "embedding_dim": 32, "conv_kernel": 7, "conv_pool": 3}
    ),
}


def label_fraction(config, fraction: float) -> Path:
    """A data folder whose encoded training split keeps `fraction` of its rows, per label."""
    folder = config.replace(data_dir=Path(tempfile.mkdtemp(prefix=f"labels-{fraction:g}-")))
    shutil.copytree(config.processed_dir, folder.processed_dir)
    with np.load(config.encoded_path) as data:
        arrays = dict(data)
    labels = pd.DataFrame({"label": arrays["y_train"], "text": ""})
    keep = keep_labels(labels, fraction, config.seed)[0].index  # prepare's --label-fraction rule
    arrays["x_train"], arrays["y_train"] = arrays["x_train"][keep], arrays["y_train"][keep]
    np.savez(folder.encoded_path, **arrays)
    return folder.data_dir


def scratch_artifacts(artifacts_dir: Path, pretrained_from: Path | None = None) -> Path:
    """A new artifacts folder holding the run's tokenizer (and a pretrained encoder to reuse)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-artifacts-"))
    shutil.copy(artifacts_dir / "tokenizer.json", folder / "tokenizer.json")
    if pretrained_from is not None:
        shutil.copy(pretrained_from / "pretrained.keras", folder / "pretrained.keras")
    return folder


def variant_config(args, variant: str, **changes):
    """A variant's config: the defaults, --config, its model, pretrained with `+mlm` or `+rtd`
    (on the --unlabeled files too with `+unlabeled`), --set, then `changes`."""
    model, *extras = variant.split("+")
    if model in ("none", "mlm", "rtd"):  # the defaults, pretrained or not
        model, extras = "defaults", [model, *extras]
    settings = {**VARIANTS[model], **parse_settings(args.set)}
    settings["pretrain"] = next((e for e in extras if e in ("mlm", "rtd")), "none")
    settings["unlabeled"] = tuple(map(str, args.unlabeled)) if "unlabeled" in extras else ()
    return load_config(args.config, data_dir=args.data_dir, **settings).replace(**changes)


def checkpoint_cost(config, tokenizer: CharTokenizer) -> dict:
    """One save of the model with Adam's state, as the ModelCheckpoint that training dropped
    wrote at every improving epoch (pipeline/loop.py keeps the best weights in memory): the
    fastest of 3 in seconds, and megabytes written."""
    model = build_model(config, tokenizer.vocab_size, 100, tokenizer.jamo_table())
    model.train_on_batch(np.ones((8, 20), dtype=np.int32), np.ones(8, dtype=np.float32))
    with tempfile.TemporaryDirectory(prefix="checkpoint-") as scratch:
        path = Path(scratch) / "checkpoint.keras"
        seconds = best_of(3, model.save, path)[0]
        return {"save_seconds": round(seconds, 2), "megabytes": round(path.stat().st_size / 1e6)}


def run(config, stages: tuple, sets: dict) -> dict:
    """Pretrain and/or train in `config`'s scratch folder: the seconds each took and what each
    returned, and, once trained, every set of `sets` scored through Predictor."""
    row: dict = {"seed": config.seed}
    for name, stage in (("pretrain", pretrain), ("train", train)):
        if name in stages:
            started = time.perf_counter()
            row[name] = stage(config, quiet=True)
            row[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
    if "train" in stages:
        history = read_json(config.history_path)["history"]
        row["val_accuracy_per_epoch"] = [round(v, 4) for v in history["val_accuracy"]]
        row["train_accuracy_per_epoch"] = [round(v, 4) for v in history["accuracy"]]
        predictor = Predictor(config.artifacts_dir)
        for name, (texts, labels) in sets.items():
            scores = classification_metrics(labels, predictor.predict_proba(texts))
            row[f"predictor_{name}"] = {k: round(scores[k], 4) for k in ("accuracy", "ece")}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="the run's splits")
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"), help="tokenizer")
    parser.add_argument("--config", type=Path, help="TOML settings of every model trained")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    parser.add_argument("--variants", nargs="+", default=["defaults"])
    parser.add_argument("--seeds", type=int, nargs="+", help="(default: the config's seed)")
    parser.add_argument("--cross-domain", type=Path, help="RATING<TAB>REVIEW of another domain")
    parser.add_argument("--unlabeled", nargs="*", default=[], type=Path)
    parser.add_argument("--fractions", nargs="*", type=float, default=[])
    parser.add_argument("--pretrain-only", action="store_true", help="(for --fractions)")
    parser.add_argument("--checkpoint-cost", action="store_true", help="no training")
    args = parser.parse_args()
    if args.checkpoint_cost:
        tokenizer = CharTokenizer.load(args.artifacts_dir / "tokenizer.json")
        for variant in args.variants:
            cost = checkpoint_cost(variant_config(args, variant), tokenizer)
            print(json.dumps({"variant": variant, "checkpoint": cost}))
        return

    base = variant_config(args, "defaults")
    splits = {name: read_split(base.split_path(name)) for name in ("train", "val", "test")}
    sets = {"val": (splits["val"]["text"].tolist(), splits["val"]["label"].to_numpy())}
    if args.cross_domain:
        other = label_and_clean(parse_lines(args.cross_domain.read_bytes()))[0]
        sets["test"] = (splits["test"]["text"].tolist(), splits["test"]["label"].to_numpy())
        sets["other"] = (other["text"].tolist(), other["label"].to_numpy())
        started = time.perf_counter()
        fitted = fit_baseline(splits["train"], splits["val"], base.baseline_c)
        baseline = {
            name: classification_metrics(y, fitted.predict_proba(t))["accuracy"]
            for name, (t, y) in sets.items()
        }
        seconds = round(time.perf_counter() - started, 1)
        print(json.dumps({"model": "baseline", "c": fitted.c, **baseline, "seconds": seconds}))

    settings = parse_settings(args.set)
    encoders: dict[str, Path] = {}  # each pretrained variant's folder
    for variant in args.variants:
        rows = []
        for seed in args.seeds or [base.seed]:
            scratch = scratch_artifacts(args.artifacts_dir)
            config = variant_config(args, variant, seed=seed, artifacts_dir=scratch)
            stages = ("train",) if config.pretrain == "none" else ("pretrain", "train")
            if args.pretrain_only:
                stages = stages[:-1]
            if stages:
                rows.append(run(config, stages, sets))
                row = {"variant": variant, "labels": 1.0, "settings": settings, **rows[-1]}
                print(json.dumps(row), flush=True)
            if config.pretrain != "none" and variant not in encoders:
                encoders[variant] = scratch  # the first seed's encoder, for --fractions
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        if args.cross_domain and rows:  # each set over the seeds, against the baseline
            summary = {"variant": variant, "seeds": args.seeds, "other_rows": len(sets["other"][0])}
            for name in sets:
                values = [row[f"predictor_{name}"]["accuracy"] for row in rows]
                mean = statistics.mean(values)
                summary[name] = {"mean": round(mean, 4), "min": min(values), "max": max(values)}
                summary[name]["margin_over_baseline"] = round(mean - baseline[name], 4)
            print(json.dumps(summary), flush=True)

    for fraction in args.fractions:  # the same fine-tuning on fewer labels
        data_dir = label_fraction(base, fraction)
        for variant in args.variants:
            scratch = scratch_artifacts(args.artifacts_dir, encoders.get(variant))
            config = variant_config(args, variant, data_dir=data_dir, artifacts_dir=scratch)
            row = {"variant": variant, "labels": fraction, "settings": settings}
            print(json.dumps({**row, **run(config, ("train",), sets)}), flush=True)
            shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    for folder in encoders.values():
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
