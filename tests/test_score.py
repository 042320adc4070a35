"""Scoring the files analysts have: CSV, TSV and JSON Lines in, the same file plus scores out."""

import codecs
import csv
import io
import json

import pytest

from pipeline.errors import PipelineError
from pipeline.predict import NEGATIVE, POSITIVE, Predictor
from pipeline.score import score_file
from tests.test_cli import assert_clean_error, cli
from tests.test_tables import fixture_reviews


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor(trained.artifacts_dir)


class Recording:
    """The real predictor, noting how many reviews each call scores."""

    def __init__(self, predictor):
        self.predictor, self.calls = predictor, []

    def predict_proba(self, texts):
        self.calls.append(len(texts))
        return self.predictor.predict_proba(texts)


def write_csv(path, header, rows, encoding="utf-8", delimiter=","):
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter, lineterminator="\r\n")  # as Excel writes
        writer.writerow(header)
        writer.writerows(rows)


def read_csv(path, encoding="utf-8", delimiter=","):
    with path.open(encoding=encoding, newline="") as fh:
        return list(csv.reader(fh, delimiter=delimiter))


def assert_scored(predictor, reviews, labels, probs):
    expected = predictor.predict_proba(reviews)
    assert [float(p) for p in probs] == pytest.approx(expected.tolist(), abs=1e-6)
    assert labels == [POSITIVE if p > 0.5 else NEGATIVE for p in expected]


# -- through the command line ---------------------------------------------------------------------
def test_cp949_csv_is_refused_without_its_encoding_and_scored_with_it(
    trained, predictor, sample_path, tmp_path
):
    reviews = fixture_reviews(sample_path, 40, cp949=True)
    rows = [[str(i), review, f"2024-01-{i % 28 + 1:02d}"] for i, review in enumerate(reviews)]
    source, output = tmp_path / "리뷰.csv", tmp_path / "scored.csv"
    write_csv(source, ["번호", "리뷰", "작성일"], rows, encoding="cp949")
    args = ["predict", "--input", source, "--column", "리뷰", "--output", output]
    args += ["--artifacts-dir", trained.artifacts_dir]

    refused = cli(*args)
    assert_clean_error(refused, 1, f"{source} is not valid UTF-8 (line 1); it looks like cp949")
    assert "pass --encoding cp949" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["리뷰.csv"]  # nothing written at all

    result = cli(*args, "--encoding", "cp949")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"40 reviews scored; written to {output}")
    with pytest.raises(UnicodeDecodeError):
        output.read_bytes().decode("utf-8")  # written back in the file's own encoding
    scored = read_csv(output, encoding="cp949")
    assert scored[0] == ["번호", "리뷰", "작성일", "label", "positive_probability"]
    assert [row[:3] for row in scored[1:]] == rows
    assert_scored(predictor, reviews, [r[3] for r in scored[1:]], [r[4] for r in scored[1:]])


def test_json_lines_keep_every_value_and_count_empty_reviews(trained, predictor, tmp_path):
    records = [
        {"id": 1, "review": "배송 빠르고 좋아요", "meta": {"stars": 5, "tags": ["빠름"]}},
        {"id": 2, "review": None, "meta": None},
        {"id": 3, "meta": {}},  # no review key at all
        {"id": 4, "review": "별로에요 다시는 안 사요", "price": 12.5},
    ]
    source, output = tmp_path / "reviews.jsonl", tmp_path / "scored.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli(
        "predict", "--input", source, "--column", "review", "--output", output,
        "--artifacts-dir", trained.artifacts_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "4 reviews scored (2 empty, given the empty review's score)" in result.stdout
    scored = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [
        {k: v for k, v in s.items() if k not in ("label", "positive_probability")} for s in scored
    ] == records
    reviews = [r.get("review") or "" for r in records]
    assert_scored(
        predictor,
        reviews,
        [s["label"] for s in scored],
        [s["positive_probability"] for s in scored],
    )


def test_missing_column_names_the_ones_there_are(trained, tmp_path):
    source, output = tmp_path / "reviews.tsv", tmp_path / "scored.tsv"
    write_csv(source, ["id", "text"], [["1", "좋아요"]], delimiter="\t")
    result = cli(
        "predict", "--input", source, "--column", "review", "--output", output,
        "--artifacts-dir", trained.artifacts_dir,
    )  # fmt: skip
    assert_clean_error(result, 1, f"{source} has no column 'review'; its columns are 'id', 'text'")
    assert not output.exists()


# -- in process -----------------------------------------------------------------------------------
def test_bom_csv_keeps_its_bom_its_columns_and_its_multi_line_cells(predictor, tmp_path):
    rows = [
        ["1", "배송 빠르고 좋아요", "a"],
        ["2", '여러 줄\r\n리뷰, "따옴표" 포함', "b"],
        ["3", "별로에요", ""],
    ]
    source, output = tmp_path / "excel.csv", tmp_path / "scored.csv"
    write_csv(source, ["id", "review", "note"], rows, encoding="utf-8-sig")
    counts = score_file(predictor, source, output, column="review", quiet=True)
    assert counts == {"rows": 3, "empty": 0}
    assert output.read_bytes().startswith(codecs.BOM_UTF8)  # Excel still opens it as UTF-8
    scored = read_csv(output, encoding="utf-8-sig")
    assert scored[0] == ["id", "review", "note", "label", "positive_probability"]
    assert [row[:3] for row in scored[1:]] == rows
    assert_scored(
        predictor, [r[1] for r in rows], [r[3] for r in scored[1:]], [r[4] for r in scored[1:]]
    )


def test_tsv_in_tsv_out_with_empty_cells_counted(predictor, tmp_path):
    rows = [["좋아요 최고", "x"], ["", "y"], ["   ", "z"], ["별로", "w"]]
    source, output = tmp_path / "reviews.tsv", tmp_path / "scored.tsv"
    write_csv(source, ["review", "other"], rows, delimiter="\t")
    with source.open("a", encoding="utf-8", newline="") as fh:
        fh.write("\r\n짧은 행\r\n")  # a blank line (not a row), then a row with one cell
    counts = score_file(predictor, source, output, column="review", quiet=True)
    assert counts == {"rows": 5, "empty": 2}
    scored = read_csv(output, delimiter="\t")
    assert scored[0] == ["review", "other", "label", "positive_probability"]
    assert scored[5][:2] == ["짧은 행", ""]  # padded, so its scores sit under their headers
    empty_score = predictor.predict_proba([""])[0]
    assert float(scored[2][3]) == pytest.approx(empty_score, abs=1e-6)
    assert float(scored[3][3]) == pytest.approx(empty_score, abs=1e-6)


def test_a_file_of_many_chunks_is_scored_in_order_a_chunk_at_a_time(
    predictor, sample_path, tmp_path
):
    reviews = fixture_reviews(sample_path)
    rows = [[f"{i:04d}", review] for i, review in enumerate(reviews)]
    source, output = tmp_path / "reviews.csv", tmp_path / "scored.csv"
    write_csv(source, ["id", "review"], rows)
    recording = Recording(predictor)
    counts = score_file(recording, source, output, column="review", chunk_rows=7, quiet=True)
    assert counts["rows"] == len(reviews) == 600
    assert max(recording.calls) == 7 and len(recording.calls) == -(-600 // 7)
    scored = read_csv(output)
    assert [row[:2] for row in scored[1:]] == rows
    assert_scored(predictor, reviews, [r[2] for r in scored[1:]], [r[3] for r in scored[1:]])


def test_a_bad_row_after_the_first_chunks_leaves_the_old_output_alone(predictor, tmp_path):
    lines = [json.dumps({"review": "좋아요"}, ensure_ascii=False)] * 30 + ["[1, 2]"]
    source, output = tmp_path / "reviews.jsonl", tmp_path / "scored.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output.write_text("yesterday's scores\n", encoding="utf-8")
    with pytest.raises(PipelineError, match=r"^line 31 of .*reviews\.jsonl is not a JSON object"):
        score_file(predictor, source, output, column="review", chunk_rows=7, quiet=True)
    assert output.read_text(encoding="utf-8") == "yesterday's scores\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.jsonl", "scored.jsonl"]


def test_format_flag_wins_over_the_name(predictor, tmp_path):
    source, output = tmp_path / "export.dat", tmp_path / "scored.dat"
    source.write_text('{"review": "좋아요"}\n', encoding="utf-8")
    score_file(predictor, source, output, column="review", fmt="jsonl", quiet=True)
    assert set(json.loads(output.read_text(encoding="utf-8"))) == {
        "review",
        "label",
        "positive_probability",
    }


@pytest.mark.parametrize(
    "name,content,kwargs,message",
    [
        ("r.csv", "review,label\n좋아요,1\n", {}, "already has a column named 'label'"),
        ("r.csv", "review\n좋아요\n", {"output": "s.tsv"}, r"input's format \(csv\); .*\.csv name"),
        ("r.csv", "review\n좋아요\n", {"column": None}, "pass --column naming .* are 'review'$"),
        ("r.json", '[{"review": "좋아요"}]', {}, "one JSON document, .* pass --format jsonl"),
        ("r.txt", "좋아요\n", {}, "read as plain text, one review per line; --column needs"),
        ("r.csv", "a,b\n1,2,3\n", {"column": "a"}, "line 2 of .* has more cells than the header"),
    ],
)
def test_mistakes_are_one_clear_sentence(predictor, tmp_path, name, content, kwargs, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    kwargs = {"column": "review", "output": "scored.csv", **kwargs}
    output = tmp_path / kwargs.pop("output")
    with pytest.raises(PipelineError, match=message):
        score_file(predictor, tmp_path / name, output, quiet=True, **kwargs)
    assert not output.exists()


def test_a_bad_file_is_refused_before_the_model_loads(tmp_path):
    (tmp_path / "r.csv").write_bytes("review\n좋아요\n".encode("cp949"))

    def never():
        raise AssertionError("the model was loaded for a file that was going to be refused")

    with pytest.raises(PipelineError, match="pass --encoding cp949"):
        score_file(never, tmp_path / "r.csv", tmp_path / "s.csv", column="review")
    (tmp_path / "r.csv").write_text("text\n좋아요\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="has no column 'review'"):
        score_file(never, tmp_path / "r.csv", tmp_path / "s.csv", column="review")


def test_plain_text_lines_are_scored_as_before(predictor, tmp_path):
    source = tmp_path / "reviews.txt"
    source.write_bytes("\ufeff배송 빠르고 좋아요\r\n\r\n별로에요\n".encode())
    output = tmp_path / "out.tsv"
    assert score_file(predictor, source, output, quiet=True) == {"rows": 3, "empty": 1}
    lines = output.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\tprobability"
    got = [line.split("\t") for line in lines[1:]]
    assert_scored(
        predictor, ["배송 빠르고 좋아요", "", "별로에요"], [g[0] for g in got], [g[1] for g in got]
    )


def test_stdout_gets_the_table_when_there_is_no_output(predictor, tmp_path, capsys):
    source = tmp_path / "reviews.csv"
    source.write_text("review\n좋아요\n", encoding="utf-8")
    score_file(predictor, source, None, column="review")
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["review", "label", "positive_probability"] and len(rows) == 2
