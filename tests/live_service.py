"""Run the scoring service for real (uvicorn on a free 127.0.0.1 port) inside a test.

with running(config) as base:
    requests.post(f"{base}/predict", json={"reviews": ["좋아요"]})
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from pipeline.config import Config
from pipeline.serve import create_app, listen


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
