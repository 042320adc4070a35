"""Multi-worker training for real: worker processes on loopback ports, each with its TF_CONFIG."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.batches import batch_indices, replica_parts
from pipeline.config import load_config
from pipeline.distributed import read_tf_config
from pipeline.errors import PipelineError

# Tiny and without dropout: two workers then train exactly what one process trains on the same
# global batches, up to the order in which floats are summed.
SETTINGS = """
embedding_dim = 8
rnn_units = [8, 4]
bidirectional = false
jamo_features = 0
conv_filters = 8
spatial_dropout = 0.0
head_dropout = 0.0
ngram_dropout = 0.0
ngram_buckets = 1024
ngram_dim = 8
learning_rate = 0.01
batch_size = 32
epochs = 2
"""
WAIT = 300  # seconds any worker may take; they take well under a minute on 2 idle cores


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    """Worker processes of one TF_CONFIG cluster, each in its own folder with its own copies."""

    def __init__(self, root: Path, trained, settings: str, workers: int = 2):
        self.root = root
        (root / "settings.toml").write_text(settings, encoding="utf-8")
        self.addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
        self.procs = {}
        for index in range(workers):
            home = self.home(index)
            shutil.copytree(trained.data_dir, home / "data")
            (home / "artifacts").mkdir()
            shutil.copy(trained.tokenizer_path, home / "artifacts")
            (home / "tmp").mkdir()

    def home(self, index: int) -> Path:
        return self.root / f"worker{index}"

    def start(self, index: int, *flags) -> subprocess.Popen:
        home = self.home(index)
        tf_config = {
            "cluster": {"worker": self.addresses},
            "task": {"type": "worker", "index": index},
        }
        env = {
            **os.environ,
            "PYTHONPATH": os.getcwd(),
            "PYTHONUNBUFFERED": "1",
            "TF_CONFIG": json.dumps(tf_config),
            "TMPDIR": str(home / "tmp"),  # where a worker's throwaway save goes
        }
        command = [
            *(sys.executable, "-m", "pipeline", "train", "--distribute", "multi-worker"),
            *("--config", self.root / "settings.toml"),
            *("--data-dir", home / "data", "--artifacts-dir", home / "artifacts", *flags),
        ]
        self.procs[index] = subprocess.Popen(
            list(map(str, command)),
            stdout=(home / "stdout").open("w"),
            stderr=(home / "stderr").open("w"),
            env=env,
        )
        return self.procs[index]

    def output(self, index: int) -> str:
        home = self.home(index)
        return (home / "stdout").read_text() + (home / "stderr").read_text()

    def wait_for(self, index: int, text: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while text not in (self.home(index) / "stdout").read_text():
            assert self.procs[index].poll() is None, self.output(index)[-3000:]
            assert time.monotonic() < deadline, f"no {text!r}:\n{self.output(index)[-3000:]}"
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(tmp_path, trained):
    made = []

    def make(settings=SETTINGS, workers=2):
        made.append(Cluster(tmp_path, trained, settings, workers))
        return made[-1]

    yield make
    for c in made:
        c.stop()


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` but the lock (which holds the last run's pid)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def error_lines(cluster, index):
    return [line for line in cluster.output(index).splitlines() if line.startswith("error:")]


def test_two_workers_train_one_model_that_only_the_chief_writes(cluster, tmp_path, trained):
    from pipeline.predict import Predictor
    from pipeline.stages import get_stage, stage_state
    from pipeline.train import train

    two = cluster()
    workers = [two.start(0), two.start(1)]
    for index, worker in enumerate(workers):
        assert worker.wait(timeout=WAIT) == 0, two.output(index)[-3000:]

    chief, other = two.home(0) / "artifacts", two.home(1) / "artifacts"
    for name in ("model.keras", "history.json", "training_curves.png", "manifest.json"):
        assert (chief / name).is_file(), name
    summary = json.loads((chief / "history.json").read_text(encoding="utf-8"))
    assert (summary["workers"], summary["replicas"]) == (2, 2)
    manifest = json.loads((chief / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stages"]["train"]["result"]["workers"] == 2
    config = load_config(
        tmp_path / "settings.toml",
        data_dir=two.home(0) / "data",
        artifacts_dir=chief,
        distribute="multi-worker",
    )
    assert stage_state(get_stage("train"), config)[0] == "fresh"

    # The other worker wrote nothing under a final name, and its throwaway save is gone.
    assert {p.name for p in other.iterdir()} <= {"tokenizer.json", ".lock"}
    assert list((two.home(1) / "tmp").iterdir()) == []
    assert "the chief wrote the model" in two.output(1)

    # The model loads in safe mode, and a review's score does not depend on its batch.
    predictor = Predictor(chief)
    review = "배송 빠르고 좋아요"
    alone = predictor.predict_proba([review])[0]
    assert predictor.predict_proba(["가" * 100, review, "별로"])[1] == pytest.approx(
        alone, abs=1e-5
    )

    # One process on the same data with the same global batch (32 x 2 replicas) takes the same
    # steps from the same initial weights, so only float summation order differs: validation
    # loss agrees to ~1e-7 in practice. Accuracy on ~60 reviews may differ by a review whose
    # probability sits at 0.5, hence two reviews of tolerance.
    shutil.copytree(trained.data_dir, tmp_path / "single" / "data")
    (tmp_path / "single" / "artifacts").mkdir()
    shutil.copy(trained.tokenizer_path, tmp_path / "single" / "artifacts")
    single = train(
        config.replace(
            data_dir=tmp_path / "single" / "data",
            artifacts_dir=tmp_path / "single" / "artifacts",
            distribute="none",
            batch_size=64,
        ),
        quiet=True,
    )
    validation = np.load(trained.encoded_path)["y_val"].size
    assert abs(summary["val_accuracy"] - single["val_accuracy"]) <= 2 / validation
    assert summary["val_loss"] == pytest.approx(single["val_loss"], abs=1e-3)


def test_a_killed_worker_stops_the_chief_with_one_sentence_and_its_model_untouched(
    cluster, trained
):
    two = cluster(SETTINGS.replace("epochs = 2", "epochs = 1000\npatience = 1000"))
    chief = two.home(0) / "artifacts"
    shutil.rmtree(chief)
    shutil.copytree(trained.artifacts_dir, chief)  # the chief's last good model
    before = files(chief)
    leader, worker = two.start(0), two.start(1)
    two.wait_for(1, "Epoch 2/")  # mid-training: a whole epoch's collectives have run

    worker.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    assert leader.wait(timeout=120) == 1, two.output(0)[-3000:]
    assert time.monotonic() - killed < 60
    (line,) = error_lines(two, 0)
    assert f"worker 1 ({two.addresses[1]}) stopped responding" in line
    assert "Traceback" not in two.output(0)
    assert files(chief) == before  # model, history, records: byte for byte, nothing added


def test_a_worker_that_never_starts_is_named_within_the_cluster_timeout(cluster):
    two = cluster(SETTINGS + "cluster_timeout = 3\n")
    started = time.monotonic()
    assert two.start(0).wait(timeout=WAIT) == 1, two.output(0)[-3000:]
    assert time.monotonic() - started < 120
    (line,) = error_lines(two, 0)
    assert f"worker 1 ({two.addresses[1]}) could not be reached within 3 s" in line
    assert not (two.home(0) / "artifacts" / "model.keras").exists()


def test_workers_with_different_settings_refuse_to_train(cluster):
    """Different data or settings would give the workers different steps: refused up front."""
    two = cluster()
    workers = [two.start(0), two.start(1, "--epochs", "3")]
    for index, worker in enumerate(workers):
        assert worker.wait(timeout=WAIT) == 1, two.output(index)[-3000:]
        (line,) = error_lines(two, index)
        assert "prepared data, tokenizer or training settings differ" in line
    assert not (two.home(0) / "artifacts" / "model.keras").exists()


def test_tf_config_is_checked_before_anything_starts(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(PipelineError, match="needs TF_CONFIG"):
        read_tf_config()
    for broken in ("{", '{"cluster": {}}', '{"cluster": {"worker": ["a:1"]}, "task": {}}'):
        monkeypatch.setenv("TF_CONFIG", broken)
        with pytest.raises(PipelineError, match="not a valid cluster"):
            read_tf_config()
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}),
    )
    with pytest.raises(PipelineError, match="position of this worker"):
        read_tf_config()
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps(
            {
                "cluster": {"chief": ["c:0"], "worker": ["a:1"]},
                "task": {"type": "worker", "index": 0},
            }
        ),
    )
    cluster = read_tf_config()
    assert cluster.names == ("chief 0 (c:0)", "worker 0 (a:1)")
    assert cluster.me == "worker 0 (a:1)" and not cluster.chief


@pytest.mark.parametrize("rows, batch_size, replicas", [(1000, 32, 2), (61, 32, 2), (97, 8, 3)])
def test_replicas_split_the_global_batches_evenly_and_use_every_row_once(
    rows, batch_size, replicas
):
    lengths = np.random.default_rng(0).integers(1, 100, rows)
    for shuffle in (False, True):
        steps = replica_parts(
            lengths, batch_size, replicas, np.random.default_rng(1) if shuffle else None
        )
        # the global batches are exactly one process's batches of batch_size x replicas ...
        alone = batch_indices(
            lengths, batch_size * replicas, np.random.default_rng(1) if shuffle else None, replicas
        )
        assert [np.concatenate(parts).tolist() for parts in steps] == [b.tolist() for b in alone]
        # ... every replica gets a part of every step, sizes within one row of each other ...
        sizes = np.array([[len(p) for p in parts] for parts in steps])
        assert sizes.shape == (len(steps), replicas) and sizes.min() >= 1
        assert (sizes.max(axis=1) - sizes.min(axis=1) <= 1).all()
        # ... and each row is used exactly once per epoch.
        used = np.concatenate([np.concatenate(parts) for parts in steps])
        assert sorted(used.tolist()) == list(range(rows))


def test_a_last_batch_smaller_than_the_replicas_joins_the_one_before():
    lengths = np.arange(1, 66)  # 65 rows, global batch 64: one row left for 2 replicas
    steps = replica_parts(lengths, 32, 2, None)
    assert len(steps) == 1 and [len(p) for p in steps[0]] == [33, 32]
