"""Formats, encodings and tables, on files the tests write the way Excel and pandas do."""

import codecs
import csv
import io

import pytest

from pipeline.errors import PipelineError
from pipeline.tables import (
    TableWriter,
    _decodes,
    check_decodes,
    decode_source,
    format_from_name,
    likely_encoding,
    open_text,
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
        ("리뷰 #2.csv", "csv"),  # a local name is not a URL: '#' and '?' are part of it
        ("what?.tsv", "tsv"),
    ],
    ids=lambda v: ascii(v),  # ASCII ids: mutmut reruns tests by id
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
    assert (table.format, table.columns) == ("csv", ["id", "review", "id"])
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


# -- the whole file is checked, to its last byte ---------------------------------------------
def test_a_bad_byte_far_into_the_file_is_found_and_its_line_named(tmp_path):
    """Checked block by block to the end: a cp949 line after 10,000 UTF-8 bytes is found, and
    the line count starts at the file's first byte (the first line starts with Hangul)."""
    path = tmp_path / "r.csv"
    good = "리뷰,평점\n" + "".join(f"좋아요 {i},5\n" for i in range(800))
    path.write_bytes(good.encode() + "별로예요,1\n".encode("cp949") + "끝,5\n".encode())
    assert len(good.encode()) > 10_000
    with pytest.raises(PipelineError) as info:
        check_decodes(path, "utf-8")
    assert str(info.value) == (
        f"{path} is not valid UTF-8 (line 802); it looks like cp949 (Korean Windows and Excel, "
        "a superset of EUC-KR), so pass --encoding cp949"
    )


def test_a_file_cut_inside_its_last_character_is_refused(tmp_path):
    path = tmp_path / "r.txt"
    path.write_bytes("리뷰\n좋아요\n".encode() + "요".encode()[:2])
    with pytest.raises(PipelineError, match=r"is not valid UTF-8 \(line 3\)"):
        check_decodes(path, "utf-8")


def test_a_damaged_utf16_file_read_as_utf16_is_refused_without_naming_utf16_again(tmp_path):
    """Big-endian UTF-16 with a broken surrogate pair on line 2: each line decodes alone (read
    without the BOM, as little-endian), the whole does not; no use telling someone who passed
    utf-16 to pass utf-16."""
    path = tmp_path / "r.txt"
    path.write_bytes(codecs.BOM_UTF16_BE + "A\n".encode("utf-16-be") + b"\xd8\x00\x00B")
    with pytest.raises(PipelineError) as info:
        check_decodes(path, "utf-16")
    assert str(info.value) == (
        f"{path} is not valid utf-16 and does not look like cp949 either; pass --encoding with "
        "the encoding it was saved in"
    )
    path.write_bytes("A\n".encode("utf-16")[:-1])  # cut off: its last line does not decode
    with pytest.raises(PipelineError, match=r"is not valid utf-16 \(line 1\) and does not look"):
        check_decodes(path, "utf-16")


def test_a_utf8_file_read_as_cp949_is_named_utf8(tmp_path):
    path = tmp_path / "r.txt"
    path.write_bytes("리뷰\n좋아요\n".encode())
    with pytest.raises(PipelineError) as info:
        check_decodes(path, "cp949")
    assert str(info.value) == (
        f"{path} is not valid cp949 (Korean Windows and Excel, a superset of EUC-KR) (line 2); "
        "it looks like UTF-8, so pass --encoding utf-8"
    )


def test_a_workbook_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "r.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\xff\xfe")  # the old .xls
    with pytest.raises(PipelineError) as info:
        check_decodes(path, "utf-8")
    assert str(info.value) == (
        f"{path} is an Excel workbook, not a text table; save it from Excel as 'CSV UTF-8' and "
        "use that file"
    )


# -- writing a table, and reading one with progress ---------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_table_writer_writes_each_format_with_the_added_columns_last(fmt):
    out = io.StringIO(newline="")
    writer = TableWriter(out, fmt, ["id", "review"], ["label", "p"])
    row = {"id": 1, "review": "좋아, 정말"} if fmt == "jsonl" else ["1", "좋아, 정말"]
    writer.write(row, {"label": "긍정", "p": 0.75})
    expected = {
        "csv": 'id,review,label,p\n1,"좋아, 정말",긍정,0.75\n',
        "tsv": "id\treview\tlabel\tp\n1\t좋아, 정말\t긍정\t0.75\n",
        "jsonl": '{"id": 1, "review": "좋아, 정말", "label": "긍정", "p": 0.75}\n',
    }
    assert out.getvalue() == expected[fmt]


def test_open_text_decodes_keeps_line_ends_and_counts_every_byte():
    data = "리뷰\r\n좋아요\n".encode("cp949") * 5000
    counted = []
    with open_text(io.BytesIO(data), "cp949", counted.append) as text:
        assert text.read() == "리뷰\r\n좋아요\n" * 5000  # newline='': the csv module's line ends
    assert sum(counted) == len(data) and len(counted) > 1
    with open_text(io.BytesIO("\ufeff리뷰\n".encode()), "utf-8") as text:
        assert text.read() == "리뷰\n"  # UTF-8 reads with or without a BOM


def test_tables_that_cannot_be_read_say_why_in_one_sentence():
    def refusal(text: str, fmt: str) -> str:
        with pytest.raises(PipelineError) as info:
            read_table(io.StringIO(text, newline=""), fmt, f"r.{fmt}")
        return str(info.value)

    assert refusal("", "jsonl") == "r.jsonl has no JSON lines; check the file"
    assert refusal("\n\n[1]\n", "jsonl") == (
        "line 3 of r.jsonl is not a JSON object, so the file's columns are unknown; fix that line"
    )
    assert refusal("", "tsv") == "r.tsv is empty; a tsv file starts with a header row"
    table = read_table(io.StringIO("번호,리뷰\n"), "csv", "r.csv")
    with pytest.raises(PipelineError) as info:
        table.getter(None, "r.csv", "--text-column")
    assert str(info.value) == (
        "pass --text-column naming the review column of r.csv; its columns are '번호', '리뷰'"
    )
    blank_header = read_table(io.StringIO("\n1,2\n"), "csv", "r.csv")
    with pytest.raises(PipelineError, match=r"its columns are none: pass one of them as --column$"):
        blank_header.getter("x", "r.csv")


def test_one_percent_of_undecodable_lines_is_corruption_more_is_a_wrong_encoding():
    good = ["5\t좋아요".encode()] * 198
    two_bad = b"\n".join([*good[:99], b"1\t\xff", *good[99:], b"2\t\xfe"])  # 2 in 200: 1%
    assert decode_source(two_bad, "utf-8", "src").bad_lines == [100, 200]
    with pytest.raises(PipelineError, match=r"^src is not valid UTF-8 \(line 100\)"):
        decode_source(two_bad + b"\n3\t\xff", "utf-8", "src")  # 3 in 201


def test_a_source_that_fails_only_as_a_whole_is_refused_naming_no_line():
    # UTF-16-LE "A\n", then a lone high surrogate and half a character: split at b"\n", each
    # part decodes alone (the second one out of step), the whole does not
    damaged = codecs.BOM_UTF16_LE + "A\n".encode("utf-16-le") + b"\x00\xd8A"
    assert all(_decodes(part, "utf-16") for part in damaged.split(b"\n"))
    with pytest.raises(PipelineError) as info:
        decode_source(damaged, "utf-16", "src")
    assert str(info.value) == (
        "src is not valid utf-16 and does not look like cp949 either; pass --encoding with the "
        "encoding it was saved in"
    )


def test_a_refused_source_is_named_after_its_first_undecodable_line():
    """The guess comes from the first line that failed, not the file or the line before it."""
    garbage = b"1\t\xff\xff\n"  # neither UTF-8 nor cp949
    cp949_first = b"5\tok\n" + "1\t별로\n".encode("cp949") + garbage * 5
    with pytest.raises(
        PipelineError, match=r"^src is not valid UTF-8 \(line 2\); it looks like cp"
    ):
        decode_source(cp949_first, "utf-8", "src")
    garbage_first = b"5\tok\n" + garbage * 5
    with pytest.raises(PipelineError, match=r"\(line 2\) and does not look like cp949 either"):
        decode_source(garbage_first, "utf-8", "src")


def test_a_few_corrupt_lines_in_a_cp949_source_leave_the_rest_read_as_cp949():
    lines = ["5\t좋아요".encode("cp949")] * 199 + [b"1\t\xff broken"]
    decoded = decode_source(b"\n".join(lines), "cp949", "src")
    assert decoded.bad_lines == [200] and decoded.text.count("좋아요") == 199
