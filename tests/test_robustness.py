"""Crashes, concurrent runs and hostile inputs must never cost the user their model."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.predict import NEGATIVE, POSITIVE, Predictor
from pipeline.tokenizer import CharTokenizer
from tests.test_cli import run_main


@pytest.fixture
def project(trained, tmp_path):
    shutil.copytree(trained.data_dir, tmp_path / "data")
    shutil.copytree(trained.artifacts_dir, tmp_path / "artifacts")
    return tmp_path


def start_cli(*args):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_for_line(process, needle, timeout=120):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return
    process.kill()
    raise AssertionError(f"never printed {needle!r}; output:\n{''.join(seen)}")


def test_sigkill_during_training_keeps_the_old_model_and_the_next_run_recovers(project):
    # the fixture's small sizes: the default model's epochs would cost most of this test
    tiny = project / "tiny.toml"
    tiny.write_text(
        "embedding_dim = 8\nrnn_units = [8, 4]\nngram_buckets = 1024\nngram_dim = 8\n"
        "batch_size = 64\n",
        encoding="utf-8",
    )
    dirs = ["--data-dir", project / "data", "--artifacts-dir", project / "artifacts"]
    dirs += ["--config", tiny]
    model = project / "artifacts" / "model.keras"
    before = model.read_bytes()
    review = ["배송 빠르고 좋아요"]
    old_prob = Predictor(project / "artifacts").predict_proba(review)

    trainer = start_cli("train", "--epochs", 200, *dirs)
    wait_for_line(trainer, "Epoch 3/")  # past two epochs' checkpoints: none may reach the model

    # A second run on the same folders meanwhile is refused, naming the holder.
    second = run_main("run", *dirs)  # in this process: the lock, not a process, is tested
    assert second.returncode == 1 and f"pid {trainer.pid}" in second.stderr

    trainer.send_signal(signal.SIGKILL)
    trainer.wait(timeout=30)
    assert model.read_bytes() == before
    np.testing.assert_allclose(Predictor(project / "artifacts").predict_proba(review), old_prob)

    again = run_main("train", "--epochs", 1, "--quiet", *dirs)
    assert again.returncode == 0, again.stderr
    assert model.read_bytes() != before
    assert Predictor(project / "artifacts").predict(review[0]) in (POSITIVE, NEGATIVE)


def hostile_texts(count, seed=0):
    """Mixed scripts, control characters, lone surrogates, emoji, whitespace and huge strings."""
    rng = random.Random(seed)
    pools = [
        "가나다라마바사아자차카타파하뷁똠얗ㄱㄴㅎㅏㅣ",
        "abcXYZ",
        "0123456789",
        " \t\n\r\x0b\x0c",
        "\x00\x01\x1f\x7f\u200b\u200e\ufeff",
        "😀🔥👍🏽🇰🇷",
        "\ud800\udfff",
        "漢字かなカナ",
        "Ωжשׁعربي",
        "\u0301\u0308",
        "\U0010ffff\U000e0001",
    ]
    texts = []
    for i in range(count):
        if i % 2500 == 0:
            texts.append("좋아요!" * 200_000)  # about 1 MB
            continue
        size = rng.choice([0, 1, 3, 20, 99, 100, 101, 500])
        texts.append("".join(rng.choice(rng.choice(pools)) for _ in range(size)))
    return texts


def test_ten_thousand_hostile_inputs_all_get_a_label(trained):
    predictor = Predictor(trained.artifacts_dir)
    texts = hostile_texts(10_000)
    probs = predictor.predict_proba(texts)
    assert probs.shape == (10_000,) and np.isfinite(probs).all()
    assert ((probs >= 0) & (probs <= 1)).all()
    labels = predictor.predict(texts)
    assert len(labels) == 10_000 and set(labels) <= {POSITIVE, NEGATIVE}


def test_tokenizer_survives_hostile_text_directly():
    texts = hostile_texts(500, seed=1)
    tok = CharTokenizer(maxlen=50).fit(texts)
    encoded = tok.encode(texts)
    assert encoded.shape == (500, 50) and encoded.max() < tok.vocab_size
