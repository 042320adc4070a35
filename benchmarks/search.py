"""A small, honest search over model settings: train each variant, compare validation accuracy.

Reads the splits a normal run left (`python -m pipeline run --source ...` up to tokenize), trains
every named variant through the pipeline's own `train()` and prints one JSON line per variant.
Only validation figures are printed: the test split is for the chosen setting alone.

    python benchmarks/search.py --data-dir data --variants defaults conv_bigru_pool
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import NOTEBOOK_MODEL as NOTEBOOK
from common import parse_settings, scratch_artifacts

from pipeline.config import load_config
from pipeline.records import read_json
from pipeline.train import train

# Every variant spells out its whole model over the notebook's (configs/original_recipe.toml),
# so a row of RESULTS.md stays reproducible whatever the defaults become; training settings
# (epochs, learning rate, schedule) come from the defaults and --set.
CONV = {**NOTEBOOK, "embedding_dim": 64, "conv_filters": 128, "pooling": True}
# the convolution's output max-pooled by 2: half the RNN steps pay for a bidirectional LSTM
CONV_POOL2_BILSTM = {**CONV, "conv_pool": 2, "bidirectional": True}

VARIANTS: dict[str, dict] = {
    "defaults": {},  # pipeline/config.py as it is now
    "notebook": NOTEBOOK,
    "wide_lstm_pool": {**NOTEBOOK, "embedding_dim": 64, "pooling": True},
    "conv_lstm_pool": CONV,
    "conv_gru_pool": {**CONV, "cell": "gru"},
    "conv_bigru_pool": {**CONV, "cell": "gru", "rnn_units": (48, 32), "bidirectional": True},
    "bilstm_pool": {**NOTEBOOK, "embedding_dim": 64, "bidirectional": True, "pooling": True},
    "conv_pool2_bilstm": CONV_POOL2_BILSTM,
    "conv_pool2_lstm_wide": {**CONV, "conv_pool": 2, "rnn_units": (128, 64)},
    "conv256k5_pool2_bilstm": {**CONV_POOL2_BILSTM, "conv_filters": 256, "conv_kernel": 5},
    "conv_pool2_bilstm_dropout": {
        **CONV_POOL2_BILSTM,
        "spatial_dropout": 0.15,
        "head_dropout": 0.3,
    },
    # for data tokenized with token_unit="jamo", maxlen=250: 7 jamo span ~3 syllables, and
    # pooling by 3 brings the RNN back to about one step per syllable
    "jamo_conv_pool3_bilstm": {
        **CONV_POOL2_BILSTM,
        "embedding_dim": 32,
        "conv_kernel": 7,
        "conv_pool": 3,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument(
        "--artifacts-dir",
        type=Path,
        default=Path("artifacts"),
        help="where the fitted tokenizer.json is (nothing is written there)",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=JSON",
        help="settings applied to every variant, e.g. epochs=2 batch_size=512",
    )
    args = parser.parse_args()
    common = parse_settings(args.set)

    for name in args.variants:
        scratch = scratch_artifacts(args.artifacts_dir)
        config = load_config(
            data_dir=args.data_dir, artifacts_dir=scratch, **{**VARIANTS[name], **common}
        )
        started = time.perf_counter()
        summary = train(config, quiet=True)
        history = read_json(config.history_path)["history"]
        print(
            json.dumps(
                {
                    "variant": name,
                    **{k: common.get(k) for k in common},
                    **VARIANTS[name],
                    "val_accuracy": round(summary["val_accuracy"], 4),
                    "val_accuracy_per_epoch": [round(v, 4) for v in history["val_accuracy"]],
                    "train_accuracy_per_epoch": [round(v, 4) for v in history["accuracy"]],
                    "best_epoch": summary["best_epoch"],
                    "epochs_run": summary["epochs_run"],
                    "parameters": summary["parameters"],
                    "seconds": round(time.perf_counter() - started, 1),
                }
            ),
            flush=True,
        )
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
