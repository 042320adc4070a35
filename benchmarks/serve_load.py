"""The scoring service under load on loopback, against in-process scoring; and its memory while
its model is swapped again and again.

    python benchmarks/serve_load.py --artifacts-dir A [--workers 1 0] [--unbatched] \
        [--swap-model B] [--kill-worker]
    python benchmarks/serve_load.py --artifacts-dir A --swap-model B --swaps 20 --requests 30 \
        [--code ../old]

`python -m pipeline serve` per --workers N, --clients keep-alive clients sending --requests
POST /predict requests of 1 to 5 reviews (after --warmup more): reviews/s, latency, errors
(non-200, or off the in-process Predictor by over 1e-4), batches, CPU and RSS. Then under load a
swap to B's model files and a killed worker; or, with --swaps, the RSS of --code's service after
each swap (B, A, B, ...). benchmarks/README.md says more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common
import numpy as np
import requests

from pipeline.files import sha256_file


def load_requests(source: Path, count: int) -> list[list[str]]:
    """`count` requests of 1 to 5 real reviews each, drawn with a fixed seed."""
    reviews = common.source_reviews(source)
    rng = np.random.default_rng(0)
    return [
        [reviews[i] for i in rng.integers(0, len(reviews), size=rng.integers(1, 6))]
        for _ in range(count)
    ]


def post(reviews: list[str]) -> bytes:
    """POST /predict on a keep-alive connection, written by hand: cheap, so that the clients
    take little CPU from the service."""
    body = json.dumps({"reviews": reviews}, ensure_ascii=False).encode()
    head = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of the next HTTP/1.1 answer."""
    status_line, length = await reader.readline(), 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return int(status_line.split()[1]), await reader.readexactly(length)


def send(port: int, jobs: list[list[str]], clients: int, stop=None) -> tuple[float, list]:
    """Every job once, `clients` at a time; with `stop` (a threading.Event), the jobs round and
    round until it is set. Seconds, and (job, status, seconds, answer) of each request."""
    done, order = [], itertools.count()

    async def client() -> None:
        writer = None
        while stop is None or not stop.is_set():
            if (i := next(order)) >= len(jobs) and stop is None:
                break
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(post(jobs[i % len(jobs)]))
                status, body = await answer(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):  # dropped
                status, body = 0, b""
                if writer is not None:
                    writer.close()
                writer = None  # the next request opens a new connection
            probabilities = None
            if status == 200 and stop is None:  # checked against the in-process answers
                probabilities = [p["positive_probability"] for p in json.loads(body)["predictions"]]
            done.append((i, status, time.perf_counter() - started, probabilities))
        if writer is not None:
            writer.close()

    async def all_clients() -> None:
        await asyncio.gather(*(client() for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(all_clients())
    return time.perf_counter() - started, sorted(done, key=lambda request: request[0])


def failed(done: list) -> int:
    return sum(status != 200 for _, status, _, _ in done)


def usage(pid: int) -> dict:
    """The MiB resident and the CPU seconds used so far by the process and all below it (the
    service's supervisor and its workers)."""
    tree = common.processes(pid).values()
    return {
        "rss_mib": sum(p["rss_kib"] for p in tree) / 1024,
        "cpu": sum(p["cpu_seconds"] for p in tree),
    }


def metric(port: int, name: str) -> list:
    """The samples of one of the service's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def served_models(port: int) -> dict[str, str]:
    """{worker pid: sha256 it serves} from /metrics (one series with a single process)."""
    samples = metric(port, "sentiment_model")
    return {s.labels.get("pid", "main"): s.labels["sha256"] for s in samples if s.value == 1}


def health_sha256(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/health", timeout=30).json()["model_sha256"]


def wait_for(condition, timeout: float = 120) -> float:
    """Seconds until `condition()` is true (polled every 50 ms), or inf."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    return float("inf")


@contextlib.contextmanager
def service(artifacts: Path, settings: dict, code: Path = common.REPO, copy: bool = False):
    """`python -m pipeline serve` of the package in `code` (on a copy of `artifacts`); yields
    (process, port, folder served) once it answers, or with serve_workers once /metrics shows
    every worker with its model loaded."""
    scratch = Path(tempfile.mkdtemp(prefix="serve-load-"))
    if copy:
        artifacts = Path(shutil.copytree(artifacts, scratch / "artifacts"))
    port = common.free_ports()[0]
    command = [sys.executable, "-m", "pipeline", "serve", "--quiet", "--port", str(port)]
    command += ["--artifacts-dir", str(artifacts)]
    if settings:  # a checkout from before the settings existed gets none
        toml = scratch / "settings.toml"
        toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        command += ["--config", str(toml)]
    with (scratch / "serve.log").open("w") as log:  # the child holds its own copy
        env = common.child_env(code)
        process = subprocess.Popen(command, cwd=code, env=env, stdout=log, stderr=log)
    workers = settings.get("serve_workers")
    workers = (workers or os.cpu_count()) if workers is not None else None
    deadline = time.monotonic() + 300
    try:
        while True:
            with contextlib.suppress(Exception):  # not listening yet
                if (len(served_models(port)) == workers) if workers else health_sha256(port):
                    break  # with workers: each has its model loaded
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start; see {log.name}")
            time.sleep(0.3)
        yield process, port, artifacts
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(scratch / "artifacts", ignore_errors=True)  # the log stays, to be read


def swap_in(source: Path, folder: Path) -> None:
    """Copy `source`'s model files over `folder`'s, each atomically, in the order training
    writes them (a copy: a fresh modification time)."""
    for name in ("model.onnx.data", "model.onnx", "model.keras", "stages/train.json"):
        if (source / name).is_file():
            shutil.copy(source / name, folder / f".{Path(name).name}.new")
            os.replace(folder / f".{Path(name).name}.new", folder / name)


def measure_in_process(args, jobs: list[list[str]]) -> tuple[dict, list[np.ndarray]]:
    """The same reviews through Predictor in one call; and the answers every request expects."""
    from pipeline.predict import Predictor

    texts = [t for job in jobs for t in job]
    predictor = Predictor(args.artifacts_dir)
    reference = predictor.predict_proba(texts)  # also the warm-up
    cpu = time.process_time()
    seconds = common.best_of(3, predictor.predict_proba, texts)[0]
    cpu = (time.process_time() - cpu) / 3
    out = {"reviews": len(texts), "reviews_per_s": round(len(texts) / seconds)}
    out["cpu_ms_per_review"] = round(1000 * cpu / len(texts), 3)
    print(f"\nin-process Predictor.predict_proba, all reviews at once, best of 3: {out}")
    return out, np.split(reference, np.cumsum([len(job) for job in jobs])[:-1])


def measure_service(args, jobs, expected: list, ceiling: float, settings: dict) -> dict:
    with service(args.artifacts_dir, settings) as (process, port, _):
        rss = [usage(process.pid)["rss_mib"]]
        send(port, jobs[: args.warmup], args.clients)
        rss.append(usage(process.pid)["rss_mib"])
        batches = -sum(s.value for s in metric(port, "sentiment_batch_size_count"))
        server_cpu = usage(process.pid)["cpu"]
        seconds, done = send(port, jobs, args.clients)
        server_cpu = usage(process.pid)["cpu"] - server_cpu
        batches += sum(s.value for s in metric(port, "sentiment_batch_size_count"))
        rss.append(usage(process.pid)["rss_mib"])
    mismatched = sum(
        answer is not None and not np.allclose(answer, expected[i], atol=1e-4)
        for i, _, _, answer in done
    )
    reviews = sum(map(len, jobs))
    latency_ms = 1000 * np.array([request[2] for request in done])
    out = {
        "reviews": reviews,
        "seconds": round(seconds, 2),
        "reviews_per_s": round(reviews / seconds),
        "requests_per_s": round(len(jobs) / seconds),
        "share_of_in_process": round(reviews / seconds / ceiling, 3),
        "p50_ms": round(float(np.percentile(latency_ms, 50)), 2),
        "p99_ms": round(float(np.percentile(latency_ms, 99)), 2),
        "errors": failed(done) + mismatched,  # non-200 answers, and answers off the predictor's
        "non_200": failed(done),
        "batches": int(batches),
        "mean_batch_reviews": round(reviews / max(batches, 1), 1),
        "server_cpu_ms_per_request": round(1000 * server_cpu / len(jobs), 3),
        "rss_mib_at_start_after_warmup_after_load": [round(mib) for mib in rss],
    }
    print(f"\nservice, {settings}\n" + "".join(f"  {k}: {v}\n" for k, v in out.items()), end="")
    return out


def under_load(port: int, jobs: list[list[str]], clients: int, act, done) -> dict:
    """`act()` two seconds into a load that goes on until a second after `done()` holds: the
    requests answered and failed, and the seconds from `act` to `done`."""
    stop, seconds = threading.Event(), []

    def event() -> None:
        time.sleep(2)
        act()
        seconds.append(wait_for(done))
        time.sleep(1)
        stop.set()

    thread = threading.Thread(target=event)
    thread.start()
    answers = send(port, jobs, clients, stop)[1]
    thread.join()
    return {"ok": len(answers) - failed(answers), "failed": failed(answers), "seconds": seconds[0]}


def measure_events(args, jobs: list[list[str]], settings: dict) -> dict:
    """Under load, a model swap (seconds until every worker serves the new model) and a killed
    worker (seconds until a new one has its model loaded), on a copy of the artifacts."""
    with service(args.artifacts_dir, settings, copy=True) as (_, port, folder):
        send(port, jobs[: args.warmup], args.clients)
        workers, events = served_models(port), {}
        if args.swap_model:
            new = [sha256_file(args.swap_model / "model.keras")] * len(workers)
            events["swap"] = (
                lambda: swap_in(args.swap_model, folder),
                lambda: list(served_models(port).values()) == new,
            )
        if args.kill_worker:
            victim = min(workers)
            events["kill"] = (
                lambda: os.kill(int(victim), signal.SIGKILL),
                lambda: victim not in (now := served_models(port)) and len(now) == len(workers),
            )
        out = {name: under_load(port, jobs, args.clients, *event) for name, event in events.items()}
    print(f"\nunder load, {len(workers)} workers: {out}")
    return out


def measure_swaps(args, jobs: list[list[str]], settings: dict) -> list[int]:
    """The service's RSS after warm-up and after each swap and the requests that follow it."""
    models = [args.swap_model, args.artifacts_dir]  # the other model, then this one again, ...
    checksums = [sha256_file(model / "model.keras") for model in models]
    rss = []

    def serving(sha256: str) -> bool:  # a request first, so that the service notices the swap
        send(port, [["좋아요"]], 1)
        return health_sha256(port) == sha256

    with service(args.artifacts_dir, settings, args.code, copy=True) as (process, port, folder):
        for swap in range(args.swaps + 1):
            if swap:
                swap_in(models[(swap - 1) % 2], folder)
                if wait_for(lambda sha=checksums[(swap - 1) % 2]: serving(sha)) > 120:
                    raise SystemExit(f"swap {swap} was never served")
            if failed(send(port, jobs, 1)[1]):
                raise SystemExit(f"a request failed after swap {swap}")
            rss.append(round(usage(process.pid)["rss_mib"]))
            print(f"swap {swap:2d}: {rss[-1]:,} MiB", flush=True)
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts-dir", type=Path, required=True, help="a trained model")
    parser.add_argument("--source", type=Path, default=common.DATA / "naver_shopping_sample_2k.txt")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=6000, help="requests in the measured run")
    parser.add_argument("--warmup", type=int, default=2000, help="requests before measuring")
    parser.add_argument("--unbatched", action="store_true", help="also serve_max_batch = 1")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 0], help="0: one per core")
    parser.add_argument("--swap-model", type=Path, help="another artifacts folder, same tokenizer")
    parser.add_argument("--kill-worker", action="store_true")
    parser.add_argument("--swaps", type=int, default=0, help="swap the model N times, no load")
    parser.add_argument("--code", type=Path, default=common.REPO, help="the checkout that serves")
    args = parser.parse_args()

    results: dict = {"machine": common.machine(), "source": str(args.source)}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()))
    jobs = load_requests(args.source, args.requests)
    settings = results["settings"] = common.parse_settings(args.set)
    if args.swaps:
        results["swaps_rss_mib"] = measure_swaps(args, jobs, settings)
    else:  # the reference answers first, so that the service runs alone while measured
        results["in_process"], expected = measure_in_process(args, jobs)
        ceiling = results["in_process"]["reviews_per_s"]
        runs = [{**settings, "serve_workers": workers} for workers in args.workers]
        if args.unbatched:
            runs.append({**settings, "serve_workers": args.workers[0], "serve_max_batch": 1})
        results["services"] = [measure_service(args, jobs, expected, ceiling, s) for s in runs]
        if args.swap_model or args.kill_worker:
            last = {**settings, "serve_workers": args.workers[-1]}
            results["events"] = measure_events(args, jobs, last)
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
