"""Two workers of `--distribute multi-worker` against one process, on the same data and model.

    python benchmarks/multiworker.py --lines 20000 --config benchmarks/configs/small.toml

Prepares the first --lines lines of --source once, then runs `python -m pipeline train --config
CONFIG` from fresh copies of that data three ways: one process; one process with twice the
config's batch (the two workers' global batch); and two `--distribute multi-worker` workers, each
with its TF_CONFIG on 127.0.0.1 ports. One JSON line each: the wall time (the slower worker for
two), the train stage's seconds and samples/s (fastest epoch), validation accuracy and loss. The
workers share this machine's cores: this measures what the machinery costs and that it trains
the same model, not a speed-up.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_SOURCE, REPO, child_env, free_ports, machine

from pipeline.config import load_config
from pipeline.records import read_json
from pipeline.stages import run_pipeline


def train(config, config_path: Path, home: Path, workers: int, *flags: str) -> dict:
    """`workers` processes of `python -m pipeline train` at once, each on its own copy of the
    prepared data; the first one's figures, and the seconds until the last one has exited."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    runs = []
    for index in range(workers):
        data, artifacts = home / f"{index}" / "data", home / f"{index}" / "artifacts"
        shutil.copytree(config.data_dir, data)  # only what training reads
        artifacts.mkdir()
        shutil.copy(config.tokenizer_path, artifacts)
        command = [sys.executable, "-m", "pipeline", "train", "--quiet", "--config", config_path]
        command += ["--data-dir", data, "--artifacts-dir", artifacts, *flags]
        cluster = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {**child_env(), "TF_CONFIG": json.dumps(cluster)} if workers > 1 else child_env()
        runs.append((command, env))
    started = time.perf_counter()
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for command, env in runs
    ]
    for process in processes:
        _, err = process.communicate()
        if process.returncode:
            sys.exit(f"failed:\n{err.decode(errors='replace')[-3000:]}")
    wall = time.perf_counter() - started
    result = read_json(home / "0" / "artifacts" / "history.json")  # the train stage's history
    keys = ("workers", "replicas", "epochs_run", "train_seconds", "train_samples_per_second")
    keys += ("val_accuracy", "val_loss")
    return {"wall_seconds": round(wall, 1), **{k: result[k] for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--lines", type=int, default=20_000, help="first N lines of --source")
    parser.add_argument("--config", type=Path, default=REPO / "benchmarks/configs/small.toml")
    args = parser.parse_args()

    results: dict = {"machine": machine(), "source": str(args.source), "lines": args.lines}
    with tempfile.TemporaryDirectory(prefix="multiworker-") as tmp:
        root = Path(tmp)
        slice_path = root / "slice.txt"  # the first --lines lines, downloaded from this file
        with args.source.open(encoding="utf-8") as src:
            slice_path.write_text("".join(itertools.islice(src, args.lines)), encoding="utf-8")
        folders = {"data_dir": root / "data", "artifacts_dir": root / "artifacts"}
        config = load_config(args.config, source=str(slice_path), **folders)
        run_pipeline(config, names=("download", "prepare", "tokenize"), quiet=True)
        with np.load(config.encoded_path) as encoded:
            results["rows"] = {"train": len(encoded["y_train"]), "val": len(encoded["y_val"])}
        for name, workers, flags in (
            ("one process", 1, ()),
            ("one process, 2x batch", 1, ("--batch-size", str(config.batch_size * 2))),
            ("two workers", 2, ("--distribute", "multi-worker")),
        ):
            results[name] = train(config, args.config, root / name, workers, *flags)
            print(json.dumps({"run": name, **results[name]}), flush=True)

    print(json.dumps(results))


if __name__ == "__main__":
    main()
