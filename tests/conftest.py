"""Shared fixtures: the real sample file, tiny settings, a loopback HTTP server, a trained model."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from pipeline.config import Config

# 600 real lines cut from ../shared/data/naver_shopping_sample_2k.txt (the first 600 of that
# randomly ordered sample), so a clone on its own runs every test.
SAMPLE = Path(__file__).resolve().parent / "data" / "naver_shopping_sample_600.txt"

# Small enough to train in seconds on 2 cores, big enough to learn something.
# The default model's parts at toy sizes (the n-gram table at 2**18 rows would dominate the tests)
TINY = dict(
    embedding_dim=8,
    rnn_units=(8, 4),
    ngram_buckets=2**10,
    ngram_dim=8,
    epochs=1,
    batch_size=64,
    patience=1,
)


# Whole modules that train models or start subprocesses; any test using `trained` is slow too.
SLOW_MODULES = {
    "test_cli.py",
    "test_end_to_end.py",
    "test_layers.py",
    "test_onnx.py",
    "test_robustness.py",
    "test_spark.py",
    "test_train.py",
}


def pytest_collection_modifyitems(config, items) -> None:
    """Mark what trains or spawns as `slow`: `-m "not slow"` keeps the fast unit tests."""
    for item in items:
        if "trained" in item.fixturenames or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


def tiny_config(root: Path, source: Path | str, **changes) -> Config:
    return Config(
        data_dir=root / "data",
        artifacts_dir=root / "artifacts",
        source=str(source),
        **{**TINY, **changes},
    )


@pytest.fixture
def static_server():
    """Serve a folder over HTTP on 127.0.0.1; yields a function folder -> base URL."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def trained(tmp_path_factory, sample_path) -> Config:
    """Run the whole pipeline once with a tiny model; tests only read what it leaves."""
    from pipeline.stages import run_pipeline

    config = tiny_config(tmp_path_factory.mktemp("trained"), sample_path, epochs=2)
    run_pipeline(config, quiet=True)
    return config
