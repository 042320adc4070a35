"""Every setting of the pipeline in one frozen dataclass: defaults here, a TOML file and flags on top."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pipeline.errors import PipelineError

OFFICIAL_SOURCE = (
    "https://raw.githubusercontent.com/bab2min/corpus/master/sentiment/naver_shopping.txt"
)
# git blob id of the official naver_shopping.txt (sha1 over "blob <size>\0" + bytes).
OFFICIAL_BLOB_ID = "25afff322fd86ee54d7813acedafe4990d83b18c"


@dataclass(frozen=True)
class Config:
    """All settings; a stage fingerprints the subset it reads (see stages.py)."""

    # where things live
    data_dir: Path = Path("data")
    artifacts_dir: Path = Path("artifacts")

    # download
    source: str = OFFICIAL_SOURCE
    sha256: str | None = None  # checked for non-official sources when given
    download_retries: int = 3
    download_timeout: float = 30.0  # seconds, for connect and for each read
    download_backoff: float = 1.0  # seconds before the first retry, doubling after

    # prepare
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    strict: bool = False  # any malformed line is an error instead of a counted skip
    seed: int = 42

    # tokenize
    maxlen: int = 100
    num_words: int | None = None  # keep only the most frequent characters (legacy Tokenizer rule)
    oov_token: str = "<OOV>"
    padding: str = "pre"  # Keras' pad_sequences defaults
    truncating: str = "pre"

    # model
    embedding_dim: int = 16
    rnn_units: tuple[int, ...] = (64, 32)
    cell: str = "lstm"  # lstm | gru | simplernn
    bidirectional: bool = False
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    mask_padding: bool = True  # the RNN skips padding, so a review's score never depends on it

    # train
    epochs: int = 6
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 2  # epochs without a better validation loss before stopping

    @property
    def raw_path(self) -> Path:
        return self.data_dir / "raw" / "naver_shopping.txt"

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    def split_path(self, split: str) -> Path:
        return self.processed_dir / f"{split}.tsv"

    @property
    def encoded_path(self) -> Path:
        return self.processed_dir / "encoded.npz"

    @property
    def model_path(self) -> Path:
        return self.artifacts_dir / "model.keras"

    @property
    def tokenizer_path(self) -> Path:
        return self.artifacts_dir / "tokenizer.json"

    @property
    def is_official_source(self) -> bool:
        return self.source == OFFICIAL_SOURCE

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for records and the manifest."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = (
                str(value) if isinstance(value, Path)
                else list(value) if isinstance(value, tuple)
                else value
            )
        return out

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **_coerce(changes))


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    """Turn TOML/CLI values into the field types, rejecting unknown names with a clear message."""
    known = {f.name: f for f in fields(Config)}
    out = {}
    for name, value in values.items():
        if name not in known:
            raise PipelineError(
                f"unknown setting {name!r}; known settings: {', '.join(sorted(known))}"
            )
        default = getattr(Config, name, None)
        if isinstance(default, Path):
            value = Path(value)
        elif isinstance(default, tuple) and isinstance(value, (list, tuple)):
            value = tuple(value)
        out[name] = value
    return out


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the TOML file at `path` (if any), then `overrides` whose value is not None."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            with path.open("rb") as fh:
                values.update(tomllib.load(fh))
        except FileNotFoundError:
            raise PipelineError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise PipelineError(f"config file {path} is not valid TOML: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = Config(**_coerce(values))
    _validate(config)
    return config


def _validate(config: Config) -> None:
    if config.cell not in ("lstm", "gru", "simplernn"):
        raise PipelineError(f"cell must be lstm, gru or simplernn, not {config.cell!r}")
    if config.padding not in ("pre", "post") or config.truncating not in ("pre", "post"):
        raise PipelineError("padding and truncating must each be 'pre' or 'post'")
    if config.maxlen < 1 or config.epochs < 1 or config.batch_size < 1:
        raise PipelineError("maxlen, epochs and batch_size must be positive")
    if not config.rnn_units or any(u < 1 for u in config.rnn_units):
        raise PipelineError("rnn_units must list at least one positive layer size")
    if not 0 < config.val_fraction + config.test_fraction < 1:
        raise PipelineError("val_fraction + test_fraction must be between 0 and 1")


__all__ = ["Config", "OFFICIAL_SOURCE", "OFFICIAL_BLOB_ID", "load_config"]
