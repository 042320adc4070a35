"""Run the scoring service for real (uvicorn on a free 127.0.0.1 port) inside a test.

with running(config) as base:
    requests.post(f"{base}/predict", json={"reviews": ["좋아요"]})

running_workers runs `python -m pipeline serve --workers N` itself, as users run it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import Config
from pipeline.serve.app import create_app
from pipeline.serve.runner import listen


@contextlib.contextmanager
def running(config: Config) -> Iterator[str]:
    """Serve `config`'s model until the block ends; yields the base URL."""
    sock = listen("127.0.0.1", 0)  # the OS picks a free port; bound before the thread starts
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def free_port() -> int:
    """A port nothing listens on now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serving_workers(base: str) -> dict[str, str]:
    """{worker pid: sha256 of the model it serves}, from the service's /metrics."""
    text = requests.get(f"{base}/metrics", timeout=5).text
    return {
        sample.labels["pid"]: sample.labels["sha256"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "sentiment_model" and sample.value == 1
    }


@contextlib.contextmanager
def running_workers(artifacts_dir: Path, settings: dict, workers: int, tmp: Path) -> Iterator[str]:
    """`python -m pipeline serve --workers N` in a subprocess; yields the base URL.

    The service's temporary files go under `tmp` (TMPDIR), and it is stopped with Ctrl+C
    (SIGINT) at the end, which must exit 0 and remove its metrics folder.
    """
    toml = tmp / "serve.toml"
    toml.write_text("".join(f"{key} = {value!r}\n" for key, value in settings.items()))
    temporary = tmp / "tmp"
    temporary.mkdir()
    port = free_port()
    command = [sys.executable, "-m", "pipeline", "serve", "--config", str(toml)]
    command += ["--artifacts-dir", str(artifacts_dir), "--port", str(port)]
    command += ["--workers", str(workers), "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "TMPDIR": str(temporary)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:  # the socket listens from the start: a request waits until a worker is up
                if len(serving_workers(base)) == workers:  # each has loaded its model
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start: {(tmp / 'serve.log').read_text()}")
            time.sleep(0.2)
        metrics_folders = "pipeline-serve-metrics-*"  # the runner's; TensorFlow leaves its own
        assert len(list(temporary.glob(metrics_folders))) == 1
        yield base
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, (tmp / "serve.log").read_text()
        assert not list(temporary.glob(metrics_folders)), "the metrics folder was left behind"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
