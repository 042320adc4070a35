"""A character tokenizer that builds the same index as Keras' legacy `Tokenizer(char_level=True)`.

Index 0 is padding, 1 the OOV token, then characters by descending frequency with ties in
first-seen order. Encoding and padding are vectorized with NumPy: no per-character Python loop.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.files import atomic_path, write_json_atomic

FORMAT = "char-tokenizer"
FORMAT_VERSION = 1
OOV_INDEX = 1
UNITS = ("char", "jamo")
# The splits the tokenize stage reads and encodes: evaluate scores test as text, as users do.
ENCODED_SPLITS = ("train", "val")


def _code_points(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All texts' code points in one array, and each text's length in code points."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    # surrogatepass: a lone surrogate (possible in a Python str) is a code point like any other
    codes = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return codes, lengths


class CharTokenizer:
    """Fit on texts, then encode any texts into a padded (n, maxlen) int32 matrix."""

    def __init__(
        self,
        maxlen: int = 100,
        oov_token: str = "<OOV>",
        num_words: int | None = None,
        lower: bool = True,
        padding: str = "pre",
        truncating: str = "pre",
        unit: str = "char",
    ) -> None:
        if padding not in ("pre", "post") or truncating not in ("pre", "post"):
            raise ValueError("padding and truncating must be 'pre' or 'post'")
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}")
        self.maxlen = maxlen
        self.oov_token = oov_token
        self.num_words = num_words
        self.lower = lower
        self.padding = padding
        self.truncating = truncating
        self.unit = unit
        self.word_index_: dict[str, int] = {}

    @classmethod
    def for_config(cls, config: Config) -> CharTokenizer:
        """An unfitted tokenizer with every tokenize setting of `config`."""
        return cls(
            maxlen=config.maxlen,
            oov_token=config.oov_token,
            num_words=config.num_words,
            padding=config.padding,
            truncating=config.truncating,
            unit=config.token_unit,
        )

    # -- learning -----------------------------------------------------------------------------
    def fit(self, texts: Sequence[str]) -> CharTokenizer:
        """Index characters by descending count, ties by first appearance (the legacy rule)."""
        import pandas as pd  # its hash-based unique keeps order of appearance, in linear time

        codes, _ = _code_points(self._normalize(texts))
        chars = pd.unique(codes)  # in order of first appearance
        counts = pd.Series(codes).value_counts(sort=False).reindex(chars).to_numpy()
        order = np.argsort(-counts, kind="stable")  # stable: ties keep first-seen order
        self.word_index_ = {self.oov_token: OOV_INDEX}
        for rank, code in enumerate(chars[order], start=OOV_INDEX + 1):
            self.word_index_[chr(code)] = rank
        self._build_lookup()
        return self

    @property
    def vocab_size(self) -> int:
        """Rows the embedding needs: every index the encoder can emit, plus padding."""
        self._check_fitted()
        size = len(self.word_index_) + 1
        return min(size, self.num_words) if self.num_words else size

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode, truncate and pad to (n, maxlen), as texts_to_sequences + pad_sequences do."""
        self._check_fitted()
        codes, lengths = _code_points(self._normalize(texts))
        kept = np.minimum(lengths, self.maxlen)
        starts = np.cumsum(lengths) - lengths  # each text's first code in `codes`
        if self.truncating == "pre":  # keep the end of an over-long text
            starts += lengths - kept
        first_col = self.maxlen - kept if self.padding == "pre" else np.zeros_like(kept)
        # The kept codes, text after text: each text's run starts at its start in `codes` and
        # lands at its first cell in the flat output; only those codes are looked up.
        total = int(kept.sum())
        run = np.arange(total) - np.repeat(np.cumsum(kept) - kept, kept)  # place within its text
        source = np.repeat(starts, kept) + run
        target = np.repeat(np.arange(len(texts)) * self.maxlen + first_col, kept) + run
        out = np.zeros(len(texts) * self.maxlen, dtype=np.int32)
        out[target] = self._lookup(codes[source])
        return out.reshape(len(texts), self.maxlen)

    def kept_span(self, text: str) -> tuple[int, int]:
        """(start, end) of the characters of a cleaned text that encode keeps, any part of.

        maxlen counts ids, not characters: a syllable is three jamo ids with unit="jamo".
        """
        order = range(len(text) - 1, -1, -1) if self.truncating == "pre" else range(len(text))
        ids = count = 0
        for i in order:
            if ids >= self.maxlen:
                break
            ids += len(self._normalize([text[i]])[0])
            count += 1
        return (len(text) - count, len(text)) if self.truncating == "pre" else (0, count)

    def jamo_table(self) -> tuple[np.ndarray, int]:
        """(vocab_size, 3) jamo ids of each index's character (0 = none), and the jamo count.

        Syllables split into their initial, medial and final jamo; any other character (a
        standalone jamo, a digit, the space, the OOV token) is a jamo of its own.
        """
        self._check_fitted()
        jamo_ids: dict[str, int] = {}
        table = np.zeros((self.vocab_size, 3), dtype=np.int32)
        for token, index in self.word_index_.items():
            if index >= self.vocab_size:
                continue
            parts = unicodedata.normalize("NFD", token) if len(token) == 1 else ""
            parts = list(parts) if 1 <= len(parts) <= 3 else [token]
            for slot, part in enumerate(parts):
                table[index, slot] = jamo_ids.setdefault(part, len(jamo_ids) + 1)
        return table, len(jamo_ids)

    def _normalize(self, texts: Sequence[str]) -> list[str]:
        texts = [t.lower() for t in texts] if self.lower else list(texts)
        if self.unit == "jamo":
            # NFD splits each Hangul syllable into its initial, medial and (optional) final jamo,
            # so rare syllables share what they have in common with frequent ones.
            texts = [unicodedata.normalize("NFD", t) for t in texts]
        return texts

    def lookup_table(self) -> np.ndarray:
        """Code point -> index, OOV for characters not indexed or at or past num_words.

        The one table: encode reads it, and the export (pipeline/export.py) embeds it.
        """
        self._check_fitted()
        singles = {ord(ch): i for ch, i in self.word_index_.items() if len(ch) == 1}
        table = np.full(max(singles, default=0) + 1, OOV_INDEX, dtype=np.int32)
        table[list(singles)] = list(singles.values())
        if self.num_words:  # the legacy rule: indices at or past num_words become OOV
            table[table >= self.num_words] = OOV_INDEX
        return table

    def _build_lookup(self) -> None:
        self._table = self.lookup_table()  # one array read per character when encoding

    def _lookup(self, codes: np.ndarray) -> np.ndarray:
        inside = codes < len(self._table)
        return np.where(inside, self._table[np.where(inside, codes, 0)], OOV_INDEX).astype(np.int32)

    def _check_fitted(self) -> None:
        if not self.word_index_:
            raise PipelineError("the tokenizer is not fitted; call fit() or load a saved one")

    # -- persistence --------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "maxlen": self.maxlen,
            "oov_token": self.oov_token,
            "num_words": self.num_words,
            "lower": self.lower,
            "padding": self.padding,
            "truncating": self.truncating,
            "unit": self.unit,
            "word_index": self.word_index_,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CharTokenizer:
        _validate(config)
        tok = cls(
            maxlen=config["maxlen"],
            oov_token=config["oov_token"],
            num_words=config["num_words"],
            lower=config["lower"],
            padding=config["padding"],
            truncating=config["truncating"],
            unit=config.get("unit", "char"),
        )
        tok.word_index_ = dict(config["word_index"])
        tok._build_lookup()
        return tok

    def save(self, path: Path) -> None:
        self._check_fitted()
        write_json_atomic(Path(path), self.get_config())

    @classmethod
    def load(cls, path: Path) -> CharTokenizer:
        path = Path(path)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PipelineError(
                f"{path} is missing; run `python -m pipeline tokenize` (or `run`) first"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PipelineError(f"{path} is not a readable tokenizer file: {exc}") from None
        try:
            return cls.from_config(config)
        except PipelineError as exc:
            raise PipelineError(f"{path}: {exc}") from None


def _validate(config: Any) -> None:
    """Refuse anything but a tokenizer file this version can read, with the reason."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PipelineError(f"not a {FORMAT} file")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise PipelineError(
            f"tokenizer format version {version!r} is not supported (this code reads version "
            f"{FORMAT_VERSION}); retrain with `python -m pipeline run --force`"
        )
    expected = {
        "maxlen": int,
        "oov_token": str,
        "lower": bool,
        "padding": str,
        "truncating": str,
        "word_index": dict,
    }
    for key, kind in expected.items():
        if type(config.get(key)) is not kind:  # exact: JSON true must not pass for an int
            raise PipelineError(f"tokenizer setting {key!r} is missing or not a {kind.__name__}")
    num_words = config.get("num_words")
    if "num_words" not in config or (num_words is not None and type(num_words) is not int):
        raise PipelineError("tokenizer setting 'num_words' must be an integer or null")
    if config["padding"] not in ("pre", "post") or config["truncating"] not in ("pre", "post"):
        raise PipelineError("tokenizer padding and truncating must be 'pre' or 'post'")
    if config.get("unit", "char") not in UNITS:
        raise PipelineError(f"tokenizer unit must be one of {', '.join(UNITS)}")
    index = config["word_index"]
    if index.get(config["oov_token"]) != OOV_INDEX:
        raise PipelineError("tokenizer word_index must map the OOV token to 1")
    values = sorted(index.values()) if all(type(v) is int for v in index.values()) else None
    if values != list(range(1, len(index) + 1)):
        raise PipelineError("tokenizer word_index must number its entries 1, 2, 3, ... once each")
    if any(len(ch) != 1 for ch in index if ch != config["oov_token"]):
        raise PipelineError("tokenizer word_index keys must be single characters")


def trim_padding(batch: np.ndarray, length: int, padding: str) -> np.ndarray:
    """Cut a padded batch to `length` columns, keeping the side the text is on (at least 1)."""
    length = max(length, 1)
    return batch[:, -length:] if padding == "pre" else batch[:, :length]


def tokenize(config: Config, quiet: bool = False) -> dict:
    """Run the stage: fit on the training split only, encode it and validation.

    The test split is not encoded: evaluate scores its texts through Predictor, as users do.
    """
    from pipeline.prepare import read_split

    splits = {name: read_split(config.split_path(name)) for name in ENCODED_SPLITS}
    tokenizer = CharTokenizer.for_config(config).fit(splits["train"]["text"].tolist())
    arrays = {}
    for name, frame in splits.items():
        arrays[f"x_{name}"] = tokenizer.encode(frame["text"].tolist())
        arrays[f"y_{name}"] = frame["label"].to_numpy(dtype=np.int8)
    with atomic_path(config.encoded_path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    tokenizer.save(config.tokenizer_path)
    lengths = np.count_nonzero(arrays["x_train"], axis=1)
    summary = {
        "vocab_size": tokenizer.vocab_size,
        "mean_length": round(float(lengths.mean()), 1),
        "share_at_maxlen": round(float((lengths == config.maxlen).mean()), 4),
    }
    if not quiet:
        print(
            f"tokenize: {summary['vocab_size']:,} indices, mean review length "
            f"{summary['mean_length']} characters"
        )
    return summary
