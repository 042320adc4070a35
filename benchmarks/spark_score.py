"""Spark in local[2] against the in-process `predict --input`: reviews/s and peak memory, 1M rows.

    nice -n 10 python benchmarks/spark_score.py                 # 1,000,000 rows (200k x 5)
    python benchmarks/spark_score.py --rows 20000               # a quick check

Writes the reviews of --source, repeated to --rows rows, as a CSV (id, review, a note column)
and as Parquet (the same rows, 100,000-row groups), then runs in fresh processes, one after
the other in this one run:

  in-process     python -m pipeline predict --input rows.csv --column review --output out.csv
  spark csv      the same with --engine spark --master local[2] (a partitioned CSV folder)
  spark parquet  --engine spark --master local[2], rows.parquet in, a Parquet folder out

Each is timed from process start to exit (start-up, model loading, reading, scoring, writing),
and once more on the first --small rows, so the fixed start-up cost can be told from the rate.
Peak RSS (VmHWM) is read every 0.2 s for every process of the command's tree: the CLI's Python,
Spark's JVM, and each Python worker (the processes that load the model and score). The model is
the default architecture with untrained weights and a tokenizer fit on the reviews
(benchmarks/common.py's save_default_model): scoring costs the same whatever the weights are.
`--artifacts-dir` scores a trained folder instead (with model.onnx, ONNX Runtime scores it;
`--model-engine keras` insists on model.keras).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (
    DEFAULT_SOURCE,
    REPO,
    child_env,
    machine,
    peak_rss_kib,
    save_default_model,
    source_reviews,
)
from score_file import write_csv

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of all of a process's threads so far."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def processes() -> dict[int, int]:
    """Every process's parent, from /proc."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    return parent


def command_line(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")
    except OSError:
        return []


def roles(root: int) -> dict[int, str]:
    """What each process under `root` is: the CLI, Spark's JVM, the pyspark daemon or a worker.

    The daemon forks the workers, which keep its command line: a worker is a daemon's child.
    """
    parent = processes()
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, up in parent.items() if up in frontier]
        tree += frontier
    found = {root: "cli"}
    for pid in tree[1:]:
        argv = command_line(pid)
        if b"org.apache.spark.launcher.Main" in argv:
            continue  # a short-lived JVM that only builds the real one's command line
        if argv and argv[0].endswith(b"java"):
            found[pid] = "jvm"
        elif b"pyspark.daemon" in argv:
            daemon_child = b"pyspark.daemon" in command_line(parent.get(pid, 0))
            found[pid] = "python worker" if daemon_child else "pyspark daemon"
    return found  # the shell scripts between (spark-submit, spark-class) are left out


def run(command: list[str]) -> dict:
    """Wall time and per-process peak RSS of one command and every process it starts."""
    start = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peaks: dict[int, tuple[str, float]] = {}
    cpu: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            for pid, name in roles(child.pid).items():
                rss = peak_rss_kib(pid)  # VmHWM only grows (an exec starts it afresh)
                if rss is not None:
                    peaks[pid] = (name, rss / 1024)
                    cpu[pid] = cpu_seconds(pid) or cpu.get(pid, 0.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = child.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr.decode()[-3000:]}")
    by_role: dict[str, list[int]] = {}
    for name, rss in peaks.values():
        by_role.setdefault(name, []).append(round(rss))
    # CPU time does not depend on what else the machine runs (a process that ended between two
    # samples misses at most its last 0.2 s)
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(sum(cpu.values()), 1),
        "peak_rss_mib": by_role,
    }


RUNS = ("in-process", "spark csv", "spark parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000, help="rows of the start-up runs")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument(
        "--artifacts-dir",
        type=Path,
        help="a trained artifacts folder (default: the default model, untrained, as model.keras)",
    )
    parser.add_argument("--model-engine", default="auto", choices=["auto", "onnx", "keras"])
    parser.add_argument(
        "--runs", nargs="+", default=list(RUNS), choices=RUNS, help="which to run (default: all)"
    )
    args = parser.parse_args()

    import pandas as pd

    reviews = source_reviews(args.source)
    results: dict = {"machine": {**machine(), "load_average_at_start": os.getloadavg()}}
    results["rows"] = args.rows
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.artifacts_dir or save_default_model(tmp / "artifacts", reviews)
        python = [
            sys.executable,
            "-m",
            "pipeline",
            "predict",
            "--quiet",
            "--artifacts-dir",
            str(model_dir),
            "--model-engine",
            args.model_engine,
        ]
        spark = [*python, "--engine", "spark", "--master", args.master]
        for rows in (args.small, args.rows):
            csv_path, parquet_path = tmp / f"rows_{rows}.csv", tmp / f"rows_{rows}.parquet"
            write_csv(csv_path, reviews, rows)
            pd.read_csv(csv_path, dtype=str, keep_default_na=False).to_parquet(
                parquet_path, row_group_size=100_000
            )
            runs = {
                "in-process": [*python, "--input", str(csv_path), "--column", "review",
                               "--output", str(tmp / f"out_{rows}.csv")],
                "spark csv": [*spark, "--input", str(csv_path), "--column", "review",
                              "--output", str(tmp / f"spark_{rows}.csv")],
                "spark parquet": [*spark, "--input", str(parquet_path), "--column", "review",
                                  "--output", str(tmp / f"spark_{rows}.parquet")],
            }  # fmt: skip
            for name in args.runs:
                command = runs[name]
                r = run(command)
                results[f"{name} {rows}"] = r
                print(
                    f"{name:<13} {rows:>9,} rows: {r['seconds']:7.1f} s, "
                    f"{rows / r['seconds']:7,.0f} rows/s, {r['cpu_seconds']:7.1f} CPU s; "
                    f"peak RSS MiB {r['peak_rss_mib']}",
                    flush=True,
                )
    for name in args.runs:
        small, large = results[f"{name} {args.small}"], results[f"{name} {args.rows}"]
        rate = (args.rows - args.small) / (large["seconds"] - small["seconds"])
        per_cpu = (args.rows - args.small) / (large["cpu_seconds"] - small["cpu_seconds"])
        results[f"{name} rate past start-up"] = round(rate)
        results[f"{name} rows per CPU second past start-up"] = round(per_cpu)
        print(f"{name:<13} past start-up: {rate:7,.0f} rows/s, {per_cpu:7,.0f} rows per CPU s "
              f"(start-up and the first {args.small:,} rows: {small['seconds']:.1f} s, "
              f"{small['cpu_seconds']:.1f} CPU s)")  # fmt: skip
    base = results["in-process rate past start-up"]
    for name in [run for run in args.runs if run != "in-process"]:
        wall = (
            results[f"in-process {args.rows}"]["seconds"]
            / results[f"{name} {args.rows}"]["seconds"]
        )
        cpu = (
            results[f"{name} rows per CPU second past start-up"]
            / results["in-process rows per CPU second past start-up"]
        )
        print(f"{name} against in-process: {wall:.0%} of its rate end to end, "
              f"{results[f'{name} rate past start-up'] / base:.0%} past start-up, "
              f"{cpu:.0%} of its rows per CPU second past start-up")  # fmt: skip
    results["load_average_at_end"] = os.getloadavg()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
