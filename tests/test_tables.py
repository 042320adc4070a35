"""Formats, encodings and tables, on files the tests write the way Excel and pandas do."""

import codecs
import csv
import io

import pytest

from pipeline.errors import PipelineError
from pipeline.tables import (
    TableWriter,
    check_decodes,
    decode_source,
    format_from_name,
    likely_encoding,
    read_table,
    source_layout,
)


def fixture_reviews(sample_path, n=None, cp949=False):
    """Real reviews from the fixture; with cp949, only those cp949 can encode (as Excel would)."""
    reviews = [
        line.split("\t", 1)[1] for line in sample_path.read_text(encoding="utf-8").splitlines()
    ]
    if cp949:
        reviews = [r for r in reviews if r == r.encode("cp949", "replace").decode("cp949")]
    return reviews[:n]


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("reviews.csv", "csv"),
        ("REVIEWS.TSV", "tsv"),
        ("a/b.jsonl", "jsonl"),
        ("b.json-lines", "jsonl"),
        ("https://host/x/reviews.csv?token=1", "csv"),
        ("reviews.txt", "lines"),
        ("reviews.xlsx", None),
        ("reviews", None),
    ],
)
def test_format_comes_from_the_name(name, fmt):
    assert format_from_name(name) == fmt


def test_source_layout_rules():
    assert source_layout("x.txt", "auto", None) == "ratings"
    assert source_layout("x.csv", "auto", None) == "ratings"  # no columns named: RATING<TAB>REVIEW
    assert source_layout("x.csv", "auto", "review") == "csv"
    assert source_layout("x.txt", "jsonl", "review") == "jsonl"
    with pytest.raises(PipelineError, match="pass --source-format"):
        source_layout("https://host/export", "auto", "review")
    with pytest.raises(PipelineError, match="a tsv source needs --text-column"):
        source_layout("x.tsv", "tsv", None)
    with pytest.raises(PipelineError, match="needs a csv, tsv or jsonl source"):
        source_layout("x.csv", "ratings", "review")


# -- encodings ------------------------------------------------------------------------------------
def test_a_cp949_file_is_refused_naming_cp949_and_the_line(tmp_path, sample_path):
    path = tmp_path / "reviews.csv"
    lines = ["id,comment", *(f"{i},{r}" for i, r in enumerate(fixture_reviews(sample_path, 50)))]
    path.write_bytes("\n".join(lines).encode("cp949"))
    with pytest.raises(PipelineError) as info:
        check_decodes(path, "utf-8")
    message = str(info.value)
    assert message.startswith(f"{path} is not valid UTF-8 (line 2); it looks like cp949")
    assert message.endswith("so pass --encoding cp949")
    check_decodes(path, "cp949")  # and it reads with the encoding it names
    check_decodes(path, "euc-kr")  # these reviews stay within EUC-KR, cp949's older subset


def test_utf8_with_or_without_bom_reads(tmp_path):
    for data in ("id,리뷰\n1,좋아요\n".encode(), "\ufeffid,리뷰\n".encode()):
        (tmp_path / "r.csv").write_bytes(data)
        check_decodes(tmp_path / "r.csv", "utf-8")


def test_euc_kr_names_cp949_for_the_syllables_only_cp949_has(tmp_path):
    path = tmp_path / "r.txt"
    path.write_bytes("똠양꿍 맛집 햏\n".encode("cp949"))  # outside EUC-KR's 2,350 syllables
    with pytest.raises(
        PipelineError,
        match=r"not valid euc-kr \(line 1\); it looks like cp949 .* pass --encoding cp949$",
    ):
        check_decodes(path, "euc-kr")


def test_utf16_and_workbooks_are_named(tmp_path):
    path = tmp_path / "r.txt"
    path.write_bytes("리뷰\n좋아요\n".encode("utf-16"))  # Excel's "Unicode text"
    with pytest.raises(PipelineError, match="looks like utf-16, so pass --encoding utf-16"):
        check_decodes(path, "utf-8")
    check_decodes(path, "utf-16")
    path.write_bytes(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xff\xfe")
    with pytest.raises(PipelineError, match="is an Excel workbook, not a text table"):
        check_decodes(path, "utf-8")


def test_bytes_that_are_nothing_known_ask_for_the_encoding():
    assert likely_encoding(b"\xff\xff\xff") is None
    assert likely_encoding("좋아요".encode("cp949")) == "cp949"
    assert likely_encoding("좋아요".encode(), tried="cp949") == "utf-8"


def test_unknown_encoding_is_a_clear_error(tmp_path):
    (tmp_path / "r.txt").write_text("좋아요\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="unknown encoding 'klingon'"):
        check_decodes(tmp_path / "r.txt", "klingon")


def test_a_few_corrupt_lines_are_kept_but_a_wrong_encoding_is_refused():
    good = ["5\t좋아요".encode()] * 198
    one_bad = b"\n".join([*good, b"1\t\xff broken", b"4\tok"])  # 1 line in 200: 0.5%
    decoded = decode_source(one_bad, "utf-8", "src")
    assert decoded.bad_lines == [199] and "\ufffd broken" in decoded.text
    three_bad = b"\n".join([*good[:197], *[b"1\t\xff broken"] * 3])  # 1.5%: not corruption
    with pytest.raises(PipelineError, match=r"^src is not valid UTF-8 \(line 198\)"):
        decode_source(three_bad, "utf-8", "src")
    bom = decode_source(codecs.BOM_UTF8 + "5\t좋아요".encode(), "utf-8", "src")
    assert (bom.text, bom.bom) == ("5\t좋아요", True)


# -- tables ---------------------------------------------------------------------------------------
def test_csv_round_trips_quotes_newlines_duplicate_names_and_short_rows():
    text = 'id,review,id\r\n1,"여러 줄\r\n리뷰, ""따옴표""",x\r\n2,짧은 행\r\n\r\n3,끝,y\r\n'
    table = read_table(io.StringIO(text, newline=""), "csv", "t.csv")
    assert table.columns == ["id", "review", "id"]
    review = table.getter("review", "t.csv")
    rows = list(table.rows)
    assert [line for line, _ in rows] == [2, 4, 6]  # the line each row starts on
    assert [review(row) for _, row in rows] == ['여러 줄\r\n리뷰, "따옴표"', "짧은 행", "끝"]
    out = io.StringIO(newline="")
    writer = TableWriter(out, "csv", table.columns, ["label"])
    for _, row in rows:
        writer.write(row, {"label": "긍정"})
    back = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert back[0] == ["id", "review", "id", "label"]
    assert back[1] == ["1", '여러 줄\r\n리뷰, "따옴표"', "x", "긍정"]
    assert back[2] == ["2", "짧은 행", "", "긍정"]  # padded: the label stays under its header


def test_missing_column_names_the_columns_there_are():
    table = read_table(io.StringIO("번호,리뷰\n1,좋아요\n"), "csv", "r.csv")
    with pytest.raises(PipelineError) as info:
        table.getter("review", "r.csv")
    assert str(info.value) == (
        "r.csv has no column 'review'; its columns are '번호', '리뷰': pass one of them as --column"
    )


def test_json_lines_rows_and_bad_lines():
    text = '{"id": 1, "text": "좋아요"}\n\n[1, 2]\nnot json\n{"id": 3}\n'
    table = read_table(io.StringIO(text), "jsonl", "r.jsonl")
    assert table.columns == ["id", "text"]
    cell = table.getter("text", "r.jsonl")
    rows = list(table.rows)
    assert [(line, row and cell(row)) for line, row in rows] == [
        (1, "좋아요"),
        (3, None),
        (4, None),
        (5, None),
    ]
    with pytest.raises(PipelineError, match="line 1 of r.jsonl is not a JSON object"):
        read_table(io.StringIO("[1]\n"), "jsonl", "r.jsonl")
