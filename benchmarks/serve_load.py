# ruff: noqa: E402  (TF_CPP_MIN_LOG_LEVEL must be set before TensorFlow may be imported)
"""The scoring service under load, on loopback, against in-process batched scoring.

    python benchmarks/serve_load.py --artifacts-dir /tmp/serve-bench/artifacts \
        [--workers 1 0] [--swap-model OTHER_ARTIFACTS] [--kill-worker]

Starts `python -m pipeline serve --workers N` in a subprocess on a free 127.0.0.1 port for each
N of --workers (default: 1, today's single process, and 0, one worker per core), warms it up
with --warmup requests, then runs --clients concurrent keep-alive clients that send --requests
POST /predict requests between them, each with 1 to 5 real reviews from --source. Reports
reviews/s, requests/s, p50/p99 latency, errors (any non-200, any answer that is not the
in-process Predictor's within 1e-4), the memory of all the service's processes together before
and after, and the mean model batch (from /metrics, added up over workers). Before the service
starts, the same reviews are scored in this process by Predictor.predict_proba in one call: the
ceiling the service is compared with. `--unbatched` adds a run with micro-batching off.

Under the last --workers setting, while clients keep sending: `--swap-model DIR` copies another
artifacts folder's model.keras, model.onnx and train record over the served ones (each
atomically, in the order training writes them) and reports failed requests and how long until
/metrics shows every worker serving its sha256; `--kill-worker` kills one worker (SIGKILL)
and reports failed requests and how long until uvicorn's supervisor has replaced it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared/data/naver_shopping_sample_2k.txt"


def load_requests(source: Path, count: int, seed: int) -> list[list[str]]:
    """`count` requests of 1 to 5 real reviews each, drawn with a fixed seed."""
    lines = source.read_text(encoding="utf-8").splitlines()
    reviews = [line.split("\t", 1)[1] for line in lines if "\t" in line]
    rng = np.random.default_rng(seed)
    return [
        [reviews[i] for i in rng.integers(0, len(reviews), size=rng.integers(1, 6))]
        for _ in range(count)
    ]


# -- a small keep-alive HTTP/1.1 client: cheap, so the clients take little CPU from the server --
class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps(payload, ensure_ascii=False).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_load(port: int, jobs: list[list[str]], clients: int) -> dict:
    """Send every job once, `clients` at a time; latency per request and the answers."""
    latencies = np.zeros(len(jobs))
    answers: list[list[float] | None] = [None] * len(jobs)
    statuses = np.zeros(len(jobs), dtype=int)
    next_job = iter(range(len(jobs)))

    async def worker() -> None:
        client = Client(port)
        try:
            for i in next_job:
                started = time.perf_counter()
                try:
                    status, body = await client.post("/predict", {"reviews": jobs[i]})
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):  # dropped
                    status, body = 0, b""
                    client.close()
                    client = Client(port)
                latencies[i] = time.perf_counter() - started
                statuses[i] = status
                if status == 200:
                    predictions = json.loads(body)["predictions"]
                    answers[i] = [p["positive_probability"] for p in predictions]
        finally:
            client.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return {
        "seconds": time.perf_counter() - started,
        "latencies": latencies,
        "statuses": statuses,
        "answers": answers,
    }


# -- the service process -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree(pid: int) -> list[int]:
    """`pid` and every process below it (the service's supervisor and its workers)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:  # gone meanwhile
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(parents.get(found[-1], []))
    return found


def _read(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}") as fh:
            return fh.read()
    except OSError:
        return ""


def rss_mib(pid: int) -> float:
    """Resident memory of the process and all below it, together."""
    total = 0
    for p in tree(pid):
        lines = [line for line in _read(p, "status").splitlines() if line.startswith("VmRSS:")]
        total += int(lines[0].split()[1]) if lines else 0
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process and all below it (all threads) have used so far."""
    total = 0
    for p in tree(pid):
        stat = _read(p, "stat")
        if stat:
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> list:
    """Every sample of the service's /metrics."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def metric(samples: list, name: str) -> float:
    return sum(s.value for s in samples if s.name == name)


def served_models(port: int) -> dict[str, str]:
    """{worker pid: sha256 it serves} from /metrics (one series with a single process)."""
    return {
        s.labels.get("pid", "main"): s.labels["sha256"]
        for s in scrape(port)
        if s.name == "sentiment_model" and s.value == 1
    }


def start_service(artifacts: Path, settings: dict, port: int, log) -> subprocess.Popen:
    toml = Path(tempfile.mkdtemp(prefix="serve-load-")) / "settings.toml"
    toml.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "serve",
        "--quiet",
        "--port",
        str(port),
        "--artifacts-dir",
        str(artifacts),
        "--config",
        str(toml),
    ]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    workers = int(settings.get("serve_workers", 0)) or os.cpu_count()
    deadline = time.monotonic() + 300
    while True:
        try:
            if len(served_models(port)) == workers:  # every worker has its model loaded
                return process
            raise RuntimeError("not every worker is up yet")
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start; see {log.name}") from None
            time.sleep(0.3)


def measure_service(
    args, jobs: list[list[str]], expected: list[np.ndarray], settings: dict, title: str
) -> dict:
    port = free_port()
    with tempfile.NamedTemporaryFile("w", prefix="serve-load-", suffix=".log", delete=False) as log:
        process = start_service(args.artifacts_dir, settings, port, log)
        try:
            memory_start = rss_mib(process.pid)
            asyncio.run(run_load(port, jobs[: args.warmup], args.clients))  # warm-up
            memory_before = rss_mib(process.pid)
            batches_before = metric(scrape(port), "sentiment_batch_size_count")
            server_cpu, client_cpu = cpu_seconds(process.pid), time.process_time()
            result = asyncio.run(run_load(port, jobs, args.clients))
            server_cpu = cpu_seconds(process.pid) - server_cpu
            client_cpu = time.process_time() - client_cpu
            batches_after = metric(scrape(port), "sentiment_batch_size_count")
            memory_after = rss_mib(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)
    mismatched = sum(
        a is not None and not np.allclose(a, e, atol=1e-4)
        for a, e in zip(result["answers"], expected, strict=True)
    )
    failed = int((result["statuses"] != 200).sum())
    reviews = sum(len(job) for job in jobs)
    lat = 1000 * result["latencies"]
    batches = int(batches_after - batches_before)
    out = {
        "reviews": reviews,
        "requests": len(jobs),
        "clients": args.clients,
        "seconds": round(result["seconds"], 2),
        "reviews_per_s": round(reviews / result["seconds"]),
        "requests_per_s": round(len(jobs) / result["seconds"]),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "errors": failed + mismatched,
        "batches": batches,
        "mean_batch_reviews": round(reviews / max(batches, 1), 1),
        "server_cpu_ms_per_request": round(1000 * server_cpu / len(jobs), 3),
        "client_cpu_ms_per_request": round(1000 * client_cpu / len(jobs), 3),
        "rss_mib_at_start": round(memory_start),
        "rss_mib_before": round(memory_before),
        "rss_mib_after": round(memory_after),
    }
    print(f"\n{title}")
    print(
        f"  {out['requests']:,} requests ({out['reviews']:,} reviews) from {args.clients} "
        f"clients in {out['seconds']} s"
    )
    print(
        f"  {out['reviews_per_s']:,} reviews/s, {out['requests_per_s']:,} requests/s; latency "
        f"p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms"
    )
    print(
        f"  errors {out['errors']} ({failed} non-200, {mismatched} answers not the "
        f"predictor's); {batches:,} model batches, {out['mean_batch_reviews']} reviews each"
    )
    print(
        f"  CPU per request: service {out['server_cpu_ms_per_request']} ms, load clients "
        f"{out['client_cpu_ms_per_request']} ms"
    )
    print(
        f"  service RSS (all processes): {out['rss_mib_at_start']} MiB at start, "
        f"{out['rss_mib_before']} MiB after warm-up, {out['rss_mib_after']} MiB after the load"
    )
    return out


async def run_until(port: int, jobs: list[list[str]], clients: int, stop) -> dict:
    """Clients send the jobs round and round until `stop` (a threading.Event) is set."""
    counts = {"ok": 0, "failed": 0}

    async def worker(offset: int) -> None:
        client, i = Client(port), offset
        try:
            while not stop.is_set():
                try:
                    status, _ = await client.post("/predict", {"reviews": jobs[i % len(jobs)]})
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):  # dropped
                    status = 0
                    client.close()
                    client = Client(port)
                counts["ok" if status == 200 else "failed"] += 1
                i += clients
        finally:
            client.close()

    await asyncio.gather(*(worker(c) for c in range(clients)))
    return counts


def under_load(port: int, jobs: list[list[str]], clients: int, action) -> tuple[dict, dict]:
    """Run `action()` in a thread while clients keep sending; (request counts, its result)."""
    import threading

    stop = threading.Event()

    async def both():
        load = asyncio.create_task(run_until(port, jobs, clients, stop))
        try:
            outcome = await asyncio.to_thread(action)
            await asyncio.sleep(1)  # a second more of traffic after the event
        finally:
            stop.set()
        return await load, outcome

    return asyncio.run(both())


def wait_for(condition, timeout: float = 120) -> float:
    """Seconds until `condition()` is true (polled every 50 ms), or inf."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    return float("inf")


def measure_events(args, jobs: list[list[str]], settings: dict) -> dict:
    """A model swap and a killed worker, each under load, on a copy of the artifacts."""
    import shutil

    from pipeline.files import sha256_file

    out = {}
    folder = Path(tempfile.mkdtemp(prefix="serve-load-artifacts-")) / "artifacts"
    shutil.copytree(args.artifacts_dir, folder)
    port = free_port()
    with tempfile.NamedTemporaryFile("w", prefix="serve-load-", suffix=".log", delete=False) as log:
        process = start_service(folder, settings, port, log)
        try:
            asyncio.run(run_load(port, jobs[: args.warmup], args.clients))  # warm-up
            workers = len(served_models(port))
            if args.swap_model:
                new_sha = sha256_file(args.swap_model / "model.keras")

                def swap() -> float:
                    time.sleep(2)
                    # the files train writes, in its order, each atomically
                    written = ("model.onnx.data", "model.onnx", "model.keras", "stages/train.json")
                    for name in written:
                        if (args.swap_model / name).is_file():
                            staged = folder / f".{Path(name).name}.new"
                            shutil.copy(args.swap_model / name, staged)
                            os.replace(staged, folder / name)
                    return wait_for(
                        lambda: (
                            set(served_models(port).values()) == {new_sha}
                            and len(served_models(port)) == workers
                        )
                    )

                counts, seconds = under_load(port, jobs, args.clients, swap)
                out["swap"] = {**counts, "workers": workers, "seconds_to_all_workers": seconds}
                print(
                    f"\nmodel swap under load ({workers} workers): {counts['ok']:,} requests "
                    f"answered, {counts['failed']} failed; every worker on the new sha256 after "
                    f"{seconds:.2f} s"
                )
            if args.kill_worker:
                before = served_models(port)
                victim = int(min(before))

                def kill() -> float:
                    time.sleep(2)
                    os.kill(victim, signal.SIGKILL)
                    return wait_for(
                        lambda: (
                            str(victim) not in (now := served_models(port))
                            and len(now) == len(before)
                        )
                    )

                counts, seconds = under_load(port, jobs, args.clients, kill)
                out["kill"] = {**counts, "workers": len(before), "seconds_to_replace": seconds}
                print(
                    f"\none of {len(before)} workers killed under load: {counts['ok']:,} "
                    f"requests answered, {counts['failed']} failed; replaced (its model loaded) "
                    f"after {seconds:.2f} s"
                )
        finally:
            process.terminate()
            process.wait(timeout=60)
    return out


def measure_in_process(args, jobs: list[list[str]]) -> tuple[dict, list[np.ndarray]]:
    """The same reviews through Predictor in one call; and the answers every request expects."""
    from pipeline.predict import Predictor

    texts = [t for job in jobs for t in job]
    predictor = Predictor(args.artifacts_dir)
    reference = predictor.predict_proba(texts)  # also the warm-up
    expected, start = [], 0
    for job in jobs:
        expected.append(reference[start : start + len(job)])
        start += len(job)
    cpu = time.process_time()
    best = min(timed(predictor.predict_proba, texts) for _ in range(3))
    cpu = (time.process_time() - cpu) / 3
    out = {
        "reviews": len(texts),
        "reviews_per_s": round(len(texts) / best),
        "cpu_ms_per_review": round(1000 * cpu / len(texts), 3),
    }
    print(
        f"\nin-process: Predictor.predict_proba on all {len(texts):,} "
        f"reviews at once, best of 3: {out['reviews_per_s']:,} reviews/s; "
        f"{out['cpu_ms_per_review']} ms CPU per review"
    )
    return out, expected


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--artifacts-dir",
        type=Path,
        required=True,
        help="a trained model (model.keras + tokenizer.json)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="RATING<TAB>REVIEW lines to draw reviews from (default: %(default)s)",
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=6000, help="requests in the measured run")
    parser.add_argument("--warmup", type=int, default=2000, help="requests before measuring")
    parser.add_argument(
        "--wait-ms", type=float, default=None, help="serve_batch_wait_ms (default: the config's)"
    )
    parser.add_argument(
        "--unbatched",
        action="store_true",
        help="also run with micro-batching off (serve_max_batch = 1)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="service settings (TOML values), e.g. serve_model_threads=0",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 0],
        help="serve_workers to compare, side by side (default: 1 0; 0 is one per core)",
    )
    parser.add_argument(
        "--swap-model",
        type=Path,
        help="another artifacts folder (same tokenizer): its model files are copied over the "
        "served ones under load, as training writes them, last --workers",
    )
    parser.add_argument(
        "--kill-worker", action="store_true", help="kill one worker under load, last --workers"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    from importlib.metadata import version

    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nproc": nproc,
        "onnxruntime": version("onnxruntime"),
        "keras": version("keras"),
        "loadavg_at_start": os.getloadavg(),
    }
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    jobs = load_requests(args.source, args.requests, args.seed)
    settings = dict(item.split("=", 1) for item in args.set)
    if args.wait_ms is not None:
        settings["serve_batch_wait_ms"] = args.wait_ms
    results: dict = {"machine": info, "source": str(args.source), "settings": settings}
    # Reference answers first (in this process; the service runs alone while measured).
    in_process, expected = measure_in_process(args, jobs)
    results["in_process"] = in_process
    for workers in args.workers:
        title = f"service, --workers {workers}" + (
            f" ({os.cpu_count()}, one per core)" if workers == 0 else ""
        )
        results[f"workers_{workers}"] = measure_service(
            args, jobs, expected, {**settings, "serve_workers": workers}, title
        )
    if args.unbatched:
        results["unbatched"] = measure_service(
            args,
            jobs,
            expected,
            {**settings, "serve_workers": args.workers[0], "serve_max_batch": 1},
            f"service, --workers {args.workers[0]}, micro-batching off (max batch 1)",
        )
    print()
    for workers in args.workers:
        share = results[f"workers_{workers}"]["reviews_per_s"] / in_process["reviews_per_s"]
        results[f"workers_{workers}"]["share_of_in_process"] = round(share, 3)
        print(f"service --workers {workers} / in-process: {share:.0%}")
    if args.swap_model or args.kill_worker:
        results["events"] = measure_events(
            args, jobs, {**settings, "serve_workers": args.workers[-1]}
        )
    line = json.dumps(results)
    if args.json_out:
        args.json_out.write_text(line + "\n", encoding="utf-8")
    print("\n" + line)


if __name__ == "__main__":
    main()
