"""The HTTP service: a FastAPI app over Predictor that micro-batches requests, and its web page.

One job per module: `schemas` (request and response bodies), `scorer` (the thread that owns the
model, micro-batching and hot reload), `explain` (occlusion), `errors` (what a bad request is
told), `metrics` (Prometheus, over every worker), `app` (the endpoints) and `runner` (one process
or several workers on one port). `runner.serve` is what `python -m pipeline serve` runs.
"""
