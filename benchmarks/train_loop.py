"""The pipeline's one training loop against Keras' `fit`, and what the old checkpoint cost.

Until this change one-process training ran Keras' `fit` with a ModelCheckpoint that saved the
whole model with its optimizer state at every improving epoch, into a scratch file deleted
unread (EarlyStopping already kept the best weights). This measures, on the same data and the
same default model, one epoch three ways, in turn, `--repeats` times each:

- `fit`: Keras' fit on the pipeline's batches (what one process used to run);
- `fit+checkpoint`: the same with that ModelCheckpoint (the old stage, exactly);
- `loop`: the pipeline's loop (pipeline/loop.py), what every run uses now;

then the seconds and bytes of one such checkpoint save on its own.

    python -m pipeline run --source ../shared/data/nsmc_reviews_200k.txt   # leaves encoded.npz
    python benchmarks/train_loop.py --data-dir data --artifacts-dir artifacts --rows 60000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline import loop
from pipeline.batches import labelled_batches, load_encoded
from pipeline.config import Config
from pipeline.model import build_model
from pipeline.tokenizer import CharTokenizer
from pipeline.train import answer_task


def epoch(kind: str, config: Config, data: dict, tokenizer: CharTokenizer, scratch: Path) -> float:
    """Seconds for one epoch (training steps and validation) of a fresh default model."""
    keras.utils.set_random_seed(config.seed)
    strategy = tf.distribute.get_strategy()
    train_data, val_data = (
        labelled_batches(x, y, config.batch_size, tokenizer.padding, True, seed, strategy)
        for x, y, seed in (
            (data["x_train"], data["y_train"], config.seed),
            (data["x_val"], data["y_val"], None),
        )
    )
    model = build_model(config, tokenizer.vocab_size, train_data[1], tokenizer.jamo_table())
    started = time.perf_counter()
    if kind == "loop":
        loop.fit(model, strategy, answer_task, train_data, val_data, 1, [], verbose=False)
    else:
        callbacks = []
        if kind == "fit+checkpoint":
            path = scratch / "best.keras"
            callbacks.append(keras.callbacks.ModelCheckpoint(path, save_best_only=True))
        model.fit(
            train_data[0],
            steps_per_epoch=train_data[1],
            validation_data=val_data[0],
            validation_steps=val_data[1],
            epochs=1,
            callbacks=callbacks,
            verbose=0,
        )
    return time.perf_counter() - started


def checkpoint_cost(config: Config, tokenizer: CharTokenizer, scratch: Path) -> dict:
    """One save of the whole model with Adam's state, as ModelCheckpoint wrote it."""
    model = build_model(config, tokenizer.vocab_size, 100, tokenizer.jamo_table())
    x = np.ones((8, 20), dtype=np.int32)
    model.train_on_batch(x, np.ones(8, dtype=np.float32))  # creates the optimizer's moments
    path = scratch / "checkpoint.keras"
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        model.save(path)
        seconds.append(time.perf_counter() - started)
    return {"save_seconds": round(min(seconds), 2), "megabytes": round(path.stat().st_size / 1e6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--rows", type=int, default=60_000, help="training rows (0: all)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    config = Config(data_dir=args.data_dir, pretrain="none")
    data = load_encoded(config.encoded_path, ("x_train", "y_train", "x_val", "y_val"))
    if args.rows:
        for key in ("x_train", "y_train"):
            data[key] = data[key][: args.rows]
    tokenizer = CharTokenizer.load(args.artifacts_dir / "tokenizer.json")
    scratch = Path(tempfile.mkdtemp(prefix="train-loop-"))
    kinds = ("fit", "fit+checkpoint", "loop")
    seconds = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind in kinds:  # in turn, so a busy moment of the machine hits all three alike
            seconds[kind].append(round(epoch(kind, config, data, tokenizer, scratch), 1))
            print(json.dumps({"kind": kind, "seconds": seconds[kind][-1]}), flush=True)
    result = {
        "train_rows": len(data["y_train"]),
        "val_rows": len(data["y_val"]),
        "epoch_seconds_median": {k: statistics.median(v) for k, v in seconds.items()},
        "checkpoint": checkpoint_cost(config, tokenizer, scratch),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
