"""The HTTP service: a FastAPI app over Predictor that micro-batches requests, and its web page.

    python -m pipeline serve [--host 127.0.0.1] [--port 8000] [--artifacts-dir DIR]

One worker thread owns the model. Each request puts its reviews on the worker's queue; the
worker takes everything waiting (up to serve_max_batch reviews, waiting at most
serve_batch_wait_ms for more) and scores it as one batch, so many small concurrent requests
cost about what one large batch costs. Cleaning and encoding are Predictor's, never repeated here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import datetime as dt
import gc
import json
import logging
import queue
import socket
import threading
import time
import weakref
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from pipeline.cleaning import clean_text
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.labels import label_of
from pipeline.predict import Predictor, artifact_stamps
from pipeline.records import read_json, read_record
from pipeline.tokenizer import CharTokenizer

log = logging.getLogger(__name__)


# -- request and response bodies (also the OpenAPI schema at /docs) ----------------------------
class Reviews(BaseModel):
    """The body of /predict and /explain."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reviews: list[str] = Field(examples=[["배송 빠르고 좋아요", "별로에요 다시는 안 사요"]])


class Prediction(BaseModel):
    label: str = Field(description="긍정 (positive) or 부정 (negative)")
    positive_probability: float


class Predictions(BaseModel):
    predictions: list[Prediction]


class Explanation(Prediction):
    text: str = Field(
        description="the characters the model reads: the cleaned review, cut to "
        "the part the model sees"
    )
    effects: list[float] = Field(
        description="per character of `text`: the positive probability "
        "minus that of the review without this character"
    )
    truncated: bool = Field(description="true if the cleaned review was longer than `text`")


class Explanations(BaseModel):
    explanations: list[Explanation]


class Error(BaseModel):
    error: str


class ApiError(HTTPException):
    """An error answered as {"error": detail} with its status code."""


ERRORS = {
    400: {"model": Error, "description": "the body is not valid JSON"},
    413: {"model": Error, "description": "too many reviews, or too large a body"},
    415: {"model": Error, "description": "the body is not sent as JSON"},
    422: {"model": Error, "description": 'the JSON is not {"reviews": [strings]}'},
}


# -- the worker that owns the model ------------------------------------------------------------
class Scorer:
    """One thread scores every request: whatever is queued is gathered into one model batch.

    The model is reloaded when model.keras or tokenizer.json changes: the new one is loaded in
    the background while the old one keeps answering, then swapped in between two batches, and
    the old one is let go (the scorer holds exactly one). A model that fails to load is logged
    and the previous one kept.
    """

    def __init__(
        self,
        artifacts_dir: Path,
        max_batch: int,
        wait_ms: float,
        threads: int = 0,
        engine: str = "auto",
    ) -> None:
        self.artifacts_dir = artifacts_dir
        self.engine = engine
        self.threads = threads  # per model call
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000
        self.batches = 0  # model batches scored
        self.requests = 0  # jobs scored (one per /predict or /explain request)
        self._stamps = artifact_stamps(artifacts_dir)
        self.predictor, self.model_sha256 = self._load()  # PipelineError: caller says why
        self.loaded_at = _now()
        self.reload_error: str | None = None  # why the latest model files could not be loaded
        self._loading = False
        self._retired: list[tuple[weakref.ref, int]] = []  # swapped-out models, tries left
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="scorer", daemon=True)
        self._thread.start()

    def _load(self) -> tuple[Predictor, str]:
        # Its own predictor, not get_predictor's: this one is dropped when the next is swapped in.
        predictor = Predictor(self.artifacts_dir, engine=self.engine, threads=self.threads)
        return predictor, predictor.model_sha256

    def submit(self, texts: list[str]) -> concurrent.futures.Future:
        """Queue reviews; the future gets their positive probabilities in order."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((texts, future))
        return future

    async def score(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty(0, dtype=np.float32)
        return await asyncio.wrap_future(self.submit(texts))

    def queued(self) -> int:
        return self._jobs.qsize()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            jobs, size = [job], len(job[0])
            deadline = time.monotonic() + self.wait_s
            while size < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    job = self._jobs.get(timeout=left) if left > 0 else self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:  # stop after this batch
                    self._jobs.put(None)
                    break
                jobs.append(job)
                size += len(job[0])
            self._score(jobs)
            self._free_retired()

    def _score(self, jobs: list[tuple[list[str], concurrent.futures.Future]]) -> None:
        jobs = [(texts, f) for texts, f in jobs if f.set_running_or_notify_cancel()]
        if not jobs:
            return  # every client went away
        texts = [text for job_texts, _ in jobs for text in job_texts]
        try:
            probs = self._current_predictor().predict_proba(texts)
        except Exception as exc:  # answered as a 500 for these requests; the worker lives on
            log.exception("scoring failed")
            for _, future in jobs:
                future.set_exception(exc)
            return
        self.batches += 1
        self.requests += len(jobs)
        start = 0
        for job_texts, future in jobs:
            future.set_result(probs[start : start + len(job_texts)])
            start += len(job_texts)

    def _free_retired(self) -> None:
        """Collect garbage until swapped-out models are gone (a few batches at most).

        A Keras model is full of reference cycles: only a collection frees it, else about a
        model's size stays for good per swap. A batch or explanation may still hold the old
        one when it is swapped out, so this runs after batches until it is free.
        """
        if not self._retired:
            return
        gc.collect()
        self._retired = [(ref, left - 1) for ref, left in self._retired if ref() and left > 1]

    def _current_predictor(self) -> Predictor:
        stamps = artifact_stamps(self.artifacts_dir)
        if stamps != self._stamps and not self._loading:
            self._loading = True
            threading.Thread(target=self._reload, args=(stamps,), daemon=True).start()
        return self.predictor

    def _reload(self, stamps: tuple[int, int]) -> None:
        try:
            retired = weakref.ref(self.predictor)
            self.predictor, self.model_sha256 = self._load()
            self.loaded_at, self.reload_error = _now(), None
            self._retired = [*self._retired, (retired, 10)]
            log.info(
                "loaded the new model in %s (sha256 %s)", self.artifacts_dir, self.model_sha256[:12]
            )
        except (PipelineError, OSError) as exc:
            self.reload_error = str(exc)
            log.warning("kept the previous model: %s", exc)
        finally:
            self._stamps = stamps  # these files are dealt with; a later change loads again
            self._loading = False


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# -- explanations by occlusion -----------------------------------------------------------------
def occlusion_variants(tokenizer: CharTokenizer, review: str) -> tuple[str, list[str], bool]:
    """(characters the model reads, the review without each one in turn, whether it was cut).

    The review is cleaned by the one cleaning function, then cut where the tokenizer cuts it
    (maxlen ids, which with unit="jamo" is fewer characters); each variant keeps up to maxlen
    more characters beyond that, so a removed character lets the next one slide into view as it
    would in the full review.
    """
    cleaned = clean_text(review)
    start, end = tokenizer.kept_span(cleaned)
    n = tokenizer.maxlen
    context = max(start - n, 0)  # what may slide in, on the side the tokenizer cuts
    variants = [cleaned[context:i] + cleaned[i + 1 : end + n] for i in range(start, end)]
    return cleaned[start:end], variants, end - start < len(cleaned)


async def explain(scorer: Scorer, reviews: list[str]) -> list[dict[str, Any]]:
    """Each review's probability and its characters' occlusion effects, all in one batch."""
    predictor = scorer.predictor
    parts = [occlusion_variants(predictor.tokenizer, review) for review in reviews]
    pairs = zip(reviews, parts, strict=True)
    texts = [t for review, (_, variants, _) in pairs for t in (review, *variants)]
    probs = await scorer.score(texts)
    out, start = [], 0
    for shown, variants, truncated in parts:
        prob = float(probs[start])
        effects = prob - probs[start + 1 : start + 1 + len(variants)]
        start += 1 + len(variants)
        out.append(
            {
                "label": label_of(prob),
                "positive_probability": prob,
                "text": shown,
                "effects": [round(float(e), 6) for e in effects],
                "truncated": truncated,
            }
        )
    return out


# -- the app -----------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is a 413, declared or found while reading."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    def _error(self, size: str) -> ApiError:
        return ApiError(
            413,
            f"the request body is {size} the limit of {self.limit:,} bytes "
            "(serve_max_body_bytes): send fewer or shorter reviews per request",
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = _error_response(self._error(f"{int(declared):,} bytes, over"))
            return await response(scope, receive, send)
        received = 0

        async def receive_limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise self._error("larger than")
            return message

        await self.app(scope, receive_limited, send)


def _error_response(exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


JSON_KINDS = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
NOT_JSON = "There was an error parsing the body"  # FastAPI's 400 for bytes json.loads refuses
SEND = '{"reviews": ["review", ...]}'


def not_json(reason: object) -> ApiError:
    return ApiError(400, f"the request body is not valid JSON ({reason}); send {SEND}")


def body_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's account of a bad body, said the way this service says it."""
    errors = exc.errors()
    first = errors[0]
    if first["type"] == "json_invalid":  # FastAPI keeps the document and where it failed
        return not_json(json.JSONDecodeError(first["ctx"]["error"], exc.body, first["loc"][1]))
    if first["type"] == "missing" and tuple(first["loc"]) == ("body",):  # an empty body
        return not_json(json.JSONDecodeError("Expecting value", "", 0))
    if tuple(first["loc"]) == ("body",):  # the JSON is not an object at all
        if isinstance(first.get("input"), bytes):  # a Content-Type that is not JSON
            return ApiError(415, f"the body is not sent as JSON; send {SEND} as application/json")
        kind = JSON_KINDS.get(type(first.get("input")), "value")
        return ApiError(422, f'the body is a JSON {kind}; send an object {{"reviews": [...]}}')
    where = ".".join(str(part) for part in first["loc"][1:])
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return ApiError(
        422,
        f"{where}: {first['msg']}{more}; send a JSON object "
        '{"reviews": ["review", ...]} with a list of strings',
    )


def within(reviews: list[str], limit: int) -> list[str]:
    """The reviews, or a 413 when there are more than `limit`."""
    if len(reviews) > limit:
        raise ApiError(
            413,
            f"{len(reviews):,} reviews in one request; the limit is {limit:,}: "
            "split them over several requests",
        )
    return reviews


TEST_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "rows")


def model_info(scorer: Scorer, config: Config) -> dict[str, Any]:
    """What is being served: the model's settings, tokenizer, test metrics and training time.

    Settings, training time and metrics come from the stage records, and only when those
    records name the loaded model's checksum: otherwise they describe another model and are null.
    """
    predictor, sha = scorer.predictor, scorer.model_sha256
    folder = scorer.artifacts_dir
    train = read_record(folder, "train") or {}
    evaluate = read_record(folder, "evaluate") or {}
    metrics = read_json(folder / "metrics.json")
    trained = train.get("outputs", {}).get("model.keras") == sha
    evaluated = evaluate.get("inputs", {}).get("model.keras") == sha and "test" in metrics
    tokenizer = predictor.tokenizer
    return {
        "model": {
            "artifacts_dir": str(folder),
            "sha256": sha,
            "loaded_at": scorer.loaded_at,
            "trained_at": train.get("finished_at") if trained else None,
            "settings": train.get("params") if trained else None,
            "parameters": int(predictor.parameters),
            "engine": predictor.engine,
        },
        "tokenizer": {
            "vocab_size": tokenizer.vocab_size,
            "maxlen": tokenizer.maxlen,
            "unit": tokenizer.unit,
            "padding": tokenizer.padding,
            "truncating": tokenizer.truncating,
        },
        "test_metrics": {k: metrics["test"].get(k) for k in TEST_METRICS} if evaluated else None,
        "limits": {
            "max_reviews": config.serve_max_reviews,
            "max_explain_reviews": config.serve_max_explain_reviews,
            "max_body_bytes": config.serve_max_body_bytes,
            "max_batch": config.serve_max_batch,
            "batch_wait_ms": config.serve_batch_wait_ms,
            "model_threads": config.serve_model_threads,
        },
    }


def page() -> str:
    return resources.files("pipeline").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(config: Config) -> FastAPI:
    """The app over the model in config.artifacts_dir; PipelineError if it cannot be loaded."""
    scorer = Scorer(
        config.artifacts_dir,
        config.serve_max_batch,
        config.serve_batch_wait_ms,
        config.serve_model_threads,
        config.model_engine,
    )
    html = page()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        scorer.close()

    app = FastAPI(
        title="Korean shopping-review sentiment",
        description="Label reviews 긍정 (positive) or 부정 (negative) with a character RNN; "
        "explain a label by occlusion. The page at / calls these endpoints.",
        version="1",
        lifespan=lifespan,
        strict_content_type=False,  # a body sent without a Content-Type is read as JSON
    )
    app.state.scorer = scorer
    app.add_middleware(BodyLimit, limit=config.serve_max_body_bytes)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, ApiError):
            return _error_response(exc)
        if exc.status_code == 400 and exc.detail == NOT_JSON:  # bad UTF-8, absurd nesting
            return _error_response(not_json(exc.__cause__))
        if exc.status_code == 404:
            exc.detail = f"there is no {request.url.path}; the endpoints are listed at /docs"
        elif exc.status_code == 405:
            exc.detail = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(body_error(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the service is still running"},
            status_code=500,
        )

    @app.post("/predict", response_model=Predictions, responses=ERRORS)
    async def predict(body: Reviews) -> JSONResponse:
        """Label each review and give its positive probability, in the order sent."""
        probs = await scorer.score(within(body.reviews, config.serve_max_reviews))
        return JSONResponse(
            {
                "predictions": [
                    {"label": label_of(p), "positive_probability": float(p)} for p in probs
                ]
            }
        )

    @app.post("/explain", response_model=Explanations, responses=ERRORS)
    async def explain_reviews(body: Reviews) -> JSONResponse:
        """Each review's label, and each character's effect: the change in positive probability
        when that character is removed (occlusion; all variants are scored in one batch)."""
        reviews = within(body.reviews, config.serve_max_explain_reviews)
        return JSONResponse({"explanations": await explain(scorer, reviews)})

    @app.get("/health")
    async def health() -> dict:
        """Liveness, and what the worker has done."""
        return {
            "status": "ok",
            "model_sha256": scorer.model_sha256,
            "reload_error": scorer.reload_error,
            "batches": scorer.batches,
            "requests": scorer.requests,
            "queued": scorer.queued(),
        }

    @app.get("/info")
    async def info() -> dict:
        """The model being served: settings, tokenizer, test metrics, when it was trained."""
        return model_info(scorer, config)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(html)

    return app


# -- running it --------------------------------------------------------------------------------
def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a PipelineError saying why there cannot be one."""
    try:
        return socket.create_server((host, port))
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise PipelineError(
            f"cannot listen on {host}:{port} ({reason}); choose another --port or --host"
        ) from None


def serve(config: Config, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False) -> None:
    """Serve until interrupted (Ctrl+C or SIGTERM)."""
    import uvicorn

    sock = listen(host, port)
    try:
        app = create_app(config)
    except BaseException:
        sock.close()
        raise
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["pipeline"] = {"handlers": ["default"], "level": "INFO"}
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=log_config,
            log_level="warning" if quiet else "info",
            access_log=not quiet,
            timeout_graceful_shutdown=5,
        )
    )
    if not quiet:
        shown = f"[{host}]" if ":" in host else host
        port = sock.getsockname()[1]  # the real one when asked for port 0
        print(
            f"serving {app.state.scorer.predictor.model_file} on http://{shown}:{port}/ "
            f"(API docs at /docs); Ctrl+C stops",
            flush=True,
        )
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
