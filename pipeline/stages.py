"""The stage graph: what each stage reads, writes and depends on, and when it must rerun.

Like a dvc.yaml: a stage is fresh when its recorded fingerprint (input checksums + the settings
it reads) still matches and its outputs are unchanged; `run` skips fresh stages.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pipeline import records
from pipeline.baseline import baseline
from pipeline.config import Config
from pipeline.download import download, local_source
from pipeline.errors import PipelineError
from pipeline.evaluate import evaluate
from pipeline.files import sha256_file, write_json_atomic, write_text_atomic
from pipeline.prepare import SPLITS, prepare
from pipeline.pretrain import pretrain
from pipeline.records import read_json, record_path
from pipeline.tokenizer import ENCODED_SPLITS, tokenize
from pipeline.train import train


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Config, bool], dict]
    inputs: Callable[[Config], list[Path]]
    outputs: Callable[[Config], list[Path]]
    home: str  # "data_dir" or "artifacts_dir": where the stage keeps its record

    @property
    def params(self) -> tuple[str, ...]:
        """The Config fields whose change makes the stage stale (each field names its stages)."""
        return Config.settings_of(self.name)

    def record_path(self, config: Config) -> Path:
        return record_path(getattr(config, self.home), self.name)


def _splits(config: Config, names: tuple[str, ...] = SPLITS) -> list[Path]:
    return [config.split_path(name) for name in names]


def _self_training_inputs(config: Config) -> list[Path]:
    """What self-training reads: the splits (to leave their reviews out) and the unlabeled
    reviews, the training split's left-out ones among them."""
    if not config.self_train_rounds:
        return []
    left_out = [config.train_unlabeled_path] if config.label_fraction < 1 else []
    return [*_splits(config), *left_out, *map(Path, config.unlabeled)]


STAGES: tuple[Stage, ...] = (
    Stage(
        "download",
        download,
        inputs=lambda c: [p] if (p := local_source(c.source)) else [],
        outputs=lambda c: [c.raw_path],
        home="data_dir",
    ),
    Stage(
        "prepare",
        prepare,
        inputs=lambda c: [c.raw_path],
        outputs=lambda c: [
            *_splits(c),
            *([c.train_unlabeled_path] if c.label_fraction < 1 else []),
        ],
        home="data_dir",
    ),
    Stage(
        "tokenize",
        tokenize,
        inputs=lambda c: _splits(c, ENCODED_SPLITS),
        outputs=lambda c: [c.tokenizer_path, c.encoded_path],
        home="artifacts_dir",
    ),
    Stage(
        "baseline",
        baseline,
        inputs=_splits,
        outputs=lambda c: [c.baseline_path],
        home="artifacts_dir",
    ),
    Stage(
        "pretrain",
        pretrain,
        inputs=lambda c: (
            [c.encoded_path, c.tokenizer_path, *_splits(c), *map(Path, c.unlabeled)]
            if c.pretrain != "none"
            else []
        ),
        outputs=lambda c: (
            [c.pretrained_path, c.pretrain_history_path, c.pretrain_curves_path]
            if c.pretrain != "none"
            else []
        ),
        home="artifacts_dir",
    ),
    Stage(
        "train",
        train,
        inputs=lambda c: [
            c.encoded_path,
            c.tokenizer_path,
            *([c.pretrained_path] if c.pretrain != "none" else []),
            *_self_training_inputs(c),
        ],
        outputs=lambda c: [
            c.model_path,
            c.onnx_path,
            c.onnx_weights_path,
            c.history_path,
            c.training_curves_path,
            *([c.self_training_path, c.self_training_curves_path] if c.self_train_rounds else []),
        ],
        home="artifacts_dir",
    ),
    Stage(
        "evaluate",
        evaluate,
        # It scores the test split as a user's Predictor would: model.onnx, once the train
        # record shows it is the model training wrote (else model.keras).
        inputs=lambda c: [
            c.split_path("test"),
            c.model_path,
            c.onnx_path,
            c.onnx_weights_path,
            record_path(c.artifacts_dir, "train"),
            c.tokenizer_path,
            c.baseline_path,
        ],
        outputs=lambda c: [c.metrics_path, c.confusion_matrix_path, c.reliability_path],
        home="artifacts_dir",
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def get_stage(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise PipelineError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")


# -- fingerprints and records ---------------------------------------------------------------------
def _checksums(paths: list[Path]) -> dict[str, str]:
    # Keyed by file name, so moving or copying the project keeps its stages fresh.
    return {p.name: sha256_file(p) for p in paths}


def fingerprint(stage: Stage, config: Config) -> tuple[str, dict]:
    """A hash of the stage's input checksums and settings, and the parts it was made from."""
    settings = config.to_dict()
    parts = {
        "inputs": _checksums([p for p in stage.inputs(config) if p.exists()]),
        "params": {name: settings[name] for name in stage.params},
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return digest, parts


def read_record(stage: Stage, config: Config) -> dict | None:
    return records.read_record(getattr(config, stage.home), stage.name)


def stage_state(stage: Stage, config: Config, digest_parts: tuple[str, dict] | None = None):
    """('fresh' | 'stale' | 'missing', why); pass the fingerprint if it is already computed."""
    record = read_record(stage, config)
    if record is None:
        return "missing", "never run here"
    missing = [str(p) for p in stage.outputs(config) if not p.exists()]
    if missing:
        return "missing", f"{', '.join(missing)} not found"
    digest, parts = digest_parts or fingerprint(stage, config)
    if digest != record.get("fingerprint"):
        changed = [k for k, v in parts["params"].items() if record["params"].get(k) != v]
        changed += [p for p, h in parts["inputs"].items() if record["inputs"].get(p) != h]
        return "stale", f"changed since last run: {', '.join(changed) or 'inputs'}"
    if _checksums(stage.outputs(config)) != record.get("outputs"):
        return "stale", "its outputs were modified after it ran"
    return "fresh", f"up to date since {record.get('finished_at', '?')}"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "numpy", "pandas", "scikit-learn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def run_stage(
    stage: Stage, config: Config, quiet: bool = False, digest_parts: tuple[str, dict] | None = None
) -> dict | None:
    """Run one stage now, then record its fingerprint, outputs and result.

    Returns None, recording nothing, when the stage ran as a worker of a cluster whose chief
    writes the outputs (multi-worker training).
    """
    for path in stage.inputs(config):
        if not path.exists():
            raise PipelineError(_missing(path, config))
    digest, parts = digest_parts or fingerprint(stage, config)
    started = time.perf_counter()
    try:
        result = stage.run(config, quiet)
    except PipelineError:
        raise
    except Exception as exc:  # a bug or an input we did not foresee: keep the traceback
        log = write_failure_log(stage, config)
        cause = (str(exc).strip().splitlines() or [""])[0][:200]
        raise PipelineError(
            f"the {stage.name} stage failed unexpectedly ({type(exc).__name__}: {cause}); "
            f"the traceback is in {log}"
        ) from None
    if result is None:
        return None
    record = {
        "stage": stage.name,
        "fingerprint": digest,
        **parts,
        "outputs": _checksums(stage.outputs(config)),
        "result": result,
        # to the hundredth, rounded down: a record never claims more time than the stage took
        "seconds": int((time.perf_counter() - started) * 100) / 100,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }
    write_json_atomic(stage.record_path(config), record)
    write_manifest(config)
    return record


def write_failure_log(stage: Stage, config: Config) -> Path:
    """Write the exception being handled to artifacts/logs/<stage>-<UTC time>.log; its path."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    text = f"{stage.name} failed at {stamp}\n\n{traceback.format_exc()}"
    path = config.artifacts_dir / "logs" / f"{stage.name}-{stamp}.log"
    try:
        write_text_atomic(path, text)
    except OSError:  # the artifacts folder itself is the problem: fall back to the temp folder
        path = Path(tempfile.gettempdir()) / path.name
        write_text_atomic(path, text)
    return path


def _missing(path: Path, config: Config) -> str:
    """What to do about a missing input: run the stage that writes it, or name the right file."""
    producer = _producer(path, config)
    if producer:
        return f"{path} is missing; run `python -m pipeline {producer}` first"
    if path in map(Path, config.unlabeled):
        return (
            f"unlabeled file {path} does not exist; pass --unlabeled with a file of reviews "
            "(one a line, or a csv, tsv or jsonl file with --unlabeled-column)"
        )
    return (
        f"source file {path} does not exist; pass --source with the path or URL of "
        "naver_shopping.txt"
    )


def _producer(path: Path, config: Config) -> str | None:
    for stage in STAGES:
        if path in stage.outputs(config) or path == stage.record_path(config):
            return stage.name
    return None


def write_manifest(config: Config, export: dict | None = None) -> None:
    """artifacts/manifest.json, its one writer: every stage's record, the settings, versions.

    With `export` (the export command's record) only that record changes: the rest describes
    the last run, and the export command's flags need not be the ones the model was trained with.
    """
    path = config.manifest_path
    if export is not None:
        write_json_atomic(path, {**read_json(path), "export": export})
        return
    manifest = {
        "config": config.to_dict(),
        "versions": library_versions(),
        "stages": {s.name: read_record(s, config) for s in STAGES},
    }
    # The last `export` (pipeline/export.py) keeps its own record; it is not a stage.
    if exported := read_json(config.export_record_path):
        manifest["export"] = exported
    write_json_atomic(path, manifest)


def run_pipeline(
    config: Config, names: tuple[str, ...] = STAGE_NAMES, force: bool = False, quiet: bool = False
) -> list[tuple[str, str]]:
    """Run the named stages in graph order, skipping fresh ones unless `force`."""
    done = []
    say = (lambda line: None) if quiet else print
    with pipeline_lock(config):
        for stage in STAGES:
            if stage.name not in names:
                continue
            # The inputs are final once the stages before this one are done: hash them once.
            digest_parts = fingerprint(stage, config)
            state, why = stage_state(stage, config, digest_parts)
            if state == "fresh" and not force:
                say(f"{stage.name}: skipped ({why})")
                done.append((stage.name, "skipped"))
                continue
            say(f"{stage.name}: running")
            record = run_stage(stage, config, quiet, digest_parts)
            if record is None:  # a worker's part ends here: the chief writes and goes on
                say(f"{stage.name}: done as a worker; the chief wrote the outputs")
                done.append((stage.name, "worker"))
                break
            say(f"{stage.name}: done in {record['seconds']:.1f} s")
            done.append((stage.name, "ran"))
    return done


def pipeline_lock(config: Config) -> contextlib.AbstractContextManager[None]:
    """One run at a time per data and artifacts folder; the OS frees the lock if we die."""
    return lock_folders(config.data_dir, config.artifacts_dir)


@contextlib.contextmanager
def lock_folders(*folders: Path) -> Iterator[None]:
    """Hold each folder's `.lock` (in one order, so two holders cannot deadlock), or refuse."""
    with contextlib.ExitStack() as stack:
        for folder in sorted({Path(f).resolve() for f in folders}):
            folder.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context((folder / ".lock").open("a+"))
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise PipelineError(
                    f"another pipeline run (pid {holder}) is using {folder}; wait for it to "
                    "finish or use other --data-dir/--artifacts-dir"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        yield
