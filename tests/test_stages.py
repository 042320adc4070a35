import dataclasses
import json
import shutil

import pytest

import pipeline.config as config_module
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.stages import STAGE_NAMES, STAGES, get_stage, pipeline_lock, run_pipeline, stage_state


@pytest.fixture
def project(trained, tmp_path):
    """A private copy of a trained project, free to change."""
    shutil.copytree(trained.data_dir, tmp_path / "data")
    shutil.copytree(trained.artifacts_dir, tmp_path / "artifacts")
    return trained.replace(data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts")


def states(config):
    return {s.name: stage_state(s, config)[0] for s in STAGES}


def test_a_finished_run_is_fresh_everywhere_even_when_moved(project):
    assert states(project) == dict.fromkeys(STAGE_NAMES, "fresh")


def test_rerun_skips_every_fresh_stage(project):
    assert run_pipeline(project, quiet=True) == [(name, "skipped") for name in STAGE_NAMES]


def test_a_changed_setting_makes_its_stage_stale_and_only_it(project):
    changed = project.replace(epochs=project.epochs + 1)
    assert states(changed)["train"] == "stale"
    assert "epochs" in stage_state(get_stage("train"), changed)[1]
    assert states(changed)["tokenize"] == "fresh"


def test_changed_input_makes_downstream_stale(project):
    path = project.split_path("train")
    path.write_text(path.read_text(encoding="utf-8") + "1\t5\t새 리뷰\n", encoding="utf-8")
    assert states(project)["tokenize"] == "stale"
    assert states(project)["prepare"] == "stale"  # its output was changed behind its back


def test_missing_output_is_reported(project):
    (project.artifacts_dir / "metrics.json").unlink()
    state, why = stage_state(get_stage("evaluate"), project)
    assert state == "missing" and "metrics.json" in why


def test_force_reruns_and_records_a_manifest(project):
    before = json.loads((project.artifacts_dir / "manifest.json").read_text(encoding="utf-8"))
    run_pipeline(project, names=("evaluate",), force=True, quiet=True)
    after = json.loads((project.artifacts_dir / "manifest.json").read_text(encoding="utf-8"))
    assert after["stages"]["evaluate"]["finished_at"] >= before["stages"]["evaluate"]["finished_at"]
    assert set(after["stages"]) == set(STAGE_NAMES)
    assert after["stages"]["prepare"]["result"]["kept"] > 0
    assert "tensorflow" in after["versions"]


def test_missing_input_names_the_stage_to_run(tmp_path, trained):
    config = trained.replace(data_dir=tmp_path / "d", artifacts_dir=tmp_path / "a")
    with pytest.raises(PipelineError, match="run `python -m pipeline prepare` first"):
        run_pipeline(config, names=("tokenize",), force=True, quiet=True)


def test_second_run_on_the_same_folders_is_refused_naming_the_holder(project):
    import os

    with pipeline_lock(project):
        with pytest.raises(PipelineError, match=f"pid {os.getpid()}"):
            run_pipeline(project, quiet=True)
    assert run_pipeline(project, names=("evaluate",), quiet=True) == [("evaluate", "skipped")]


def test_an_unexpected_failure_names_the_stage_and_a_log_with_the_traceback(project):
    project.encoded_path.write_bytes(b"not an npz file, but not missing either")
    with pytest.raises(PipelineError) as caught:
        run_pipeline(project, names=("train",), force=True, quiet=True)
    message = str(caught.value)
    assert message.startswith("the train stage failed unexpectedly (ValueError: ")
    assert "\n" not in message
    (log,) = (project.artifacts_dir / "logs").glob("train-*.log")
    assert message.endswith(f"the traceback is in {log}")
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "np.load" in text
    assert states(project)["train"] == "stale"  # nothing recorded: the inputs changed


def _another_value(value):
    """A different value of the same kind, valid or not: fingerprints never validate."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return (*value, 1)
    if value is None:
        return 7
    raise AssertionError(f"no other value for {value!r}")


LOCATIONS = ("data_dir", "artifacts_dir")  # where stages live, not what they compute


@pytest.mark.parametrize(
    "name", [f.name for f in dataclasses.fields(Config) if f.name not in LOCATIONS]
)
def test_every_setting_makes_exactly_the_stages_it_names_stale(project, name):
    """The fingerprint comes from the config itself: no setting can silently go stale."""
    declared = Config.__dataclass_fields__[name].metadata["stages"]
    assert set(declared) <= set(STAGE_NAMES), f"{name} names an unknown stage"
    changed = dataclasses.replace(project, **{name: _another_value(getattr(project, name))})
    stale = {s.name for s in STAGES if stage_state(s, changed)[0] == "stale"}
    assert stale == set(declared)
    for stage in declared:
        assert name in stage_state(get_stage(stage), changed)[1]


def test_changing_conv_pool_retrains(project):
    """The bug this guards: conv_pool changed the model but not the train stage's fingerprint."""
    changed = project.replace(conv_pool=project.conv_pool + 1)
    assert states(changed)["train"] == "stale"
    assert ("train", "ran") in run_pipeline(changed, names=("train",), quiet=True)


def test_a_setting_without_its_stages_is_refused():
    with pytest.raises(TypeError, match="must be declared with setting"):

        @dataclasses.dataclass(frozen=True)
        class Broken(Config):
            new_knob: int = 3

        config_module._check_every_field_names_its_stages(Broken)


def test_runtime_only_settings_are_the_known_few():
    """A new setting must name the stages it changes; 'none' is a deliberate, listed choice."""
    runtime = {f.name for f in dataclasses.fields(Config) if not f.metadata["stages"]}
    assert runtime == {
        "data_dir",
        "artifacts_dir",
        "download_retries",
        "download_timeout",
        "download_backoff",
        "cluster_timeout",
        "serve_max_reviews",
        "serve_max_explain_reviews",
        "serve_max_body_bytes",
        "serve_max_batch",
        "serve_batch_wait_ms",
        "serve_model_threads",
    }


def _model_description(config):
    import json as json_module

    import keras

    from pipeline.model import build_model
    from pipeline.tokenizer import CharTokenizer

    keras.utils.clear_session()  # layer names restart, so two builds compare equal
    tokenizer = CharTokenizer().fit(["배송 빠르고 좋아요 123"])
    model = build_model(config, tokenizer.vocab_size, 10, tokenizer.jamo_table())
    optimizer = model.optimizer.get_config()
    return model.to_json() + json_module.dumps(
        {k: str(v) for k, v in optimizer.items() if k != "name"}, sort_keys=True
    )


def test_every_setting_that_changes_the_model_retrains_it():
    """Build the model once per changed setting: any that alters it must name the train stage."""
    base = Config(embedding_dim=4, rnn_units=(4, 2), conv_filters=4, jamo_features=2)
    reference = _model_description(base)
    undeclared = []
    for f in dataclasses.fields(Config):
        if "train" in f.metadata["stages"] or f.name in LOCATIONS:
            continue
        try:
            changed = dataclasses.replace(base, **{f.name: _another_value(getattr(base, f.name))})
            description = _model_description(changed)
        except Exception:  # an invalid value for the model: it certainly reads the setting
            undeclared.append(f.name)
            continue
        if description != reference:
            undeclared.append(f.name)
    # padding shapes the pooling windows, but reaches training through tokenizer.json's checksum
    assert undeclared == ["padding"]
