"""Training on your own labelled reviews: a CSV with ratings, JSON Lines with labels."""

import csv
import json

import pytest

from pipeline.cleaning import clean_text
from pipeline.prepare import SPLITS, label_and_clean, parse_lines, read_split
from pipeline.stages import STAGE_NAMES, get_stage, run_pipeline, stage_state
from tests.conftest import tiny_config
from tests.test_cli import assert_clean_error, cli
from tests.test_end_to_end import TINY_TOML


def fixture_rows(sample_path):
    """(rating, review) pairs of the real fixture, as cp949 can encode them."""
    text = sample_path.read_text(encoding="utf-8").encode("cp949", "replace").decode("cp949")
    return [line.split("\t", 1) for line in text.splitlines()]


@pytest.mark.slow  # runs the CLI in a subprocess, twice (mutmut's fast set leaves it out)
def test_run_from_a_cp949_csv_is_refused_then_trained_with_its_encoding(sample_path, tmp_path):
    rows = fixture_rows(sample_path)
    source = tmp_path / "내 리뷰.csv"
    with source.open("w", encoding="cp949", newline="") as fh:  # as Excel saves it in Korea
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(["번호", "평점", "리뷰"])
        writer.writerows([i, rating, review] for i, (rating, review) in enumerate(rows))
    (tmp_path / "tiny.toml").write_text(TINY_TOML, encoding="utf-8")
    flags = ["--source", source, "--text-column", "리뷰", "--rating-column", "평점"]
    flags += ["--config", tmp_path / "tiny.toml", "--epochs", 1]
    flags += ["--data-dir", tmp_path / "data", "--artifacts-dir", tmp_path / "artifacts"]

    refused = cli("run", *flags)
    assert_clean_error(refused, 1, f"{source} is not valid UTF-8 (line 1); it looks like cp949")
    assert "pass --encoding cp949" in refused.stderr
    assert not (tmp_path / "data" / "processed").exists()
    assert not (tmp_path / "artifacts" / "model.keras").exists()

    result = cli("run", *flags, "--encoding", "cp949")
    assert result.returncode == 0, result.stderr
    raw = tmp_path / "data" / "raw" / "naver_shopping.txt"
    assert raw.read_bytes() == source.read_bytes()  # the source's bytes, as downloaded
    assert (tmp_path / "artifacts" / "model.keras").stat().st_size > 0

    # The same reviews as RATING<TAB>REVIEW lines give the same training data.
    lines = "".join(f"{rating}\t{review}\n" for rating, review in rows).encode()
    expected, _ = label_and_clean(parse_lines(lines))
    config = tiny_config(tmp_path, source)
    got = {name: read_split(config.split_path(name)) for name in SPLITS}
    assert sum(len(frame) for frame in got.values()) == len(expected)
    assert set().union(*(set(frame["text"]) for frame in got.values())) == set(expected["text"])

    manifest = json.loads((tmp_path / "artifacts" / "manifest.json").read_text(encoding="utf-8"))
    params = manifest["stages"]["prepare"]["params"]
    assert (params["text_column"], params["rating_column"], params["encoding"]) == (
        "리뷰",
        "평점",
        "cp949",
    )
    status = cli("status", *flags, "--encoding", "cp949")
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [
        [name, "fresh"] for name in STAGE_NAMES
    ]


def labelled_jsonl(sample_path, tmp_path):
    """The fixture as JSON Lines with a 0/1 label and the stars beside it, one bad label."""
    source = tmp_path / "labelled.jsonl"
    rows = [line.split("\t", 1) for line in sample_path.read_text(encoding="utf-8").splitlines()]
    records = [
        {"id": i, "body": review, "stars": int(rating), "y": int(int(rating) > 3)}
        for i, (rating, review) in enumerate(rows)
    ]
    records.append({"id": -1, "body": "라벨이 이상한 줄", "y": "maybe"})
    source.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return tiny_config(tmp_path, source, text_column="body", label_column="y"), records


def test_json_lines_with_a_label_column_are_prepared_with_their_labels(sample_path, tmp_path):
    config, records = labelled_jsonl(sample_path, tmp_path)
    names = ("download", "prepare", "tokenize")
    assert run_pipeline(config, names, quiet=True) == [(name, "ran") for name in names]

    record = json.loads(get_stage("prepare").record_path(config).read_text(encoding="utf-8"))
    assert record["result"]["bad_label"] == 1 and record["result"]["lines"] == len(records)
    splits = {name: read_split(config.split_path(name)) for name in SPLITS}
    label_of = {}
    for r in records[:-1]:  # a cleaned review keeps the label of its first occurrence
        label_of.setdefault(clean_text(r["body"]), r["y"])
    assert sum(len(frame) for frame in splits.values()) == len(label_of)
    for frame in splits.values():
        assert frame["label"].tolist() == [label_of[text] for text in frame["text"]]
        assert (frame["rating"] == 0).all()  # the source gave labels, not ratings

    # Which column holds the labels changes the data: prepare and what follows must rerun.
    changed = config.replace(label_column="stars")
    assert stage_state(get_stage("prepare"), changed)[0] == "stale"
    assert stage_state(get_stage("download"), changed)[0] == "fresh"


@pytest.mark.slow  # fits the baseline model
def test_json_lines_with_a_label_column_train_a_model(sample_path, tmp_path):
    config, _ = labelled_jsonl(sample_path, tmp_path)
    # Up to the baseline, a model fit in seconds: past prepare every source is the same split
    # files, and the test above trains the neural model from a table end to end.
    names = ("download", "prepare", "tokenize", "baseline")
    assert run_pipeline(config, names, quiet=True) == [(name, "ran") for name in names]
    baseline = json.loads(get_stage("baseline").record_path(config).read_text(encoding="utf-8"))
    assert baseline["result"]["val_accuracy"] > 0.7  # learned from these labels (chance: 0.5)
