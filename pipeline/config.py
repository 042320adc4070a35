"""Every setting in one frozen dataclass: defaults here, then a TOML file, then flags."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
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


# The settings of the character encoder change what pretraining learns and what training builds.
ENCODER = ("pretrain", "train")


def setting(default: Any, *stages: str) -> Any:
    """A Config field that names the stages whose output it changes (none: runtime only).

    Each stage's fingerprint is derived from these names, so a new setting cannot be left out
    of the stage it changes: a field declared without setting() is refused at import.
    """
    return field(default=default, metadata={"stages": stages})


@dataclass(frozen=True)
class Config:
    """All settings; each names the stages it changes, which fingerprint it (see stages.py)."""

    # where things live
    data_dir: Path = setting(Path("data"))
    artifacts_dir: Path = setting(Path("artifacts"))

    # download
    source: str = setting(OFFICIAL_SOURCE, "download")
    sha256: str | None = setting(None, "download")  # checked for non-official sources
    download_retries: int = setting(3)
    download_timeout: float = setting(30.0)  # seconds, for connect and for each read
    download_backoff: float = setting(1.0)  # seconds before the first retry, doubling after

    # the source's layout: RATING<TAB>REVIEW lines, or a table with a text column and either a
    # 1-5 rating or a 0/1 label column. The download checks a source by its layout.
    source_format: str = setting("auto", "download", "prepare")  # auto|ratings|csv|tsv|jsonl
    text_column: str | None = setting(None, "download", "prepare")
    rating_column: str | None = setting(None, "prepare")
    label_column: str | None = setting(None, "prepare")
    encoding: str = setting("utf-8", "prepare")  # the source's (UTF-8 reads with or without BOM)

    # prepare
    val_fraction: float = setting(0.1, "prepare")
    test_fraction: float = setting(0.1, "prepare")
    strict: bool = setting(False, "prepare")  # a malformed line is an error, not a counted skip
    seed: int = setting(42, "prepare", *ENCODER)
    # the share of the training split's labels kept (stratified, seeded); the rest of its
    # reviews are written without labels to train_unlabeled.txt, for self-training: what more
    # ratings would buy, measured on your own data
    label_fraction: float = setting(1.0, "prepare")

    # tokenize
    maxlen: int = setting(100, "tokenize")
    num_words: int | None = setting(None, "tokenize")  # keep only the most frequent characters
    oov_token: str = setting("<OOV>", "tokenize")
    token_unit: str = setting("char", "tokenize")  # char | jamo (syllables split into jamo)
    padding: str = setting("pre", "tokenize")  # Keras' pad_sequences defaults
    truncating: str = setting("pre", "tokenize")

    # baseline (TF-IDF + logistic regression)
    # inverse regularization strengths to try; the best on validation is the bar the model faces
    baseline_c: tuple[float, ...] = setting((1.0, 3.0, 10.0), "baseline", "train")

    # model
    # Defaults chosen on validation accuracy within a 10-minute full run on 2 cores
    # (benchmarks/search.py, benchmarks/RESULTS.md); the notebook's recipe is
    # benchmarks/configs/original_recipe.toml.
    embedding_dim: int = setting(64, *ENCODER)
    rnn_units: tuple[int, ...] = setting((64, 32), *ENCODER)
    jamo_features: int = setting(32, *ENCODER)  # > 0 adds each character's summed jamo embeddings
    cell: str = setting("lstm", *ENCODER)  # lstm | gru | simplernn
    bidirectional: bool = setting(True, *ENCODER)
    conv_filters: int = setting(128, *ENCODER)  # > 0 puts a character n-gram convolution first
    conv_kernel: int = setting(3, *ENCODER)
    conv_pool: int = setting(2, *ENCODER)  # > 1 max-pools the convolution: fewer RNN steps
    pooling: bool = setting(True, "train")  # max and mean over all steps of the last RNN layer
    spatial_dropout: float = setting(0.15, *ENCODER)  # drops whole embedding channels
    dropout: float = setting(0.0, *ENCODER)  # on each RNN layer's inputs
    recurrent_dropout: float = setting(0.0, *ENCODER)
    head_dropout: float = setting(0.3, "train")  # before the output layer
    mask_padding: bool = setting(True, *ENCODER)  # the RNN skips padding: scores never depend on it
    # A bag of hashed character n-grams beside the RNN (fastText-style): orders 1..ngram_order,
    # `ngram_buckets` table rows per order above 1, averaged into an `ngram_dim` vector that
    # joins the RNN's features before the output layer. 0 turns it off.
    ngram_order: int = setting(4, "train")
    ngram_buckets: int = setting(2**18, "train")
    ngram_dim: int = setting(32, "train")
    ngram_dropout: float = setting(0.3, "train")  # each n-gram dropped in training
    # With the bag on, the RNN and the bag also each answer alone in training, their losses
    # weighted by this beside the model's (0: off; nothing changes at prediction time).
    branch_loss_weight: float = setting(0.3, "train")

    # pretrain: self-supervised training of the encoder (embeddings, convolution, RNN) on the
    # training split's texts and any `unlabeled` files, before `train` fine-tunes it
    # mlm: masked-character prediction (BERT-style) | rtd: replaced-character detection
    # (ELECTRA-style, with characters drawn from the training split's frequencies) | none.
    # none by measurement: neither objective beat training from scratch on validation
    # (benchmarks/RESULTS.md, "Pretraining")
    pretrain: str = setting("none", *ENCODER)
    # files of unlabeled reviews: one a line, or a CSV/TSV/JSONL column (unlabeled_column), read
    # like `predict --input`; reviews also in validation or test are left out. Self-training
    # reads them too: the files are train's inputs then (their checksums make it stale), and
    # how they are read is one of its settings
    unlabeled: tuple[str, ...] = setting((), "pretrain")
    unlabeled_column: str | None = setting(None, "pretrain", "train")
    unlabeled_encoding: str = setting("utf-8", "pretrain", "train")
    pretrain_epochs: int = setting(4, "pretrain")
    pretrain_batch_size: int = setting(256, "pretrain")
    pretrain_learning_rate: float = setting(2e-3, "pretrain")
    mask_rate: float = setting(0.15, "pretrain")  # characters hidden (mlm) or replaced (rtd)

    # train
    epochs: int = setting(6, "train")
    batch_size: int = setting(256, "train")
    learning_rate: float = setting(2e-3, "train")
    lr_schedule: str = setting("cosine", "train")  # constant | cosine (to 0 over all epochs)
    warmup_epochs: float = setting(0.0, "train")  # the rate rises linearly from 0 this long first
    # the pretrained encoder's learning rate, as a share of learning_rate (1: the same)
    pretrained_lr_scale: float = setting(1.0, "train")
    label_smoothing: float = setting(0.0, "train")
    patience: int = setting(2, "train")  # epochs without a better validation loss before stopping
    # none | mirrored (local GPUs or CPUs) | multi-worker (TF_CONFIG); the global batch is
    # batch_size times the replicas, so it changes the model
    distribute: str = setting("none", "train")
    # self-training, after the teacher is trained (pipeline/selftrain.py): rounds of a noisy
    # student learning from the rated reviews and the teacher's calibrated probabilities on the
    # unlabeled ones; it becomes the model only if it beats the teacher on validation. 0: off,
    # by measurement (benchmarks/RESULTS.md, "Self-training")
    self_train_rounds: int = setting(0, "train")
    # a teacher-labelled review's loss against a rated one's; each is tried, the best student on
    # validation accuracy kept
    self_train_weight: tuple[float, ...] = setting((1.0,), "train")
    # the student's noise: this share of a teacher-labelled review's characters read as unknown,
    # and its spatial and head dropout raised by as much (to at most 0.5)
    self_train_noise: float = setting(0.1, "train")
    # the TF-IDF baseline (fitted on the same rated reviews) teaches beside the model, its share
    # of the teacher chosen on validation (0: the model alone): with few labels it is the
    # stronger teacher
    self_train_baseline: bool = setting(True, "train")
    # seconds a multi-worker run waits for every worker of TF_CONFIG to start
    cluster_timeout: float = setting(300.0)

    # scoring (runtime only): auto runs model.onnx on ONNX Runtime when it is the model the last
    # training wrote, else model.keras on Keras; onnx or keras insist
    model_engine: str = setting("auto")

    # serve (runtime only: limits and batching of `python -m pipeline serve`)
    serve_max_reviews: int = setting(1000)  # reviews in one /predict request (more: 413)
    serve_max_explain_reviews: int = setting(20)  # each costs about maxlen model rows
    serve_max_body_bytes: int = setting(1 << 20)  # request body size (more: 413)
    serve_max_batch: int = setting(512)  # reviews gathered into one model batch
    serve_batch_wait_ms: float = setting(2.0)  # how long a batch waits for more requests
    # Threads per model call in the service (ONNX Runtime's or TensorFlow's; 0: the engine's
    # default). One leaves the other cores to HTTP; small batches gain little from more.
    serve_model_threads: int = setting(1)
    # worker processes of the service, each with its own model (0: one per core)
    serve_workers: int = setting(0)

    def __post_init__(self) -> None:
        # Accept what TOML, flags and Python callers naturally pass: str paths, list sizes.
        for f in fields(self):
            value, default = getattr(self, f.name), getattr(Config, f.name, None)
            if isinstance(default, Path) and not isinstance(value, Path):
                object.__setattr__(self, f.name, Path(value))
            elif isinstance(default, tuple) and isinstance(value, list | int | float | str):
                # a TOML list, or a single value where a list is accepted
                value = tuple(value) if isinstance(value, list) else (value,)
                object.__setattr__(self, f.name, value)

    @property
    def raw_path(self) -> Path:
        return self.data_dir / "raw" / "naver_shopping.txt"

    @property
    def source_layout(self) -> str:
        """'ratings', 'csv', 'tsv' or 'jsonl': how the source is read (see tables.source_layout)."""
        from pipeline.tables import source_layout

        return source_layout(self.source, self.source_format, self.text_column)

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    def split_path(self, split: str) -> Path:
        return self.processed_dir / f"{split}.tsv"

    @property
    def train_unlabeled_path(self) -> Path:
        """The training split's reviews whose labels label_fraction left out, one a line."""
        return self.processed_dir / "train_unlabeled.txt"

    @property
    def encoded_path(self) -> Path:
        return self.processed_dir / "encoded.npz"

    @property
    def model_path(self) -> Path:
        return self.artifacts_dir / "model.keras"

    @property
    def onnx_path(self) -> Path:
        return self.artifacts_dir / "model.onnx"

    @property
    def onnx_weights_path(self) -> Path:
        """model.onnx's weights (ONNX external data), which ONNX Runtime maps from disk."""
        return self.artifacts_dir / "model.onnx.data"

    @property
    def tokenizer_path(self) -> Path:
        return self.artifacts_dir / "tokenizer.json"

    @property
    def pretrained_path(self) -> Path:
        return self.artifacts_dir / "pretrained.keras"

    # Every other file a stage writes, named once: stages.py declares them from these and the
    # stage that writes them (and any that reads them) uses the same property.
    @property
    def baseline_path(self) -> Path:
        return self.artifacts_dir / "baseline.json"

    @property
    def pretrain_history_path(self) -> Path:
        return self.artifacts_dir / "pretrain_history.json"

    @property
    def pretrain_curves_path(self) -> Path:
        return self.artifacts_dir / "pretrain_curves.png"

    @property
    def self_training_path(self) -> Path:
        return self.artifacts_dir / "self_training.json"

    @property
    def self_training_curves_path(self) -> Path:
        return self.artifacts_dir / "self_training_curves.png"

    @property
    def history_path(self) -> Path:
        return self.artifacts_dir / "history.json"

    @property
    def training_curves_path(self) -> Path:
        return self.artifacts_dir / "training_curves.png"

    @property
    def metrics_path(self) -> Path:
        return self.artifacts_dir / "metrics.json"

    @property
    def confusion_matrix_path(self) -> Path:
        return self.artifacts_dir / "confusion_matrix.png"

    @property
    def reliability_path(self) -> Path:
        return self.artifacts_dir / "reliability.png"

    @property
    def manifest_path(self) -> Path:
        return self.artifacts_dir / "manifest.json"

    @property
    def export_record_path(self) -> Path:
        """The last `export`'s record (not a stage: it keeps no fingerprint)."""
        return self.artifacts_dir / "export.json"

    @property
    def is_official_source(self) -> bool:
        return self.source == OFFICIAL_SOURCE

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for records and the manifest."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = (
                str(value)
                if isinstance(value, Path)
                else list(value)
                if isinstance(value, tuple)
                else value
            )
        return out

    def replace(self, **changes: Any) -> Config:
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def settings_of(cls, stage: str) -> tuple[str, ...]:
        """The names of the settings that change `stage`'s output, in field order."""
        return tuple(f.name for f in fields(cls) if stage in f.metadata["stages"])


def _check_every_field_names_its_stages(cls: type = Config) -> None:
    missing = [f.name for f in fields(cls) if "stages" not in f.metadata]
    if missing:
        raise TypeError(f"Config fields {missing} must be declared with setting(default, *stages)")


_check_every_field_names_its_stages()


def _check_names(values: dict[str, Any]) -> None:
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PipelineError(
            f"unknown setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}"
        )


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
    _check_names(values)
    config = Config(**values)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    if config.cell not in ("lstm", "gru", "simplernn"):
        raise PipelineError(f"cell must be lstm, gru or simplernn, not {config.cell!r}")
    if config.distribute not in ("none", "mirrored", "multi-worker"):
        raise PipelineError(
            f"distribute must be none, mirrored or multi-worker, not {config.distribute!r}"
        )
    if config.model_engine not in ("auto", "onnx", "keras"):
        raise PipelineError(
            f"model_engine must be auto, onnx or keras, not {config.model_engine!r}"
        )
    if config.lr_schedule not in ("constant", "cosine"):
        raise PipelineError(f"lr_schedule must be constant or cosine, not {config.lr_schedule!r}")
    if config.conv_kernel % 2 == 0:
        raise PipelineError("conv_kernel must be odd, so the convolution is centred")
    if config.pretrain not in ("none", "mlm", "rtd"):
        raise PipelineError(f"pretrain must be none, mlm or rtd, not {config.pretrain!r}")
    if config.pretrain != "none" and not config.mask_padding:
        raise PipelineError("pretraining needs mask_padding = true; or set pretrain = 'none'")
    if not 0 < config.mask_rate < 1:
        raise PipelineError("mask_rate must be between 0 and 1")
    if config.pretrained_lr_scale <= 0:
        raise PipelineError("pretrained_lr_scale must be positive")
    if config.pretrain_epochs < 1 or config.pretrain_batch_size < 1:
        raise PipelineError("pretrain_epochs and pretrain_batch_size must be positive")
    if config.token_unit not in ("char", "jamo"):
        raise PipelineError(f"token_unit must be char or jamo, not {config.token_unit!r}")
    if config.padding not in ("pre", "post") or config.truncating not in ("pre", "post"):
        raise PipelineError("padding and truncating must each be 'pre' or 'post'")
    if config.cluster_timeout <= 0:
        raise PipelineError("cluster_timeout must be a positive number of seconds")
    if config.maxlen < 1 or config.epochs < 1 or config.batch_size < 1:
        raise PipelineError("maxlen, epochs and batch_size must be positive")
    if config.warmup_epochs < 0 or config.warmup_epochs >= config.epochs:
        raise PipelineError("warmup_epochs must be at least 0 and fewer than epochs")
    if not config.rnn_units or any(u < 1 for u in config.rnn_units):
        raise PipelineError("rnn_units must list at least one positive layer size")
    if not config.baseline_c or any(c <= 0 for c in config.baseline_c):
        raise PipelineError("baseline_c must list at least one positive value")
    limits = (
        "serve_max_reviews",
        "serve_max_explain_reviews",
        "serve_max_body_bytes",
        "serve_max_batch",
    )
    if any(getattr(config, name) < 1 for name in limits) or config.serve_batch_wait_ms < 0:
        raise PipelineError(f"{', '.join(limits)} must be positive and serve_batch_wait_ms >= 0")
    if config.serve_model_threads < 0:
        raise PipelineError("serve_model_threads must be 0 (one per core) or more")
    if config.serve_workers < 0:
        raise PipelineError("serve_workers (--workers) must be 0 (one per core) or more")
    if not 0 < config.label_fraction <= 1:
        raise PipelineError("label_fraction must be above 0 and at most 1")
    if not 0 <= config.self_train_rounds <= 3:
        raise PipelineError("self_train_rounds must be 0 (off) to 3")
    if not config.self_train_weight or any(w <= 0 for w in config.self_train_weight):
        raise PipelineError("self_train_weight must list at least one positive weight")
    if not 0 <= config.self_train_noise < 1:
        raise PipelineError("self_train_noise must be at least 0 and below 1")
    if config.self_train_rounds and config.distribute == "multi-worker":
        raise PipelineError("self-training runs in one process; use distribute none or mirrored")
    if not 0 < config.val_fraction + config.test_fraction < 1:
        raise PipelineError("val_fraction + test_fraction must be between 0 and 1")
    _validate_source(config)


def _validate_source(config: Config) -> None:
    from pipeline.tables import codec_of

    codec_of(config.encoding)  # an unknown encoding is refused before anything runs
    layout = config.source_layout
    columns = (config.rating_column, config.label_column)
    if layout == "ratings":
        if any(columns):
            raise PipelineError(
                "--rating-column and --label-column need a table source: pass --text-column too"
            )
        return
    if (config.rating_column is None) == (config.label_column is None):
        raise PipelineError(
            f"a {layout} source needs --text-column and one of --rating-column (1 to 5) or "
            "--label-column (0 or 1)"
        )


__all__ = ["Config", "OFFICIAL_SOURCE", "OFFICIAL_BLOB_ID", "load_config"]
