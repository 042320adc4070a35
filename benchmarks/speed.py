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

Prints each figure with the ratio (ours / original for rates, original / ours for times), then
one JSON line with all figures. The train and predict models are the ones stage `train` fitted;
with `--skip train` they are untrained, which changes accuracy but not speed. The default model
is built untrained on the same tokenizer unless --model-dir names a trained one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
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
from sklearn.model_selection import train_test_split
from tf_keras.preprocessing.sequence import pad_sequences
from tf_keras.preprocessing.text import Tokenizer as LegacyTokenizer

from pipeline import loop
from pipeline.batches import labelled_batches
from pipeline.cleaning import clean_texts
from pipeline.config import Config
from pipeline.model import build_model
from pipeline.predict import Predictor, sentiment_predict
from pipeline.tokenizer import CharTokenizer
from pipeline.train import answer_task, for_inference

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared/data/nsmc_reviews_200k.txt"
STAGES = ("preprocess", "train", "predict", "latency", "memory")
ORIGINAL_PATTERN = "[^ㄱ-ㅎㅏ-ㅣ가-힣0-9 ]"  # the notebook's cleaning rule
ORIGINAL_MAXLEN = 100
ORIGINAL_BATCH = 32
SEED = 42


NOTEBOOK_SIZES = dict(
    embedding_dim=16,
    rnn_units=(64, 32),
    cell="lstm",
    bidirectional=False,
    conv_filters=0,
    pooling=False,
    spatial_dropout=0.0,
    head_dropout=0.0,
    jamo_features=0,
    ngram_order=0,
)

# -- data ----------------------------------------------------------------------


def read_source(path: Path) -> pd.DataFrame:
    """All `RATING<TAB>REVIEW` lines as (rating, review, label); label is rating > 3."""
    frame = pd.read_csv(
        path,
        sep="\t",
        names=["rating", "review"],
        quoting=csv.QUOTE_NONE,
        dtype={"rating": int, "review": str},
        keep_default_na=False,
        encoding="utf-8",
    )
    frame["label"] = (frame["rating"] > 3).astype(np.int8)
    return frame


def split_subset(
    frame: pd.DataFrame, lines: int
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """First `lines` lines, cleaned (our rule) and deduped, split 80/20 stratified with seed 42.

    Both recipes train on the very same texts, so the figures compare tokenizer, model and
    training loop, not the cleaning rule.
    """
    subset = pd.DataFrame(
        {
            "text": clean_texts(frame["review"].iloc[:lines].tolist()),
            "label": frame["label"].iloc[:lines].to_numpy(),
        }
    )
    subset = subset[subset["text"] != ""].drop_duplicates(subset="text")
    x_train, x_val, y_train, y_val = train_test_split(
        subset["text"].tolist(),
        subset["label"].to_numpy(),
        test_size=0.2,
        random_state=SEED,
        stratify=subset["label"].to_numpy(),
    )
    return x_train, x_val, y_train, y_val


def original_clean(texts: list[str]) -> list[str]:
    pattern = re.compile(ORIGINAL_PATTERN)
    return [pattern.sub("", t) for t in texts]


def original_encode(tokenizer: LegacyTokenizer, texts: list[str]) -> np.ndarray:
    return pad_sequences(tokenizer.texts_to_sequences(texts), maxlen=ORIGINAL_MAXLEN)


# -- 1. preprocessing ----------------------------------------------------------


def original_preprocess(frame: pd.DataFrame) -> np.ndarray:
    """The notebook: regex replace, drop duplicates, drop empty, legacy Tokenizer, pad."""
    frame = frame[["review", "label"]].copy()
    frame["review"] = frame["review"].str.replace(ORIGINAL_PATTERN, "", regex=True)
    frame = frame.drop_duplicates(subset=["review"])
    frame = frame[frame["review"] != ""]
    tokenizer = LegacyTokenizer(char_level=True, oov_token="OOV")
    tokenizer.fit_on_texts(frame["review"])
    return original_encode(tokenizer, frame["review"].tolist())


def our_preprocess(frame: pd.DataFrame) -> np.ndarray:
    """This project: clean_texts, drop empty and duplicates, CharTokenizer fit + encode."""
    cleaned = pd.DataFrame(
        {"text": clean_texts(frame["review"].tolist()), "label": frame["label"].to_numpy()}
    )
    cleaned = cleaned[cleaned["text"] != ""].drop_duplicates(subset="text")
    texts = cleaned["text"].tolist()
    return CharTokenizer(maxlen=Config().maxlen).fit(texts).encode(texts)


def best_of(repeats: int, fn, *args) -> tuple[float, object]:
    """Fastest of `repeats` calls in seconds, and the last call's result."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - started)
    return min(times), result


def bench_preprocess(frame: pd.DataFrame) -> dict:
    original_s, original_x = best_of(3, original_preprocess, frame)
    ours_s, ours_x = best_of(3, our_preprocess, frame)
    print(
        f"  rows kept: original {len(original_x):,}, ours {len(ours_x):,} "
        "(ours also folds repeated whitespace, so more texts count as duplicates)"
    )
    report("seconds (best of 3)", original_s, ours_s, "s", lower_is_better=True)
    return {
        "lines": len(frame),
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


def prepare_original(x_train: list[str], x_val: list[str]) -> dict:
    tokenizer = LegacyTokenizer(char_level=True, oov_token="OOV")
    tokenizer.fit_on_texts(x_train)
    keras.utils.set_random_seed(SEED)
    model = build_original_model(len(tokenizer.word_index) + 1)
    return {
        "tokenizer": tokenizer,
        "model": model,
        "x_train": original_encode(tokenizer, x_train),
        "x_val": original_encode(tokenizer, x_val),
    }


def prepare_ours(x_train: list[str], x_val: list[str], config: Config) -> dict:
    tokenizer = CharTokenizer.for_config(config).fit(x_train)
    keras.utils.set_random_seed(SEED)
    steps = -(-len(x_train) // config.batch_size)
    model = build_model(config, tokenizer.vocab_size, steps_per_epoch=steps)
    return {
        "tokenizer": tokenizer,
        "model": model,
        "x_train": tokenizer.encode(x_train),
        "x_val": tokenizer.encode(x_val),
    }


def timed_fit(model: keras.Model, *args, **kwargs) -> tuple[float, float]:
    """(seconds for the whole fit, seconds after the first batch): the first batch traces.

    The original recipe's `model.fit`; ours trains with the pipeline's own loop (bench_train).
    """
    marks: list[float] = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: marks.append(time.perf_counter())
    )
    started = time.perf_counter()
    model.fit(*args, callbacks=[clock], verbose=0, **kwargs)
    return time.perf_counter() - started, marks[-1] - marks[0]


def bench_train(
    original: dict, ours: dict, y_train: np.ndarray, y_val: np.ndarray, config: Config
) -> dict:
    """One epoch each. Throughput is counted after the first batch (graph tracing) for both."""
    rows = len(y_train)
    original_s, original_steady = timed_fit(
        original["model"],
        original["x_train"],
        y_train.astype(np.float32),
        batch_size=ORIGINAL_BATCH,
        epochs=1,
    )
    _, original_acc = original["model"].evaluate(
        original["x_val"], y_val.astype(np.float32), batch_size=1024, verbose=0
    )

    strategy = tf.distribute.get_strategy()
    train_data, val_data = (
        labelled_batches(x, y, config.batch_size, config.padding, True, seed, strategy)
        for x, y, seed in ((ours["x_train"], y_train, SEED), (ours["x_val"], y_val, None))
    )
    marks: list[float] = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: marks.append(time.perf_counter())
    )
    started = time.perf_counter()
    history = loop.fit(
        ours["model"], strategy, answer_task, train_data, val_data, 1, [clock], verbose=False
    )
    ours_s, ours_steady = time.perf_counter() - started, marks[-1] - marks[0]
    ours_acc = history["val_accuracy"][-1]

    original_rate = (rows - ORIGINAL_BATCH) / original_steady
    ours_rate = (rows - min(config.batch_size, rows)) / ours_steady
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


def save_ours(ours: dict, folder: Path) -> None:
    for_inference(ours["model"]).save(folder / "model.keras")
    ours["tokenizer"].save(folder / "tokenizer.json")


def save_default(x_train: list[str], folder: Path) -> None:
    """The default config's model (untrained: speed does not depend on the weights)."""
    config = Config()
    tokenizer = CharTokenizer.for_config(config).fit(x_train)
    keras.utils.set_random_seed(SEED)
    jamo = tokenizer.jamo_table() if config.jamo_features else None
    for_inference(build_model(config, tokenizer.vocab_size, 100, jamo)).save(folder / "model.keras")
    tokenizer.save(folder / "tokenizer.json")


def best_rates(contenders: dict, texts: list[str], repeats: int = 3) -> dict[str, float]:
    """Reviews/s of each contender, best of `repeats` rounds, taken in turn (noise hits all)."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            started = time.perf_counter()
            fn(texts)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    return {name: len(texts) / seconds for name, seconds in best.items()}


# -- 3. batched prediction -----------------------------------------------------


def original_predict(original: dict, texts: list[str], batch_size: int = 1024) -> np.ndarray:
    """The notebook's path for many reviews: clean, texts_to_sequences, pad, model.predict."""
    x = original_encode(original["tokenizer"], original_clean(texts))
    return original["model"].predict(x, batch_size=batch_size, verbose=0)


def bench_predict(original: dict, folder: Path, default: Path, texts: list[str]) -> dict:
    ours = Predictor(folder)
    graph = Predictor(default)
    ours.predict_proba(texts[:8])  # warm-up: traces the forward function
    graph.predict_proba(texts[:8])
    original_predict(original, texts[:8])  # the same courtesy for model.predict
    rates = best_rates(
        {
            "original": lambda t: original_predict(original, t),
            "ours": ours.predict_proba,
            "default": graph.predict_proba,
        },
        texts,
    )
    print(
        f"  {len(texts):,} raw reviews, cleaning and tokenizing included, best of 3; original "
        f"model.predict(batch_size=1024), ours Predictor.predict_proba (batch {ours.batch_size})"
    )
    report("reviews/s, notebook sizes", rates["original"], rates["ours"], "/s")
    report("reviews/s, default model", rates["original"], rates["default"], "/s")
    result = {"reviews": len(texts)}
    for name, rate in rates.items():
        result[f"{name}_reviews_per_s"] = round(rate)
        if name != "original":
            result[f"{name}_speedup"] = round(rate / rates["original"], 2)
    return result


# -- 4. one-review latency -----------------------------------------------------


def original_one(original: dict, text: str) -> float:
    """The notebook's sentiment_predict: one cleaned review through model.predict."""
    x = original_encode(original["tokenizer"], original_clean([text]))
    return float(original["model"].predict(x, verbose=0)[0, 0])


def latencies_ms(fn, texts: list[str], calls: int, warmup: int = 20) -> np.ndarray:
    for i in range(warmup):
        fn(texts[i % len(texts)])
    times = []
    for i in range(calls):
        started = time.perf_counter()
        fn(texts[(warmup + i) % len(texts)])
        times.append(time.perf_counter() - started)
    return 1000 * np.array(times)


def bench_latency(
    original: dict, folder: Path, default: Path, texts: list[str], calls: int
) -> dict:
    contenders = {
        "original": lambda t: original_one(original, t),
        "ours": lambda t: sentiment_predict(t, artifacts_dir=folder),
        "default": lambda t: sentiment_predict(t, artifacts_dir=default),
    }
    times = {name: latencies_ms(fn, texts, calls) for name, fn in contenders.items()}
    print(f"  {calls} calls after 20 warm-up calls; original model.predict, ours sentiment_predict")
    result: dict = {"calls": calls}
    for q in (50, 95):
        o = float(np.percentile(times["original"], q))
        result[f"original_p{q}_ms"] = round(o, 2)
        for name, label in (
            ("ours", "notebook sizes"),
            ("default", "default model"),
        ):
            u = float(np.percentile(times[name], q))
            report(f"p{q} ms, {label}", o, u, "ms", lower_is_better=True)
            result[f"{name}_p{q}_ms"] = round(u, 2)
            result[f"{name}_p{q}_speedup"] = round(o / u, 2)
    return result


# -- 5. memory -----------------------------------------------------------------

# Peak RSS in KiB, read inside the child. On Linux ru_maxrss is no good here: it keeps the
# parent's high-water mark across fork + exec, so every child would report the benchmark's own
# peak. VmHWM belongs to the child's own address space.
PEAK_RSS = """
def peak_rss_kib():
    try:
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

BASELINE_CHILD = (
    PEAK_RSS
    + """
import keras, tensorflow
print(peak_rss_kib())
"""
)

OURS_CHILD = (
    PEAK_RSS
    + """
import sys
from pipeline.predict import Predictor
Predictor(sys.argv[1]).predict_proba(["배송 빠르고 좋아요", "별로에요 안 사요", "그냥 그래요"])
print(peak_rss_kib())
"""
)


def child_peak_mib(code: str, *args: str) -> float:
    """Peak RSS of a fresh Python running `code`, which prints its peak in KiB last."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1]) / 1024


def bench_memory(folder: Path) -> dict:
    baseline = child_peak_mib(BASELINE_CHILD)
    ours = child_peak_mib(OURS_CHILD, str(folder))
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


def report(
    name: str, original: float, ours: float, unit: str, lower_is_better: bool = False
) -> None:
    ratio = original / ours if lower_is_better else ours / original
    print(
        f"  {name:<24} original {original:10.2f} {unit:<3} ours {ours:10.2f} {unit:<3} "
        f"ours {ratio:.2f}x {'faster' if ratio >= 1 else 'slower'}"
    )


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_keras": tf_keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="RATING<TAB>REVIEW file (default: %(default)s)",
    )
    parser.add_argument(
        "--lines",
        type=int,
        default=40_000,
        help="first N lines for training and prediction (default: %(default)s)",
    )
    parser.add_argument("--predict-reviews", type=int, default=20_000)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=STAGES,
        metavar="STAGE",
        help=f"stages to leave out: {', '.join(STAGES)}",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=Config().batch_size,
        help="our training batch size (default: the pipeline's, %(default)s)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON figures here")
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="a trained default model (model.keras + tokenizer.json) for stages "
        "predict and latency (default: the default config's, untrained)",
    )
    args = parser.parse_args()
    run = [s for s in STAGES if s not in args.skip]

    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"source: {args.source}, {args.lines:,} lines for training and prediction\n")
    results: dict = {"machine": info, "source": str(args.source), "lines": args.lines}
    frame = read_source(args.source)
    # The notebook's sizes with this project's training loop (masking, length buckets, batch
    # size): the comparison is of the loop and the serving path, at equal architecture.
    config = Config().replace(**NOTEBOOK_SIZES, batch_size=args.batch_size)

    if "preprocess" in run:
        print(f"1. preprocessing all {len(frame):,} lines")
        results["preprocess"] = bench_preprocess(frame)

    if {"train", "predict", "latency", "memory"} & set(run):
        run_models(frame, config, args, run, results)
    line = json.dumps(results, ensure_ascii=False)
    if args.json_out:
        args.json_out.write_text(line + "\n", encoding="utf-8")
    print("\n" + line)


def run_models(
    frame: pd.DataFrame, config: Config, args: argparse.Namespace, run: list[str], results: dict
) -> None:
    """Stages 2-5: both recipes' models, trained in stage 2 (untrained if it is skipped)."""
    x_train, x_val, y_train, y_val = split_subset(frame, args.lines)
    original = prepare_original(x_train, x_val)
    ours = prepare_ours(x_train, x_val, config)
    if "train" in run:
        print("\n2. training, one epoch each")
        results["train"] = bench_train(original, ours, y_train, y_val, config)

    raw = frame["review"].iloc[: args.lines].tolist()
    texts = [raw[i % len(raw)] for i in range(args.predict_reviews)]
    with tempfile.TemporaryDirectory(prefix="speed-") as tmp:
        folder = Path(tmp) / "ours"
        folder.mkdir()
        save_ours(ours, folder)
        default = args.model_dir
        if default is None and {"predict", "latency"} & set(run):
            default = Path(tmp) / "default"
            default.mkdir()
            save_default(x_train, default)
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
