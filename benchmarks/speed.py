# ruff: noqa: E402  (TF_CPP_MIN_LOG_LEVEL must be set before TensorFlow is imported)
"""Speed of the original notebook recipe against this project, on the same data in one run.

    .venv/bin/python benchmarks/speed.py --source ../shared/data/nsmc_reviews_200k.txt

Stages (each can be left out with --skip NAME):
  preprocess  clean + dedupe + tokenize + pad every line of --source (best of 3, no file reading)
  train       one epoch each at equal sizes (Embedding 16, LSTM 64, LSTM 32, Dense sigmoid) on an
              80/20 split of the first --lines lines: samples/s and validation accuracy
  predict     batched scoring of --predict-reviews raw reviews: reviews/s, best of 3, for the
              notebook's model.predict, ours at the notebook's sizes, and the *default* model
              (whatever Config() builds) through Predictor's traced graph
  latency     one review per call, --latency-calls calls after 20 warm-up calls: p50 and p95 ms,
              for the same three
  memory      peak RSS of a fresh process that loads our model and scores 3 reviews, and of one
              that only imports keras + tensorflow

Ours is the pipeline's own code throughout: prepare's parser, cleaning, dedupe and split, the
CharTokenizer, build_model, the training loop and its epoch timer, Predictor. Prints each figure
with the ratio (ours / original for rates, original / ours for times), then one JSON line with
all figures. The train and predict models are the ones stage `train` fitted; with `--skip train`
they are untrained, which changes accuracy but not speed. The default model is built untrained
on the same tokenizer unless --model-dir names a trained one.
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

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras
from common import (
    DEFAULT_SOURCE,
    NOTEBOOK_MODEL,
    NOTEBOOK_RECIPE,
    REPO,
    child_env,
    machine,
    save_default_model,
)
from tf_keras.preprocessing.sequence import pad_sequences
from tf_keras.preprocessing.text import Tokenizer as LegacyTokenizer

from pipeline import loop
from pipeline.batches import labelled_batches
from pipeline.config import Config
from pipeline.model import build_model
from pipeline.predict import Predictor, sentiment_predict
from pipeline.prepare import ParsedLines, label_and_clean, parse_lines, split_frame
from pipeline.tokenizer import CharTokenizer
from pipeline.train import answer_task, for_inference

STAGES = ("preprocess", "train", "predict", "latency", "memory")
ORIGINAL_PATTERN = "[^ㄱ-ㅎㅏ-ㅣ가-힣0-9 ]"  # the notebook's cleaning rule
ORIGINAL_MAXLEN = 100
ORIGINAL_BATCH = NOTEBOOK_RECIPE["batch_size"]
SEED = 42


def first_lines(parsed: ParsedLines, lines: int) -> ParsedLines:
    """The first `lines` rows of a parsed source."""
    return ParsedLines(parsed.labels[:lines], parsed.ratings[:lines], parsed.reviews[:lines])


def split_subset(parsed: ParsedLines, lines: int) -> tuple[list, list, np.ndarray, np.ndarray]:
    """The first `lines` rows through prepare (cleaned, deduped, split stratified with seed 42):
    its training split, and validation + test together as the 20% held out.

    Both recipes train on the very same texts, so the figures compare tokenizer, model and
    training loop, not the cleaning rule.
    """
    frame, _ = label_and_clean(first_lines(parsed, lines))
    splits = split_frame(frame, Config(seed=SEED))
    held_out = pd.concat([splits["val"], splits["test"]])
    return (
        splits["train"]["text"].tolist(),
        held_out["text"].tolist(),
        splits["train"]["label"].to_numpy(),
        held_out["label"].to_numpy(),
    )


def original_clean(texts: list[str]) -> list[str]:
    pattern = re.compile(ORIGINAL_PATTERN)
    return [pattern.sub("", t) for t in texts]


def original_encode(tokenizer: LegacyTokenizer, texts: list[str]) -> np.ndarray:
    return pad_sequences(tokenizer.texts_to_sequences(texts), maxlen=ORIGINAL_MAXLEN)


# -- 1. preprocessing ----------------------------------------------------------


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


def best_of(repeats: int, fn, *args) -> tuple[float, object]:
    """Fastest of `repeats` calls in seconds, and the last call's result."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - started)
    return min(times), result


def bench_preprocess(parsed: ParsedLines) -> dict:
    original_s, original_x = best_of(3, original_preprocess, parsed)
    ours_s, ours_x = best_of(3, our_preprocess, parsed)
    print(
        f"  rows kept: original {len(original_x):,}, ours {len(ours_x):,} "
        "(ours also folds repeated whitespace, so more texts count as duplicates)"
    )
    report("seconds (best of 3)", original_s, ours_s, "s", lower_is_better=True)
    return {
        "lines": len(parsed.reviews),
        "original_rows": len(original_x),
        "ours_rows": len(ours_x),
        "original_s": round(original_s, 3),
        "ours_s": round(ours_s, 3),
        "speedup": round(original_s / ours_s, 2),
    }


# -- 2. training ---------------------------------------------------------------


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


def prepare_models(x_train: list[str], x_val: list[str], config: Config) -> tuple[dict, dict]:
    """Each recipe's tokenizer, fitted on the training texts, its encoded splits and its model."""
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
        {"tokenizer": tok, "model": model, "x_train": enc(x_train), "x_val": enc(x_val)}
        for tok, model, enc in zip((legacy, ours), (original_model, our_model), encode, strict=True)
    )


def bench_train(original: dict, ours: dict, y_train, y_val, config: Config) -> dict:
    """One epoch each. Throughput is counted after the first step (graph tracing) for both."""
    rows = len(y_train)
    steady = {"original": [], "ours": []}
    started = time.perf_counter()
    original["model"].fit(
        original["x_train"],
        y_train.astype(np.float32),
        batch_size=ORIGINAL_BATCH,
        epochs=1,
        callbacks=[loop.epoch_timer(steady["original"], after_first_step=True)],
        verbose=0,
    )
    original_s = time.perf_counter() - started
    _, original_acc = original["model"].evaluate(
        original["x_val"], y_val.astype(np.float32), batch_size=1024, verbose=0
    )

    strategy = tf.distribute.get_strategy()
    train_data, val_data = (
        labelled_batches(x, y, config.batch_size, config.padding, True, seed, strategy)
        for x, y, seed in ((ours["x_train"], y_train, SEED), (ours["x_val"], y_val, None))
    )
    clock = loop.epoch_timer(steady["ours"], after_first_step=True)
    started = time.perf_counter()
    history = loop.fit(
        ours["model"], strategy, answer_task, train_data, val_data, 1, [clock], verbose=False
    )
    ours_s, ours_acc = time.perf_counter() - started, history["val_accuracy"][-1]

    original_rate = (rows - ORIGINAL_BATCH) / steady["original"][0]
    ours_rate = (rows - min(config.batch_size, rows)) / steady["ours"][0]
    print(
        f"  {rows:,} training rows, {len(y_val):,} validation rows; batch size original "
        f"{ORIGINAL_BATCH}, ours {config.batch_size}"
    )
    report("fit seconds (all)", original_s, ours_s, "s", lower_is_better=True)
    report("samples/s after batch 1", original_rate, ours_rate, "/s")
    print(
        f"  {'validation accuracy':<24} original {original_acc:.4f}   ours {ours_acc:.4f}   "
        f"ours - original {100 * (ours_acc - original_acc):+.1f} points"
    )
    return {
        "train_rows": rows,
        "val_rows": len(y_val),
        "original_batch_size": ORIGINAL_BATCH,
        "ours_batch_size": config.batch_size,
        "original_fit_s": round(original_s, 2),
        "ours_fit_s": round(ours_s, 2),
        "original_samples_per_s": round(original_rate),
        "ours_samples_per_s": round(ours_rate),
        "speedup": round(ours_rate / original_rate, 2),
        "original_val_accuracy": round(float(original_acc), 4),
        "ours_val_accuracy": round(float(ours_acc), 4),
    }


def save_model(model, tokenizer: CharTokenizer, folder: Path) -> Path:
    """`folder` holding what Predictor loads: the model for inference and its tokenizer."""
    folder.mkdir()
    for_inference(model).save(folder / "model.keras")
    tokenizer.save(folder / "tokenizer.json")
    return folder


# -- 3. batched prediction and 4. one-review latency ---------------------------


def original_predict(original: dict, texts: list[str], batch_size: int = 1024) -> np.ndarray:
    """The notebook's path for many reviews: clean, texts_to_sequences, pad, model.predict."""
    x = original_encode(original["tokenizer"], original_clean(texts))
    return original["model"].predict(x, batch_size=batch_size, verbose=0)


def bench_predict(original: dict, folder: Path, default: Path, texts: list[str]) -> dict:
    contenders = {
        "original": lambda t: original_predict(original, t),
        "ours": Predictor(folder).predict_proba,
        "default": Predictor(default).predict_proba,
    }
    for fn in contenders.values():
        fn(texts[:8])  # warm-up: traces the forward function (model.predict gets the same)
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(3):  # best of 3 rounds, taken in turn, so noise hits all alike
        for name, fn in contenders.items():
            best[name] = min(best[name], best_of(1, fn, texts)[0])
    rates = {name: len(texts) / seconds for name, seconds in best.items()}
    print(
        f"  {len(texts):,} raw reviews, cleaning and tokenizing included, best of 3; original "
        "model.predict(batch_size=1024), ours Predictor.predict_proba"
    )
    report("reviews/s, notebook sizes", rates["original"], rates["ours"], "/s")
    report("reviews/s, default model", rates["original"], rates["default"], "/s")
    result = {"reviews": len(texts)}
    for name, rate in rates.items():
        result[f"{name}_reviews_per_s"] = round(rate)
        if name != "original":
            result[f"{name}_speedup"] = round(rate / rates["original"], 2)
    return result


def latencies_ms(fn, texts: list[str], calls: int, warmup: int = 20) -> np.ndarray:
    for i in range(warmup):
        fn(texts[i % len(texts)])
    times = []
    for i in range(calls):
        started = time.perf_counter()
        fn(texts[(warmup + i) % len(texts)])
        times.append(time.perf_counter() - started)
    return 1000 * np.array(times)


def bench_latency(original: dict, folder: Path, default: Path, texts: list[str], calls: int):
    contenders = {
        # the notebook's sentiment_predict: one cleaned review through model.predict
        "original": lambda t: float(original_predict(original, [t])[0, 0]),
        "ours": lambda t: sentiment_predict(t, artifacts_dir=folder),
        "default": lambda t: sentiment_predict(t, artifacts_dir=default),
    }
    times = {name: latencies_ms(fn, texts, calls) for name, fn in contenders.items()}
    print(f"  {calls} calls after 20 warm-up calls; original model.predict, ours sentiment_predict")
    result: dict = {"calls": calls}
    for q in (50, 95):
        o = float(np.percentile(times["original"], q))
        result[f"original_p{q}_ms"] = round(o, 2)
        for name, label in (("ours", "notebook sizes"), ("default", "default model")):
            u = float(np.percentile(times[name], q))
            report(f"p{q} ms, {label}", o, u, "ms", lower_is_better=True)
            result[f"{name}_p{q}_ms"] = round(u, 2)
            result[f"{name}_p{q}_speedup"] = round(o / u, 2)
    return result


# -- 5. memory -----------------------------------------------------------------

CHILD = """
import sys
from benchmarks.common import peak_rss_kib
if sys.argv[1:]:
    from pipeline.predict import Predictor
    Predictor(sys.argv[1]).predict_proba(["배송 빠르고 좋아요", "별로에요 안 사요", "그냥 그래요"])
else:
    import keras, tensorflow
print(peak_rss_kib())
"""


def child_peak_mib(*args: str) -> float:
    """Peak RSS of a fresh Python that scores with the model in `args`, or only imports TF."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        cwd=REPO, env=child_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(done.stdout.split()[-1]) / 1024


def bench_memory(folder: Path) -> dict:
    baseline, ours = child_peak_mib(), child_peak_mib(str(folder))
    print("  fresh processes; peak RSS (VmHWM) read inside each")
    print(f"  {'import keras + tensorflow':<24} {baseline:8.0f} MiB")
    print(
        f"  {'ours: load + score 3':<24} {ours:8.0f} MiB   (model and predictor: "
        f"+{ours - baseline:.0f} MiB)"
    )
    return {
        "baseline_import_mib": round(baseline),
        "ours_predict_mib": round(ours),
        "ours_over_baseline_mib": round(ours - baseline),
    }


# -- reporting and main --------------------------------------------------------


def report(name: str, original: float, ours: float, unit: str, lower_is_better=False) -> None:
    ratio = original / ours if lower_is_better else ours / original
    print(
        f"  {name:<24} original {original:10.2f} {unit:<3} ours {ours:10.2f} {unit:<3} "
        f"ours {ratio:.2f}x {'faster' if ratio >= 1 else 'slower'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="RATING<TAB>REVIEW")
    parser.add_argument("--lines", type=int, default=40_000, help="first N lines to train on")
    parser.add_argument("--predict-reviews", type=int, default=20_000)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--skip", nargs="*", default=[], choices=STAGES, metavar="STAGE")
    parser.add_argument("--batch-size", type=int, default=Config().batch_size, help="ours")
    parser.add_argument("--json-out", type=Path, help="also write the JSON figures here")
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="a trained default model (model.keras + tokenizer.json) for stages predict and "
        "latency (default: the default config's, untrained)",
    )
    args = parser.parse_args()
    run = [s for s in STAGES if s not in args.skip]

    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    info = {**machine(), **versions, "tf_keras": tf_keras.__version__}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"source: {args.source}, {args.lines:,} lines for training and prediction\n")
    results: dict = {"machine": info, "source": str(args.source), "lines": args.lines}
    parsed = parse_lines(args.source.read_bytes())
    # The notebook's sizes with this project's training loop (masking, length buckets, batch
    # size): the comparison is of the loop and the serving path, at equal architecture.
    config = Config().replace(**NOTEBOOK_MODEL, batch_size=args.batch_size)

    if "preprocess" in run:
        print(f"1. preprocessing all {len(parsed.reviews):,} lines")
        results["preprocess"] = bench_preprocess(parsed)
    if {"train", "predict", "latency", "memory"} & set(run):
        run_models(parsed, config, args, run, results)
    line = json.dumps(results, ensure_ascii=False)
    if args.json_out:
        args.json_out.write_text(line + "\n", encoding="utf-8")
    print("\n" + line)


def run_models(parsed: ParsedLines, config: Config, args, run: list[str], results: dict) -> None:
    """Stages 2-5: both recipes' models, trained in stage 2 (untrained if it is skipped)."""
    x_train, x_val, y_train, y_val = split_subset(parsed, args.lines)
    original, ours = prepare_models(x_train, x_val, config)
    if "train" in run:
        print("\n2. training, one epoch each")
        results["train"] = bench_train(original, ours, y_train, y_val, config)

    raw = parsed.reviews[: args.lines]
    texts = [raw[i % len(raw)] for i in range(args.predict_reviews)]
    with tempfile.TemporaryDirectory(prefix="speed-") as tmp:
        folder = save_model(ours["model"], ours["tokenizer"], Path(tmp) / "ours")
        default = args.model_dir
        if default is None and {"predict", "latency"} & set(run):
            default = save_default_model(Path(tmp) / "default", x_train)
        if "predict" in run:
            print("\n3. batched prediction")
            results["predict"] = bench_predict(original, folder, default, texts)
        if "latency" in run:
            print("\n4. one review per call")
            results["latency"] = bench_latency(original, folder, default, texts, args.latency_calls)
        if "memory" in run:
            print("\n5. peak memory")
            results["memory"] = bench_memory(folder)


if __name__ == "__main__":
    main()
