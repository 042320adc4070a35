"""The two ways to run a trained model: ONNX Runtime on model.onnx, Keras on model.keras.

Each engine is a callable from padded int32 ids (batch, width) to positive probabilities
(batch,), and says what a predictor must know: the vocabulary it embeds, whether it masks
padding (then batches may be cut to their longest review), and its weight count. ONNX Runtime
needs neither TensorFlow nor Keras, so scoring with it starts in a fraction of a second.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.files import sha256_file
from pipeline.records import read_record

ENGINES = ("auto", "onnx", "keras")
# the files' names, as the train stage declares them
ONNX_FILE, KERAS_FILE = Config().onnx_path.name, Config().model_path.name
TRAIN_EXTRA = "pip install 'naver-shopping-sentiment[train]'"


class OnnxEngine:
    """model.onnx (written by `train` beside model.keras) on ONNX Runtime's CPU provider."""

    name, file = "onnx", ONNX_FILE
    # Rows per call: smaller batches keep the intermediates in cache, and ORT's per-call cost is
    # small (128 against 512: as fast or faster, 85 MiB less memory after 200,000 reviews).
    batch_size = 128

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # No arena: it keeps the largest intermediates of any batch for good (about 90 MiB
        # more after 200,000 reviews, for no measurable speed).
        options.enable_cpu_mem_arena = False
        # One thread per call by default: a predictor keeps two calls in flight, and the service
        # and Spark run one process per core; more would only contend for the same cores.
        options.intra_op_num_threads = threads or 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own types for a bad file; all mean the same
            raise PipelineError(
                f"{path} cannot be loaded ({type(exc).__name__}: {_first_line(exc)}); retrain "
                "with `python -m pipeline train`"
            ) from None
        about = self.session.get_modelmeta().custom_metadata_map
        self.vocab_size = int(about.get("vocab_size", -1))
        self.masks_padding = about.get("mask_padding") == "True"
        self.parameters = int(about.get("parameters", 0))

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"chars": ids})[0].reshape(-1)


class KerasEngine:
    """model.keras, loaded in safe mode, run as one traced TensorFlow graph."""

    name, file = "keras", KERAS_FILE
    batch_size = 512  # rows per call: TensorFlow's per-call cost wants them large

    def __init__(self, path: Path, threads: int = 0) -> None:
        try:
            import keras

            import pipeline.layers  # noqa: F401  registers our layers for safe-mode loading
        except ImportError:
            raise PipelineError(
                f"scoring {path.name} needs TensorFlow and Keras, which this install lacks: "
                f"install them with `{TRAIN_EXTRA}`, or score model.onnx (`train` writes it)"
            ) from None
        _set_tensorflow_threads(threads)
        try:
            self.model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a bad file; all mean the same
            raise PipelineError(
                f"{path} cannot be loaded ({type(exc).__name__}: {exc}); retrain with "
                "`python -m pipeline train`"
            ) from None
        embedding = next(
            (layer for layer in self.model.layers if isinstance(layer, keras.layers.Embedding)),
            None,
        )
        if embedding is None:
            raise PipelineError("the saved model has no Embedding layer; it is not a model of ours")
        self.vocab_size = embedding.input_dim
        # Without masking the model saw full-length padded inputs, so it must keep seeing them.
        self.masks_padding = bool(embedding.mask_zero)
        self.parameters = self.model.count_params()
        self._forward = _traced(self.model)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self._forward(ids)


def _traced(model):
    """Padded int32 ids (batch, length) -> probabilities (batch,): one traced graph, any shape.

    No XLA: the service is bound by HTTP, not the model (benchmarks/RESULTS.md, "XLA in the
    service"), and XLA's compiled executables outlive the model they were compiled for.
    """
    import keras

    if keras.backend.backend() != "tensorflow":  # the backend's own path
        return lambda x: np.asarray(model.predict_on_batch(x)).reshape(-1)
    import tensorflow as tf

    spec = tf.TensorSpec(shape=(None, None), dtype=tf.int32)
    graph = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    # Trace here, in one thread: tracing one Keras model from two threads at once breaks it,
    # and calls run on a pool.
    graph.get_concrete_function()
    return lambda x: graph(tf.constant(x)).numpy().reshape(-1)


def _set_tensorflow_threads(threads: int) -> None:
    """TensorFlow's threads per op, before its runtime starts (0 leaves its default)."""
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process: it keeps its setting
        pass


def open_engine(folder: Path, engine: str = "auto", threads: int = 0):
    """The engine that scores `folder`'s model, and the model's sha256 if it is known already.

    A model is known by its model.keras's checksum whichever engine runs it: model.onnx is the
    same model in another form, and the train record names both.

    auto: model.onnx when it is the one the last training wrote (its checksum in
    stages/train.json), else model.keras, so an artifacts folder from before model.onnx existed,
    or one whose model.keras was replaced by hand, keeps scoring with its own model.
    """
    if engine not in ENGINES:
        raise PipelineError(f"the model engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    paths = Config(artifacts_dir=folder)
    onnx_path, keras_path = paths.onnx_path, paths.model_path
    if engine != "keras" and onnx_path.is_file():
        record = read_record(folder, "train")
        if _trained_together(record, paths) or (engine == "onnx" and record is None):
            known = (record or {}).get("outputs", {}).get(KERAS_FILE)
            return OnnxEngine(onnx_path, threads), known
        if engine == "onnx":
            raise PipelineError(
                f"{onnx_path} is not the model the last training wrote (stages/train.json names "
                "another); rerun `python -m pipeline train`, or score model.keras with the keras "
                "engine"
            )
    elif engine == "onnx":
        raise PipelineError(
            f"{onnx_path} is missing; rerun `python -m pipeline train`, which writes it"
        )
    if not keras_path.is_file():
        raise PipelineError(
            f"{keras_path} is missing; train a model with `python -m pipeline run` first"
        )
    return KerasEngine(keras_path, threads), None


def _trained_together(record: dict | None, paths: Config) -> bool:
    """Whether model.onnx and its weights are the ones the last training wrote, with the
    model.keras it wrote still here.

    Without a train record (a folder of model files copied by hand) there is nothing to check
    against: model.onnx is taken when it is the only model there.
    """
    if record is None:
        return not paths.model_path.is_file()
    outputs = record.get("outputs", {})
    onnx_files = (paths.onnx_path, paths.onnx_weights_path)
    if not all(_unchanged(path, outputs.get(path.name)) for path in onnx_files):
        return False
    # A model.keras replaced since (copied in by hand, say) is the model the user means.
    keras_path = paths.model_path
    return not keras_path.is_file() or _unchanged(keras_path, outputs.get(KERAS_FILE))


def _unchanged(path: Path, digest: str | None) -> bool:
    """Whether the file at `path` has the sha256 `digest` (hashed once per modification)."""
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    return digest is not None and _cached_sha256(path, stamp) == digest


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: Path, mtime_ns: int) -> str:
    return sha256_file(path)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]
