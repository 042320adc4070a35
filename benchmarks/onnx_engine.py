"""Scoring on ONNX Runtime (model.onnx) against Keras (model.keras) and the notebook's recipe.

    python benchmarks/onnx_engine.py --artifacts-dir artifacts        # a trained default model

Side by side in one run, on the stand-in's reviews (raw: cleaning and encoding included):
- start: a new process -> the first answer of sentiment_predict("배송 빠르고 좋아요"), wall time
  and peak RSS (VmHWM, read inside the child), each engine `--starts` times, taken in turn;
- batched: reviews/s of Predictor.predict_proba on `--reviews` reviews, each engine and the
  notebook's recipe (legacy Tokenizer + pad_sequences + its untrained Embedding(16) -> LSTM(64)
  -> LSTM(32) model, model.predict(batch_size=1024)), best of 3 taken in turn;
- one review: p50 and p95 ms of Predictor.predict_proba on one review, `--calls` calls each.
Prints one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "nsmc_reviews_200k.txt"

START_CHILD = """
import sys, time
from pipeline import sentiment_predict
label = sentiment_predict("배송 빠르고 좋아요", artifacts_dir=sys.argv[1], engine=sys.argv[2])
with open("/proc/self/status") as fh:
    peak = int(next(line for line in fh if line.startswith("VmHWM:")).split()[1])
import json
print(json.dumps({"label": label, "peak_kib": peak, "tensorflow": "tensorflow" in sys.modules}))
"""


def start(folder: Path, engine: str) -> dict:
    """A new Python answering one review: seconds from spawn to exit, its peak RSS in MiB."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", START_CHILD, str(folder), engine],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    child = json.loads(done.stdout.splitlines()[-1])
    return {"seconds": seconds, "peak_mib": child["peak_kib"] / 1024, "tf": child["tensorflow"]}


def bench_start(folder: Path, starts: int) -> dict:
    runs: dict[str, list[dict]] = {"keras": [], "onnx": []}
    for _ in range(starts):
        for engine in runs:
            runs[engine].append(start(folder, engine))
    result = {}
    for engine, each in runs.items():
        seconds = sorted(r["seconds"] for r in each)
        peaks = sorted(r["peak_mib"] for r in each)
        result[engine] = {
            "seconds_min_median_max": [
                round(seconds[0], 2),
                round(float(np.median(seconds)), 2),
                round(seconds[-1], 2),
            ],
            "peak_mib_max": round(peaks[-1]),
            "imported_tensorflow": any(r["tf"] for r in each),
        }
        print(
            f"  start {engine:<6} {seconds[0]:.2f} / {np.median(seconds):.2f} / {seconds[-1]:.2f} s"
            f"  peak {peaks[-1]:.0f} MiB  tensorflow: {result[engine]['imported_tensorflow']}"
        )
    return result


def notebook_recipe(texts: list[str]):
    """The notebook's scorer: its tokenizer fit on `texts`, its model (untrained: speed does not
    depend on the weights), and its predict path."""
    import keras
    from speed import build_original_model, original_clean, original_encode
    from tf_keras.preprocessing.text import Tokenizer as LegacyTokenizer

    tokenizer = LegacyTokenizer(char_level=True, oov_token="OOV")
    tokenizer.fit_on_texts(original_clean(texts))
    keras.utils.set_random_seed(42)
    model = build_original_model(len(tokenizer.word_index) + 1)

    def predict(batch: list[str]) -> np.ndarray:
        return model.predict(
            original_encode(tokenizer, original_clean(batch)), batch_size=1024, verbose=0
        )

    return predict


def bench_batched(folder: Path, texts: list[str], threads: int) -> dict:
    from pipeline.predict import Predictor

    contenders = {
        "notebook": notebook_recipe(texts),
        "keras": Predictor(folder, engine="keras").predict_proba,
        "onnx": Predictor(folder, engine="onnx", threads=threads).predict_proba,
    }
    for fn in contenders.values():
        fn(texts[:64])  # warm-up: traces graphs, allocates
    best: dict[str, float] = {}
    for _ in range(3):
        for name, fn in contenders.items():
            started = time.perf_counter()
            fn(texts)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    rates = {name: len(texts) / seconds for name, seconds in best.items()}
    for name, rate in rates.items():
        print(
            f"  batched {name:<9} {rate:9.0f} reviews/s  ({rate / rates['keras']:.2f}x keras, "
            f"{rate / rates['notebook']:.2f}x notebook)"
        )
    return {
        "reviews": len(texts),
        **{f"{name}_reviews_per_s": round(rate) for name, rate in rates.items()},
        "onnx_over_keras": round(rates["onnx"] / rates["keras"], 2),
        "onnx_over_notebook": round(rates["onnx"] / rates["notebook"], 2),
        "keras_over_notebook": round(rates["keras"] / rates["notebook"], 2),
    }


def bench_one(folder: Path, texts: list[str], calls: int) -> dict:
    from pipeline.predict import Predictor

    engines = {name: Predictor(folder, engine=name) for name in ("keras", "onnx")}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for i in range(20 + calls):  # taken in turn; the first 20 are warm-up
        for name, predictor in engines.items():
            started = time.perf_counter()
            predictor.predict_proba([texts[i % len(texts)]])
            if i >= 20:
                times[name].append(1000 * (time.perf_counter() - started))
    result = {}
    for name, each in times.items():
        p50, p95 = np.percentile(each, 50), np.percentile(each, 95)
        result[name] = {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3)}
        print(f"  one review {name:<6} p50 {p50:.3f} ms  p95 {p95:.3f} ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--reviews", type=int, default=20_000)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per call")
    parser.add_argument("--skip", nargs="*", default=[], choices=["start", "batched", "one"])
    args = parser.parse_args()
    folder = args.artifacts_dir.resolve()
    lines = args.source.read_text(encoding="utf-8").splitlines()
    rng = np.random.default_rng(0)
    texts = [
        lines[i].split("\t", 1)[1] for i in rng.choice(len(lines), args.reviews, replace=False)
    ]
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        }
    }
    if "start" not in args.skip:
        result["start"] = bench_start(folder, args.starts)
    if "batched" not in args.skip:
        result["batched"] = bench_batched(folder, texts, args.threads)
    if "one" not in args.skip:
        result["one_review"] = bench_one(folder, texts, args.calls)
    result["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
