"""CharTokenizer.encode speed: 100,000 cleaned reviews, best of 5, per unit and maxlen.

    PYTHONPATH=<checkout> python benchmarks/encode_speed.py [--source FILE]

It imports only the cleaning and the tokenizer, so that it runs against older checkouts too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import DEFAULT_SOURCE, best_of, source_reviews

from pipeline.cleaning import clean_texts
from pipeline.tokenizer import CharTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    texts = clean_texts(source_reviews(args.source)[:100_000])
    for unit, maxlen in (("char", 100), ("char", 30), ("jamo", 250)):
        tokenizer = CharTokenizer(maxlen=maxlen, unit=unit).fit(texts)
        best = best_of(5, tokenizer.encode, texts)[0]
        print(f"{unit} maxlen={maxlen}: {len(texts) / best / 1e6:.2f} M reviews/s ({best:.3f} s)")


if __name__ == "__main__":
    main()
