"""Running the service: one process, or several worker processes on one port under uvicorn.

    python -m pipeline serve [--host 127.0.0.1] [--port 8000] [--workers N] [--artifacts-dir DIR]

With several workers, uvicorn's own supervisor runs them: each is a spawned process with the app
made by `app_from_environment`, its own Scorer and model (so each hot-reloads a new model
between its batches), all accepting on the one socket bound here; a worker that dies is
replaced while the others keep answering. What can go wrong at start-up (no model, a broken
one, a port in use) is found here first, before any worker starts, and said in one sentence.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import json
import multiprocessing
import os
import socket
import tempfile

from fastapi import FastAPI

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.serve.app import create_app
from pipeline.serve.metrics import MULTIPROC_DIR

CONFIG_ENV = "PIPELINE_SERVE_CONFIG"  # the workers' settings, as Config.to_dict() JSON
APP_FACTORY = "pipeline.serve.runner:app_from_environment"


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a PipelineError saying why there cannot be one."""
    try:
        return socket.create_server((host, port))
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise PipelineError(
            f"cannot listen on {host}:{port} ({reason}); choose another --port or --host"
        ) from None


def worker_count(config: Config) -> int:
    """How many worker processes serve: serve_workers, or one per core when it is 0."""
    return config.serve_workers or os.cpu_count() or 1


def app_from_environment() -> FastAPI:
    """The app of one worker process, its settings read from PIPELINE_SERVE_CONFIG."""
    return create_app(Config(**json.loads(os.environ[CONFIG_ENV])))


def _model_error(artifacts_dir: str, threads: int, engine: str) -> str | None:
    """Why the model cannot be loaded, or None (run in a throwaway process)."""
    from pipeline.serve.scorer import load_predictor

    try:
        load_predictor(artifacts_dir, threads, engine)
    except (PipelineError, OSError) as exc:
        return str(exc)
    return None


def check_model(config: Config) -> None:
    """Load the model once, in a process of its own, so a bad one stops the start in one sentence.

    Not in this process: the supervisor would hold the model runtime's memory for nothing.
    """
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        error = pool.submit(
            _model_error, str(config.artifacts_dir), config.serve_model_threads, config.model_engine
        ).result()
    if error:
        raise PipelineError(error)


def serve(config: Config, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False) -> None:
    """Serve until interrupted (Ctrl+C or SIGTERM), in serve_workers processes (0: one per core)."""
    import uvicorn

    workers = worker_count(config)
    sock = listen(host, port)
    try:
        app = create_app(config) if workers == 1 else check_model(config)
    except BaseException:
        sock.close()
        raise
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["pipeline"] = {"handlers": ["default"], "level": "INFO"}
    settings = dict(
        log_config=log_config,
        log_level="warning" if quiet else "info",
        access_log=not quiet,
        timeout_graceful_shutdown=5,
    )
    if not quiet:
        shown = f"[{host}]" if ":" in host else host
        port = sock.getsockname()[1]  # the real one when asked for port 0
        print(
            f"serving the model in {config.artifacts_dir}/ on http://{shown}:{port}/ with "
            f"{workers} worker process{'es' if workers > 1 else ''} (API docs at /docs, "
            "metrics at /metrics); Ctrl+C stops",
            flush=True,
        )
    if workers == 1:
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(uvicorn.Config(app, **settings)).run(sockets=[sock])
        return
    _run_workers(config, workers, sock, settings)


def _run_workers(config: Config, workers: int, sock: socket.socket, settings: dict) -> None:
    """Run `workers` processes under uvicorn's supervisor until it is told to stop."""
    from uvicorn import Config as UvicornConfig
    from uvicorn.supervisors import Multiprocess

    # Spawned workers inherit the environment: their settings, and a fresh metrics folder
    # (prometheus_client's multiprocess mode) that goes when the service stops.
    with tempfile.TemporaryDirectory(prefix="pipeline-serve-metrics-") as folder:
        os.environ[CONFIG_ENV] = json.dumps(config.to_dict())
        os.environ[MULTIPROC_DIR] = folder
        try:
            uvicorn_config = UvicornConfig(APP_FACTORY, factory=True, workers=workers, **settings)
            Multiprocess(uvicorn_config, sockets=[sock]).run()
        finally:
            del os.environ[CONFIG_ENV], os.environ[MULTIPROC_DIR]
            sock.close()
