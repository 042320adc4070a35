import json
import shutil

import pytest

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
