"""Scoring a CSV file: rows/s and peak memory, in memory, streamed, by the CLI and on Spark.

    python benchmarks/score_file.py                       # file, in-memory: 20,000, 200,000 rows
    nice -n 10 python benchmarks/score_file.py --rows 10000 1000000 \
        --runs in-process "spark csv" "spark parquet"     # the CLI against Spark, 1M rows

Each run scores --source's reviews repeated to each of --rows in a fresh process: `file`
(score_file, streamed) and `in-memory` (one predict_proba) timed inside it once the model is
loaded, with its own peak RSS; `in-process` (`predict --input`) and Spark, start to exit, with
the peak RSS and CPU time of each of their processes. The model: the default one, untrained (the
cost is the same whatever the weights), or --artifacts-dir. benchmarks/README.md says more.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common

IN_PROCESS = ("file", "in-memory")
COMMANDS = ("in-process", "spark csv", "spark parquet")
RUNS = IN_PROCESS + COMMANDS
PIPES = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}

# Peak RSS read inside the child (VmHWM: ru_maxrss would carry the parent's peak).
CHILD = """
import json, sys, time
from pathlib import Path

def peak_kib():
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1])

mode, folder, path = sys.argv[1], sys.argv[2], Path(sys.argv[3])
from pipeline.predict import Predictor
from pipeline.score import score_file
predictor = Predictor(folder)
predictor.predict_proba(["배송 빠르고 좋아요"])  # load and trace before timing
before = peak_kib()
start = time.perf_counter()
if mode == "file":
    output = path.with_name("scored.csv")  # 8,192 rows at a time, as the CLI streams
    rows = score_file(predictor, path, output, column="review", quiet=True)["rows"]
else:
    import csv
    with path.open(encoding="utf-8", newline="") as fh:
        reviews = [row[1] for row in list(csv.reader(fh))[1:]]
    rows = len(predictor.predict_proba(reviews))
seconds = time.perf_counter() - start
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_kib() / 1024,
                  "loaded_mib": before / 1024}))
"""


def roles(tree: dict[int, dict], root: int) -> dict[int, str]:
    """What each process of a command's tree is: the CLI, Spark's JVM, the pyspark daemon or a
    Python worker (the daemon forks them, and they keep its command line)."""
    found = {root: "cli"}
    for pid, process in tree.items():
        argv = process["argv"]
        if pid == root or "org.apache.spark.launcher.Main" in argv:
            continue  # a short-lived JVM that only builds the real one's command line
        if argv[0].endswith("java"):
            found[pid] = "jvm"
        elif "pyspark.daemon" in argv:
            daemon_child = "pyspark.daemon" in tree.get(process["parent"], {"argv": []})["argv"]
            found[pid] = "python worker" if daemon_child else "pyspark daemon"
    return found  # the shell scripts between (spark-submit, spark-class) are left out


def run(command: list[str]) -> dict:
    """Wall time, CPU time and per-process peak RSS of a command and every process it starts."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=common.REPO, env=common.child_env(), **PIPES)
    seen: dict[int, tuple[str, dict]] = {}  # each process's role and its latest figures
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            tree = common.processes(child.pid)
            for pid, role in roles(tree, child.pid).items():
                if tree[pid]["peak_kib"]:  # VmHWM only grows (an exec starts it afresh)
                    seen[pid] = (role, tree[pid])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = child.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr.decode()[-3000:]}")
    by_role: dict[str, list[int]] = {}
    for role, process in seen.values():
        by_role.setdefault(role, []).append(round(process["peak_kib"] / 1024))
    # CPU time does not depend on what else the machine runs (a process that ended between two
    # samples misses at most its last 0.2 s)
    cpu = sum(process["cpu_seconds"] for _, process in seen.values())
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": by_role}


def past_start_up(results: dict, name: str, small: int, large: int) -> None:
    """A command's rows/s and rows per CPU second past its start-up (the extra rows over the
    extra seconds), and as a share of the in-process command's."""
    first, last = results[f"{name} {small}"], results[f"{name} {large}"]
    rate = (large - small) / (last["seconds"] - first["seconds"])
    per_cpu = (large - small) / (last["cpu_seconds"] - first["cpu_seconds"])
    out = results[f"{name} past start-up"] = {"rows_per_s": rate, "rows_per_cpu_s": per_cpu}
    if name != "in-process" and "in-process past start-up" in results:
        base = results["in-process past start-up"]
        out["share_end_to_end"] = results[f"in-process {large}"]["seconds"] / last["seconds"]
        out["share_past_start_up"] = rate / base["rows_per_s"]
        out["share_per_cpu_second"] = per_cpu / base["rows_per_cpu_s"]
    print(f"{name} past start-up: " + ", ".join(f"{k} {v:,.2f}" for k, v in out.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=common.DEFAULT_SOURCE)
    parser.add_argument("--rows", type=int, nargs=2, default=[20_000, 200_000], metavar="N")
    parser.add_argument("--runs", nargs="+", default=list(IN_PROCESS), choices=RUNS)
    parser.add_argument("--artifacts-dir", type=Path, help="a trained model (default: untrained)")
    args = parser.parse_args()

    import pandas as pd

    reviews = common.source_reviews(args.source)
    results: dict = {"machine": common.machine(), "runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.artifacts_dir or common.save_default_model(tmp / "artifacts", reviews)
        cli = [sys.executable, "-m", "pipeline", "predict", "--quiet", "--column", "review"]
        cli += ["--artifacts-dir", str(model_dir)]
        for rows in args.rows:
            path = tmp / f"rows_{rows}.csv"  # id, review (repeated as needed), a note column
            review = [reviews[i % len(reviews)] for i in range(rows)]
            note = [f"batch {i // 1000}" for i in range(rows)]
            table = pd.DataFrame({"id": range(rows), "review": review, "note": note})
            table.to_csv(path, index=False, lineterminator="\r\n")  # as csv.writer writes it
            size = path.stat().st_size / 2**20
            if "spark parquet" in args.runs:  # the same rows, every column a string
                table.astype(str).to_parquet(path.with_suffix(".parquet"), row_group_size=100_000)
            for name in args.runs:
                if name in IN_PROCESS:
                    command = [sys.executable, "-c", CHILD, name, str(model_dir), str(path)]
                    done = subprocess.run(command, env=common.child_env(), **PIPES, check=True)
                    r = json.loads(done.stdout.decode().splitlines()[-1])
                else:
                    source = path.with_suffix(".parquet") if "parquet" in name else path
                    output = tmp / f"{name.replace(' ', '_')}_{rows}{source.suffix}"
                    command = [*cli, "--input", str(source), "--output", str(output)]
                    if name.startswith("spark"):
                        command += ["--engine", "spark", "--master", "local[2]"]
                    r = run(command)
                r |= {"rows_per_s": rows / r["seconds"], "file_mib": round(size, 1)}
                results[f"{name} {rows}"] = r
                print(json.dumps({"run": name, "rows": rows, **r}), flush=True)
    for name in args.runs:
        if name in COMMANDS:
            past_start_up(results, name, *args.rows)
    results["load_average_at_end"] = common.machine()["load_average"]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
