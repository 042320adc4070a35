import dataclasses
import json
import re
import shutil
import time
from pathlib import Path

import pytest

import pipeline.config as config_module
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.stages import (
    STAGE_NAMES,
    STAGES,
    fingerprint,
    get_stage,
    pipeline_lock,
    read_record,
    run_pipeline,
    stage_state,
)
from pipeline.tokenizer import CharTokenizer


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
    if isinstance(value, tuple):  # one more of its kind (a path, when it lists none yet)
        return (*value, value[0] if value else "x.txt")
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
    # the recorded fingerprint against the new one, not stage_state: a new value may also ask
    # for files no stage wrote yet (pretrain = mlm), which status calls missing
    stale = {
        s.name
        for s in STAGES
        if fingerprint(s, changed)[0] != read_record(s, changed)["fingerprint"]
    }
    assert stale == set(declared)
    for stage in map(get_stage, declared):
        assert (
            read_record(stage, changed)["params"].get(name)
            != fingerprint(stage, changed)[1]["params"][name]
        )


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
        "model_engine",
        "serve_max_reviews",
        "serve_max_explain_reviews",
        "serve_max_body_bytes",
        "serve_max_batch",
        "serve_batch_wait_ms",
        "serve_model_threads",
        "serve_workers",
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


@pytest.mark.slow  # builds a model per setting
def test_every_setting_that_changes_the_model_retrains_it():
    """Build the model once per changed setting: any that alters it must name the train stage."""
    # a small n-gram table: the default's 25 M weights would be built once per setting
    base = Config(
        embedding_dim=4, rnn_units=(4, 2), conv_filters=4, jamo_features=2, ngram_buckets=64
    )
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


# -- fast: the stages before training, on 150 real lines (no model is trained) -------------------
EARLY = ("download", "prepare", "tokenize", "baseline")


@pytest.fixture
def early(tmp_path, sample_path):
    """A project whose download, prepare, tokenize and baseline stages have run."""
    from tests.conftest import tiny_config

    source = tmp_path / "source.txt"
    source.write_text("".join(sample_path.read_text("utf-8").splitlines(True)[:150]), "utf-8")
    config = tiny_config(tmp_path / "project", source)
    assert run_pipeline(config, names=EARLY, quiet=True) == [(name, "ran") for name in EARLY]
    return config


def test_stages_run_in_graph_order_and_skip_until_forced(early):
    assert run_pipeline(early, names=EARLY, quiet=True) == [(n, "skipped") for n in EARLY]
    assert run_pipeline(early, names=("tokenize", "prepare"), force=True, quiet=True) == [
        ("prepare", "ran"),
        ("tokenize", "ran"),
    ]
    assert run_pipeline(early, names=("baseline",), quiet=True) == [("baseline", "skipped")]


def test_progress_is_printed_unless_quiet(early, capsys):
    capsys.readouterr()
    run_pipeline(early, names=("prepare", "tokenize"), force=True, quiet=True)
    assert capsys.readouterr().out == ""
    run_pipeline(early, names=("prepare", "tokenize"))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("prepare: skipped (up to date since 20")
    run_pipeline(early, names=("tokenize",), force=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "tokenize: running"
    assert out[1].startswith("tokenize: ") and " indices, mean review length " in out[1]
    assert out[-1].startswith("tokenize: done in ") and out[-1].endswith(" s")


def test_one_stage_can_be_run_and_recorded_on_its_own(early, capsys):
    from pipeline.stages import run_stage

    capsys.readouterr()
    started = time.perf_counter()
    record = run_stage(get_stage("tokenize"), early)
    elapsed = time.perf_counter() - started
    assert capsys.readouterr().out.startswith("tokenize: ")  # not quiet unless asked
    assert record["fingerprint"] == fingerprint(get_stage("tokenize"), early)[0]
    assert stage_state(get_stage("tokenize"), early)[0] == "fresh"
    assert isinstance(record["seconds"], float) and 0 <= record["seconds"] <= elapsed
    assert record["finished_at"].endswith("+00:00")  # UTC, to the second
    run_stage(get_stage("tokenize"), early, quiet=True)
    assert capsys.readouterr().out == ""


def test_each_setting_changes_the_fingerprints_of_exactly_the_stages_it_names(early):
    before = {s.name: fingerprint(s, early)[0] for s in STAGES}
    for f in dataclasses.fields(Config):
        if f.name in LOCATIONS:
            continue
        changed = dataclasses.replace(early, **{f.name: _another_value(getattr(early, f.name))})
        after = {s.name: fingerprint(s, changed)[0] for s in STAGES}
        assert {n for n in STAGE_NAMES if after[n] != before[n]} == set(f.metadata["stages"]), (
            f.name
        )
        for name in set(f.metadata["stages"]) & set(EARLY):
            assert stage_state(get_stage(name), changed) == (
                "stale",
                f"changed since last run: {f.name}",
            )


def test_why_a_stage_is_not_fresh(early):
    tokenize = get_stage("tokenize")
    assert stage_state(tokenize, early)[0] == "fresh"
    assert stage_state(get_stage("train"), early) == ("missing", "never run here")

    train_split = early.split_path("train")
    train_split.write_text(train_split.read_text("utf-8") + "1\t5\t새 리뷰\n", "utf-8")
    assert stage_state(tokenize, early) == ("stale", "changed since last run: train.tsv")
    assert stage_state(get_stage("prepare"), early) == (
        "stale",
        "its outputs were modified after it ran",
    )
    for split in ("val", "test"):
        path = early.split_path(split)
        path.write_text(path.read_text("utf-8") + "1\t5\t새 리뷰\n", "utf-8")
    # every changed input is named; tokenize reads (and names) only the splits it encodes
    assert stage_state(get_stage("baseline"), early) == (
        "stale",
        "changed since last run: train.tsv, val.tsv, test.tsv",
    )
    assert stage_state(tokenize, early) == ("stale", "changed since last run: train.tsv, val.tsv")
    early.raw_path.unlink()  # an input gone: no file to name, but the fingerprint differs
    assert stage_state(get_stage("prepare"), early) == ("stale", "changed since last run: inputs")
    early.encoded_path.unlink()
    assert stage_state(tokenize, early) == ("missing", f"{early.encoded_path} not found")
    early.tokenizer_path.unlink()
    assert stage_state(tokenize, early) == (
        "missing",
        f"{early.tokenizer_path}, {early.encoded_path} not found",
    )


def test_each_changed_setting_is_named(early):
    changed = early.replace(maxlen=7, padding="post")
    assert stage_state(get_stage("tokenize"), changed) == (
        "stale",
        "changed since last run: maxlen, padding",
    )


def test_a_record_without_its_finishing_time_still_counts_as_fresh(early):
    path = early.data_dir / "stages" / "prepare.json"
    record = json.loads(path.read_text("utf-8"))
    del record["finished_at"]
    path.write_text(json.dumps(record), "utf-8")
    assert stage_state(get_stage("prepare"), early) == ("fresh", "up to date since ?")


def test_a_moved_project_stays_fresh(early, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(early.data_dir.parent, moved)
    config = early.replace(data_dir=moved / "data", artifacts_dir=moved / "artifacts")
    assert {s: stage_state(get_stage(s), config)[0] for s in EARLY} == dict.fromkeys(EARLY, "fresh")


def test_each_stage_records_its_result_and_the_manifest_gathers_them(early):
    prepare_record = json.loads((early.data_dir / "stages" / "prepare.json").read_text("utf-8"))
    assert prepare_record["stage"] == "prepare" and prepare_record["result"]["lines"] == 150
    assert prepare_record["params"] == {n: getattr(early, n) for n in Config.settings_of("prepare")}
    assert set(prepare_record["outputs"]) == {"train.tsv", "val.tsv", "test.tsv"}
    assert prepare_record["seconds"] >= 0 and prepare_record["finished_at"].startswith("20")
    tokenize_record = json.loads((early.artifacts_dir / "stages" / "tokenize.json").read_text())
    assert (
        tokenize_record["result"]["vocab_size"]
        == CharTokenizer.load(early.tokenizer_path).vocab_size
    )

    manifest = json.loads((early.artifacts_dir / "manifest.json").read_text("utf-8"))
    assert manifest["config"] == json.loads(json.dumps(early.to_dict()))
    assert manifest["stages"]["prepare"] == prepare_record
    assert manifest["stages"]["train"] is None and manifest["stages"]["evaluate"] is None
    for package in ("python", "tensorflow", "keras", "numpy", "pandas", "scikit-learn"):
        assert manifest["versions"][package][0].isdigit(), package
        assert prepare_record["versions"][package] == manifest["versions"][package]


def test_a_missing_input_names_the_stage_or_the_source_to_fix(tmp_path, early):
    from tests.conftest import tiny_config

    config = tiny_config(tmp_path, tmp_path / "nowhere.txt")
    message = (
        r"nowhere.txt does not exist; pass --source with the path or URL of naver_shopping.txt$"
    )
    with pytest.raises(PipelineError, match=message):
        run_pipeline(config, names=("download",), quiet=True)
    with pytest.raises(PipelineError, match=r"naver_shopping.txt is missing; run `python -m pipe"):
        run_pipeline(config, names=("prepare",), quiet=True)
    with pytest.raises(PipelineError, match=r"model.keras is missing; run `python -m pipeline tr"):
        run_pipeline(early, names=("evaluate",), quiet=True)


def test_an_unknown_stage_lists_the_real_ones():
    with pytest.raises(
        PipelineError,
        match="^unknown stage 'fly'; stages are download, prepare, tokenize, baseline, pretrain, "
        "train, evaluate$",
    ):
        get_stage("fly")
    assert [get_stage(name).name for name in STAGE_NAMES] == list(STAGE_NAMES)


def test_the_lock_holds_both_folders_and_names_its_holder(early):
    import os

    with pipeline_lock(early):
        for folder in (early.data_dir, early.artifacts_dir):
            assert (folder / ".lock").read_text() == str(os.getpid())
        other = early.replace(artifacts_dir=early.artifacts_dir.parent / "elsewhere")
        with pytest.raises(PipelineError, match=f"pid {os.getpid()}.* is using .*data; wait"):
            run_pipeline(other, names=("prepare",), quiet=True)
    assert run_pipeline(early, names=("prepare",), quiet=True) == [("prepare", "skipped")]


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_writes() -> dict[str, set[str]]:
    """The README's "What each stage writes" table: each stage's files, as paths."""
    section = README.read_text("utf-8").split("## What each stage writes\n\n", 1)[1]
    table = section.split("\n\n", 1)[0].splitlines()[2:]  # below the header and its rule
    writes = {}
    for line in table:
        stage, cell, _ = (c.strip() for c in line.strip().strip("|").split("|"))
        folder, files = None, set()
        for token in re.findall(r"`([^`]+)`", cell):
            if not re.search(r"\.(txt|tsv|json|npz|keras|onnx|data|png)$", token):
                continue  # a setting's value, not a file
            head, _, name = token.rpartition("/")
            folder = head or folder  # a bare name is in the folder named before it
            many = re.fullmatch(r"\{(.+)\}(\.\w+)", name)  # {train,val,test}.tsv
            names = [n + many[2] for n in many[1].split(",")] if many else [name]
            files |= {f"{folder}/{n}" for n in names}
        writes[stage] = files
    return writes


def test_the_readme_names_exactly_the_files_each_stage_declares():
    # pretraining and self-training on: their files are in the table too
    config = Config(pretrain="mlm", label_fraction=0.5, self_train_rounds=1)
    declared = {s.name: {str(p) for p in s.outputs(config)} for s in STAGES}
    assert _readme_writes() == declared


def test_the_cli_describes_every_stage_in_graph_order():
    from pipeline.__main__ import STAGE_HELP, build_parser

    assert tuple(STAGE_HELP) == STAGE_NAMES
    assert " -> ".join(STAGE_NAMES) in build_parser().description
