"""Two workers of `--distribute multi-worker` against one process, on the same data and model.

    python benchmarks/multiworker.py --lines 20000 --config benchmarks/configs/small.toml

Prepares the first --lines lines of --source once (download from the local file, prepare,
tokenize), then trains from copies of that data, each run in fresh processes:

  one process         python -m pipeline train --config CONFIG
  one process, 2x     the same with --batch-size 2 x the config's: the two workers' global batch
  two workers         python -m pipeline train --config CONFIG --distribute multi-worker, twice,
                      each with its own TF_CONFIG on 127.0.0.1 ports and its own copy of the data

and prints, for each, the wall time of the whole command (process start to exit, the slowest
worker for two), the train stage's training seconds, samples per second in its fastest epoch,
and validation accuracy and loss at its best epoch, then one JSON line with everything. Both
workers share this machine's cores, so this measures what the multi-worker machinery costs and
that it trains the same model, not a speed-up (that needs workers on separate machines).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_SOURCE, REPO, child_env, machine

from pipeline.records import read_json


def prepare(source: Path, lines: int, config_path: Path, root: Path):
    """Download (a local slice), prepare and tokenize once; the config they made."""
    from pipeline.config import load_config
    from pipeline.stages import run_pipeline

    slice_path = root / "slice.txt"
    with source.open(encoding="utf-8") as src, slice_path.open("w", encoding="utf-8") as out:
        for _, line in zip(range(lines), src, strict=False):
            out.write(line)
    config = load_config(
        config_path,
        source=str(slice_path),
        data_dir=root / "prepared" / "data",
        artifacts_dir=root / "prepared" / "artifacts",
    )
    run_pipeline(config, names=("download", "prepare", "tokenize"), quiet=True)
    return config


def copy_prepared(config, home: Path) -> tuple[Path, Path]:
    """A fresh data folder and artifacts folder holding only what training reads."""
    shutil.copytree(config.data_dir, home / "data")
    (home / "artifacts").mkdir(parents=True)
    shutil.copy(config.tokenizer_path, home / "artifacts")
    return home / "data", home / "artifacts"


def train_command(config_path: Path, data: Path, artifacts: Path, *flags: str) -> list[str]:
    return [
        *(sys.executable, "-m", "pipeline", "train", "--quiet", "--config", str(config_path)),
        *("--data-dir", str(data), "--artifacts-dir", str(artifacts), *flags),
    ]


def run(commands: list[list[str]], envs: list[dict]) -> float:
    """Start every command at once; seconds until the last one exits (each must succeed)."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for command, env in zip(commands, envs, strict=True)
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"failed:\n{err.decode(errors='replace')[-3000:]}")
    return time.perf_counter() - started


def summary(artifacts: Path, wall: float) -> dict:
    result = read_json(artifacts / "history.json")  # the train stage's history_path
    keys = ("workers", "replicas", "epochs_run", "train_seconds", "train_samples_per_second")
    keys += ("val_accuracy", "val_loss")
    return {"wall_seconds": round(wall, 1), **{k: result[k] for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--lines", type=int, default=20_000, help="first N lines of --source")
    parser.add_argument("--config", type=Path, default=REPO / "benchmarks/configs/small.toml")
    args = parser.parse_args()

    env = child_env()
    results: dict = {
        "machine": machine(),
        "source": str(args.source),
        "lines": args.lines,
        "config": str(args.config),
    }
    with tempfile.TemporaryDirectory(prefix="multiworker-") as tmp:
        root = Path(tmp)
        config = prepare(args.source, args.lines, args.config, root)
        with np.load(config.encoded_path) as encoded:
            results["rows"] = {"train": len(encoded["y_train"]), "val": len(encoded["y_val"])}
        wide = str(config.batch_size * 2)

        data, artifacts = copy_prepared(config, root / "one")
        wall = run([train_command(args.config, data, artifacts)], [env])
        results["one process"] = summary(artifacts, wall)

        data, artifacts = copy_prepared(config, root / "one-wide")
        wall = run([train_command(args.config, data, artifacts, "--batch-size", wide)], [env])
        results["one process, 2x batch"] = summary(artifacts, wall)

        sockets = [socket.socket() for _ in range(2)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
        for s in sockets:
            s.close()
        commands, envs = [], []
        for index in range(2):
            data, artifacts = copy_prepared(config, root / f"worker{index}")
            commands.append(
                train_command(args.config, data, artifacts, "--distribute", "multi-worker")
            )
            task = {"type": "worker", "index": index}
            tf_config = {"cluster": {"worker": addresses}, "task": task}
            envs.append({**env, "TF_CONFIG": json.dumps(tf_config)})
        wall = run(commands, envs)
        results["two workers"] = summary(root / "worker0" / "artifacts", wall)

    rows = results["rows"]
    print(f"source: {args.source}, first {args.lines:,} lines; config {args.config}")
    print(f"{rows['train']:,} training and {rows['val']:,} validation reviews")
    print(
        f"{'run':<24}{'wall s':>8}{'train s':>9}{'samples/s':>11}{'epochs':>8}"
        f"{'val acc':>9}{'val loss':>10}"
    )
    for name in ("one process", "one process, 2x batch", "two workers"):
        r = results[name]
        print(
            f"{name:<24}{r['wall_seconds']:>8.1f}{r['train_seconds']:>9.1f}"
            f"{r['train_samples_per_second']:>11}{r['epochs_run']:>8}"
            f"{r['val_accuracy']:>9.4f}{r['val_loss']:>10.4f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
