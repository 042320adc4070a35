"""The command line: run the way users run it (a subprocess) where the process is what is tested,
else in this process through the same `main`."""

import contextlib
import io
import os
import subprocess
import sys

import pytest

from pipeline.predict import NEGATIVE, POSITIVE
from pipeline.stages import STAGE_NAMES


def cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def run_main(*args) -> subprocess.CompletedProcess:
    """The CLI in this process (no interpreter and TensorFlow start-up): for what is not the
    process itself. Returns what `cli` returns; usage errors exit 2 as they do there."""
    from pipeline.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help and usage errors
            code = exc.code
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def assert_clean_error(result, code, message):
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_command():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("run", *STAGE_NAMES, "predict", "status", "export", "serve"):
        assert command in result.stdout


def test_unknown_command_is_a_usage_error():
    assert_clean_error(cli("fly"), 2, "invalid choice: 'fly'")


def test_unknown_flag_is_a_usage_error():
    assert_clean_error(run_main("run", "--epocs", "3"), 2, "unrecognized arguments")


def test_stage_without_its_input_says_what_to_run_first(tmp_path):
    result = run_main("tokenize", "--data-dir", tmp_path / "d", "--artifacts-dir", tmp_path / "a")
    assert_clean_error(result, 1, "run `python -m pipeline prepare` first")


def test_missing_source_is_a_clear_error(tmp_path):
    result = run_main(
        "download",
        "--source",
        tmp_path / "nothing.txt",
        "--data-dir",
        tmp_path / "d",
        "--artifacts-dir",
        tmp_path / "a",
    )
    assert_clean_error(result, 1, "nothing.txt does not exist")


def test_status_of_a_new_project_is_all_missing(tmp_path):
    result = run_main("status", "--data-dir", tmp_path / "d", "--artifacts-dir", tmp_path / "a")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(STAGE_NAMES)
    assert all(line.split()[1] == "missing" for line in lines)


def test_predict_without_a_model_is_a_clear_error(tmp_path):
    assert_clean_error(run_main("predict", "좋아요", "--artifacts-dir", tmp_path), 1, "missing")


def test_predict_prints_label_and_probability_per_review(trained):
    result = run_main(
        "predict", "배송 빠르고 좋아요", "별로에요", "--artifacts-dir", trained.artifacts_dir
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[2] for row in rows] == ["배송 빠르고 좋아요", "별로에요"]
    assert all(row[0] in (POSITIVE, NEGATIVE) and 0 <= float(row[1]) <= 1 for row in rows)


def test_predict_scores_a_file_into_a_tsv(trained, sample_path, tmp_path):
    reviews = [
        line.split("\t", 1)[1] for line in sample_path.read_text(encoding="utf-8").splitlines()
    ]
    (tmp_path / "in.txt").write_text("\n".join(reviews[:300]) + "\n", encoding="utf-8")
    result = run_main(
        "predict",
        "--input",
        tmp_path / "in.txt",
        "--output",
        tmp_path / "out.tsv",
        "--artifacts-dir",
        trained.artifacts_dir,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\tprobability" and len(lines) == 301
    from pipeline.predict import Predictor

    expected = Predictor(trained.artifacts_dir).predict_proba(reviews[:300])
    got = [float(line.split("\t")[1]) for line in lines[1:]]
    assert got == pytest.approx(expected.tolist(), abs=1e-5)


def test_predict_needs_reviews_or_an_input_file(trained):
    assert_clean_error(
        run_main("predict", "--artifacts-dir", trained.artifacts_dir), 1, "give reviews"
    )


def test_an_unexpected_failure_is_one_sentence_not_a_traceback(trained, tmp_path):
    import shutil

    shutil.copytree(trained.data_dir, tmp_path / "data")
    shutil.copytree(trained.artifacts_dir, tmp_path / "artifacts")
    (tmp_path / "data" / "processed" / "encoded.npz").write_bytes(b"\x00" * 64)
    dirs = ["--data-dir", tmp_path / "data", "--artifacts-dir", tmp_path / "artifacts"]
    result = run_main("train", *dirs)
    assert_clean_error(result, 1, "error: the train stage failed unexpectedly (")
    (log,) = (tmp_path / "artifacts" / "logs").glob("train-*.log")
    assert f"the traceback is in {log}" in result.stderr
    assert "Traceback" in log.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "flags, expected",
    [
        ((), (1.0, 0, True)),
        (("--label-fraction", "0.1", "--self-train-rounds", "2"), (0.1, 2, True)),
        (("--self-train-rounds", "1", "--no-self-train-baseline"), (1.0, 1, False)),
    ],
)
def test_self_training_flags_reach_the_settings_and_unset_ones_keep_the_defaults(flags, expected):
    from pipeline.__main__ import build_parser, load_settings

    config = load_settings(build_parser().parse_args(["train", *flags]))
    assert (config.label_fraction, config.self_train_rounds, config.self_train_baseline) == expected
