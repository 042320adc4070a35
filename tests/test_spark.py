"""Scoring on Spark: a real local[2] session gives Predictor's scores, every row and column kept."""

import csv
import json
import os
import re
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.predict import Predictor, label_of
from pipeline.spark import format_of, require_pyspark, score, score_path, spark_session
from tests.test_cli import assert_clean_error, cli, run_main
from tests.test_tables import fixture_reviews

HOSTILE = [
    "",
    " ",
    "\t\n\r \u3000\u200b",  # every kind of blank
    "😀🎉👍",  # emoji only
    "Latin letters only, nothing Korean",
    "\x00\x01\x07\x1b[31m\x7f",  # control characters and an escape sequence
    "좋아요!!! 👍 very good",
    "배송" * 2500,  # 5,000 characters: the model reads the last 100
    "가나다 " * 1000,
    "ᄀᄂ 12345 ㅋㅋㅋ",  # conjoining jamo (dropped by cleaning), digits, compatibility jamo
    None,  # a null cell: the empty review's score
]


@pytest.fixture(scope="session")
def spark():
    """One local[2] session for every test: quiet, the UI off, small shuffles and Arrow batches."""
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home or shutil.which("java")):
        pytest.skip("no Java runtime: apt-get install default-jre-headless")
    conf = {
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "2",
        # several Arrow batches per task, so a batch boundary falls inside every test's data
        "spark.sql.execution.arrow.maxRecordsPerBatch": "97",
    }
    session = spark_session("local[2]", quiet=True, conf=conf)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor(trained.artifacts_dir)


def expected_scores(predictor, reviews):
    """Predictor's probabilities, a null taken as the empty review it stands for."""
    return predictor.predict_proba([r if isinstance(r, str) else "" for r in reviews])


def assert_scores(predictor, reviews, labels, probabilities):
    expected = expected_scores(predictor, reviews)
    assert np.abs(np.asarray(probabilities, dtype=np.float64) - expected).max() <= 1e-5
    assert list(labels) == [label_of(p) for p in expected]


def test_every_probability_is_predictors_with_rows_and_columns_kept(
    spark, trained, predictor, sample_path
):
    reviews = fixture_reviews(sample_path) + HOSTILE
    rows = [
        (i, review, f"note {i}", i / 7, [f"tag{i % 3}"], {"stars": i % 5 + 1})
        for i, review in enumerate(reviews)
    ]
    schema = "id long, review string, `note.with dot` string, weight double, "
    schema += "tags array<string>, meta struct<stars:int>"
    df = spark.createDataFrame(rows, schema).repartition(3)  # rows no longer in creation order
    before = df.collect()

    scored = score(df, artifacts_dir=trained.artifacts_dir)
    after = scored.collect()

    assert scored.columns == [*df.columns, "label", "positive_probability"]
    assert scored.schema.fields[: len(df.columns)] == df.schema.fields  # every type as it was
    assert [tuple(r)[: len(df.columns)] for r in after] == [tuple(r) for r in before]
    in_order = [r.review for r in before]
    assert_scores(
        predictor, in_order, [r.label for r in after], [r.positive_probability for r in after]
    )
    hostile = {r.id: r.positive_probability for r in after if r.id >= len(reviews) - len(HOSTILE)}
    assert len(hostile) == len(HOSTILE)
    assert hostile[len(reviews) - 1] == pytest.approx(predictor.predict_proba([""])[0], abs=1e-5)


def test_each_python_worker_loads_the_model_once_and_again_only_when_it_changes(
    spark, trained, sample_path, tmp_path
):
    from pyspark.sql import functions as F

    @F.pandas_udf("string")
    def held(ids: pd.Series) -> pd.Series:
        """On a worker (of the pool SQL's Python UDFs run in): its pid and its Predictors."""
        import pipeline.predict  # the cache Spark's workers keep their Predictors in

        cache = pipeline.predict._PREDICTORS
        loaded = {str(key[0]): id(p) for key, (_, p) in cache.items()}
        return pd.Series([json.dumps([os.getpid(), loaded])] * len(ids))

    folder = tmp_path / "artifacts"
    shutil.copytree(trained.artifacts_dir, folder)
    df = spark.createDataFrame([(r,) for r in fixture_reviews(sample_path)], "review string")
    df = df.repartition(6)  # six tasks on two cores: each worker runs several

    def score_then_look() -> dict:
        score(df, artifacts_dir=folder).collect()
        found = spark.range(4).repartition(4).select(held("id")).collect()
        return {
            pid: loaded.get(str(folder)) for pid, loaded in map(json.loads, (r[0] for r in found))
        }

    first = score_then_look()
    second = score_then_look()
    model = folder / "model.keras"
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))  # retrained
    third = score_then_look()

    assert any(first.values())  # the workers keep the Predictor they loaded
    shared = first.keys() & second.keys() & third.keys()
    assert shared  # the same worker processes served every job
    for pid in shared:
        assert second[pid] == first[pid]  # the same Predictor, not a reload
        assert third[pid] != second[pid]  # the new model, loaded once it changed


def test_python_workers_score_model_onnx_without_tensorflow(spark, trained, sample_path):
    from pyspark.sql import functions as F

    @F.pandas_udf("string")
    def inside(ids: pd.Series) -> pd.Series:
        """On a worker: its pid, the engines of its Predictors, and any TensorFlow it imported."""
        predict = sys.modules.get("pipeline.predict")
        engines = [p.engine for _, p in predict._PREDICTORS.values()] if predict else []
        heavy = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")]
        return pd.Series([json.dumps([os.getpid(), engines, heavy])] * len(ids))

    df = spark.createDataFrame([(r,) for r in fixture_reviews(sample_path)], "review string")
    score(df.repartition(4), artifacts_dir=trained.artifacts_dir).collect()
    rows = spark.range(4).repartition(4).select(inside("id")).collect()
    workers = [json.loads(row[0]) for row in rows]
    assert any("onnx" in engines for _, engines, _ in workers), workers  # they scored with it
    assert all(heavy == [] for _, _, heavy in workers)


def test_parquet_in_and_out_keeps_types_rows_and_order(spark, trained, predictor, tmp_path):
    texts = [*HOSTILE, "배송 빠르고 좋아요", "별로에요 다시는 안 사요"] * 30
    table = pd.DataFrame(
        {
            "id": np.arange(len(texts), dtype=np.int64),
            "review": texts,
            "price": np.linspace(1, 2, len(texts)),
        }
    )
    source, output = tmp_path / "reviews.parquet", tmp_path / "scored.parquet"
    table.to_parquet(source, row_group_size=50)  # several row groups: several Spark partitions

    counts = score_path(spark, str(source), str(output), artifacts_dir=trained.artifacts_dir)

    assert counts == {"rows": len(texts)}
    assert (output / "_SUCCESS").is_file()
    scored = pd.concat(pd.read_parquet(part) for part in sorted(output.glob("part-*.parquet")))
    assert list(scored.columns) == [*table.columns, "label", "positive_probability"]
    pd.testing.assert_frame_equal(scored[table.columns].reset_index(drop=True), table)
    assert str(scored["positive_probability"].dtype) == "float32"
    assert_scores(predictor, texts, scored["label"], scored["positive_probability"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.parquet", "scored.parquet"]


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_tsv_and_json_lines_come_back_in_their_format(spark, trained, predictor, tmp_path, fmt):
    texts = ["배송 빠르고 좋아요", "  앞뒤 공백  ", 'a "quoted", comma', "", "별로에요"]
    source, output = tmp_path / f"in.{fmt}", tmp_path / f"out.{fmt}"
    if fmt == "tsv":
        with source.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t")
            writer.writerow(["id", "review"])
            writer.writerows([i, t] for i, t in enumerate(texts))
    else:
        lines = [
            json.dumps({"id": i, "review": t}, ensure_ascii=False) for i, t in enumerate(texts)
        ]
        source.write_text("\n".join([*lines, '{"id": 99}']) + "\n", encoding="utf-8")
        texts = [*texts, None]  # a missing key: the empty review's score

    score_path(spark, str(source), str(output), artifacts_dir=trained.artifacts_dir)

    parts = sorted(output.glob("part-*"))
    if fmt == "tsv":
        rows = [
            r for part in parts for r in list(csv.reader(part.open(newline=""), delimiter="\t"))
        ]
        assert rows[0] == ["id", "review", "label", "positive_probability"]
        rows = [r for r in rows[1:] if r != rows[0]]  # each part file has its header
        # cells as written, spaces and quotes kept; an empty cell stays empty
        assert [r[:2] for r in rows] == [[str(i), t] for i, t in enumerate(texts)]
        labels, probabilities = [r[2] for r in rows], [float(r[3]) for r in rows]
    else:
        records = [json.loads(line) for part in parts for line in part.open(encoding="utf-8")]
        assert [(r["id"], r.get("review")) for r in records] == [*enumerate(texts[:-1]), (99, None)]
        labels = [r["label"] for r in records]
        probabilities = [r["positive_probability"] for r in records]
    assert_scores(predictor, texts, labels, probabilities)


# what a line-by-line CSV can hold: no line breaks, no NUL
ONE_LINE = [
    "",
    " ",
    "😀🎉👍",
    "Latin only",
    "좋아요!!! 👍 very good",
    "배송" * 2500,
    "ᄀᄂ 12 ㅋㅋ",
]


def test_the_command_line_writes_a_partitioned_csv_folder(trained, predictor, tmp_path):
    rows = [[str(i), r, f' {i}, "note" '] for i, r in enumerate(ONE_LINE + ["좋아요"] * 40)]
    source, output = tmp_path / "reviews.csv", tmp_path / "scored.csv"
    with source.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "리뷰", "note"])
        writer.writerows(rows)
    result = cli(
        "predict", "--engine", "spark", "--master", "local[2]", "--input", source,
        "--column", "리뷰", "--output", output, "--artifacts-dir", trained.artifacts_dir,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        f"{len(rows)} reviews scored on Spark; written to {output}"
    )
    assert "Traceback" not in result.stderr
    assert not re.search(r"\d\d:\d\d:\d\d (ERROR|WARN) ", result.stderr)  # Spark's log is quiet
    assert (output / "_SUCCESS").is_file()
    scored = [r for part in sorted(output.glob("part-*.csv")) for r in csv.reader(part.open())]
    assert scored[0] == ["id", "리뷰", "note", "label", "positive_probability"]
    body = [r for r in scored if r != scored[0]]
    assert [r[:3] for r in body] == rows
    assert_scores(predictor, [r[1] for r in rows], [r[3] for r in body], [r[4] for r in body])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv", "scored.csv"]


def test_missing_column_names_the_columns_there_are(spark, trained):
    df = spark.createDataFrame([(1, "좋아요")], "id int, text string")
    with pytest.raises(
        PipelineError, match=r"has no column 'review'; its columns are 'id', 'text'"
    ):
        score(df, artifacts_dir=trained.artifacts_dir)


@pytest.mark.parametrize("taken", ["label", "positive_probability", "Label"])
def test_a_column_where_the_scores_go_is_refused(spark, taken):
    df = spark.createDataFrame([(1, "좋아요")], f"{taken} int, review string")
    with pytest.raises(PipelineError, match=f"already has a column named '{taken}'"):
        score(df)


def test_a_column_that_is_not_text_is_refused(spark):
    df = spark.createDataFrame([(1, 5)], "id int, review int")
    with pytest.raises(PipelineError, match="holds int, not text; cast it to string"):
        score(df)


def test_a_bad_row_late_in_the_file_leaves_the_previous_output_as_it_was(spark, trained, tmp_path):
    source, output = tmp_path / "reviews.csv", tmp_path / "scored.csv"
    source.write_text("id,review\n" + "".join(f"{i},좋아요\n" for i in range(300)), "utf-8")
    score_path(spark, str(source), str(output), artifacts_dir=trained.artifacts_dir)
    previous = {p.name: p.read_bytes() for p in output.iterdir()}

    with source.open("a", encoding="utf-8") as fh:
        fh.write('300,"a quoted\nline break"\n')
    with pytest.raises(PipelineError, match=r"has a record Spark cannot read \(.*line break"):
        score_path(spark, str(source), str(output), artifacts_dir=trained.artifacts_dir)

    assert {p.name: p.read_bytes() for p in output.iterdir()} == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv", "scored.csv"]


def test_artifacts_no_executor_has_is_one_sentence_and_writes_nothing(spark, tmp_path):
    source, output = tmp_path / "reviews.jsonl", tmp_path / "scored.jsonl"
    source.write_text('{"review": "좋아요"}\n', encoding="utf-8")
    with pytest.raises(PipelineError, match=r"^the artifacts folder \S+ is neither on this exec"):
        score_path(spark, str(source), str(output), artifacts_dir=tmp_path / "nowhere")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.jsonl"]


def test_an_unrelated_folder_is_never_replaced(spark, trained, tmp_path):
    source, output = tmp_path / "reviews.csv", tmp_path / "precious"
    source.write_text("review\n좋아요\n", encoding="utf-8")
    (output / "thesis.txt").parent.mkdir()
    (output / "thesis.txt").write_text("years of work")
    with pytest.raises(PipelineError, match="is a folder that is not a Spark output"):
        score_path(spark, str(source), str(output), artifacts_dir=trained.artifacts_dir)
    assert [p.name for p in output.iterdir()] == ["thesis.txt"]


def test_missing_input_is_one_sentence(spark, trained, tmp_path):
    with pytest.raises(PipelineError, match=r"^input \S+missing.csv does not exist$"):
        score_path(
            spark,
            str(tmp_path / "missing.csv"),
            str(tmp_path / "out.csv"),
            artifacts_dir=trained.artifacts_dir,
        )


def test_missing_java_is_one_sentence_naming_the_package(tmp_path, monkeypatch):
    # JAVA_HOME and PATH where there is no java, as on a machine without one
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    monkeypatch.setenv("PATH", str(tmp_path))
    result = run_main(
        "predict", "--engine", "spark", "--input", tmp_path / "r.csv",
        "--output", tmp_path / "out.csv",
    )  # fmt: skip
    assert_clean_error(result, 1, "Spark needs a Java runtime (17 or newer) and JAVA_HOME=")
    assert "apt-get install default-jre-headless" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_pyspark_is_one_sentence_saying_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # what an environment without it does
    with pytest.raises(
        PipelineError, match=r"needs pyspark.*pip install 'naver-shopping-sentiment\[spark\]'"
    ):
        require_pyspark()


@pytest.mark.parametrize(
    "path,fmt,message",
    [
        ("s3://lake/reviews/", None, "cannot tell from its name whether s3://lake/reviews/ is"),
        ("reviews.txt", None, "read as one review a line: score it without --engine spark"),
        ("reviews", "lines", "read as one review a line"),
    ],
)
def test_formats_spark_cannot_score_are_named(path, fmt, message):
    with pytest.raises(PipelineError, match=message):
        format_of(path, fmt)


@pytest.mark.parametrize(
    "path,fmt,found",
    [("a.csv", None, "csv"), ("hdfs:///x/b.TSV", None, "tsv"), ("c.parquet/", None, "parquet"),
     ("d.jsonl", None, "jsonl"), ("s3://lake/reviews", "parquet", "parquet")],
)  # fmt: skip
def test_format_comes_from_the_flag_or_the_suffix(path, fmt, found):
    assert format_of(path, fmt) == found


def test_spark_flags_without_the_spark_engine_are_refused(tmp_path):
    result = run_main("predict", "--input", tmp_path / "x.parquet", "--format", "parquet")
    assert_clean_error(result, 1, "--format parquet and --master are for --engine spark")
