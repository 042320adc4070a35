from pathlib import Path

import pytest

from pipeline.config import Config, load_config
from pipeline.errors import PipelineError


def test_defaults_keep_the_notebooks_input_and_a_stacked_lstm():
    config = load_config()
    assert (config.maxlen, config.cell, len(config.rnn_units)) == (100, "lstm", 2)


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
