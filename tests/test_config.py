from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from pipeline.config import Config, load_config, setting
from pipeline.config import _check_every_field_names_its_stages as check_fields
from pipeline.errors import PipelineError
from pipeline.tokenizer import CharTokenizer


def test_defaults_keep_the_notebooks_input_and_a_stacked_lstm():
    config = load_config()
    assert (config.maxlen, config.cell, len(config.rnn_units)) == (100, "lstm", 2)
    # the tokenizer every stage builds from the settings encodes to the notebook's 100
    assert CharTokenizer.for_config(config).fit(["가"]).encode(["가"]).shape == (1, 100)


def test_toml_file_then_flags_override_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('epochs = 3\nrnn_units = [8, 4]\ndata_dir = "elsewhere"\n', encoding="utf-8")
    config = load_config(path, epochs=5, batch_size=None)
    assert config.epochs == 5 and config.rnn_units == (8, 4)
    assert config.data_dir == Path("elsewhere") and config.batch_size == Config().batch_size


@pytest.mark.parametrize(
    "text,message",
    [
        ("epochz = 3", "unknown setting 'epochz'"),
        ("cell = 'transformer'", "cell must be lstm, gru or simplernn"),
        ("epochs = [", "not valid TOML"),
    ],
)
def test_bad_config_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineError, match=message):
        load_config(path)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_config(tmp_path / "none.toml")


def test_to_dict_is_json_ready():
    import json

    assert json.loads(json.dumps(Config().to_dict()))["rnn_units"] == [64, 32]


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"source": "r.csv", "text_column": "review"}, "one of --rating-column"),
        (
            {"source": "r.csv", "text_column": "review", "rating_column": "s", "label_column": "y"},
            "one of --rating-column",
        ),
        ({"source": "r.csv", "rating_column": "s"}, "pass --text-column too"),
        ({"source": "export", "text_column": "review", "label_column": "y"}, "--source-format"),
        ({"source_format": "xlsx"}, "source_format must be auto, ratings, csv, tsv or jsonl"),
        ({"encoding": "klingon"}, "unknown encoding 'klingon'"),
    ],
)
def test_source_settings_that_cannot_work_are_refused_before_any_stage(settings, message):
    with pytest.raises(PipelineError, match=message):
        load_config(**settings)


def test_a_labelled_table_source_is_accepted():
    config = load_config(source="r.jsonl", text_column="review", label_column="y")
    assert config.source_layout == "jsonl"
    assert load_config(source="r.txt").source_layout == "ratings"


INVALID = [
    ({"cell": "rnn"}, "^cell must be lstm, gru or simplernn, not 'rnn'$"),
    ({"distribute": "tpu"}, "^distribute must be none, mirrored or multi-worker, not 'tpu'$"),
    ({"lr_schedule": "step"}, "^lr_schedule must be constant or cosine, not 'step'$"),
    ({"conv_kernel": 4}, "^conv_kernel must be odd, so the convolution is centred$"),
    ({"token_unit": "word"}, "^token_unit must be char or jamo, not 'word'$"),
    ({"padding": "both"}, "^padding and truncating must each be 'pre' or 'post'$"),
    ({"truncating": "middle"}, "^padding and truncating must each be 'pre' or 'post'$"),
    ({"maxlen": 0}, "^maxlen, epochs and batch_size must be positive$"),
    ({"epochs": 0}, "^maxlen, epochs and batch_size must be positive$"),
    ({"batch_size": 0}, "^maxlen, epochs and batch_size must be positive$"),
    ({"rnn_units": []}, "^rnn_units must list at least one positive layer size$"),
    ({"rnn_units": [8, 0]}, "^rnn_units must list at least one positive layer size$"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "^val_fraction \\+ test_fraction must be"),
    ({"val_fraction": 0.0, "test_fraction": 0.0}, "^val_fraction \\+ test_fraction must be"),
    ({"val_fraction": 0.7, "test_fraction": 0.6}, "^val_fraction \\+ test_fraction must be"),
]


@pytest.mark.parametrize(
    "changes,message",
    INVALID,
    ids=["-".join(f"{k}={v}" for k, v in changes.items()) for changes, _ in INVALID],
)
def test_each_invalid_setting_is_refused_with_its_own_reason(changes, message):
    with pytest.raises(PipelineError, match=message):
        load_config(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"cell": "gru"},
        {"cell": "simplernn"},
        {"distribute": "mirrored"},
        {"distribute": "multi-worker"},
        {"lr_schedule": "constant"},
        {"conv_kernel": 1},
        {"token_unit": "jamo"},
        {"padding": "post", "truncating": "post"},
        {"maxlen": 1, "epochs": 1, "batch_size": 1},
        {"rnn_units": [1]},
        {"val_fraction": 0.0, "test_fraction": 0.01},
        {"val_fraction": 0.49, "test_fraction": 0.5},
    ],
)
def test_every_allowed_value_at_its_edge_is_accepted(changes):
    config = load_config(**changes)
    assert {k: getattr(config, k) for k in changes} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()
    }


def test_unknown_settings_are_named_with_the_known_ones():
    with pytest.raises(PipelineError) as info:
        load_config(epochz=3)
    message = str(info.value)
    assert message.startswith(
        "unknown setting 'epochz'; known settings: artifacts_dir, baseline_c,"
    )
    with pytest.raises(PipelineError, match="^unknown setting 'nope'"):
        Config().replace(nope=1)
    assert Config().replace(epochs=2).epochs == 2


def test_files_live_where_the_readme_says():
    config = Config(data_dir="d", artifacts_dir="a")
    assert config.raw_path == Path("d/raw/naver_shopping.txt")
    assert config.processed_dir == Path("d/processed")
    assert [config.split_path(s) for s in ("train", "val", "test")] == [
        Path("d/processed/train.tsv"),
        Path("d/processed/val.tsv"),
        Path("d/processed/test.tsv"),
    ]
    assert config.encoded_path == Path("d/processed/encoded.npz")
    assert config.model_path == Path("a/model.keras")
    assert config.tokenizer_path == Path("a/tokenizer.json")


def test_strings_become_paths_lists_become_tuples_and_back_in_to_dict():
    config = Config(data_dir="d", rnn_units=[8, 4])
    assert config.data_dir == Path("d") and config.rnn_units == (8, 4)
    values = config.to_dict()
    assert values["data_dir"] == "d" and values["artifacts_dir"] == "artifacts"
    assert values["rnn_units"] == [8, 4] and values["num_words"] is None
    assert set(values) == {f.name for f in fields(Config)}


def test_only_the_official_source_is_official():
    assert Config().is_official_source
    assert not Config(source="mirror.txt").is_official_source


def test_setting_keeps_its_default_and_names_its_stages():
    @dataclass(frozen=True)
    class Example:
        size: int = setting(3, "train", "evaluate")
        where: str = setting("here")

    assert Example().size == 3 and Example().where == "here"
    assert [f.metadata["stages"] for f in fields(Example)] == [("train", "evaluate"), ()]
    check_fields(Example)  # every field declared with setting(): accepted
    assert Config.settings_of("tokenize") == (
        "maxlen",
        "num_words",
        "oov_token",
        "token_unit",
        "padding",
        "truncating",
    )
