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
import tempfile
import time
from pathlib import Path

from pipeline.config import load_config
from pipeline.train import train

VARIANTS: dict[str, dict] = {
    # the current defaults of pipeline/config.py (combine with --set to vary one setting)
    "defaults": {},
    "wide_lstm_pool": dict(embedding_dim=64, rnn_units=(64, 32), pooling=True),
    "conv_lstm_pool": dict(embedding_dim=64, conv_filters=128, rnn_units=(64, 32), pooling=True),
    "conv_gru_pool": dict(
        embedding_dim=64, conv_filters=128, cell="gru", rnn_units=(64, 32), pooling=True
    ),
    "conv_bigru_pool": dict(
        embedding_dim=64,
        conv_filters=128,
        cell="gru",
        rnn_units=(48, 32),
        bidirectional=True,
        pooling=True,
    ),
    "bilstm_pool": dict(embedding_dim=64, rnn_units=(64, 32), bidirectional=True, pooling=True),
    # the convolution's output max-pooled by 2: half the RNN steps pay for a bidirectional LSTM
    "conv_pool2_bilstm": dict(
        embedding_dim=64,
        conv_filters=128,
        conv_pool=2,
        rnn_units=(64, 32),
        bidirectional=True,
        pooling=True,
    ),
    "conv_pool2_lstm_wide": dict(
        embedding_dim=64, conv_filters=128, conv_pool=2, rnn_units=(128, 64), pooling=True
    ),
    "conv256k5_pool2_bilstm": dict(
        embedding_dim=64,
        conv_filters=256,
        conv_kernel=5,
        conv_pool=2,
        rnn_units=(64, 32),
        bidirectional=True,
        pooling=True,
    ),
    "conv_pool2_bilstm_dropout": dict(
        embedding_dim=64,
        conv_filters=128,
        conv_pool=2,
        rnn_units=(64, 32),
        bidirectional=True,
        pooling=True,
        spatial_dropout=0.15,
        head_dropout=0.3,
    ),
    # for data tokenized with token_unit="jamo", maxlen=250: 7 jamo span ~3 syllables, and
    # pooling by 3 brings the RNN back to about one step per syllable
    "jamo_conv_pool3_bilstm": dict(
        embedding_dim=32,
        conv_filters=128,
        conv_kernel=7,
        conv_pool=3,
        rnn_units=(64, 32),
        bidirectional=True,
        pooling=True,
    ),
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
    common = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}

    for name in args.variants:
        scratch = Path(tempfile.mkdtemp(prefix=f"search-{name}-"))
        shutil.copy(args.artifacts_dir / "tokenizer.json", scratch / "tokenizer.json")
        config = load_config(
            data_dir=args.data_dir, artifacts_dir=scratch, **{**common, **VARIANTS[name]}
        )
        started = time.perf_counter()
        summary = train(config, quiet=True)
        history = json.loads((scratch / "history.json").read_text(encoding="utf-8"))["history"]
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
