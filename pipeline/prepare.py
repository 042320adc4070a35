"""Parse the source (`RATING<TAB>REVIEW` lines or a labelled table), label, clean, dedupe, split."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline.cleaning import clean_texts
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.files import atomic_path, write_text_atomic
from pipeline.tables import decode_source, read_table, text_of

SPLITS = ("train", "val", "test")
LONG_REVIEW_CHARS = 10_000

# Problems that drop a line (or a table's row), or change what it says; `--strict` makes each
# one an error.
PROBLEMS = {
    "no_tab": "has no tab between rating and review",
    "bad_rating": "has a rating that is not a whole number from 1 to 5",
    "neutral_rating": "has rating 3, which is neither positive nor negative",
    "bad_label": "has a label that is not 0 or 1",
    "bad_row": "is not a row of the table (not a JSON object, or more cells than the header)",
    "missing_text": "has no review cell",
    "bad_encoding": "does not decode in the source's encoding (UTF-8 unless --encoding says)",
    "extra_tab": "has a tab inside the review",
    "long_review": f"has a review over {LONG_REVIEW_CHARS:,} characters",
}


@dataclass
class ParsedLines:
    """Usable rows, and a count of every kind of line seen (`counts` always adds up)."""

    labels: list[int] = field(default_factory=list)
    ratings: list[int] = field(default_factory=list)  # 0 when the source gives labels
    reviews: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(self, label: int, rating: int, review: str, line_no: int, problem) -> None:
        if len(review) > LONG_REVIEW_CHARS:
            problem("long_review", line_no)  # kept: the tokenizer truncates it like any other
        self.labels.append(label)
        self.ratings.append(rating)
        self.reviews.append(review)


def _problems(counts: Counter, strict: bool):
    """A function (kind, line) that counts a problem, or raises for it under --strict."""

    def problem(kind: str, line_no: int) -> None:
        counts[kind] += 1
        if strict:
            raise PipelineError(
                f"line {line_no} {PROBLEMS[kind]}; fix the file or run without --strict to skip "
                "and count such lines"
            )

    return problem


def parse_lines(
    data: bytes, strict: bool = False, encoding: str = "utf-8", name: str = "the source"
) -> ParsedLines:
    """Parse `RATING<TAB>REVIEW` bytes; blank lines, BOM and CRLF are tolerated, the rest counted.

    Every line ends up in exactly one of: rows, blank, no_tab, bad_rating, neutral_rating.
    A source mostly not in `encoding` is refused (see tables.decode_source).
    """
    parsed = ParsedLines()
    counts = parsed.counts
    decoded = decode_source(data, encoding, name)
    if decoded.bom:
        counts["bom"] += 1
    undecodable = set(decoded.bad_lines)
    lines = decoded.text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    problem = _problems(counts, strict)

    for line_no, line in enumerate(lines, start=1):
        counts["lines"] += 1
        if line.endswith("\r"):
            line = line[:-1]
            counts["crlf"] += 1
        if line_no in undecodable:
            problem("bad_encoding", line_no)  # kept: cleaning drops the U+FFFD marks
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
        rating = int(rating_text)
        parsed.add(int(rating > 3), rating, review, line_no, problem)
    counts["rows"] = len(parsed.reviews)
    return parsed


def parse_table(
    data: bytes,
    fmt: str,
    text_column: str,
    rating_column: str | None = None,
    label_column: str | None = None,
    encoding: str = "utf-8",
    strict: bool = False,
    name: str = "the source",
) -> ParsedLines:
    """Parse a CSV, TSV or JSONL source with a text column and a rating or a label column.

    Ratings are read as in the original (> 3 positive, 3 dropped, whole numbers 1 to 5 only),
    labels as 0 or 1. Every row ends up in exactly one of: rows, bad_row, bad_rating,
    neutral_rating, bad_label, missing_text; an empty review is kept, as in RATING<TAB>REVIEW
    files, and dropped when cleaned.
    """
    parsed = ParsedLines()
    counts = parsed.counts
    decoded = decode_source(data, encoding, name)
    if decoded.bom:
        counts["bom"] += 1
    problem = _problems(counts, strict)
    for line_no in decoded.bad_lines:
        problem("bad_encoding", line_no)  # kept: cleaning drops the U+FFFD marks
    table = read_table(io.StringIO(decoded.text, newline=""), fmt, name)
    text_cell = table.getter(text_column, name, "--text-column")
    if rating_column is not None:
        score_cell = table.getter(rating_column, name, "--rating-column")
    else:
        score_cell = table.getter(label_column, name, "--label-column")

    for line_no, row in table.rows:
        counts["lines"] += 1
        if row is None:
            problem("bad_row", line_no)
            continue
        number = _whole_number(score_cell(row))
        if rating_column is not None:
            if number is None or not 1 <= number <= 5:
                problem("bad_rating", line_no)
                continue
            if number == 3:
                problem("neutral_rating", line_no)
                continue
            label, rating = int(number > 3), number
        else:
            if number not in (0, 1):
                problem("bad_label", line_no)
                continue
            label, rating = number, 0
        text = text_cell(row)
        if text is None:
            problem("missing_text", line_no)
            continue
        parsed.add(label, rating, text_of(text), line_no, problem)
    counts["rows"] = len(parsed.reviews)
    return parsed


def _whole_number(value) -> int | None:
    """5, 5.0, "5" and "5.0" are 5 (spreadsheets write whole numbers either way); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        whole, dot, zeros = value.strip().partition(".")
        if whole.isascii() and whole.isdigit() and set(zeros) <= {"0"}:
            return int(whole)
    return None


def label_and_clean(parsed: ParsedLines) -> tuple[pd.DataFrame, Counter]:
    """Clean the parsed reviews (the parsers gave each its label) and drop empty and duplicate
    ones, the first of each kept."""
    frame = pd.DataFrame(
        {
            "label": parsed.labels,
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


def keep_labels(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, list]:
    """A stratified `fraction` of the rows (at least one of each label), in their order, and the
    texts of the others: what a shop with fewer ratings would have."""
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(train), dtype=bool)
    for label in (0, 1):
        rows = np.flatnonzero(train["label"].to_numpy() == label)
        keep[rng.choice(rows, max(1, round(fraction * len(rows))), replace=False)] = True
    return train[keep], train["text"][~keep].tolist()


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
    raw = config.raw_path  # run_stage has checked that it exists
    layout = config.source_layout
    if layout == "ratings":
        parsed = parse_lines(raw.read_bytes(), config.strict, config.encoding, config.source)
        usable = "'RATING<TAB>REVIEW' lines"
    else:
        parsed = parse_table(
            raw.read_bytes(),
            layout,
            config.text_column,
            config.rating_column,
            config.label_column,
            config.encoding,
            config.strict,
            config.source,
        )
        usable = f"rows with a review and a valid {'rating' if config.rating_column else 'label'}"
    if not parsed.reviews:
        raise PipelineError(
            f"{raw} has no usable {usable} ({parsed.counts['lines']} lines read); check that "
            "--source points at the review file"
        )
    frame, cleaning_counts = label_and_clean(parsed)
    splits = split_frame(frame, config)
    left_out = None
    if config.label_fraction < 1:
        splits["train"], left_out = keep_labels(splits["train"], config.label_fraction, config.seed)
        # cleaned texts hold no newline: one a line, read back by splitlines
        write_text_atomic(config.train_unlabeled_path, "".join(f"{t}\n" for t in left_out))
    else:  # a file of an earlier run's fraction would describe another split
        config.train_unlabeled_path.unlink(missing_ok=True)
    for name, part in splits.items():
        write_split(part, config.split_path(name))

    counts = {**parsed.counts, **cleaning_counts}
    if left_out is not None:
        counts["train_unlabeled"] = len(left_out)
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
    if "train_unlabeled" in counts:
        print(f"prepare: {counts['train_unlabeled']:,} more training reviews kept without labels")
