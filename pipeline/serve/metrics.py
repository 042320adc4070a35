"""The service's Prometheus metrics, added up over its worker processes.

With several workers (`serve --workers N`), the parent points PROMETHEUS_MULTIPROC_DIR at a
fresh folder before the workers start: prometheus_client then keeps each worker's figures in
files there, and /metrics, answered by any one worker, adds them up (prometheus_client's
multiprocess mode). Without it (one process, or the app made in a test) the figures live in
memory. Either way the same metric objects below are updated.
"""

from __future__ import annotations

import glob
import os
import re
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY = CollectorRegistry()  # the in-process figures: these metrics and nothing else

REQUESTS = Counter(
    "sentiment_requests",
    "HTTP requests answered, by endpoint (the route's path) and status code",
    ["endpoint", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "sentiment_request_seconds",
    "Time from a request's arrival to its answer, by endpoint",
    ["endpoint"],
    registry=REGISTRY,
)
REVIEWS = Counter(
    "sentiment_reviews_scored",
    "Reviews scored and answered, by endpoint",
    ["endpoint"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "sentiment_batch_size",
    "Texts per model batch (an explained review adds one text per character)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
    registry=REGISTRY,
)
MODEL_LOADS = Counter(
    "sentiment_model_loads", "Models loaded: at start-up and each hot reload", registry=REGISTRY
)
MODEL_LOAD_FAILURES = Counter(
    "sentiment_model_load_failures",
    "New model files that could not be loaded (the previous model kept serving)",
    registry=REGISTRY,
)
# An info-style metric: prometheus_client's Info cannot be shared between processes, so it is a
# gauge labelled with the checksum, 1 for the model served. "liveall" keeps one series per
# living worker (a `pid` label), so a scrape shows which model each worker serves, and a dead
# worker's series goes with it.
MODEL = Gauge(
    "sentiment_model",
    "The model served: 1 for its model file's sha256 (per worker with several workers)",
    ["sha256"],
    multiprocess_mode="liveall",
    registry=REGISTRY,
)


def serving(sha256: str, previous: str | None) -> None:
    """Record that this process now serves `sha256` instead of `previous`."""
    if previous and previous != sha256:
        # Multiprocess files cannot drop a series: 0 marks it as no longer served.
        MODEL.labels(sha256=previous).set(0)
        MODEL.remove(previous)
    MODEL.labels(sha256=sha256).set(1)


class Metrics:
    """ASGI middleware: count and time every request by endpoint and status code."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # unless a response starts: an exception becomes the 500 answer outside

        async def send_noting_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = scope.get("route")  # set by the router; none for an unknown path
            endpoint = getattr(route, "path", None) or "other"  # bounded: never the raw path
            LATENCY.labels(endpoint).observe(time.perf_counter() - start)
            REQUESTS.labels(endpoint, str(status)).inc()


def _forget_dead_workers(folder: str) -> None:
    """mark_process_dead for each worker whose live gauges are left but whose process is gone.

    The process manager (uvicorn's supervisor) has no hook for a worker's death, so the scrape
    does this bookkeeping: a replaced worker's model series then disappears.
    """
    pids = {
        int(m[1])
        for f in glob.glob(os.path.join(folder, "gauge_live*_*.db"))
        if (m := re.search(r"_(\d+)\.db$", f))
    }
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)
        except PermissionError:  # alive, someone else's
            pass


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of every worker's figures together, and its content type."""
    folder = os.environ.get(MULTIPROC_DIR)
    if not folder:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    _forget_dead_workers(folder)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)
    return generate_latest(registry), CONTENT_TYPE_LATEST
