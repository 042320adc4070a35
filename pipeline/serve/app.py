"""The FastAPI app: /predict, /explain, /health, /info, /metrics, the page and offline docs."""

from __future__ import annotations

import contextlib
import os
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from pipeline.config import Config
from pipeline.labels import label_of
from pipeline.records import read_json, read_record
from pipeline.serve import metrics
from pipeline.serve.errors import BodyLimit, add_error_handlers, within
from pipeline.serve.explain import explain
from pipeline.serve.schemas import ERRORS, Explanations, Prediction, Predictions, Reviews
from pipeline.serve.scorer import Scorer

TEST_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "rows")
DOCS_ASSETS = "/docs-assets"  # Swagger UI and ReDoc, served from the fastapi-offline package


def model_info(scorer: Scorer, config: Config) -> dict[str, Any]:
    """What is being served: the model's settings, tokenizer, test metrics and training time.

    Settings, training time and metrics come from the stage records, and only when those
    records name the loaded model's checksum: otherwise they describe another model and are null.
    """
    predictor, sha = scorer.predictor, scorer.model_sha256
    folder = scorer.artifacts_dir
    train = read_record(folder, "train") or {}
    evaluate = read_record(folder, "evaluate") or {}
    metrics_file = read_json(config.metrics_path)
    # The model is known by its model.keras's checksum, whichever engine runs it.
    trained = train.get("outputs", {}).get("model.keras") == sha
    evaluated = evaluate.get("inputs", {}).get("model.keras") == sha and "test" in metrics_file
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
        "test_metrics": (
            {k: metrics_file["test"].get(k) for k in TEST_METRICS} if evaluated else None
        ),
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
    """The web page at /."""
    return resources.files("pipeline").joinpath("static/index.html").read_text(encoding="utf-8")


def add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts served here: they work offline."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


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
        docs_url=None,  # FastAPI's own pages load their scripts from a CDN: add_docs serves them
        redoc_url=None,
    )
    app.state.scorer = scorer
    # The last added is the outermost: metrics see every answer, the body limit's 413s too.
    app.add_middleware(BodyLimit, limit=config.serve_max_body_bytes)
    app.add_middleware(metrics.Metrics)
    add_error_handlers(app)
    add_docs(app)

    # response_class=JSONResponse: FastAPI's fast path would write floats its own way
    # (0.00001 for 1e-05); this keeps the bodies Python's json writes, as they always were.
    @app.post("/predict", response_model=Predictions, response_class=JSONResponse, responses=ERRORS)
    async def predict(body: Reviews) -> Predictions:
        """Label each review and give its positive probability, in the order sent."""
        probs = await scorer.score(within(body.reviews, config.serve_max_reviews))
        metrics.REVIEWS.labels("/predict").inc(len(probs))
        return Predictions(
            predictions=[
                Prediction(label=label_of(p), positive_probability=float(p)) for p in probs
            ]
        )

    @app.post(
        "/explain", response_model=Explanations, response_class=JSONResponse, responses=ERRORS
    )
    async def explain_reviews(body: Reviews) -> Explanations:
        """Each review's label, and each character's effect: the change in positive probability
        when that character is removed (occlusion; all variants are scored in one batch)."""
        reviews = within(body.reviews, config.serve_max_explain_reviews)
        explanations = await explain(scorer, reviews)
        metrics.REVIEWS.labels("/explain").inc(len(explanations))
        return Explanations(explanations=explanations)

    @app.get("/health")
    async def health() -> dict:
        """Liveness, and what this worker process has done."""
        return {
            "status": "ok",
            "model_sha256": scorer.model_sha256,
            "reload_error": scorer.reload_error,
            "batches": scorer.batches,
            "requests": scorer.requests,
            "queued": scorer.queued(),
            "pid": os.getpid(),  # which worker answered, with several
        }

    @app.get("/info")
    async def info() -> dict:
        """The model being served: settings, tokenizer, test metrics, when it was trained."""
        return model_info(scorer, config)

    @app.get("/metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics of every worker together (text format)."""
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(html)

    return app
