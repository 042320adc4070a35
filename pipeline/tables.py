"""Files of reviews as people keep them: formats, encodings, and CSV/TSV/JSON Lines tables.

Used both by `predict --input` (score a file) and by prepare (train on a labelled file), so the
two read a file the same way and refuse a wrongly encoded one with the same sentence.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO
from urllib.parse import urlparse

from pipeline.errors import PipelineError

TABLE_FORMATS = ("csv", "tsv", "jsonl")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".json-lines": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "lines",
}
_DELIMITERS = {"csv": ",", "tsv": "\t"}

# Korean files that are not UTF-8 are nearly always cp949 (what Excel and Windows save on a
# Korean system); cp949 is a superset of EUC-KR, so it names both.
_GUESSES = ("utf-8", "cp949")
_ABOUT = {"cp949": "cp949 (Korean Windows and Excel, a superset of EUC-KR)", "utf-8": "UTF-8"}
_WORKBOOKS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # .xlsx (a zip) and the old .xls

# A training source may hold a few corrupted lines (they are counted, like other malformed
# lines, and --strict refuses them), but a wrong encoding breaks nearly every line with Hangul
# in it. More than 1% of lines failing to decode is that, not corruption: stop and say so.
MAX_UNDECODABLE_SHARE = 0.01


def format_from_name(name: str | Path) -> str | None:
    """'csv', 'tsv', 'jsonl' or 'lines' from a path's or URL's suffix; None if unknown."""
    path = urlparse(name).path if "://" in str(name) else str(name)
    return _SUFFIXES.get(Path(path).suffix.lower())


def source_layout(source: str, source_format: str, text_column: str | None) -> str:
    """How a training source is read: 'ratings' (RATING<TAB>REVIEW lines) or a table format.

    'auto' reads RATING<TAB>REVIEW lines unless a text column is named; then the source's name
    says which table it is.
    """
    if source_format not in ("auto", "ratings", *TABLE_FORMATS):
        raise PipelineError(
            f"source_format must be auto, ratings, csv, tsv or jsonl, not {source_format!r}"
        )
    if source_format == "ratings" or (source_format == "auto" and text_column is None):
        if text_column is not None:
            raise PipelineError("--text-column needs a csv, tsv or jsonl source, not 'ratings'")
        return "ratings"
    if text_column is None:
        raise PipelineError(
            f"a {source_format} source needs --text-column naming its review column"
        )
    if source_format != "auto":
        return source_format
    found = format_from_name(source)
    if found in TABLE_FORMATS:
        return found
    raise PipelineError(
        f"cannot tell from its name whether {source} is csv, tsv or jsonl; pass --source-format"
    )


def codec_of(encoding: str) -> str:
    """The codec to read `encoding` with: UTF-8 reads with or without a BOM."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise PipelineError(
            f"unknown encoding {encoding!r}; pass --encoding with a name like utf-8 or cp949"
        ) from None
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name


def _decodes(data: bytes, codec: str) -> bool:
    try:
        data.decode(codec)
    except UnicodeDecodeError:
        return False
    return True


def likely_encoding(line: bytes, head: bytes = b"", tried: str = "utf-8") -> str | None:
    """A guess at what `line` (bytes that `tried` could not decode) is encoded in, or None."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and codec_of(tried) != "utf-16":
        return "utf-16"  # (read as UTF-16 already, the file is damaged: say nothing of UTF-16)
    return next(
        (g for g in _GUESSES if codec_of(g) != codec_of(tried) and _decodes(line, codec_of(g))),
        None,
    )


def undecodable_error(
    name: str | Path, encoding: str, line_no: int | None, line: bytes, head: bytes
) -> PipelineError:
    """The one sentence for a file that does not decode: what it is likely to be, what to pass."""
    if head.startswith(_WORKBOOKS):
        return PipelineError(
            f"{name} is an Excel workbook, not a text table; save it from Excel as "
            "'CSV UTF-8' and use that file"
        )
    where = f" (line {line_no})" if line_no else ""
    what = _ABOUT.get(codecs.lookup(encoding).name, encoding)
    guess = likely_encoding(line, head, tried=encoding)
    if guess:
        return PipelineError(
            f"{name} is not valid {what}{where}; it looks like {_ABOUT.get(guess, guess)}, "
            f"so pass --encoding {guess}"
        )
    return PipelineError(
        f"{name} is not valid {what}{where} and does not look like cp949 either; pass "
        "--encoding with the encoding it was saved in"
    )


def check_decodes(path: Path, encoding: str, name: str | Path | None = None) -> None:
    """Raise the one-sentence error if any byte of the file at `path` does not decode.

    Streams the file once before anything is scored, so a wrongly encoded file is refused at
    once, not after scoring the part before its first bad byte.
    """
    codec = codec_of(encoding)
    decoder = codecs.getincrementaldecoder(codec)()
    with path.open("rb") as fh:
        head = fh.read(4096)
        block = head
        try:
            while block:
                decoder.decode(block)
                block = fh.read(1 << 20)
            decoder.decode(b"", final=True)
            return
        except UnicodeDecodeError:
            pass
        fh.seek(0)
        for line_no, line in enumerate(fh, start=1):
            if not _decodes(line, codec):
                raise undecodable_error(name or path, encoding, line_no, line, head)
    raise undecodable_error(name or path, encoding, None, head, head)  # e.g. a cut-off UTF-16


@dataclass
class Decoded:
    """A whole source decoded: its text, the lines that did not decode (1-based), and the BOM."""

    text: str
    bad_lines: list[int] = field(default_factory=list)
    bom: bool = False


def decode_source(data: bytes, encoding: str, name: str | Path) -> Decoded:
    """Decode a training source; a few bad lines are kept and listed, a wrong encoding refused."""
    codec = codec_of(encoding)
    bom = codec == "utf-8-sig" and data.startswith(codecs.BOM_UTF8)
    try:
        return Decoded(data.decode(codec), [], bom)
    except UnicodeDecodeError:
        pass
    lines = data.split(b"\n")
    bad = [n for n, line in enumerate(lines, start=1) if not _decodes(line, codec)]
    if not bad or len(bad) > MAX_UNDECODABLE_SHARE * len(lines):
        first = bad[0] if bad else None
        raise undecodable_error(name, encoding, first, lines[first - 1] if first else data, data)
    return Decoded(data.decode(codec, errors="replace"), bad, bom)


# -- tables ----------------------------------------------------------------------------------------
@dataclass
class Table:
    """A table being read: its column names and its rows, each with the line it starts on.

    CSV and TSV rows are lists of strings, exactly as written (no type guessing, duplicate
    names and all); JSON Lines rows are the objects as parsed. A row that is not a row of the
    table (a JSON line that is not an object, more cells than the header) comes as None.
    """

    format: str
    columns: list[str]
    rows: Iterator[tuple[int, list[str] | dict | None]]

    def getter(self, column: str | None, name: str | Path, flag: str = "--column"):
        """A function row -> the row's cell in `column` (None when absent)."""
        shown = ", ".join(repr(c) for c in self.columns) or "none"
        if column is None:
            raise PipelineError(
                f"pass {flag} naming the review column of {name}; its columns are {shown}"
            )
        if column not in self.columns:
            raise PipelineError(
                f"{name} has no column {column!r}; its columns are {shown}: pass one of them "
                f"as {flag}"
            )
        if self.format == "jsonl":
            return lambda row: row.get(column)
        index = self.columns.index(column)
        return lambda row: row[index] if index < len(row) else None


def read_table(stream: Iterable[str], fmt: str, name: str | Path) -> Table:
    """Start reading a CSV, TSV or JSON Lines text stream (opened with newline='')."""
    if fmt == "jsonl":
        rows = _json_rows(stream, name)
        first = next(rows, None)
        if first is None:
            raise PipelineError(f"{name} has no JSON lines; check the file")
        if first[1] is None:
            raise PipelineError(
                f"line {first[0]} of {name} is not a JSON object, so the file's columns are "
                "unknown; fix that line"
            )
        return Table(fmt, list(first[1]), _chain(first, rows))
    reader = csv.reader(stream, delimiter=_DELIMITERS[fmt])
    try:
        columns = next(reader)
    except StopIteration:
        raise PipelineError(f"{name} is empty; a {fmt} file starts with a header row") from None
    return Table(fmt, columns, _csv_rows(reader, len(columns)))


def _chain(first, rest):
    yield first
    yield from rest


def _csv_rows(reader, width: int) -> Iterator[tuple[int, list[str] | None]]:
    start = reader.line_num + 1
    for row in reader:
        if row:  # the csv module gives [] for a blank line: not a row of the table
            yield start, (row if len(row) <= width else None)
        start = reader.line_num + 1


def _json_rows(stream: Iterable[str], name) -> Iterator[tuple[int, dict | None]]:
    for line_no, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = None
        yield line_no, (value if isinstance(value, dict) else None)


class TableWriter:
    """Write rows of a table in its own format, with columns added at the end."""

    def __init__(self, stream: TextIO, fmt: str, columns: list[str], added: list[str]):
        self.stream, self.format, self.width = stream, fmt, len(columns)
        if fmt != "jsonl":
            self._csv = csv.writer(stream, delimiter=_DELIMITERS[fmt], lineterminator="\n")
            self._csv.writerow([*columns, *added])

    def write(self, row: list[str] | dict, added: dict[str, Any]) -> None:
        if self.format == "jsonl":
            self.stream.write(json.dumps({**row, **added}, ensure_ascii=False) + "\n")
        else:  # a short row is padded, so the added cells land under their own header
            self._csv.writerow([*row, *[""] * (self.width - len(row)), *added.values()])


def text_of(value: Any) -> str:
    """A cell as review text: None is empty, other JSON values are written out."""
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(value, ensure_ascii=False)


class _Counted(io.RawIOBase):
    """A binary file that reports each read to a callback (a progress bar over bytes)."""

    def __init__(self, raw: BinaryIO, update):
        self.raw, self.update = raw, update

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.update(n)
        return n


def open_text(raw: BinaryIO, encoding: str, update=None) -> TextIO:
    """A text stream over a binary file (newline='' as the csv module wants), counting bytes."""
    if update is not None:
        raw = io.BufferedReader(_Counted(raw, update))
    return io.TextIOWrapper(raw, encoding=codec_of(encoding), newline="")
