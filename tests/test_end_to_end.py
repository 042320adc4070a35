"""The whole pipeline from a real HTTP download to sentiment_predict in a fresh process."""

import json
import os
import subprocess
import sys

from pipeline.stages import STAGE_NAMES
from tests.test_cli import cli, run_main

TINY_TOML = """
embedding_dim = 8
rnn_units = [8, 4]
ngram_buckets = 1024
ngram_dim = 8
batch_size = 64
"""


def test_run_over_http_then_predict_in_a_new_process(tmp_path, sample_path, static_server):
    url = f"{static_server(sample_path.parent)}/{sample_path.name}"
    (tmp_path / "tiny.toml").write_text(TINY_TOML, encoding="utf-8")
    dirs = ["--data-dir", tmp_path / "data", "--artifacts-dir", tmp_path / "artifacts"]
    result = cli("run", "--source", url, "--config", tmp_path / "tiny.toml", "--epochs", 1, *dirs)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("done:")

    artifacts = tmp_path / "artifacts"
    for name in (
        "model.keras",
        "tokenizer.json",
        "metrics.json",
        "history.json",
        "training_curves.png",
        "confusion_matrix.png",
        "baseline.json",
        "manifest.json",
    ):
        assert (artifacts / name).stat().st_size > 0, name
    assert (
        tmp_path / "data" / "raw" / "naver_shopping.txt"
    ).read_bytes() == sample_path.read_bytes()
    metrics = json.loads((artifacts / "metrics.json").read_text(encoding="utf-8"))["test"]
    assert (
        0 <= metrics["accuracy"] <= 1
        and sum(map(sum, metrics["confusion_matrix"])) == metrics["rows"]
    )
    baseline = json.loads((artifacts / "metrics.json").read_text(encoding="utf-8"))["baseline_test"]
    assert baseline["rows"] == metrics["rows"]
    manifest = json.loads((artifacts / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stages"]["download"]["params"]["source"] == url
    assert manifest["stages"]["train"]["params"]["epochs"] == 1
    assert (artifacts / "training_curves.png").read_bytes()[:4] == b"\x89PNG"

    code = (
        "from pipeline import sentiment_predict\n"
        f"reviews = ['배송 빠르고 좋아요', '별로에요 다시는 안 사요']\n"
        f"print(sentiment_predict(reviews, {str(artifacts)!r}))\n"
        f"print(sentiment_predict('좋아요', {str(artifacts)!r}))\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=120,
    )
    assert fresh.returncode == 0, fresh.stderr
    listed, single = fresh.stdout.splitlines()[-2:]
    assert listed.startswith("[") and listed.count("'") == 4
    assert single in ("긍정", "부정")

    # The rerun and the status need no fresh process: the same main, in this one.
    again = run_main(
        "run", "--source", url, "--config", tmp_path / "tiny.toml", "--epochs", 1, *dirs
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skipped") == len(STAGE_NAMES)

    status = run_main(
        "status", "--source", url, "--config", tmp_path / "tiny.toml", "--epochs", 1, *dirs
    )
    assert [line.split()[1] for line in status.stdout.splitlines()] == ["fresh"] * len(STAGE_NAMES)
