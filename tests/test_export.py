"""The SavedModel export, tested as its users run it: in a fresh process that never imports us."""

import base64
import json
import os
import random
import re
import shutil
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import export
from pipeline.cleaning import clean_text
from pipeline.errors import PipelineError
from pipeline.files import sha256_file
from pipeline.predict import Predictor
from pipeline.stages import STAGES, run_pipeline, stage_state, write_manifest
from tests.conftest import tiny_config
from tests.test_cli import run_main

WHITESPACE = [chr(c) for c in export.WHITESPACE]
KEPT = "".join(chr(c) for low, high in export.KEPT_RANGES for c in range(low, high + 1))


@tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
def tf_clean(reviews):
    codes, rows = export.clean_codes(reviews)
    nrows = tf.shape(reviews, out_type=tf.int64)[0]
    return tf.strings.unicode_encode(tf.RaggedTensor.from_value_rowids(codes, rows, nrows), "UTF-8")


def clean_in_graph(raw: list[bytes]) -> list[str]:
    return [text.decode("utf-8") for text in tf_clean(tf.constant(raw, tf.string)).numpy()]


def hostile_reviews(count: int = 3000, seed: int = 7) -> list[tuple[bytes, str]]:
    """(the bytes a serving engine gets, the str Predictor gets): edge cases, then seeded mixes.

    Python strings may hold lone surrogates; their bytes are what `surrogatepass` writes, which
    is not UTF-8. Raw invalid bytes are compared with Python decoding them with 'replace'.
    """
    rng = random.Random(seed)
    odd = "\ufeff\u200b\u200c\u200d\u2060\u180e\ufffd\uffff\U0010ffff\u0130\u00df\uff10\u0663"
    odd += "\u3130\u3164\uffa1\uabff\ud7a4\u302e\u1100\u1161\u11a8"
    pools = [
        (8, lambda: rng.choice("배송빠르고좋아요별로에요다시는안사요최고최악가성비")),
        (4, lambda: chr(rng.randint(0xAC00, 0xD7A3))),  # any syllable
        (2, lambda: chr(rng.randint(0x3131, 0x3163))),  # compatibility jamo: kept
        (1, lambda: chr(rng.randint(0x1100, 0x11FF))),  # conjoining jamo: dropped
        (2, lambda: rng.choice("0123456789")),
        (4, lambda: rng.choice(WHITESPACE)),
        (2, lambda: rng.choice("abcXYZ!?.,~^;'\"()[]<>@#%&*-_=+/\\|")),
        (1, lambda: chr(rng.randint(0x1F300, 0x1FAFF))),  # emoji
        (1, lambda: chr(rng.randint(0x4E00, 0x9FFF))),  # CJK
        (1, lambda: chr(rng.randint(0x00, 0x1F))),  # C0 controls and NUL
        (1, lambda: chr(rng.randint(0x7F, 0x9F))),  # DEL and C1 controls
        (1, lambda: chr(rng.randint(0xD800, 0xDFFF))),  # lone surrogates
        (1, lambda: rng.choice(odd)),
        (1, lambda: chr(rng.randrange(0x110000))),
    ]
    weights, makers = zip(*pools, strict=True)
    texts = [
        "",
        " ",
        "".join(WHITESPACE),
        "\x00",
        "\x00좋아\x00요\x00",
        "😀😀😀",
        "Great product, fast shipping!!!",
        "".join(map(chr, range(0x20))) + "".join(map(chr, range(0x7F, 0xA0))),
        "ㅋㅋㅋㅋ ㅠㅠ",
        "12345 67890",
        "１２３ ٣",
        unicodedata.normalize("NFD", "배송 빠르고 좋아요"),
        "\ud83d\ude00 좋아 \udfff",
        KEPT,
        "좋아요 " * 25_000,
        "😀" * 100_000,
        " \u3000" * 50_000,
        "a" * 99_990 + "좋아요 최고에요",
        "좋아요 최고에요" + "\u2003" * 99_990,
        "".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(100_000)),
    ]
    texts += [w for w in WHITESPACE]
    texts += [f"가{w}나{w}{w}다 {w}" for w in WHITESPACE]
    texts += [f"{w}좋아{w}" for w in WHITESPACE]
    for _ in range(count):
        length = rng.choice([0, 1, 2, 3, 5, 8, 13, 40, 99, 100, 101, 150, 400])
        if rng.random() < 0.2:  # one kind only: emoji-only, Latin-only, whitespace-only, ...
            make = rng.choice(makers)
            texts.append("".join(make() for _ in range(length)))
        else:
            chosen = rng.choices(makers, weights, k=length)
            texts.append("".join(make() for make in chosen))
    pairs = [(t.encode("utf-8", "surrogatepass"), t) for t in texts]
    # Invalid UTF-8: overlong forms, encoded surrogates, past U+10FFFF, cut sequences, strays.
    bad = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xbf"]
    bad += [b"\xe0\x80", b"\xf0\x9f", b"\xc2", b"\xe2\x80", "가".encode()[:2], "😀".encode()[:3]]
    good = ["가 ".encode(), "나".encode(), b" ", b"1", "\u00a0".encode(), "ㅋ".encode()]
    for _ in range(count // 10):
        raw = b"".join(rng.choice(bad + good) for _ in range(rng.randint(0, 16)))
        pairs.append((raw, raw.decode("utf-8", "replace")))
    return pairs


# -- the cleaning rule in TF ops against pipeline/cleaning.py ------------------------------------
def test_whitespace_is_exactly_what_python_splits_on():
    every = [chr(c) for c in range(0x110000)]
    assert WHITESPACE == [ch for ch in every if ch.isspace()]
    assert WHITESPACE == [ch for ch in every if len(f"a{ch}b".split()) == 2]
    assert WHITESPACE == [ch for ch in every if re.fullmatch(r"\s", ch)]


def test_kept_ranges_are_the_cleaning_class():
    everything = "".join(chr(c) for c in range(0x110000) if not chr(c).isspace())
    assert clean_text(everything) == KEPT


def test_what_cleaning_keeps_has_no_case_so_lowercasing_is_a_no_op():
    # The tokenizer lowercases after cleaning; the graph can skip it only because of this.
    assert (KEPT + " ").lower() == KEPT + " "


def test_hangul_decomposition_is_nfd_of_everything_cleaning_keeps():
    codes, rows = export.clean_codes(tf.constant([KEPT.encode()]))
    parts, _ = export.decompose_hangul(codes, rows)
    got = "".join(map(chr, parts.numpy()))
    assert got == unicodedata.normalize("NFD", KEPT)
    assert len(got) == 10 + 51 + sum(3 if (c - 0xAC00) % 28 else 2 for c in range(0xAC00, 0xD7A4))


def test_cleaning_in_the_graph_matches_python_on_hostile_strings():
    pairs = hostile_reviews(count=2000, seed=11)
    got = clean_in_graph([raw for raw, _ in pairs])
    want = [clean_text(text) for _, text in pairs]
    assert got == want


_interesting = st.sampled_from([*WHITESPACE, "가", "힣", "ㄱ", "ㅣ", "0", "9", "a", "\x00", "😀"])
_any_char = st.characters(codec=None, exclude_categories=())  # surrogates included


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.one_of(_interesting, _any_char)), max_size=4))
def test_cleaning_in_the_graph_matches_python_on_any_text(texts):
    raw = [text.encode("utf-8", "surrogatepass") for text in texts]
    assert clean_in_graph(raw) == [clean_text(text) for text in texts]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(), max_size=4))
def test_cleaning_in_the_graph_matches_python_on_any_bytes(raw):
    assert clean_in_graph(raw) == [clean_text(r.decode("utf-8", "replace")) for r in raw]


# -- the exported model against Predictor, in a process that cannot import pipeline -------------
SCORER = r"""
import base64, importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pipeline":
            raise ImportError("a SavedModel export must not need the pipeline package")

sys.meta_path.insert(0, Refuse())
import tensorflow as tf

job = json.load(open(sys.argv[1], encoding="utf-8"))
reviews = tf.constant([base64.b64decode(r) for r in job["reviews"]], tf.string)
out = {}
for folder in job["exports"]:
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    inputs = serve.structured_input_signature[1]
    spec, result = inputs["reviews"], serve.structured_outputs["positive_probability"]
    out[folder] = {
        "input": [spec.dtype.name, spec.shape.as_list(), sorted(inputs)],
        "output": [result.dtype.name, result.shape.as_list(), sorted(serve.structured_outputs)],
        "empty": serve(reviews=tf.constant([], tf.string))["positive_probability"].shape.as_list(),
        "probs": serve(reviews=reviews)["positive_probability"].numpy().tolist(),
    }
out["pipeline_imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "pipeline")
json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))
"""

# Tiny models that between them use every switch the config has for the model and tokenizer.
CONFIGS = {
    "defaults": None,  # the `trained` fixture: jamo features, conv + pool, BiLSTM, pooling
    "gru-unmasked-post": dict(
        cell="gru",
        bidirectional=False,
        conv_filters=0,
        pooling=False,
        jamo_features=0,
        mask_padding=False,
        padding="post",
        truncating="post",
        num_words=40,
        maxlen=50,
        spatial_dropout=0.0,
        head_dropout=0.0,
    ),
    "simplernn-jamo-units": dict(
        cell="simplernn",
        token_unit="jamo",
        conv_filters=8,
        conv_pool=3,
        jamo_features=4,
        padding="post",
        truncating="pre",
        maxlen=60,
    ),
    "lstm-unmasked-conv": dict(
        bidirectional=False,
        mask_padding=False,
        conv_filters=8,
        conv_kernel=5,
        jamo_features=4,
        padding="pre",
        truncating="post",
        num_words=300,
    ),
}


@pytest.fixture(scope="module")
def scored(trained, sample_path, tmp_path_factory):
    """Export each config's model, then score fixture + hostile reviews in one fresh process."""
    root = tmp_path_factory.mktemp("exports")
    artifacts = {}
    for name, changes in CONFIGS.items():
        if changes is None:
            config = trained.replace(artifacts_dir=root / name / "artifacts")
            shutil.copytree(trained.artifacts_dir, config.artifacts_dir)
        else:
            config = tiny_config(root / name, sample_path, epochs=1, **changes)
            run_pipeline(config, ("download", "prepare", "tokenize", "train"), quiet=True)
        export.export_savedmodel(config, root / name / "export", quiet=True)
        artifacts[name] = config.artifacts_dir
    lines = sample_path.read_text(encoding="utf-8").splitlines()
    pairs = [(r.encode(), r) for r in (line.split("\t", 1)[1] for line in lines)]
    pairs += hostile_reviews()
    job = {
        "exports": [str(root / name / "export") for name in CONFIGS],
        "reviews": [base64.b64encode(raw).decode("ascii") for raw, _ in pairs],
    }
    (root / "job.json").write_text(json.dumps(job), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", SCORER, root / "job.json", root / "out.json"],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((root / "out.json").read_text(encoding="utf-8"))
    return out, artifacts, [text for _, text in pairs], root


@pytest.mark.parametrize("name", CONFIGS)
def test_export_scores_like_predictor_without_the_package(scored, name):
    out, artifacts, texts, root = scored
    assert out["pipeline_imported"] == []
    got = out[str(root / name / "export")]
    assert got["input"] == ["string", [None], ["reviews"]]
    assert got["output"] == ["float32", [None], ["positive_probability"]]
    assert got["empty"] == [0]
    want = Predictor(artifacts[name]).predict_proba(texts)
    assert len(got["probs"]) == len(texts) > 3500
    np.testing.assert_allclose(np.array(got["probs"], np.float32), want, rtol=0, atol=1e-5)
    # The model tells reviews apart (its scores spread over 100x the tolerance), so equality means
    # something; a tiny one-epoch model's spread is small, hence the range, not a spread in std.
    assert np.ptp(want) > 100 * 1e-5


# -- the command, the record, the atomic write ----------------------------------------------------
@pytest.fixture
def project(trained, tmp_path):
    shutil.copytree(trained.data_dir, tmp_path / "data")
    shutil.copytree(trained.artifacts_dir, tmp_path / "artifacts")
    return tmp_path


def test_cli_export_is_recorded_in_the_manifest_and_keeps_every_stage_fresh(
    trained, project, monkeypatch
):
    config = trained.replace(data_dir=project / "data", artifacts_dir=project / "artifacts")
    assert [stage_state(s, config)[0] for s in STAGES] == ["fresh"] * len(STAGES)
    manifest_path = config.artifacts_dir / "manifest.json"
    before = json.loads(manifest_path.read_text(encoding="utf-8"))
    output = project / "served" / "sentiment"
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    # Only the artifacts folder is named, as a user would: the run's settings are not repeated.
    monkeypatch.chdir(elsewhere)
    result = run_main("export", "--artifacts-dir", config.artifacts_dir, "--output", output)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith(f"export written to {output}")
    assert list(elsewhere.iterdir()) == []  # no data/ folder made where it ran

    record = json.loads((config.artifacts_dir / "export.json").read_text(encoding="utf-8"))
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest == {**before, "export": record}
    assert [manifest["stages"][s.name]["stage"] for s in STAGES] == [s.name for s in STAGES]
    assert [stage_state(s, config)[0] for s in STAGES] == ["fresh"] * len(STAGES)
    assert record["path"] == str(output.resolve())
    assert record["saved_model_pb_sha256"] == sha256_file(output / "saved_model.pb")
    assert record["sources"] == {
        name: sha256_file(config.artifacts_dir / name) for name in ("model.keras", "tokenizer.json")
    }
    assert sorted(p.name for p in output.parent.iterdir()) == ["sentiment"]  # no temporaries
    write_manifest(config)  # as every stage run does: the export record stays
    assert json.loads(manifest_path.read_text(encoding="utf-8"))["export"] == record
    assert output.stat().st_mode & 0o055  # readable by a serving container's user


def test_a_failed_export_leaves_the_previous_one_untouched(project):
    config = tiny_config(project, "unused")
    output = project / "export"
    tf.saved_model.save(tf.Module(), str(output))  # some earlier SavedModel
    export.export_savedmodel(config, output, quiet=True)  # replaces it
    assert "serving_default" in tf.saved_model.load(str(output)).signatures
    assert sorted(p.name for p in project.iterdir()) == ["artifacts", "data", "export"]

    before = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    record = (project / "artifacts" / "export.json").read_bytes()
    (project / "artifacts" / "model.keras").write_bytes(b"not a zip file")
    with pytest.raises(PipelineError, match="model.keras cannot be loaded"):
        export.export_savedmodel(config, output, quiet=True)
    after = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert after == before
    assert (project / "artifacts" / "export.json").read_bytes() == record
    assert sorted(p.name for p in project.iterdir()) == ["artifacts", "data", "export"]


@pytest.mark.parametrize("existing", ["folder", "file"])
def test_an_output_that_is_not_an_export_is_refused_untouched(project, existing):
    output = project / "mine"
    if existing == "folder":
        output.mkdir()
        (output / "notes.txt").write_text("keep me", encoding="utf-8")
    else:
        output.write_text("keep me", encoding="utf-8")
    with pytest.raises(PipelineError, match="is not a SavedModel export; choose another --output"):
        export.export_savedmodel(tiny_config(project, "unused"), output, quiet=True)
    kept = output / "notes.txt" if existing == "folder" else output
    assert kept.read_text(encoding="utf-8") == "keep me"


def test_a_missing_artifacts_folder_is_a_clear_error_and_is_not_created(tmp_path):
    config = tiny_config(tmp_path, "unused")
    with pytest.raises(PipelineError, match="artifacts does not exist; train a model"):
        export.export_savedmodel(config, tmp_path / "export", quiet=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", CONFIGS)
def test_the_export_stores_each_weight_once(scored, name):
    """Tracking the model besides the endpoint stored every weight twice (keras#23553)."""
    _, artifacts, _, root = scored
    reader = tf.train.load_checkpoint(str(root / name / "export" / "variables" / "variables"))
    shapes = reader.get_variable_to_shape_map()
    shapes.pop("_CHECKPOINTABLE_OBJECT_GRAPH", None)  # the checkpoint's own bookkeeping
    stored = sum(int(np.prod(shape)) for shape in shapes.values())
    assert stored == Predictor(artifacts[name], engine="keras").model.count_params()
