"""Score a file of reviews in chunks: one review per line, or a column of a CSV, TSV or JSONL.

A table comes back in its own format with every column and row as it was, plus `label` and
`positive_probability`; the output appears under its name only once the whole file is scored.
"""

from __future__ import annotations

import codecs
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from tqdm.auto import tqdm

from pipeline.batches import chunks
from pipeline.errors import PipelineError
from pipeline.files import atomic_path
from pipeline.labels import label_of
from pipeline.predict import Predictor
from pipeline.tables import (
    TABLE_FORMATS,
    TableWriter,
    check_decodes,
    codec_of,
    format_from_name,
    open_text,
    read_table,
    text_of,
)

ADDED = ["label", "positive_probability"]
CHUNK_ROWS = 8192  # rows held in memory at once, whatever the file's size


def score_file(
    predictor: Predictor | Callable[[], Predictor],
    path: Path,
    output: Path | None = None,
    column: str | None = None,
    fmt: str | None = None,
    encoding: str = "utf-8",
    chunk_rows: int = CHUNK_ROWS,
    quiet: bool = False,
) -> dict:
    """Score every review of the file at `path` into `output` (stdout if None); return counts.

    `predictor` may be a function that makes one: it is called once the file has passed its
    checks (format, encoding, columns), so a bad file is refused without loading a model.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"input file {path} does not exist")
    if fmt is None and path.suffix.lower() == ".json":
        raise PipelineError(
            f"{path} may be one JSON document, which is not read; if it holds one JSON object "
            "a line, pass --format jsonl"
        )
    fmt = fmt or format_from_name(path) or "lines"  # any other name: one review per line
    if fmt == "lines" and column is not None:
        raise PipelineError(
            f"{path} is read as plain text, one review per line; --column needs a csv, tsv or "
            "jsonl file (name it so, or pass --format)"
        )
    if fmt in TABLE_FORMATS:
        if output is not None and format_from_name(output) not in (None, fmt):
            raise PipelineError(
                f"the scores are written in the input's format ({fmt}); give --output a .{fmt} name"
            )
    check_decodes(path, encoding)  # refuse a wrongly encoded file before scoring any of it

    counts = {"rows": 0, "empty": 0}
    bar = tqdm(unit="B", unit_scale=True, desc="predict", disable=quiet or output is None)
    with bar, path.open("rb") as raw, open_text(raw, encoding, bar.update) as text:
        if fmt == "lines":
            table, cell = None, None
            rows = ((n, line.rstrip("\r\n")) for n, line in enumerate(text, start=1))
        else:
            table = read_table(text, fmt, path)
            cell = table.getter(column, path)
            clash = [name for name in ADDED if name in table.columns]
            if clash:
                raise PipelineError(
                    f"{path} already has a column named {clash[0]!r}, where the scores go; "
                    "rename it"
                )
            rows = table.rows
        if not hasattr(predictor, "predict_proba"):
            predictor = predictor()
        bar.reset(total=path.stat().st_size)  # the model's loading time is not reading time
        bar.update(raw.tell())
        out_encoding = "utf-8" if fmt == "lines" else _output_encoding(path, encoding)
        with _output(output, out_encoding) as out:
            if table is None:
                _score_lines(predictor, rows, out, counts, chunk_rows, header=output is not None)
            else:
                _score_table(predictor, table, cell, out, path, counts, chunk_rows)
    return counts


def _output_encoding(path: Path, encoding: str) -> str:
    """The input's own encoding, so the file opens as it did; a UTF-8 BOM is kept if it had one."""
    codec = codec_of(encoding)
    if codec != "utf-8-sig":
        return codec
    with path.open("rb") as fh:
        return codec if fh.read(3) == codecs.BOM_UTF8 else "utf-8"


@contextlib.contextmanager
def _output(output: Path | None, encoding: str) -> Iterator[TextIO]:
    if output is None:
        yield sys.stdout
        return
    with atomic_path(output) as tmp, tmp.open("w", encoding=encoding, newline="") as out:
        yield out


def _score(predictor: Predictor, texts: list[str], counts: dict):
    counts["rows"] += len(texts)
    counts["empty"] += sum(not t.strip() for t in texts)
    return predictor.predict_proba(texts)


def _score_lines(predictor, rows, out, counts, chunk_rows, header: bool) -> None:
    # As before tables were read: a TSV with a header into a file, four decimals on screen.
    if header:
        out.write("label\tprobability\n")
    for chunk in chunks(rows, chunk_rows):
        for p in _score(predictor, [line for _, line in chunk], counts):
            label = label_of(p)
            out.write(f"{label}\t{p:.6f}\n" if header else f"{label}\t{p:.4f}\n")


def _score_table(predictor, table, cell, out, path, counts, chunk_rows) -> None:
    writer = TableWriter(out, table.format, table.columns, ADDED)
    for chunk in chunks(table.rows, chunk_rows):
        for line_no, row in chunk:
            if row is None:
                what = (
                    "is not a JSON object"
                    if table.format == "jsonl"
                    else "has more cells than the header"
                )
                raise PipelineError(f"line {line_no} of {path} {what}; fix that row")
        probs = _score(predictor, [text_of(cell(row)) for _, row in chunk], counts)
        for (_, row), p in zip(chunk, probs, strict=True):
            # six decimals, as text in CSV/TSV and as a number in JSON
            prob = round(float(p), 6) if table.format == "jsonl" else f"{p:.6f}"
            writer.write(row, {"label": label_of(p), ADDED[1]: prob})
