"""Parse `RATING<TAB>REVIEW` lines, label, clean, dedupe and split into train/val/test TSVs."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline.cleaning import clean_texts
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.files import atomic_path

SPLITS = ("train", "val", "test")
LONG_REVIEW_CHARS = 10_000

# Problems that drop a line, or change what it says; `--strict` makes each one an error.
PROBLEMS = {
    "no_tab": "has no tab between rating and review",
    "bad_rating": "has a rating that is not a whole number from 1 to 5",
    "neutral_rating": "has rating 3, which is neither positive nor negative",
    "invalid_utf8": "is not valid UTF-8",
    "extra_tab": "has a tab inside the review",
    "long_review": f"has a review over {LONG_REVIEW_CHARS:,} characters",
}


@dataclass
class ParsedLines:
    """Usable rows, and a count of every kind of line seen (`counts` always adds up)."""

    ratings: list[int] = field(default_factory=list)
    reviews: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def parse_lines(data: bytes, strict: bool = False) -> ParsedLines:
    """Parse the raw file's bytes; blank lines, BOM and CRLF are tolerated, the rest counted.

    Every line ends up in exactly one of: rows, blank, no_tab, bad_rating, neutral_rating.
    """
    parsed = ParsedLines()
    counts = parsed.counts
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        counts["bom"] += 1
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last line; it does not start a new one

    def problem(kind: str, line_no: int) -> None:
        counts[kind] += 1
        if strict:
            raise PipelineError(
                f"line {line_no} {PROBLEMS[kind]}; fix the file or run without --strict to skip "
                "and count such lines"
            )

    for line_no, raw in enumerate(lines, start=1):
        counts["lines"] += 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
            counts["crlf"] += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            problem("invalid_utf8", line_no)
            line = raw.decode("utf-8", errors="replace")  # cleaning drops the U+FFFD marks
        if not line.strip():
            counts["blank"] += 1
            continue
        rating_text, tab, review = line.partition("\t")
        if not tab:
            problem("no_tab", line_no)
            continue
        rating_text = rating_text.strip()
        if not (rating_text.isascii() and rating_text.isdigit()) or not 1 <= int(rating_text) <= 5:
            problem("bad_rating", line_no)
            continue
        if int(rating_text) == 3:
            problem("neutral_rating", line_no)
            continue
        if "\t" in review:
            problem("extra_tab", line_no)  # kept: the tab becomes a space when cleaned
        if len(review) > LONG_REVIEW_CHARS:
            problem("long_review", line_no)  # kept: the tokenizer truncates it like any other
        parsed.ratings.append(int(rating_text))
        parsed.reviews.append(review)
    counts["rows"] = len(parsed.reviews)
    return parsed


def label_and_clean(parsed: ParsedLines) -> tuple[pd.DataFrame, Counter]:
    """Label (rating > 3 is positive), clean, and drop empty and duplicate reviews."""
    frame = pd.DataFrame(
        {
            "label": [int(r > 3) for r in parsed.ratings],
            "rating": parsed.ratings,
            "text": clean_texts(parsed.reviews),
        }
    )
    counts: Counter = Counter()
    empty = frame["text"] == ""
    counts["empty_after_cleaning"] = int(empty.sum())
    frame = frame[~empty]
    duplicated = frame["text"].duplicated(keep="first")
    counts["duplicates"] = int(duplicated.sum())
    frame = frame[~duplicated].reset_index(drop=True)
    counts["kept"] = len(frame)
    return frame, counts


def split_frame(frame: pd.DataFrame, config: Config) -> dict[str, pd.DataFrame]:
    """Stratified train/val/test split with the configured fractions and seed."""
    if frame["label"].nunique() < 2 or frame["label"].value_counts().min() < 3:
        raise PipelineError(
            f"the source has {len(frame)} usable reviews and needs at least 3 of each label "
            "to split; check that --source points at the review file"
        )
    rest, test = train_test_split(
        frame, test_size=config.test_fraction, stratify=frame["label"], random_state=config.seed
    )
    val_share = config.val_fraction / (1 - config.test_fraction)
    train, val = train_test_split(
        rest, test_size=val_share, stratify=rest["label"], random_state=config.seed
    )
    return {"train": train, "val": val, "test": test}


def write_split(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(
            tmp,
            sep="\t",
            index=False,
            columns=["label", "rating", "text"],
            quoting=csv.QUOTE_NONE,
        )


def read_split(path: Path) -> pd.DataFrame:
    """Read a split written by `write_split` (texts stay strings, even '123')."""
    if not path.is_file():
        raise PipelineError(f"{path} is missing; run `python -m pipeline prepare` first")
    return pd.read_csv(
        path,
        sep="\t",
        dtype={"label": "int64", "rating": "int64", "text": str},
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
    )


def prepare(config: Config, quiet: bool = False) -> dict:
    """Run the stage: raw file in, three split files out; return the counts."""
    raw = config.raw_path
    if not raw.is_file():
        raise PipelineError(f"{raw} is missing; run `python -m pipeline download` first")
    parsed = parse_lines(raw.read_bytes(), strict=config.strict)
    if not parsed.reviews:
        raise PipelineError(
            f"{raw} has no usable 'RATING<TAB>REVIEW' lines ({parsed.counts['lines']} lines "
            "read); check that --source points at the review file"
        )
    frame, cleaning_counts = label_and_clean(parsed)
    splits = split_frame(frame, config)
    for name, part in splits.items():
        write_split(part, config.split_path(name))

    counts = {**parsed.counts, **cleaning_counts}
    counts["splits"] = {
        name: {
            "rows": len(part),
            "positive": int(part["label"].sum()),
            "negative": int(len(part) - part["label"].sum()),
        }
        for name, part in splits.items()
    }
    if not quiet:
        _print_counts(counts)
    return counts


def _print_counts(counts: dict) -> None:
    skipped = ", ".join(
        f"{counts[k]} {k.replace('_', ' ')}" for k in (*PROBLEMS, "blank") if counts.get(k)
    )
    print(
        f"prepare: {counts['lines']:,} lines read, {counts['rows']:,} rows"
        + (f" (problems: {skipped})" if skipped else "")
    )
    print(
        f"prepare: {counts['empty_after_cleaning']:,} empty after cleaning, "
        f"{counts['duplicates']:,} duplicates dropped, {counts['kept']:,} kept"
    )
    for name, s in counts["splits"].items():
        print(
            f"prepare: {name:<5} {s['rows']:>7,} rows ({s['positive']:,} positive, "
            f"{s['negative']:,} negative)"
        )
