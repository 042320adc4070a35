"""CharTokenizer.encode speed: 100,000 cleaned reviews, best of 5, per unit and maxlen.

PYTHONPATH=<checkout> python benchmarks/encode_speed.py [--source FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import DEFAULT_SOURCE, source_reviews

from pipeline.cleaning import clean_texts
from pipeline.tokenizer import CharTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    texts = clean_texts(source_reviews(args.source)[: args.lines])
    for unit, maxlen in (("char", 100), ("char", 30), ("jamo", 250)):
        tokenizer = CharTokenizer(maxlen=maxlen, unit=unit).fit(texts)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            tokenizer.encode(texts)
            times.append(time.perf_counter() - started)
        best = min(times)
        print(f"{unit} maxlen={maxlen}: {len(texts) / best / 1e6:.2f} M reviews/s ({best:.3f} s)")


if __name__ == "__main__":
    main()
