# ruff: noqa: E402  (TF_CPP_MIN_LOG_LEVEL must be set before TensorFlow is imported)
"""The service's memory while its model is swapped: RSS after each of --swaps model swaps.

    python benchmarks/serve_swaps.py --artifacts-dir A --other-model B/model.keras [--code DIR]

Starts `python -m pipeline serve` (the package found in --code, default this checkout) on a copy
of A, then --swaps times: replaces model.keras atomically, alternately with B's model and A's,
waits until /health names the new model's checksum, sends --requests POST /predict requests
of 1 to 5 real reviews, and reads the service's VmRSS. A service that keeps old models alive
grows with every swap; one that lets them go levels off.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from serve_load import DEFAULT_SOURCE, free_port, load_requests, rss_mib  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start(code: Path, artifacts: Path, port: int, log) -> subprocess.Popen:
    """`python -m pipeline serve` from the package in `code`; returns once it answers."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, "-m", "pipeline", "serve", "--quiet", "--port", str(port)]
    command += ["--artifacts-dir", str(artifacts)]
    process = subprocess.Popen(command, cwd=code, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
            return process
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start; see {log.name}") from None
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts-dir", type=Path, required=True)
    parser.add_argument("--other-model", type=Path, required=True, help="a second model.keras")
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose pipeline serves")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--requests", type=int, default=30, help="requests after each swap")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="serve-swaps-")) / "artifacts"
    shutil.copytree(args.artifacts_dir, folder)
    models = [args.other_model, args.artifacts_dir / "model.keras"]
    checksums = [sha256(m) for m in models]
    jobs = load_requests(args.source, args.requests, seed=0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    rss = []
    log_file = tempfile.NamedTemporaryFile("w", prefix="serve-swaps-", suffix=".log", delete=False)
    with log_file as log:
        process = start(args.code, folder, port, log)
        try:
            for job in jobs:
                session.post(f"{url}/predict", json={"reviews": job}, timeout=60).raise_for_status()
            rss.append(round(rss_mib(process.pid)))
            for swap in range(args.swaps):
                staged = folder / ".model.keras.swap"
                shutil.copy(models[swap % 2], staged)  # a copy: a fresh modification time
                os.replace(staged, folder / "model.keras")
                deadline = time.monotonic() + 120
                while (
                    session.get(f"{url}/health", timeout=30).json()["model_sha256"]
                    != (checksums[swap % 2])
                ):
                    session.post(f"{url}/predict", json={"reviews": ["좋아요"]}, timeout=60)
                    if time.monotonic() > deadline:
                        raise SystemExit(f"swap {swap + 1} was never served; see {log.name}")
                    time.sleep(0.1)
                for job in jobs:
                    response = session.post(f"{url}/predict", json={"reviews": job}, timeout=60)
                    response.raise_for_status()
                rss.append(round(rss_mib(process.pid)))
                print(f"swap {swap + 1:2d}: {rss[-1]:,} MiB", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)
    out = {
        "code": str(args.code),
        "rss_mib": rss,
        "growth_mib": rss[-1] - rss[0],
        "growth_last_half_mib": rss[-1] - rss[len(rss) // 2],
    }
    print(json.dumps(out))
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
