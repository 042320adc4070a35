import codecs
import json
import warnings

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import PipelineError
from pipeline.prepare import (
    LONG_REVIEW_CHARS,
    SPLITS,
    label_and_clean,
    parse_lines,
    parse_table,
    prepare,
    read_split,
)
from pipeline.stages import get_stage, run_stage
from tests.conftest import tiny_config

LINE_KINDS = ("rows", "blank", "no_tab", "bad_rating", "neutral_rating")


def test_parses_ratings_and_reviews():
    parsed = parse_lines("5\t좋아요\n1\t별로\n".encode())
    assert parsed.ratings == [5, 1]
    assert parsed.reviews == ["좋아요", "별로"]
    assert parsed.counts["lines"] == 2


def test_tolerates_bom_crlf_and_blank_lines_and_counts_them():
    parsed = parse_lines("\ufeff5\t좋아요\r\n\r\n2\t별로\r\n".encode())
    assert parsed.reviews == ["좋아요", "별로"]
    assert (parsed.counts["bom"], parsed.counts["crlf"], parsed.counts["blank"]) == (1, 3, 1)


def test_counts_every_kind_of_bad_line():
    data = b"\n".join(
        [
            "5\t좋아요".encode(),
            b"no tab here",
            "x\t문자".encode(),
            "7\t범위밖".encode(),
            "3\t보통".encode(),
            "4\t탭이\t두개".encode(),
            b"2\t\xff\xfe broken",
            ("1\t" + "가" * (LONG_REVIEW_CHARS + 1)).encode(),
            *[b""] * 100,  # blank lines: one undecodable line in 108 is corruption, not encoding
        ]
    )
    parsed = parse_lines(data)
    c = parsed.counts
    assert (c["no_tab"], c["bad_rating"], c["neutral_rating"]) == (1, 2, 1)
    assert (c["extra_tab"], c["bad_encoding"], c["long_review"]) == (1, 1, 1)
    assert parsed.ratings == [5, 4, 2, 1]  # tab, bad bytes and long reviews are kept


@pytest.mark.parametrize(
    "line,kind",
    [
        ("no tab here", "has no tab"),
        ("x\t문자", "not a whole number from 1 to 5"),
        ("3\t보통", "rating 3"),
        ("4\t탭이\t두개", "tab inside the review"),
    ],
    ids=["no-tab", "bad-rating", "neutral", "extra-tab"],  # ASCII ids: mutmut reruns tests by id
)
def test_strict_mode_names_the_line(line, kind):
    data = f"5\t좋아요\n{line}\n".encode()
    with pytest.raises(PipelineError, match=rf"line 2 .*{kind}"):
        parse_lines(data, strict=True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parser_never_raises_and_counts_add_up(data):
    try:
        parsed = parse_lines(data)
    except PipelineError as exc:  # more than 1% of its lines are not UTF-8: a wrong encoding
        assert "pass --encoding" in str(exc) or "is an Excel workbook" in str(exc)
        return
    assert sum(parsed.counts[k] for k in LINE_KINDS) == parsed.counts["lines"]
    assert len(parsed.ratings) == len(parsed.reviews) == parsed.counts["rows"]
    assert all(r in (1, 2, 4, 5) for r in parsed.ratings)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 4, 5]), st.text(alphabet="가나다 ab!\t\r"))))
def test_parser_reads_back_what_was_written(rows):
    data = "".join(f"{r}\t{text}\n" for r, text in rows).encode()
    parsed = parse_lines(data)
    assert parsed.counts["lines"] == len(rows)
    assert parsed.ratings == [r for r, _ in rows]
    # a review's own final "\r" reads as a CRLF line end, as it would in any text tool
    assert parsed.reviews == [t[:-1] if t.endswith("\r") else t for _, t in rows]


def test_labels_cleans_and_drops_empty_and_duplicates():
    parsed = parse_lines("5\t좋아요!\n4\t좋아요\n1\tbad\n2\t별로 ㅠ\n1\t별로 ㅠ\n".encode())
    frame, counts = label_and_clean(parsed)
    assert frame.to_dict("list") == {
        "label": [1, 0],
        "rating": [5, 2],
        "text": ["좋아요", "별로 ㅠ"],
    }
    assert (counts["empty_after_cleaning"], counts["duplicates"], counts["kept"]) == (1, 2, 2)


def test_prepare_is_reproducible_with_the_same_seed(tmp_path, sample_path):
    results = []
    for name in ("a", "b"):
        config = tiny_config(tmp_path / name, sample_path)
        config.raw_path.parent.mkdir(parents=True)
        config.raw_path.write_bytes(sample_path.read_bytes())
        prepare(config, quiet=True)
        results.append(config.split_path("test").read_bytes())
    assert results[0] == results[1]


def test_numeric_looking_reviews_stay_text(tmp_path):
    path = tmp_path / "s.tsv"
    pd.DataFrame({"label": [1], "rating": [5], "text": ["0123"]}).to_csv(
        path, sep="\t", index=False
    )
    assert read_split(path)["text"].tolist() == ["0123"]


def test_file_without_usable_rows_is_an_error(tmp_path):
    config = tiny_config(tmp_path, "unused")
    config.raw_path.parent.mkdir(parents=True)
    config.raw_path.write_text("hello\nworld\n", encoding="utf-8")
    message = r"no usable 'RATING<TAB>REVIEW' lines \(2 lines read\); check that --source points"
    with pytest.raises(PipelineError, match=message + " at the review file$"):
        prepare(config, quiet=True)


def test_missing_raw_file_says_which_stage_to_run(tmp_path):
    with pytest.raises(PipelineError, match="run `python -m pipeline download` first"):
        run_stage(get_stage("prepare"), tiny_config(tmp_path, "unused"), quiet=True)


# -- tables: a text column and a rating or label column ------------------------------------------
def test_csv_ratings_are_read_as_in_the_original_and_every_bad_row_counted():
    data = "\n".join(
        [
            "id,stars,review",
            "1,5,좋아요",
            "2,1,별로",
            "3,3,보통",  # neutral
            "4,7,범위밖",  # bad rating
            "5,,빈 평점",  # bad rating
            '6,2.0,"두 줄\n리뷰"',  # 2.0 is 2: spreadsheets write whole numbers that way
            "7,4",  # no review cell
            "8,4,,extra",  # more cells than the header
            "9,5,",  # empty review: kept, then dropped as empty after cleaning
        ]
    ).encode()
    parsed = parse_table(data, "csv", "review", rating_column="stars")
    assert parsed.reviews == ["좋아요", "별로", "두 줄\n리뷰", ""]
    assert parsed.labels == [1, 0, 0, 1] and parsed.ratings == [5, 1, 2, 5]
    c = parsed.counts
    assert (c["neutral_rating"], c["bad_rating"], c["missing_text"], c["bad_row"]) == (1, 2, 1, 1)
    kinds = ("rows", "bad_row", "bad_rating", "neutral_rating", "bad_label", "missing_text")
    assert sum(c[k] for k in kinds) == c["lines"] == 9


def test_json_lines_labels_and_strict_names_the_line():
    lines = [
        {"text": "좋아요", "y": 1},
        {"text": "별로", "y": 0},
        {"text": "애매", "y": 2},
        {"text": "문자", "y": "yes"},
        {"y": 1},
        {"text": None, "y": 0},
    ]
    data = ("\n".join(json.dumps(r, ensure_ascii=False) for r in lines) + "\nnot json\n").encode()
    parsed = parse_table(data, "jsonl", "text", label_column="y")
    assert parsed.reviews == ["좋아요", "별로"] and parsed.labels == [1, 0]
    c = parsed.counts
    assert (c["bad_label"], c["missing_text"], c["bad_row"]) == (2, 2, 1)
    with pytest.raises(PipelineError, match=r"^line 3 has a label that is not 0 or 1; fix"):
        parse_table(data, "jsonl", "text", label_column="y", strict=True)


def test_a_missing_source_column_names_the_columns_and_the_flag():
    with pytest.raises(PipelineError, match=r"has no column 'score'; its columns are 'review', "):
        parse_table(b"review,stars\n1,5\n", "csv", "review", rating_column="score")
    with pytest.raises(PipelineError, match="pass one of them as --text-column"):
        parse_table(b"review,stars\n1,5\n", "csv", "text", rating_column="stars")


def test_prepare_refuses_a_cp949_source_then_reads_it_with_its_encoding(tmp_path, sample_path):
    """The issue's case: a CP949 copy trained on 155 leftovers of 2,000 lines, silently."""
    config = tiny_config(tmp_path, "reviews_cp949.txt")
    config.raw_path.parent.mkdir(parents=True)
    # the few characters cp949 lacks become '?'
    cp949 = sample_path.read_text(encoding="utf-8").encode("cp949", "replace")
    config.raw_path.write_bytes(cp949)
    with pytest.raises(PipelineError) as info:
        prepare(config, quiet=True)
    assert str(info.value).startswith("reviews_cp949.txt is not valid UTF-8 (line 1); it looks")
    assert str(info.value).endswith("so pass --encoding cp949")
    assert not config.processed_dir.exists()
    parsed = parse_lines(cp949, encoding="cp949")  # the parser, as prepare calls it
    expected = parse_lines(cp949.decode("cp949").encode())
    assert parsed.reviews == expected.reviews and parsed.counts == expected.counts
    assert parsed.counts["rows"] > 550 and not parsed.counts["bad_encoding"]
    counts = prepare(config.replace(encoding="cp949"), quiet=True)
    same_in_utf8 = tiny_config(tmp_path / "utf8", "reviews.txt")
    same_in_utf8.raw_path.parent.mkdir(parents=True)
    same_in_utf8.raw_path.write_bytes(config.raw_path.read_bytes().decode("cp949").encode())
    assert counts == prepare(same_in_utf8, quiet=True)
    assert counts["kept"] > 550 and not counts.get("bad_encoding")


def raw_project(tmp_path, data: bytes, **changes):
    config = tiny_config(tmp_path, "unused", **changes)
    config.raw_path.parent.mkdir(parents=True)
    config.raw_path.write_bytes(data)
    return config


def test_prepare_prints_what_it_read_dropped_and_kept(tmp_path, sample_path, capsys):
    lines = sample_path.read_bytes().splitlines(keepends=True)[:100]
    extra = ["3\t보통이에요\n", "no tab\n", "9\t범위밖\n", "\n", "5\t!!!\n", "5\t정말 좋아요\n"]
    extra += ["1\t정말 좋아요!!\n"]
    config = raw_project(tmp_path, b"".join(lines) + "".join(extra).encode())
    counts = prepare(config)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "prepare: 107 lines read, 103 rows "
        "(problems: 1 no tab, 1 bad rating, 1 neutral rating, 1 blank)"
    )
    assert out[1] == "prepare: 1 empty after cleaning, 1 duplicates dropped, 101 kept"
    s = counts["splits"]
    assert out[2:] == [
        f"prepare: {name:<5} {s[name]['rows']:>7,} rows ({s[name]['positive']:,} positive, "
        f"{s[name]['negative']:,} negative)"
        for name in SPLITS
    ]
    assert [s[name]["rows"] for name in SPLITS] == [80, 10, 11]
    assert sum(s[n]["positive"] for n in SPLITS) + sum(s[n]["negative"] for n in SPLITS) == 101
    assert (counts["lines"], counts["rows"], counts["kept"]) == (107, 103, 101)
    assert (counts["empty_after_cleaning"], counts["duplicates"]) == (1, 1)
    prepare(config, quiet=True)
    assert capsys.readouterr().out == ""


def test_a_clean_file_prints_no_problems(tmp_path, sample_path, capsys):
    prepare(raw_project(tmp_path, sample_path.read_bytes()))
    assert capsys.readouterr().out.startswith("prepare: 600 lines read, 600 rows\n")


@pytest.mark.parametrize(
    "line,message",
    [
        (b"2\t\xff broken", "does not decode in the source's encoding (UTF-8 unless"),
        (b"1\t" + "가".encode() * (LONG_REVIEW_CHARS + 1), "over 10,000 characters"),
        (b"0\tzero", "not a whole number from 1 to 5"),
        (b"6\tsix", "not a whole number from 1 to 5"),
        ("\u0665\t아랍 숫자".encode(), "not a whole number from 1 to 5"),
    ],
    ids=["invalid-utf8", "long", "zero", "six", "arabic-digit"],
)
def test_strict_mode_stops_at_the_first_problem_and_says_how_to_go_on(line, message):
    # 199 good lines first: a source mostly not UTF-8 is refused as a whole, naming its encoding
    with pytest.raises(PipelineError) as info:
        parse_lines(b"5\tgood\n" * 199 + line + b"\n", strict=True)
    assert str(info.value).startswith("line 200 ") and message in str(info.value)
    assert str(info.value).endswith(
        "; fix the file or run without --strict to skip and count such lines"
    )


def test_strict_prepare_refuses_a_file_a_lenient_one_reads(tmp_path, sample_path):
    data = sample_path.read_bytes() + b"3\tneutral\n"
    with pytest.raises(PipelineError, match="line 601 has rating 3"):
        prepare(raw_project(tmp_path / "strict", data, strict=True), quiet=True)
    assert prepare(raw_project(tmp_path / "lenient", data), quiet=True)["neutral_rating"] == 1


def test_ratings_may_be_padded_with_spaces_and_the_last_line_needs_no_newline():
    parsed = parse_lines(" 5 \t좋아요\n1\t별로".encode())
    assert parsed.ratings == [5, 1] and parsed.reviews == ["좋아요", "별로"]
    assert parsed.counts["lines"] == 2 and parsed.counts["crlf"] == 0


def test_a_bom_only_counts_at_the_start():
    parsed = parse_lines("5\t좋아\n\ufeff1\t별로\n".encode())
    assert parsed.counts["bom"] == 0 and parsed.counts["bad_rating"] == 1


@pytest.mark.parametrize("labels", [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
def test_a_file_with_too_few_of_a_label_to_split_says_so(tmp_path, labels):
    data = "".join(f"{5 if y else 1}\t리뷰 {i}\n" for i, y in enumerate(labels)).encode()
    message = (
        f"^the source has {len(labels)} usable reviews and needs at least 3 of each label to "
        "split; check that --source points at the review file$"
    )
    with pytest.raises(PipelineError, match=message):
        prepare(raw_project(tmp_path, data), quiet=True)


@pytest.mark.parametrize("positives", [3, 27])
def test_three_of_each_label_is_enough_to_split(tmp_path, positives):
    data = "".join(f"{5 if i < positives else 1}\t리뷰 {i}\n" for i in range(30)).encode()
    counts = prepare(raw_project(tmp_path, data), quiet=True)
    assert [counts["splits"][n]["rows"] for n in SPLITS] == [24, 3, 3]
    assert sum(counts["splits"][n]["positive"] for n in SPLITS) == positives


def test_the_configured_fractions_size_the_splits(tmp_path, sample_path):
    config = raw_project(tmp_path, sample_path.read_bytes(), val_fraction=0.25, test_fraction=0.05)
    counts = prepare(config, quiet=True)
    rows = {n: counts["splits"][n]["rows"] for n in SPLITS}
    assert abs(rows["test"] - 0.05 * counts["kept"]) < 1
    assert abs(rows["val"] - 0.25 * counts["kept"]) < 1


def test_a_different_seed_gives_a_different_split(tmp_path, sample_path):
    tests = []
    for seed in (42, 7):
        config = raw_project(tmp_path / str(seed), sample_path.read_bytes(), seed=seed)
        prepare(config, quiet=True)
        tests.append(set(read_split(config.split_path("test"))["text"]))
    assert tests[0] != tests[1]


def test_splits_read_back_as_written(tmp_path, sample_path):
    config = raw_project(tmp_path, sample_path.read_bytes())
    prepare(config, quiet=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a user would see any warning on every later stage
        frame = read_split(config.split_path("train"))
    assert frame.columns.tolist() == ["label", "rating", "text"]
    assert [str(t) for t in frame.dtypes[:2]] == ["int64", "int64"]
    assert all(type(text) is str for text in frame["text"])


def test_a_missing_split_says_to_run_prepare(tmp_path):
    with pytest.raises(PipelineError, match=r"train.tsv is missing; run `python -m pipeline prep"):
        read_split(tmp_path / "train.tsv")


def test_every_blank_line_is_counted():
    parsed = parse_lines("5\t좋아\n\n  \n\t\n1\t별로\n".encode())
    assert parsed.counts["blank"] == 3 and parsed.counts["rows"] == 2


def test_a_review_of_exactly_the_limit_is_not_long():
    at_limit = parse_lines(("1\t" + "가" * LONG_REVIEW_CHARS).encode())
    assert at_limit.counts["long_review"] == 0 and at_limit.counts["rows"] == 1
    over = parse_lines(("1\t" + "가" * (LONG_REVIEW_CHARS + 1)).encode())
    assert over.counts["long_review"] == 1 and over.counts["rows"] == 1


def test_a_source_refused_without_a_name_is_called_the_source():
    cp949 = "좋아요\t5\n".encode("cp949") * 3
    with pytest.raises(PipelineError, match=r"^the source is not valid UTF-8 \(line 1\); it looks"):
        parse_lines(cp949)
    with pytest.raises(PipelineError, match=r"^the source is not valid UTF-8 \(line 2\); it looks"):
        parse_table(b"review\ty\n" + cp949, "tsv", "review", label_column="y")


def test_json_cells_that_are_not_strings_are_read_as_their_json_text():
    """A JSON Lines review may be a number or a list: its JSON text, which cleaning then trims."""
    lines = [{"text": 2024, "y": 1}, {"text": ["좋아", "요"], "y": 0}, {"text": {"맛": 5}, "y": 1}]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines).encode()
    parsed = parse_table(data, "jsonl", "text", label_column="y")
    assert parsed.reviews == ["2024", '["좋아", "요"]', '{"맛": 5}']
    assert label_and_clean(parsed)[0]["text"].tolist() == ["2024", "좋아 요", "맛 5"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_table_with_a_bom_and_a_corrupt_line_counts_both_and_strict_names_the_line(fmt):
    """Excel's BOM is counted once; one line in 200 that does not decode is corruption: counted,
    kept without its bad bytes, and refused under --strict, naming its line."""
    if fmt == "csv":
        head, rows = b"review,stars\n", [f"좋아요 {i},5\n".encode() for i in range(198)]
        bad = b"\xff\xfe broken,1\n"
    else:
        head = b""
        rows = [
            json.dumps({"review": f"좋아요 {i}", "stars": 5}).encode() + b"\n" for i in range(199)
        ]
        bad = b'{"review": "\xff\xfe broken", "stars": 1}\n'
    data = codecs.BOM_UTF8 + head + b"".join(rows[:100]) + bad + b"".join(rows[100:])
    parsed = parse_table(data, fmt, "review", rating_column="stars")
    c = parsed.counts
    assert (c["bom"], c["bad_encoding"], c["rows"]) == (1, 1, len(rows) + 1)
    assert parsed.reviews[100] == "\ufffd\ufffd broken" and parsed.labels[100] == 0
    line = 102 if fmt == "csv" else 101
    with pytest.raises(PipelineError, match=rf"^line {line} does not decode in the source's enc"):
        parse_table(data, fmt, "review", rating_column="stars", strict=True)


def test_a_table_refused_for_its_columns_names_the_file_and_the_flag_to_fix():
    csv_data = "id,review,stars\n1,좋아요,5\n".encode()
    cases = [
        (dict(text_column="text", rating_column="stars"), "'text'", "--text-column"),
        (dict(text_column="review", rating_column="score"), "'score'", "--rating-column"),
        (dict(text_column="review", label_column="y"), "'y'", "--label-column"),
    ]
    for columns, missing, flag in cases:
        with pytest.raises(PipelineError) as info:
            parse_table(csv_data, "csv", name="내 리뷰.csv", **columns)
        assert str(info.value) == (
            f"내 리뷰.csv has no column {missing}; its columns are 'id', 'review', 'stars': pass "
            f"one of them as {flag}"
        )
    with pytest.raises(PipelineError, match=r"^내 리뷰\.csv is empty; a csv file starts with a"):
        parse_table(b"", "csv", "review", rating_column="stars", name="내 리뷰.csv")


@pytest.mark.parametrize(
    "row,columns,kind",
    [
        ("좋아,5,extra", dict(rating_column="stars"), "is not a row of the table"),
        ("좋아,x", dict(rating_column="stars"), "has a rating that is not a whole number"),
        ("좋아,3", dict(rating_column="stars"), "has rating 3"),
        ("좋아,2", dict(label_column="stars"), "has a label that is not 0 or 1"),
    ],
    ids=["bad-row", "bad-rating", "neutral", "bad-label"],
)
def test_strict_mode_names_the_table_line_of_each_problem(row, columns, kind):
    data = f'review,stars\n"여러\n줄",1\n{row}\n좋아요,1\n'.encode()  # a quoted review spans 2-3
    with pytest.raises(PipelineError, match=rf"^line 4 {kind}"):
        parse_table(data, "csv", "review", strict=True, **columns)
    assert parse_table(data, "csv", "review", **columns).counts["rows"] == 2  # lenient: skipped


def test_strict_mode_names_the_json_line_without_a_review():
    data = b'{"review": "\xec\xa2\x8b\xec\x95\x84", "y": 1}\n\n{"y": 0}\n'
    with pytest.raises(PipelineError, match=r"^line 3 has no review cell"):
        parse_table(data, "jsonl", "review", label_column="y", strict=True)


def test_a_long_review_in_a_table_is_counted_kept_and_named_under_strict():
    data = ("review,stars\n좋아,5\n" + "가" * (LONG_REVIEW_CHARS + 1) + ",1\n").encode()
    parsed = parse_table(data, "csv", "review", rating_column="stars")
    assert parsed.counts["long_review"] == 1 and parsed.labels == [1, 0]
    with pytest.raises(PipelineError, match=r"^line 3 has a review over 10,000 characters"):
        parse_table(data, "csv", "review", rating_column="stars", strict=True)
