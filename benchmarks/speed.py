# ruff: noqa: E402  (TF_CPP_MIN_LOG_LEVEL must be set before TensorFlow is imported)
"""Speed of the original notebook recipe against this project, on the same data in one run.

    python benchmarks/speed.py                    # nsmc_reviews_200k.txt, 40,000 lines
    python benchmarks/speed.py --lines 4000 --predict-reviews 2000 --latency-calls 20   # quick
    python benchmarks/speed.py --skip preprocess train --model-dir artifacts \
        --engines keras onnx --latency-calls 300 --starts 5      # a trained model, both engines

Stages (--skip NAME leaves one out): preprocess, train (one epoch), predict (batched), latency
(one review a call) and memory (a new process's first answer: seconds and peak RSS). Contenders,
taken in turn: `original`, the notebook's code; `ours`, the notebook's sizes through the
pipeline's own (prepare, CharTokenizer, build_model, its loop, Predictor, sentiment_predict);
`default ENGINE`, the default model (--model-dir's, or built untrained) on each of --engines.
Prints each figure with its ratio to the first contender's, then one JSON line;
benchmarks/README.md says what each stage times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common
import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tf_keras.preprocessing.sequence import pad_sequences
from tf_keras.preprocessing.text import Tokenizer as LegacyTokenizer

from pipeline import loop
from pipeline.batches import labelled_batches
from pipeline.config import Config
from pipeline.model import build_model
from pipeline.predict import Predictor, sentiment_predict
from pipeline.prepare import ParsedLines, label_and_clean, parse_lines, split_frame
from pipeline.tokenizer import CharTokenizer
from pipeline.train import answer_task

STAGES = ("preprocess", "train", "predict", "latency", "memory")
ORIGINAL_PATTERN = "[^ㄱ-ㅎㅏ-ㅣ가-힣0-9 ]"  # the notebook's cleaning rule
ORIGINAL_RE = re.compile(ORIGINAL_PATTERN)
ORIGINAL_MAXLEN = 100
ORIGINAL_BATCH = common.NOTEBOOK_RECIPE["batch_size"]
SEED = 42


def compare(title: str, figures: dict[str, float], unit: str, lower_is_better=False) -> dict:
    """Print each contender's figure with its ratio to the first one's; the figures, rounded."""
    first = next(iter(figures.values()))
    print(f"  {title}")
    for name, value in figures.items():
        ratio = first / value if lower_is_better else value / first
        print(f"    {name:<18} {value:12,.2f} {unit:<3} {ratio:6.2f}x")
    return {name: round(value, 4) for name, value in figures.items()}


def original_encode(tokenizer: LegacyTokenizer, texts: list[str]) -> np.ndarray:
    return pad_sequences(tokenizer.texts_to_sequences(texts), maxlen=ORIGINAL_MAXLEN)


# -- 1. preprocessing ----------------------------------------------------------------------------
def original_preprocess(parsed: ParsedLines) -> np.ndarray:
    """The notebook: regex replace, drop duplicates, drop empty, legacy Tokenizer, pad."""
    frame = pd.DataFrame({"review": parsed.reviews, "label": parsed.labels})
    frame["review"] = frame["review"].str.replace(ORIGINAL_PATTERN, "", regex=True)
    frame = frame.drop_duplicates(subset=["review"])
    frame = frame[frame["review"] != ""]
    tokenizer = LegacyTokenizer(char_level=True, oov_token="OOV")
    tokenizer.fit_on_texts(frame["review"])
    return original_encode(tokenizer, frame["review"].tolist())


def our_preprocess(parsed: ParsedLines) -> np.ndarray:
    """This project: prepare's clean + drop empty + dedupe, then CharTokenizer fit + encode."""
    texts = label_and_clean(parsed)[0]["text"].tolist()
    return CharTokenizer.for_config(Config()).fit(texts).encode(texts)


def bench_preprocess(parsed: ParsedLines) -> dict:
    seconds, rows = {}, {}
    for name, preprocess in (("original", original_preprocess), ("ours", our_preprocess)):
        seconds[name], encoded = common.best_of(3, preprocess, parsed)
        rows[name] = len(encoded)
    print(
        f"  all {len(parsed.reviews):,} lines; rows kept {rows} (ours also folds repeated "
        "whitespace, so more texts count as duplicates)"
    )
    return {"rows": rows, "seconds": compare("seconds, best of 3", seconds, "s", True)}


# -- 2. training ---------------------------------------------------------------------------------
def build_original_model(vocab_size: int) -> keras.Model:
    """The notebook's model: no masking, fixed length 100, adam, binary cross-entropy."""
    model = keras.Sequential(
        [
            keras.Input(shape=(ORIGINAL_MAXLEN,), dtype="int32"),
            keras.layers.Embedding(vocab_size, 16),
            keras.layers.LSTM(64, return_sequences=True),
            keras.layers.LSTM(32),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def prepare_models(parsed: ParsedLines, lines: int, config: Config) -> tuple[dict, dict]:
    """Each recipe's tokenizer and model, and the first `lines` rows through prepare (cleaned,
    deduped, split stratified with seed 42), encoded: the training split, and validation + test
    together as the 20% held out. Both recipes train on the very same texts, so the figures
    compare tokenizer, model and training loop, not the cleaning rule."""
    first = ParsedLines(parsed.labels[:lines], parsed.ratings[:lines], parsed.reviews[:lines])
    splits = split_frame(label_and_clean(first)[0], Config(seed=SEED))
    train, held_out = splits["train"], pd.concat([splits["val"], splits["test"]])
    x_train, x_val = train["text"].tolist(), held_out["text"].tolist()
    shared = {"texts": x_train, "y_train": train["label"].to_numpy()}
    shared["y_val"] = held_out["label"].to_numpy()
    legacy = LegacyTokenizer(char_level=True, oov_token="OOV")
    legacy.fit_on_texts(x_train)
    ours = CharTokenizer.for_config(config).fit(x_train)
    keras.utils.set_random_seed(SEED)
    original_model = build_original_model(len(legacy.word_index) + 1)
    keras.utils.set_random_seed(SEED)
    steps = -(-len(x_train) // config.batch_size)
    our_model = build_model(config, ours.vocab_size, steps_per_epoch=steps)
    encode = (lambda t: original_encode(legacy, t), ours.encode)
    return tuple(
        {"tokenizer": tok, "model": model, "x_train": enc(x_train), "x_val": enc(x_val), **shared}
        for tok, model, enc in zip((legacy, ours), (original_model, our_model), encode, strict=True)
    )


def bench_train(original: dict, ours: dict, config: Config) -> dict:
    """One epoch each. Throughput is counted after the first step (graph tracing) for both."""
    y_train, y_val = ours["y_train"], ours["y_val"]
    steady = {"original": [], "ours": []}
    clock = loop.epoch_timer(steady["original"], after_first_step=True)
    x, y = original["x_train"], y_train.astype(np.float32)
    original["model"].fit(x, y, batch_size=ORIGINAL_BATCH, epochs=1, callbacks=[clock], verbose=0)
    _, original_acc = original["model"].evaluate(
        original["x_val"], y_val.astype(np.float32), batch_size=1024, verbose=0
    )
    strategy = tf.distribute.get_strategy()
    train_data, val_data = (
        labelled_batches(x, y, config.batch_size, config.padding, True, seed, strategy)
        for x, y, seed in ((ours["x_train"], y_train, SEED), (ours["x_val"], y_val, None))
    )
    clock = loop.epoch_timer(steady["ours"], after_first_step=True)
    history = loop.fit(
        ours["model"], strategy, answer_task, train_data, val_data, 1, [clock], verbose=False
    )
    rows = len(y_train)
    rates = {
        "original": (rows - ORIGINAL_BATCH) / steady["original"][0],
        "ours": (rows - min(config.batch_size, rows)) / steady["ours"][0],
    }
    print(
        f"  {rows:,} training rows, {len(y_val):,} validation rows; batch size original "
        f"{ORIGINAL_BATCH}, ours {config.batch_size}"
    )
    accuracy = {"original": float(original_acc), "ours": float(history["val_accuracy"][-1])}
    return {
        "samples_per_s": compare("samples/s after batch 1", rates, "/s"),
        "val_accuracy": compare("validation accuracy", accuracy, ""),
    }


# -- 3. batched prediction, 4. one-review latency, 5. a new process's start and memory ----------
def original_predict(original: dict, texts: list[str]) -> np.ndarray:
    """The notebook's path for many reviews: clean, texts_to_sequences, pad, model.predict."""
    x = original_encode(original["tokenizer"], [ORIGINAL_RE.sub("", t) for t in texts])
    return original["model"].predict(x, batch_size=1024, verbose=0)


def bench_predict(scorers: dict, texts: list[str]) -> dict:
    for score in scorers.values():
        score(texts[:64])  # warm-up: traces the forward function (model.predict gets the same)
    best = dict.fromkeys(scorers, float("inf"))
    for _ in range(3):  # best of 3 rounds, taken in turn, so noise hits all alike
        for name, score in scorers.items():
            best[name] = min(best[name], common.best_of(1, score, texts)[0])
    print(f"  {len(texts):,} raw reviews, cleaning and tokenizing included, best of 3")
    return compare("reviews/s", {name: len(texts) / s for name, s in best.items()}, "/s")


def bench_latency(scorers: dict, texts: list[str], calls: int, warmup: int = 20) -> dict:
    times = {name: [] for name in scorers}
    for i in range(warmup + calls):  # in turn, so noise hits all alike
        for name, score in scorers.items():
            started = time.perf_counter()
            score(texts[i % len(texts)])
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - started))
    print(f"  {calls} calls each after {warmup} warm-up calls")
    return {
        f"p{q}_ms": compare(
            f"p{q} ms", {name: float(np.percentile(t, q)) for name, t in times.items()}, "ms", True
        )
        for q in (50, 95)
    }


START = """
import sys
if sys.argv[1:]:
    from pipeline import sentiment_predict
    sentiment_predict("배송 빠르고 좋아요", artifacts_dir=sys.argv[1], engine=sys.argv[2])
else:
    import keras, tensorflow
with open("/proc/self/status") as fh:  # VmHWM, this process's own peak RSS
    print(next(line for line in fh if line.startswith("VmHWM:")).split()[1])
print("tensorflow" in sys.modules)
"""


def bench_memory(folders: dict[str, tuple[Path, str]], starts: int) -> dict:
    runs = {"import keras + tf": (), **{n: (str(f), e) for n, (f, e) in folders.items()}}
    seen = {name: [] for name in runs}  # (seconds, peak MiB, TensorFlow imported) of each start
    for _ in range(starts):
        for name, argv in runs.items():
            started = time.perf_counter()
            command = [sys.executable, "-c", START, *argv]
            done = subprocess.run(command, env=common.child_env(), capture_output=True, check=True)
            seconds = time.perf_counter() - started
            peak, tensorflow = done.stdout.decode().split()[-2:]
            seen[name].append((seconds, int(peak) / 1024, tensorflow == "True"))
    print(f"  fresh processes, spawn to exit, {starts} each in turn; peak RSS (VmHWM)")
    result = {}
    for name, each in seen.items():
        seconds, peaks, imported = zip(*each, strict=True)
        low_median_high = [round(v, 2) for v in np.percentile(seconds, [0, 50, 100])]
        result[name] = {"seconds_min_median_max": low_median_high, "peak_mib": round(max(peaks))}
        result[name]["imported_tensorflow"] = any(imported)
        print(f"    {name:<18} {result[name]}")
    return result


def run_models(parsed: ParsedLines, config: Config, args, run: list[str], results: dict) -> None:
    """Stages 2-5: both recipes' models, trained in stage 2 (untrained if it is skipped)."""
    original, ours = prepare_models(parsed, args.lines, config)
    if "train" in run:
        print("\n2. training, one epoch each")
        results["train"] = bench_train(original, ours, config)

    raw = parsed.reviews[: args.lines]
    texts = [raw[i % len(raw)] for i in range(args.predict_reviews)]
    with tempfile.TemporaryDirectory(prefix="speed-") as tmp:
        ours_dir = common.save_model(Path(tmp) / "ours", ours["model"], ours["tokenizer"])
        folders = {"ours": (ours_dir, "auto")}
        default = args.model_dir or common.save_default_model(Path(tmp) / "default", ours["texts"])
        folders |= {f"default {engine}": (default, engine) for engine in args.engines}
        if "predict" in run:
            print("\n3. batched prediction (original: model.predict, ours: Predictor)")
            scorers = {"original": lambda t: original_predict(original, t)}
            for name, (folder, engine) in folders.items():
                scorers[name] = Predictor(folder, engine=engine).predict_proba
            results["predict"] = bench_predict(scorers, texts)
        if "latency" in run:
            print("\n4. one review per call (original: model.predict)")
            scorers = {"original": lambda t: float(original_predict(original, [t])[0, 0])}
            for name, (folder, engine) in folders.items():
                # what users call, which checks the model files are unchanged; and the model's
                # own cost, through a predictor held
                scorers[name] = lambda t, f=folder, e=engine: sentiment_predict(t, f, e)
                held = Predictor(folder, engine=engine)
                scorers[f"{name} held"] = lambda t, p=held: p.predict_proba([t])
            results["latency"] = bench_latency(scorers, texts, args.latency_calls)
        if "memory" in run:
            print("\n5. a new process's first answer")
            results["memory"] = bench_memory(folders, args.starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=common.DEFAULT_SOURCE)
    parser.add_argument("--lines", type=int, default=40_000, help="first N lines to train on")
    parser.add_argument("--predict-reviews", type=int, default=20_000)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--starts", type=int, default=1, help="new processes per contender")
    parser.add_argument("--skip", nargs="*", default=[], choices=STAGES, metavar="STAGE")
    parser.add_argument("--batch-size", type=int, default=Config().batch_size, help="ours")
    parser.add_argument("--model-dir", type=Path, help="a trained default model (artifacts)")
    parser.add_argument("--engines", nargs="+", default=["auto"], choices=["auto", "keras", "onnx"])
    args = parser.parse_args()
    run = [s for s in STAGES if s not in args.skip]

    results: dict = {"machine": common.machine(), "source": str(args.source), "lines": args.lines}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()))
    print(f"source: {args.source}, {args.lines:,} lines for training and prediction\n")
    parsed = parse_lines(args.source.read_bytes())
    if "preprocess" in run:
        print("1. preprocessing")
        results["preprocess"] = bench_preprocess(parsed)
    if set(run) - {"preprocess"}:
        # The notebook's sizes with this project's training loop (masking, length buckets, batch
        # size): the comparison is of the loop and the serving path, at equal architecture.
        config = Config().replace(**common.NOTEBOOK_MODEL, batch_size=args.batch_size)
        run_models(parsed, config, args, run, results)
    results["machine"]["load_average_after"] = os.getloadavg()
    print("\n" + json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
