"""What the benchmarks share: the stand-in's path, the notebook's recipe (written once, in
configs/original_recipe.toml), a fresh process's peak memory, and the machine they ran on."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "nsmc_reviews_200k.txt"
RECIPE_PATH = REPO / "benchmarks" / "configs" / "original_recipe.toml"

with RECIPE_PATH.open("rb") as fh:
    NOTEBOOK_RECIPE: dict = tomllib.load(fh)  # every setting of the notebook, training included
# The notebook's model alone: a benchmark trains it with the pipeline's loop and batches
# (masked, length-bucketed) unless it asks for the whole recipe.
_LOOP = ("mask_padding", "batch_size", "epochs", "learning_rate", "lr_schedule", "pretrain")
NOTEBOOK_MODEL = {k: v for k, v in NOTEBOOK_RECIPE.items() if k not in _LOOP}


def peak_rss_kib(pid: int | str = "self") -> int | None:
    """A process's peak RSS in KiB (VmHWM), None if it is gone.

    Not ru_maxrss: on Linux a child keeps its parent's high-water mark across fork + exec, so
    every child would report the benchmark's own peak. VmHWM is the process's own.
    """
    try:
        with open(f"/proc/{pid}/status") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        return None


def child_env() -> dict[str, str]:
    """The environment of a benchmark's child process: this checkout first, TensorFlow quiet."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}


def machine() -> dict:
    """Where the figures were measured."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
    }


def source_reviews(path: Path) -> list[str]:
    """The review of every `RATING<TAB>REVIEW` line, raw (as users would send it)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in lines if "\t" in line]
