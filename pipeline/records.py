"""Reading what stages recorded: `<folder>/stages/<stage>.json`, and any small JSON file.

Light on purpose (no stage code, no TensorFlow): the predictor and the service read records too.
"""

from __future__ import annotations

import json
from pathlib import Path


def record_path(folder: Path, stage: str) -> Path:
    """Where `stage` keeps its record inside its home folder (data_dir or artifacts_dir)."""
    return Path(folder) / "stages" / f"{stage}.json"


def read_json(path: Path) -> dict:
    """A JSON object from a file, or {} if it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return {}
    return data if isinstance(data, dict) else {}


def read_record(folder: Path, stage: str) -> dict | None:
    """The record `stage` left in `folder`, or None if there is none (or it is unreadable)."""
    return read_json(record_path(folder, stage)) or None
