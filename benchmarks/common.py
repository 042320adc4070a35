"""What the benchmarks share: the data's paths, the notebook's recipe (written once, in
configs/original_recipe.toml), what processes use (read from /proc), timing and the machine."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import sys
import time
from importlib import metadata
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_SOURCE = DATA / "nsmc_reviews_200k.txt"

with (REPO / "benchmarks" / "configs" / "original_recipe.toml").open("rb") as fh:
    NOTEBOOK_RECIPE: dict = tomllib.load(fh)  # every setting of the notebook, training included
# The notebook's model alone: a benchmark trains it with the pipeline's loop and batches
# (masked, length-bucketed) unless it asks for the whole recipe.
_LOOP = ("mask_padding", "batch_size", "epochs", "learning_rate", "lr_schedule", "pretrain")
NOTEBOOK_MODEL = {k: v for k, v in NOTEBOOK_RECIPE.items() if k not in _LOOP}


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:  # the process is gone
        return ""


def processes(root: int) -> dict[int, dict]:
    """`root` and every process below it, from /proc: its parent, command line, RSS and peak
    RSS in KiB, and CPU seconds of all its threads so far. The peak, VmHWM, is the process's
    own; ru_maxrss is not (a child keeps its parent's across fork + exec)."""
    stats = {int(pid): _read(f"/proc/{pid}/stat") for pid in os.listdir("/proc") if pid.isdigit()}
    fields = {pid: stat.rsplit(")", 1)[1].split() for pid, stat in stats.items() if stat}
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        status = dict(line.split(":", 1) for line in _read(f"/proc/{pid}/status").splitlines())
        tree[pid] = {
            "parent": int(fields[pid][1]) if pid in fields else None,
            "argv": _read(f"/proc/{pid}/cmdline").split("\0"),
            "rss_kib": int(status.get("VmRSS", "0 kB").split()[0]),
            "peak_kib": int(status.get("VmHWM", "0 kB").split()[0]),
            "cpu_seconds": sum(map(int, fields.get(pid, [0] * 13)[11:13]))
            / os.sysconf("SC_CLK_TCK"),
        }
        todo.extend(child for child, f in fields.items() if int(f[1]) == pid)
    return tree


def child_env(code: Path = REPO) -> dict[str, str]:
    """The environment of a benchmark's child process: `code`'s package first, TF quiet."""
    path = os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}


def free_ports(count: int = 1) -> list[int]:
    """`count` different 127.0.0.1 ports nothing listens on now (the OS's picks)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def machine() -> dict:
    """Where the figures were measured, with which libraries, and how busy the machine was."""
    found = {"platform": platform.platform(), "python": platform.python_version()}
    for package in ("tensorflow", "keras", "onnxruntime", "pyspark"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return {**found, "cpus": len(os.sched_getaffinity(0)), "load_average": os.getloadavg()}


def best_of(repeats: int, fn, *args) -> tuple[float, object]:
    """Seconds of the fastest of `repeats` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - started)
    return min(times), result


def source_reviews(path: Path) -> list[str]:
    """The review of every `RATING<TAB>REVIEW` line, raw (as users would send it)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in lines if "\t" in line]


def save_default_model(folder: Path, texts: list[str]) -> Path:
    """`folder` holding what Predictor loads: the default config's model, untrained (scoring
    costs the same whatever the weights), and a tokenizer fit on the texts, cleaned."""
    import keras

    from pipeline.cleaning import clean_texts
    from pipeline.config import Config
    from pipeline.model import build_model
    from pipeline.tokenizer import CharTokenizer

    config = Config()
    tokenizer = CharTokenizer.for_config(config).fit(clean_texts(texts))
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, tokenizer.vocab_size, 100, tokenizer.jamo_table())
    return save_model(folder, model, tokenizer)


def save_model(folder: Path, model, tokenizer) -> Path:
    """`folder` holding what Predictor loads: the model as training saves it, and its tokenizer."""
    from pipeline.train import for_inference

    folder.mkdir(parents=True, exist_ok=True)
    for_inference(model).save(folder / "model.keras")
    tokenizer.save(folder / "tokenizer.json")
    return folder


def parse_settings(items: list[str]) -> dict:
    """KEY=VALUE pairs; a value is JSON (numbers, true, lists) or else a plain string."""
    settings = {}
    for key, value in (item.split("=", 1) for item in items):
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings
