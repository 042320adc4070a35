"""What the benchmarks share: the stand-in's path, the notebook's recipe (written once, in
configs/original_recipe.toml), a fresh process's peak memory, and the machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
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


def scratch_artifacts(artifacts_dir: Path, pretrained_from: Path | None = None) -> Path:
    """A new artifacts folder holding the run's tokenizer (and a pretrained encoder to reuse)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-artifacts-"))
    shutil.copy(Path(artifacts_dir) / "tokenizer.json", folder / "tokenizer.json")
    if pretrained_from is not None:
        shutil.copy(Path(pretrained_from) / "pretrained.keras", folder / "pretrained.keras")
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


def save_default_model(folder: Path, texts: list[str]) -> Path:
    """`folder` holding what Predictor loads: the default config's model, untrained (scoring
    costs the same whatever the weights), and a tokenizer fit on the texts, cleaned."""
    import keras

    from pipeline.cleaning import clean_texts
    from pipeline.config import Config
    from pipeline.model import build_model
    from pipeline.tokenizer import CharTokenizer
    from pipeline.train import for_inference

    config = Config()
    tokenizer = CharTokenizer.for_config(config).fit(clean_texts(texts))
    keras.utils.set_random_seed(config.seed)
    jamo = tokenizer.jamo_table() if config.jamo_features else None
    model = build_model(config, tokenizer.vocab_size, 100, jamo)
    folder.mkdir(parents=True, exist_ok=True)
    for_inference(model).save(folder / "model.keras")
    tokenizer.save(folder / "tokenizer.json")
    return folder
