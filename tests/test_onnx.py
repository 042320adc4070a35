"""model.onnx: the same probabilities as model.keras for every model setting, chosen when it is
the model training wrote, and scoring with it imports no TensorFlow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import to_onnx
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.files import sha256_file
from pipeline.predict import Predictor
from pipeline.stages import get_stage, stage_state
from pipeline.tokenizer import CharTokenizer
from tests.conftest import TINY

# empty, emoji only, 5,000 characters, a lone jamo, digits, nothing Korean, a plain review
HOSTILE = ["", "😀😀😀", "좋아요 별로 " * 834, "ㅋ", "1234567890", "  ", "a" * 50, "배송 좋아요"]
SCORED = ["", "😀😀😀", "ㅋ", "배송 빠르고 좋아요", "별로에요 다시는 안 사요"]
SCORING_SCRIPT = Path(__file__).resolve().parent / "scoring_only.py"

# Each setting the config allows, one change from the defaults at a time, and a few together.
SETTINGS = {
    "defaults": {},
    "gru": {"cell": "gru"},
    "simplernn": {"cell": "simplernn"},
    "one_direction": {"bidirectional": False},
    "no_convolution": {"conv_filters": 0},
    "no_pool": {"conv_pool": 1},
    "pool_of_3": {"conv_pool": 3},
    "no_jamo": {"jamo_features": 0},
    "no_ngrams": {"ngram_order": 0},
    "no_pooling": {"pooling": False},
    "no_masking": {"mask_padding": False},
    "no_masking_pool_of_3_gru": {"mask_padding": False, "conv_pool": 3, "cell": "gru"},
    "no_masking_no_jamo_no_pooling": {"mask_padding": False, "jamo_features": 0, "pooling": False},
    "post_padding": {"padding": "post", "truncating": "post"},
    "one_layer": {"rnn_units": (8,)},
    "jamo_tokens": {"token_unit": "jamo"},
    "jamo_tokens_bare_gru": {
        "token_unit": "jamo",
        "cell": "gru",
        "bidirectional": False,
        "conv_filters": 0,
        "ngram_order": 0,
        "pooling": False,
    },
}


def onnx_files(config: Config) -> tuple[Path, Path]:
    return config.onnx_path, config.onnx_weights_path


def fixture_reviews(sample_path: Path) -> list[str]:
    return [line.split("\t", 1)[1] for line in sample_path.read_text("utf-8").splitlines()]


def write_model(folder: Path, config: Config, texts: list[str]) -> None:
    """A model of `config` with large random weights (so any wrong op shows), as train saves it:
    calibrated, model.keras, then model.onnx checked against it."""
    import keras

    from pipeline.cleaning import clean_texts
    from pipeline.model import build_model
    from pipeline.train import for_inference

    tokenizer = CharTokenizer.for_config(config).fit(clean_texts(texts))
    tokenizer.save(folder / "tokenizer.json")
    jamo = tokenizer.jamo_table() if config.jamo_features else None
    model = build_model(config, tokenizer.vocab_size, None, jamo)
    rng = np.random.default_rng(7)
    for weight in model.weights:
        if "float" in str(weight.dtype):
            weight.assign(rng.normal(0, 0.4, weight.shape).astype("float32"))
    for_inference(model, temperature=1.3).save(folder / "model.keras")
    saved = keras.saving.load_model(folder / "model.keras", compile=False, safe_mode=True)
    sample = tokenizer.encode(clean_texts(texts[:200]))
    proto, _ = to_onnx.checked(saved, sample, config.mask_padding, config.padding)
    paths = Config(artifacts_dir=folder)
    to_onnx.save(proto, paths.onnx_path, paths.onnx_weights_path)


@pytest.mark.parametrize("name", SETTINGS)
def test_onnx_scores_every_setting_as_keras_does(name, sample_path, tmp_path):
    config = Config(**{**TINY, "ngram_order": 3, **SETTINGS[name]})
    texts = fixture_reviews(sample_path)
    write_model(tmp_path, config, texts)
    onnx = Predictor(tmp_path, engine="onnx", batch_size=64)
    keras = Predictor(tmp_path, engine="keras", batch_size=64)
    assert (onnx.engine, keras.engine) == ("onnx", "keras")
    reviews = texts + HOSTILE
    expected = keras.predict_proba(reviews)
    assert np.ptp(expected) > 0.05  # the weights make reviews differ, so a wrong op would show
    np.testing.assert_allclose(onnx.predict_proba(reviews), expected, atol=1e-5, rtol=0)
    # and a review's probability is its own, alone or in any batch
    alone = np.array([onnx.predict_proba(review)[0] for review in HOSTILE])
    np.testing.assert_allclose(alone, expected[-len(HOSTILE) :], atol=1e-5, rtol=0)


def test_a_graph_that_scores_otherwise_fails_training_and_keeps_the_last_model(
    trained, tmp_path, monkeypatch
):
    from pipeline.train import train

    root = tmp_path / "copy"
    shutil.copytree(trained.artifacts_dir, root / "artifacts")
    shutil.copytree(trained.data_dir, root / "data")
    config = trained.replace(artifacts_dir=root / "artifacts", data_dir=root / "data")
    model_files = (config.model_path, config.onnx_path, config.onnx_weights_path)
    before = {p.name: p.read_bytes() for p in model_files}
    # A converter with a bug: the temperature left out.
    monkeypatch.setattr(to_onnx, "temperature", lambda g, layer, x: g.op("Sigmoid", x))
    with pytest.raises(PipelineError, match=r"^model.onnx scores validation reviews up to .* away"):
        train(config, quiet=True)
    # neither model file changed: they are replaced together or not at all
    assert {p.name: p.read_bytes() for p in model_files} == before
    assert [p.name for p in config.artifacts_dir.iterdir() if ".tmp" in p.name] == []


def test_a_layer_without_an_onnx_form_is_named(tmp_path):
    import keras

    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 4)(inputs)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D(name="average")(x))
    with pytest.raises(PipelineError, match="^the model's average layer .* has no ONNX form"):
        to_onnx.convert(keras.Model(inputs, outputs))


# -- the train stage writes it; the predictor chooses it ------------------------------------------
def test_train_writes_model_onnx_and_records_it(trained):
    record = json.loads((trained.artifacts_dir / "stages" / "train.json").read_text())
    assert record["outputs"]["model.onnx"] == sha256_file(trained.onnx_path)
    assert record["outputs"]["model.onnx.data"] == sha256_file(trained.onnx_weights_path)
    # the graph holds no weights: they are mapped from model.onnx.data
    assert trained.onnx_path.stat().st_size < 100_000 < trained.onnx_weights_path.stat().st_size
    modes = {p.stat().st_mode & 0o777 for p in (trained.model_path, *onnx_files(trained))}
    assert len(modes) == 1  # readable by whoever may read model.keras (onnx writes 0600)
    assert record["result"]["onnx_max_difference"] <= to_onnx.TOLERANCE
    manifest = json.loads((trained.artifacts_dir / "manifest.json").read_text())
    assert "model.onnx" in manifest["stages"]["train"]["outputs"]
    assert stage_state(get_stage("train"), trained)[0] == "fresh"
    predictor = Predictor(trained.artifacts_dir)
    assert predictor.engine == "onnx" and predictor.model_file == trained.onnx_path
    # the model is known by its model.keras, whichever file runs it
    assert predictor.model_sha256 == sha256_file(trained.model_path)


def test_status_misses_a_deleted_model_onnx(trained, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(trained.artifacts_dir, root / "artifacts")
    shutil.copytree(trained.data_dir, root / "data")
    config = trained.replace(artifacts_dir=root / "artifacts", data_dir=root / "data")
    (config.onnx_path).unlink()
    state, why = stage_state(get_stage("train"), config)
    assert state == "missing" and "model.onnx" in why


@pytest.fixture
def artifacts(trained, tmp_path) -> Path:
    folder = tmp_path / "artifacts"
    shutil.copytree(trained.artifacts_dir, folder)
    return folder


def test_an_artifacts_folder_from_before_model_onnx_keeps_scoring_with_keras(artifacts):
    (artifacts / "model.onnx").unlink()
    assert Predictor(artifacts).engine == "keras"
    with pytest.raises(PipelineError, match="model.onnx is missing; rerun `python -m pipeline tr"):
        Predictor(artifacts, engine="onnx")


@pytest.mark.parametrize("name", ["model.onnx", "model.onnx.data"])
def test_a_model_onnx_the_record_does_not_name_is_not_used(artifacts, name):
    changed = artifacts / name
    changed.write_bytes(changed.read_bytes() + b"\0")  # another file than training wrote
    assert Predictor(artifacts).engine == "keras"
    with pytest.raises(PipelineError, match="model.onnx is not the model the last training wrote"):
        Predictor(artifacts, engine="onnx")


def test_a_model_keras_replaced_by_hand_is_the_one_scored(artifacts, sample_path):
    from tests.known_model import save_known_model

    save_known_model(artifacts, {"좋": 4.0, "별": -4.0})  # a new model.keras, the old model.onnx
    predictor = Predictor(artifacts)
    assert predictor.engine == "keras"
    width = predictor.tokenizer.maxlen  # the known model averages over the padded width
    assert predictor.predict_proba(["좋아요"])[0] == pytest.approx(1 / (1 + np.exp(-4 / width)))


def test_model_files_alone_score_with_onnx(artifacts):
    for name in ("model.keras", "stages"):
        path = artifacts / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert Predictor(artifacts).engine == "onnx"


def test_an_unknown_engine_is_refused(artifacts):
    with pytest.raises(PipelineError, match="^the model engine must be one of auto, onnx, keras"):
        Predictor(artifacts, engine="tflite")


# -- no TensorFlow when scoring --------------------------------------------------------------------
def run_scoring_script(python: str, artifacts: Path, tmp_path: Path) -> dict:
    """tests/scoring_only.py under `python`: every scoring entry point, TensorFlow blocked."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [python, str(SCORING_SCRIPT), str(artifacts), str(tmp_path), *SCORED],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def check_scoring_without_tensorflow(python: str, trained, tmp_path: Path) -> dict:
    result = run_scoring_script(python, trained.artifacts_dir, tmp_path)
    assert result["engine"] == "onnx"
    assert result["imported"] == []  # neither tensorflow nor keras was ever imported
    expected = Predictor(trained.artifacts_dir, engine="keras").predict_proba(SCORED)
    for way in ("predictor", "sentiment_predict", "predict_cli", "service", "spark_udf"):
        np.testing.assert_allclose(result[way], expected, atol=1e-5, rtol=0, err_msg=way)
    return result


def test_scoring_imports_neither_tensorflow_nor_keras(trained, tmp_path):
    check_scoring_without_tensorflow(sys.executable, trained, tmp_path)


@pytest.mark.skipif(
    not os.environ.get("SCORING_PYTHON"),
    reason="SCORING_PYTHON names no scoring-only environment (.ci/run builds one)",
)
def test_the_scoring_only_install_scores_without_tensorflow(trained, tmp_path):
    result = check_scoring_without_tensorflow(os.environ["SCORING_PYTHON"], trained, tmp_path)
    assert result["tensorflow_installed"] is False and result["keras_installed"] is False
