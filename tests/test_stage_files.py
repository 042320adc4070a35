"""Each stage reads exactly the files it declares as inputs and writes exactly its outputs.

Every stage runs for real on the fixture's lines (pretraining and self-training on, tiny sizes)
while an audit hook notes every file Python opens; what it wrote is what changed on disk. A file
a stage touches without declaring it would never make the stage stale; one it declares without
touching makes it stale for nothing.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import pytest

from pipeline.stages import STAGES, get_stage, run_stage, stage_state
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # trains (and pretrains) a tiny model

_opened: list[str] | None = None  # the paths opened while a stage runs under watch


def _note_opens(event: str, args: tuple) -> None:
    # "open" is raised by open(), io.open(), Path.open() and os.open(), so by np.load, pandas,
    # zipfile (Keras' model files) and matplotlib alike
    if _opened is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_note_opens)  # hooks stay for the process's life: it is idle unless watching


def _files(root: Path) -> dict[Path, tuple[int, int, int]]:
    """Every file under `root`, with what changes when it is rewritten (inode, mtime, size)."""
    return {
        p: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file()
    }


def _watched(run, root: Path, seen: dict):
    """`run` (a stage's function), noting the files under `root` it read and wrote in `seen`."""

    def watched(config, quiet):
        global _opened
        before, _opened = _files(root), []
        try:
            result = run(config, quiet)
        finally:
            opened, _opened = _opened, None
        after = _files(root)
        seen["written"] = {p for p, stamp in after.items() if before.get(p) != stamp}
        seen["read"] = {
            p
            for p in (Path(name).resolve() for name in opened)
            if p in before and p not in seen["written"]
        }
        return result

    return watched


@pytest.fixture(scope="module")
def touched(tmp_path_factory, sample_path):
    """Run every stage once on 200 lines (pretraining and self-training on, half the labels);
    each stage's files read and written."""
    root = tmp_path_factory.mktemp("stage-files").resolve()
    lines = sample_path.read_text("utf-8").splitlines(True)
    source = root / "source.txt"
    source.write_text("".join(lines[:200]), "utf-8")
    unlabeled = root / "unlabeled.txt"
    unlabeled.write_text("".join(line.partition("\t")[2] for line in lines[200:260]), "utf-8")
    config = tiny_config(
        root / "project",
        source,
        pretrain="mlm",
        unlabeled=(str(unlabeled),),
        pretrain_epochs=1,
        pretrain_batch_size=64,
        label_fraction=0.5,
        self_train_rounds=1,
    )
    seen = {}
    for stage in STAGES:
        seen[stage.name] = {}
        watched = dataclasses.replace(stage, run=_watched(stage.run, root, seen[stage.name]))
        assert run_stage(watched, config, quiet=True) is not None
    return config, seen


@pytest.mark.parametrize("name", [stage.name for stage in STAGES])
def test_each_stage_reads_its_declared_inputs_and_writes_its_declared_outputs(touched, name):
    config, seen = touched
    stage = get_stage(name)
    assert seen[name]["read"] == {p.resolve() for p in stage.inputs(config)}
    assert seen[name]["written"] == {p.resolve() for p in stage.outputs(config)}


def test_without_pretraining_the_pretrain_stage_declares_and_touches_nothing(touched):
    config, _ = touched
    config = config.replace(pretrain="none")
    stage, seen = get_stage("pretrain"), {}
    assert _watched(stage.run, config.data_dir.parent, seen)(config, True) == {"objective": "none"}
    assert seen == {"read": set(), "written": set()}
    assert stage.inputs(config) == [] and stage.outputs(config) == []


def test_a_changed_test_split_leaves_tokenize_fresh_and_makes_evaluate_stale(touched, tmp_path):
    config, _ = touched
    moved = config.replace(
        data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts"
    )  # a copy: the other tests read the original
    shutil.copytree(config.data_dir, moved.data_dir)
    shutil.copytree(config.artifacts_dir, moved.artifacts_dir)
    assert {s.name: stage_state(s, moved)[0] for s in STAGES} == dict.fromkeys(
        (s.name for s in STAGES), "fresh"
    )
    test_split = moved.split_path("test")
    test_split.write_text(test_split.read_text("utf-8") + "1\t5\t새 리뷰\n", "utf-8")
    states = {s.name: stage_state(s, moved) for s in STAGES}
    assert states["tokenize"][0] == "fresh"
    # self-training leaves the test split's reviews out of what the teacher labels
    assert states["train"] == ("stale", "changed since last run: test.tsv")
    assert states["evaluate"] == ("stale", "changed since last run: test.tsv")
    assert states["baseline"] == ("stale", "changed since last run: test.tsv")
    assert states["pretrain"] == ("stale", "changed since last run: test.tsv")
