"""The HTTP service, on a real uvicorn server on 127.0.0.1 with the tiny trained model."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from pipeline.cleaning import clean_text
from pipeline.files import sha256_file
from pipeline.predict import NEGATIVE, POSITIVE, Predictor
from tests.live_service import running, running_workers, serving_workers
from tests.test_cli import assert_clean_error, run_main

LIMITS = dict(
    serve_max_reviews=50,
    serve_max_explain_reviews=3,
    serve_max_body_bytes=256 * 1024,
    serve_batch_wait_ms=20,  # long enough that concurrent test requests share batches
)


def post(base, path, payload, **kwargs):
    """POST JSON as UTF-8 (requests' json= escapes every Hangul character to 6 bytes)."""
    data = json.dumps(payload, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json"}
    return requests.post(f"{base}{path}", data=data, headers=headers, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def config(trained):
    return trained.replace(**LIMITS)


@pytest.fixture(scope="module")
def base(config):
    with running(config) as url:
        yield url


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor(trained.artifacts_dir)


@pytest.fixture(scope="module")
def sample_reviews(sample_path):
    return [line.split("\t", 1)[1] for line in sample_path.read_text("utf-8").splitlines()]


def scored(response):
    assert response.status_code == 200, response.text
    return np.array([p["positive_probability"] for p in response.json()["predictions"]])


# -- /predict ----------------------------------------------------------------------------------
def test_predictions_are_the_predictors_in_order(base, predictor, sample_reviews):
    reviews = sample_reviews[:30] + ["", "😀😀", "great!!!", "좋아요"]
    response = post(base, "/predict", {"reviews": reviews})
    probs = scored(response)
    np.testing.assert_allclose(probs, predictor.predict_proba(reviews), atol=1e-5)
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == [POSITIVE if p > 0.5 else NEGATIVE for p in probs]


def test_no_reviews_is_no_predictions(base):
    assert post(base, "/predict", {"reviews": []}).json() == {"predictions": []}


def test_a_review_far_over_any_sane_length_is_truncated_like_everywhere(base, predictor):
    huge = "별로 " * 2_000 + "좋아요 " * 18_000  # 80,000 characters, about 200 kB
    probs = scored(post(base, "/predict", {"reviews": [huge, "좋아요"]}))
    assert probs[0] == pytest.approx(predictor.predict_proba(huge[-300:])[0], abs=1e-5)
    assert probs[1] == pytest.approx(predictor.predict_proba("좋아요")[0], abs=1e-5)  # unharmed


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body,status,message",
    [
        (b'{"reviews": ["', 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (b'{"reviews": ["\xff\xfe"]}', 400, "not valid JSON"),  # not UTF-8
        (b"[" * 100_000, 400, "not valid JSON"),  # nested past any parser's depth
        ('{"reviews": "좋아요"}'.encode(), 422, "reviews: Input should be a valid list"),
        (b'{"reviews": ["ok", 5]}', 422, "reviews.1: Input should be a valid string"),
        (b'{"reviews": ["ok", null]}', 422, "reviews.1"),
        (b'{"reviews": [["nested"]]}', 422, "reviews.0"),
        (b'{"review": ["typo"]}', 422, "reviews: Field required"),
        (b'{"reviews": [], "extra": 1}', 422, "extra: Extra inputs are not permitted"),
        (b'["no object"]', 422, "the body is a JSON array"),
        (b"null", 422, "the body is a JSON null"),
    ],
)
@pytest.mark.parametrize("path", ["/predict", "/explain"])
def test_bad_bodies_get_a_clear_json_error_and_the_right_status(base, path, body, status, message):
    response = requests.post(
        f"{base}{path}", data=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "Traceback" not in error


def test_a_body_sent_as_another_content_type_is_415(base):
    body = json.dumps({"reviews": ["좋아요"]}).encode()
    for kind in ("text/plain", "application/x-www-form-urlencoded"):  # curl -d sends the latter
        response = requests.post(
            f"{base}/predict", data=body, headers={"Content-Type": kind}, timeout=60
        )
        assert response.status_code == 415, response.text
        assert "application/json" in response.json()["error"]
    assert scored(requests.post(f"{base}/predict", data=body, timeout=60)).shape == (1,)


def test_the_worker_survives_bad_input(base, predictor):
    for body in (b"{", b'{"reviews": [1]}', b"[" * 50_000):
        requests.post(f"{base}/predict", data=body, timeout=60)
    probs = scored(post(base, "/predict", {"reviews": ["좋아요"]}))
    assert probs[0] == pytest.approx(predictor.predict_proba("좋아요")[0], abs=1e-5)


def test_too_many_reviews_is_413_naming_the_limit(base, config):
    limit = config.serve_max_reviews
    assert post(base, "/predict", {"reviews": ["좋아요"] * limit}).status_code == 200
    response = post(base, "/predict", {"reviews": ["좋아요"] * (limit + 1)})
    assert response.status_code == 413
    assert f"the limit is {limit}" in response.json()["error"]
    explain_limit = config.serve_max_explain_reviews
    response = post(base, "/explain", {"reviews": ["좋아요"] * (explain_limit + 1)})
    assert response.status_code == 413
    assert f"the limit is {explain_limit}" in response.json()["error"]


def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(base, config):
    body = json.dumps({"reviews": ["좋아요"] * 5 + ["가" * config.serve_max_body_bytes]}).encode()
    declared = requests.post(f"{base}/predict", data=body, timeout=60)
    assert declared.status_code == 413
    assert "serve_max_body_bytes" in declared.json()["error"]

    def chunks():  # no Content-Length: the server only finds out while reading
        for start in range(0, len(body), 16_384):
            yield body[start : start + 16_384]

    streamed = requests.post(f"{base}/predict", data=chunks(), timeout=60)
    assert streamed.status_code == 413
    assert "larger than the limit" in streamed.json()["error"]


def test_unknown_paths_and_methods_are_json_errors(base):
    missing = requests.get(f"{base}/nothing-here", timeout=10)
    assert missing.status_code == 404 and "/docs" in missing.json()["error"]
    wrong = requests.get(f"{base}/predict", timeout=10)
    assert wrong.status_code == 405 and "GET is not allowed" in wrong.json()["error"]


# -- /explain ----------------------------------------------------------------------------------
def occlusion(predictor, cleaned, start=0, count=None):
    """Effects computed here, independently: p(review) - p(review without character i)."""
    positions = range(start, start + (count or len(cleaned) - start))
    variants = [cleaned[:i] + cleaned[i + 1 :] for i in positions]
    return predictor.predict_proba(cleaned)[0] - predictor.predict_proba(variants)


def test_explain_gives_each_characters_occlusion_effect(base, predictor):
    reviews = ["배송 빠르고 좋아요!!", "별로에요 😡 다시는 안 사요"]
    response = post(base, "/explain", {"reviews": reviews})
    assert response.status_code == 200, response.text
    explained = response.json()["explanations"]
    for review, item in zip(reviews, explained, strict=True):
        cleaned = clean_text(review)
        assert item["text"] == cleaned and item["truncated"] is False
        assert item["positive_probability"] == pytest.approx(
            predictor.predict_proba(review)[0], abs=1e-5
        )
        assert item["label"] == (POSITIVE if item["positive_probability"] > 0.5 else NEGATIVE)
        np.testing.assert_allclose(item["effects"], occlusion(predictor, cleaned), atol=2e-5)
        assert np.abs(item["effects"]).max() > 0  # a tiny model still moves a little


def test_explain_covers_the_characters_the_model_reads_of_a_long_review(base, predictor):
    maxlen = predictor.tokenizer.maxlen
    review = "처음엔 별로였는데 " * 30 + "쓸수록 좋아요 " * 30
    item = post(base, "/explain", {"reviews": [review]}).json()["explanations"][0]
    cleaned = clean_text(review)
    assert item["truncated"] is True and item["text"] == cleaned[-maxlen:]
    start = len(cleaned) - maxlen  # removing a character in view lets the one before slide in
    np.testing.assert_allclose(
        item["effects"][:5], occlusion(predictor, cleaned, start, 5), atol=2e-5
    )


@pytest.mark.parametrize("unit", ["char", "jamo"])
@pytest.mark.parametrize("side", ["pre", "post"])
def test_occlusion_shows_exactly_the_characters_the_tokenizer_keeps(unit, side):
    """maxlen counts ids: with jamo, a syllable is 3 of them, so fewer characters are in view."""
    from pipeline.serve.explain import occlusion_variants
    from pipeline.tokenizer import CharTokenizer

    review = "배송 빠르고 좋아요 정말 좋아요"
    tokenizer = CharTokenizer(maxlen=7, unit=unit, padding=side, truncating=side).fit([review])
    shown, variants, truncated = occlusion_variants(tokenizer, review)
    full = tokenizer.encode([review])[0]
    assert truncated and 0 < len(shown) < len(review)
    assert review.endswith(shown) if side == "pre" else review.startswith(shown)
    # Each shown character is in view: removing it changes what the model reads...
    for variant in variants:
        assert (tokenizer.encode([variant])[0] != full).any()
    # ...and the next character out of view is not: removing it changes nothing.
    out = len(review) - len(shown) - 1 if side == "pre" else len(shown)
    unseen = review[:out] + review[out + 1 :]
    np.testing.assert_array_equal(tokenizer.encode([unseen])[0], full)


# -- /health, /info, the page, the docs --------------------------------------------------------
def test_health_and_info_describe_the_served_model(base, trained, predictor):
    health = requests.get(f"{base}/health", timeout=10).json()
    assert health["status"] == "ok" and health["reload_error"] is None
    model_file = trained.artifacts_dir / "model.keras"
    assert health["model_sha256"] == sha256_file(model_file)

    info = requests.get(f"{base}/info", timeout=10).json()
    record = json.loads((trained.artifacts_dir / "stages" / "train.json").read_text())
    metrics = json.loads((trained.artifacts_dir / "metrics.json").read_text())["test"]
    assert info["model"]["sha256"] == sha256_file(model_file)
    assert info["model"]["trained_at"] == record["finished_at"]
    assert info["model"]["settings"]["embedding_dim"] == trained.embedding_dim == 8
    keras_model = Predictor(predictor.artifacts_dir, engine="keras").model
    assert info["model"]["parameters"] == keras_model.count_params()
    assert info["tokenizer"]["vocab_size"] == predictor.tokenizer.vocab_size
    assert info["tokenizer"]["maxlen"] == trained.maxlen
    assert info["test_metrics"]["accuracy"] == metrics["accuracy"]
    assert info["test_metrics"]["roc_auc"] == metrics["roc_auc"]
    assert info["limits"]["max_reviews"] == LIMITS["serve_max_reviews"]


def test_the_page_and_the_api_schema_are_served(base):
    page = requests.get(base, timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Noto Sans CJK KR" in page.text and "<script src" not in page.text  # nothing fetched
    schema = requests.get(f"{base}/openapi.json", timeout=10).json()
    for path in ("/predict", "/explain"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        ref = body["schema"].get("$ref", "").rsplit("/", 1)[-1]  # inline or a named component
        body_schema = schema["components"]["schemas"][ref] if ref else body["schema"]
        assert body_schema["properties"]["reviews"]["items"]["type"] == "string"
    assert {"/health", "/info"} <= set(schema["paths"])


# -- /metrics and the offline docs -------------------------------------------------------------
def scrape(base) -> list:
    """Every sample /metrics gives, parsed by prometheus_client's own parser."""
    response = requests.get(f"{base}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def total(samples, name, **labels) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def send_known_traffic(base, sample_reviews) -> dict:
    """A fixed mix of answers (200s, a 413, 422s, a 404) on fresh connections; what was sent."""
    sizes = [1 + i % 5 for i in range(12)]
    for i, size in enumerate(sizes):
        assert post(base, "/predict", {"reviews": sample_reviews[i : i + size]}).ok
    assert post(base, "/explain", {"reviews": ["좋아요", "별로"]}).ok
    assert post(base, "/predict", {"reviews": ["좋아요"] * 51}).status_code == 413
    for _ in range(3):
        assert post(base, "/predict", {"reviews": [1]}).status_code == 422
    assert requests.get(f"{base}/nothing-here", timeout=10).status_code == 404
    # An explained review is scored with one variant per character: 1 + 3 and 1 + 2 texts.
    return {"predict_200": len(sizes), "predicted": sum(sizes), "explained": 2, "texts": 7}


def assert_counts_add_up(before, after, sent) -> None:
    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert (
        delta("sentiment_requests_total", endpoint="/predict", status="200") == sent["predict_200"]
    )
    assert delta("sentiment_requests_total", endpoint="/explain", status="200") == 1
    assert delta("sentiment_requests_total", endpoint="/predict", status="413") == 1
    assert delta("sentiment_requests_total", endpoint="/predict", status="422") == 3
    assert delta("sentiment_requests_total", endpoint="other", status="404") == 1
    assert delta("sentiment_reviews_scored_total", endpoint="/predict") == sent["predicted"]
    assert delta("sentiment_reviews_scored_total", endpoint="/explain") == sent["explained"]
    # Every answered request was timed; the 413/422s never reached the model.
    assert delta("sentiment_request_seconds_count", endpoint="/predict") == sent["predict_200"] + 4
    batches = delta("sentiment_batch_size_count")
    assert 1 <= batches <= sent["predict_200"] + 1
    # Each batch's texts: the predicted reviews, and per explained review itself and its variants.
    assert (
        delta("sentiment_batch_size_sum") == sent["predicted"] + len("좋아요") + 1 + len("별로") + 1
    )


def test_metrics_count_every_request_review_and_batch(base, sample_reviews, trained):
    before = scrape(base)
    sent = send_known_traffic(base, sample_reviews)
    after = scrape(base)
    assert_counts_add_up(before, after, sent)
    sha = sha256_file(trained.artifacts_dir / "model.keras")
    assert total(after, "sentiment_model", sha256=sha) == 1  # no pid label: one process
    assert total(after, "sentiment_model_loads_total") >= 1


def test_the_docs_load_nothing_from_outside(base):
    page = requests.get(f"{base}/docs", timeout=10)
    assert page.status_code == 200
    for kind in ("docs", "redoc"):
        html = requests.get(f"{base}/{kind}", timeout=10).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(url.startswith("/docs-assets/") for url in assets), assets
        assert "https://" not in html
        for url in assets:
            asset = requests.get(f"{base}{url}", timeout=10)
            assert asset.status_code == 200 and len(asset.content) > 1000, url


# -- several worker processes ------------------------------------------------------------------
@pytest.fixture(scope="module")
def workers(trained, tmp_path_factory):
    """`serve --workers 2` on a copy of the model: (base URL, its artifacts folder)."""
    root = tmp_path_factory.mktemp("workers")
    folder = root / "artifacts"
    shutil.copytree(trained.artifacts_dir, folder)
    with running_workers(folder, LIMITS, 2, root) as url:
        yield url, folder


def worker_pids(base, tries=200) -> set:
    """The pids of the workers that answer /health on fresh connections (until 2 are seen)."""
    pids = set()
    for _ in range(tries):
        pids.add(requests.get(f"{base}/health", timeout=10).json()["pid"])
        if len(pids) == 2:
            break
    return pids


def test_two_workers_answer_and_their_metrics_add_up(workers, sample_reviews, predictor):
    base, _ = workers
    assert len(worker_pids(base)) == 2, "only one worker ever answered"
    before = scrape(base)
    sent = send_known_traffic(base, sample_reviews)
    after = scrape(base)
    assert_counts_add_up(before, after, sent)
    reviews = sample_reviews[:5]
    np.testing.assert_allclose(
        scored(post(base, "/predict", {"reviews": reviews})),
        predictor.predict_proba(reviews),
        atol=1e-5,
    )


def test_every_worker_holds_the_limits(workers):
    base, _ = workers
    for _ in range(20):  # fresh connections: both workers answer some
        assert post(base, "/predict", {"reviews": ["좋아요"] * 51}).status_code == 413
        assert post(base, "/explain", {"reviews": ["좋아요"] * 4}).status_code == 413


def test_a_killed_worker_is_replaced_while_the_other_answers(workers):
    base, _ = workers
    old = worker_pids(base)
    assert len(old) == 2 and set(serving_workers(base)) == {str(p) for p in old}
    before = scrape(base)
    victim = min(old)
    os.kill(victim, signal.SIGKILL)
    failures, answered = 0, 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            answered += post(base, "/predict", {"reviews": ["좋아요"]}).status_code == 200
        except requests.ConnectionError:
            failures += 1
        pids = worker_pids(base, tries=20)
        if victim not in pids and len(pids) == 2:
            break
        time.sleep(0.1)
    assert victim not in pids and len(pids) == 2, "the killed worker was never replaced"
    assert failures == 0 and answered > 0
    # The dead worker's model series is gone; what it counted before dying still counts.
    assert set(serving_workers(base)) == {str(p) for p in pids}
    after = scrape(base)
    for name in ("sentiment_requests_total", "sentiment_reviews_scored_total"):
        assert total(after, name) >= total(before, name)


def test_a_new_model_reaches_every_worker(workers, retrained, trained, predictor):
    base, folder = workers
    old_sha = sha256_file(trained.artifacts_dir / "model.keras")
    new_sha = sha256_file(retrained.artifacts_dir / "model.keras")
    assert set(serving_workers(base).values()) == {old_sha}
    staged = folder / ".model.keras.new.keras"
    shutil.copy(retrained.artifacts_dir / "model.keras", staged)
    os.replace(staged, folder / "model.keras")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # Each worker notices the new files between two of its own batches: keep both busy.
        for _ in range(10):
            assert scored(post(base, "/predict", {"reviews": ["좋아요"]})).shape == (1,)
        series = serving_workers(base)
        if len(series) == 2 and set(series.values()) == {new_sha}:
            break
        time.sleep(0.2)
    assert len(series) == 2 and set(series.values()) == {new_sha}, series
    assert total(scrape(base), "sentiment_model_load_failures_total") == 0


# -- concurrency and micro-batching ------------------------------------------------------------
def test_concurrent_requests_get_their_own_answers_in_order_and_share_batches(
    base, predictor, sample_reviews
):
    threads, rounds = 20, 5
    jobs = {  # (thread, round) -> 1 to 5 reviews of its own
        (t, r): sample_reviews[(t * rounds + r) * 5 : (t * rounds + r) * 5 + 1 + (t + r) % 5]
        for t in range(threads)
        for r in range(rounds)
    }
    expected = {key: predictor.predict_proba(reviews) for key, reviews in jobs.items()}
    answers, errors = {}, []
    barrier = threading.Barrier(threads)

    def client(t):
        barrier.wait()
        for r in range(rounds):
            try:
                answers[t, r] = scored(post(base, "/predict", {"reviews": jobs[t, r]}))
            except Exception as exc:  # reported below, with which request it was
                errors.append((t, r, repr(exc)))

    before = requests.get(f"{base}/health", timeout=10).json()
    pool = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    after = requests.get(f"{base}/health", timeout=10).json()

    assert not errors
    for key, probs in expected.items():
        np.testing.assert_allclose(answers[key], probs, atol=1e-5, err_msg=str(key))
    requests_scored = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests_scored == threads * rounds
    assert batches <= requests_scored // 2, f"{batches} batches for {requests_scored} requests"


# -- a new model while requests run ------------------------------------------------------------
@pytest.fixture(scope="module")
def retrained(trained, tmp_path_factory):
    """Another tiny model for the same tokenizer: the train stage rerun with other settings."""
    from pipeline.stages import run_pipeline

    root = tmp_path_factory.mktemp("retrained")
    shutil.copytree(trained.data_dir, root / "data")
    shutil.copytree(trained.artifacts_dir, root / "artifacts")
    config = trained.replace(
        data_dir=root / "data", artifacts_dir=root / "artifacts", learning_rate=0.02, seed=7
    )
    run_pipeline(config, ("train",), force=True, quiet=True)
    return config


def test_a_new_model_is_picked_up_during_traffic_and_no_request_fails(
    trained, retrained, tmp_path, sample_reviews
):
    folder = tmp_path / "artifacts"
    shutil.copytree(trained.artifacts_dir, folder)
    reviews = sample_reviews[:8]
    old = Predictor(trained.artifacts_dir).predict_proba(reviews)
    new = Predictor(retrained.artifacts_dir).predict_proba(reviews)
    assert np.abs(old - new).max() > 1e-3, "the two models must answer differently"
    swapping = trained.replace(artifacts_dir=folder, **LIMITS)  # not the module's `config`
    answers, errors, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                answers.append(
                    (time.monotonic(), scored(post(url, "/predict", {"reviews": reviews})))
                )
            except Exception as exc:
                errors.append(repr(exc))

    with running(swapping) as url:
        pool = [threading.Thread(target=client) for _ in range(4)]
        for thread in pool:
            thread.start()
        time.sleep(1)
        staged = folder / ".model.keras.new.keras"
        shutil.copy(retrained.artifacts_dir / "model.keras", staged)  # copy: a fresh mtime
        os.replace(staged, folder / "model.keras")  # atomic, as every stage writes
        swapped = time.monotonic()
        deadline = swapped + 120
        while time.monotonic() < deadline:
            if answers and np.allclose(answers[-1][1], new, atol=1e-5):
                break
            time.sleep(0.1)
        time.sleep(0.5)  # a few more requests on the new model
        stop.set()
        for thread in pool:
            thread.join()
        health = requests.get(f"{url}/health", timeout=10).json()
        info = requests.get(f"{url}/info", timeout=10).json()

    assert not errors, errors[:3]
    assert any(t < swapped for t, _ in answers) and any(t > swapped for t, _ in answers)
    for _, probs in answers:  # every answer is wholly one model's, never a mix or garbage
        assert np.allclose(probs, old, atol=1e-5) or np.allclose(probs, new, atol=1e-5)
    assert np.allclose(answers[-1][1], new, atol=1e-5), "the new model was never served"
    assert health["model_sha256"] == sha256_file(retrained.artifacts_dir / "model.keras")
    # The stage records in the folder describe the old model: /info must not claim them.
    assert info["model"]["settings"] is None and info["test_metrics"] is None


def test_a_model_trained_into_the_served_folder_is_loaded_once_its_files_settle(
    trained, retrained, tmp_path
):
    """train writes model.onnx.data, model.onnx, model.keras, then the record naming them: it loads
    the new set once, with model.onnx, not each half-written state along the way."""
    folder = tmp_path / "artifacts"
    shutil.copytree(trained.artifacts_dir, folder)
    new = Predictor(retrained.artifacts_dir).predict_proba(["좋아요"])
    with running(trained.replace(artifacts_dir=folder, **LIMITS)) as url:
        loads = total(scrape(url), "sentiment_model_loads_total")
        for name in ("model.onnx.data", "model.onnx", "model.keras", "stages/train.json"):
            staged = folder / f".{Path(name).name}.new"
            shutil.copy(retrained.artifacts_dir / name, staged)
            os.replace(staged, folder / name)
            for _ in range(3):  # traffic while the files change
                scored(post(url, "/predict", {"reviews": ["좋아요"]}))
                time.sleep(0.1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            probs = scored(post(url, "/predict", {"reviews": ["좋아요"]}))
            if np.allclose(probs, new, atol=1e-5):
                break
            time.sleep(0.1)
        info = requests.get(f"{url}/info", timeout=10).json()
        loads = total(scrape(url), "sentiment_model_loads_total") - loads
    np.testing.assert_allclose(probs, new, atol=1e-5)
    assert info["model"]["engine"] == "onnx"
    assert info["model"]["sha256"] == sha256_file(retrained.artifacts_dir / "model.keras")
    assert info["model"]["settings"]["seed"] == 7  # the new record names the served model
    assert loads == 1


def test_a_broken_model_file_keeps_the_previous_model_serving(trained, tmp_path):
    folder = tmp_path / "artifacts"
    shutil.copytree(trained.artifacts_dir, folder)
    expected = Predictor(trained.artifacts_dir).predict_proba(["좋아요"])
    with running(trained.replace(artifacts_dir=folder, **LIMITS)) as url:
        (folder / "model.keras").write_bytes(b"not a model")
        deadline = time.monotonic() + 60
        health = {}
        while time.monotonic() < deadline and not health.get("reload_error"):
            probs = scored(post(url, "/predict", {"reviews": ["좋아요"]}))
            np.testing.assert_allclose(probs, expected, atol=1e-5)
            health = requests.get(f"{url}/health", timeout=10).json()
            time.sleep(0.05)
        assert "model.keras cannot be loaded" in health["reload_error"]
        probs = scored(post(url, "/predict", {"reviews": ["좋아요"]}))
        np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_swapped_out_models_are_let_go(tmp_path):
    """Each swap frees the old model: a service swapping models must not grow."""
    import weakref

    from pipeline.serve.scorer import Scorer
    from pipeline.tokenizer import CharTokenizer
    from tests.known_model import save_known_model

    CharTokenizer(maxlen=8).fit(["좋아요 별로"]).save(tmp_path / "tokenizer.json")
    save_known_model(tmp_path, {"좋": 4.0, "별": -4.0})
    scorer = Scorer(tmp_path, max_batch=64, wait_ms=0)
    try:
        olds = []
        for swap in range(3):
            old = scorer.predictor
            olds.append(weakref.ref(old.model))  # Keras models hold cycles: refcounts never free
            save_known_model(tmp_path, {"좋": 4.0 + swap, "별": -4.0})  # a new model.keras
            deadline = time.monotonic() + 60
            while scorer.predictor is old and time.monotonic() < deadline:
                scorer.submit(["좋아요"]).result(timeout=60)  # a batch notices the change
                time.sleep(0.02)
            assert scorer.predictor is not old, "the new model was never loaded"
            del old
            scorer.submit(["좋아요"]).result(timeout=60)  # the batch after the swap
        assert [ref() for ref in olds] == [None, None, None]  # no gc.collect() here: the scorer's
    finally:
        scorer.close()


# -- the command line --------------------------------------------------------------------------
def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_without_a_model_is_one_sentence_and_exit_1(tmp_path):
    result = run_main("serve", "--artifacts-dir", tmp_path, "--port", free_port())
    assert_clean_error(result, 1, "tokenizer.json is missing")
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:")  # one sentence


def test_serve_with_a_broken_model_is_one_sentence_and_exit_1(trained, tmp_path):
    folder = tmp_path / "artifacts"
    shutil.copytree(trained.artifacts_dir, folder)
    (folder / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    result = run_main("serve", "--artifacts-dir", folder, "--port", free_port())
    assert_clean_error(result, 1, "model.keras cannot be loaded")


def test_serve_on_a_taken_port_is_one_sentence_and_exit_1(trained):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_main("serve", "--artifacts-dir", trained.artifacts_dir, "--port", port)
    assert_clean_error(result, 1, f"cannot listen on 127.0.0.1:{port}")


def test_serve_command_answers_and_stops_cleanly_on_ctrl_c(trained):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "serve",
            "--artifacts-dir",
            str(trained.artifacts_dir),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = post(f"http://127.0.0.1:{port}", "/predict", {"reviews": ["좋아요"]})
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in out and "Traceback" not in err


def test_importing_the_package_loads_neither_tensorflow_nor_fastapi():
    code = (
        "import sys, pipeline; print(sorted({'tensorflow', 'fastapi', 'keras'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        check=True,
    )
    assert result.stdout.strip() == "[]"
