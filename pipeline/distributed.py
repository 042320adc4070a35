"""Training on several replicas or machines with tf.distribute: the strategy and the cluster.

`--distribute mirrored` uses every local GPU (or CPU); `--distribute multi-worker` a cluster
named by TF_CONFIG, every worker started with the same command. The input (pipeline/batches.py)
and the loop (pipeline/loop.py) are the same for one process and for a cluster; this module
sets the cluster up, checks its workers agree, and turns a lost peer into one sentence.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.errors import PipelineError

ROLES = ("chief", "worker")  # the tasks that train; TF_CONFIG may name others (evaluator, ps)
# TensorFlow's errors when a peer is gone: its socket closed, its heartbeats stopped, a deadline.
PEER_ERRORS = ("UnavailableError", "DeadlineExceededError", "AbortedError", "CancelledError")


@dataclass(frozen=True)
class Cluster:
    """The training tasks of a TF_CONFIG cluster, in order (the chief first), and this one."""

    addresses: tuple[str, ...]
    names: tuple[str, ...]  # "worker 1 (host:port)", for messages
    index: int  # this process, in that order

    @property
    def chief(self) -> bool:
        """Whether this process writes the artifacts: the chief task, else worker 0."""
        return self.index == 0

    @property
    def me(self) -> str:
        return self.names[self.index]

    def others(self) -> list[str]:
        return [name for i, name in enumerate(self.names) if i != self.index]


def read_tf_config() -> Cluster:
    """The cluster named by TF_CONFIG, checked, or a PipelineError saying what is wrong."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise PipelineError(
            "--distribute multi-worker needs TF_CONFIG naming the cluster and this worker, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        tasks = [(role, i, a) for role in ROLES for i, a in enumerate(cluster.get(role) or [])]
        me = [(role, i) for role, i, _ in tasks].index((task["type"], int(task["index"])))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PipelineError(
            "TF_CONFIG is not a valid cluster for training: it needs "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}} '
            "with N the position of this worker in that list"
        ) from None
    return Cluster(
        addresses=tuple(a for _, _, a in tasks),
        names=tuple(f"{role} {i} ({a})" for role, i, a in tasks),
        index=me,
    )


def strategy_for(name: str, cluster_timeout: float = 300.0):
    """(strategy, cluster): TensorFlow's own engine for `distribute`, and the TF_CONFIG cluster
    for multi-worker (None otherwise)."""
    import tensorflow as tf

    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices]), None
    if name != "multi-worker":
        return tf.distribute.get_strategy(), None
    cluster = read_tf_config()
    _coordinate(cluster, cluster_timeout)
    with peer_failures(cluster, joining_within=cluster_timeout):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return strategy, cluster


def _coordinate(cluster: Cluster, timeout: float) -> None:
    """Set up TensorFlow's coordination service as the strategy would, with a deadline.

    The strategy's own setup waits forever, deaf even to Ctrl-C, for a worker that never
    starts; registering through a barrier with a timeout makes that a DeadlineExceededError
    naming the missing workers. The service also checks every worker's heartbeat, so one that
    dies or hangs later is reported within seconds.
    """
    from tensorflow.python.eager import context

    leader = cluster.names[0].split()[0]  # the chief, else worker 0
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{leader}/replica:0/task:0",
        cluster_register_timeout_in_ms=int(timeout * 1000),
    )
    context.context().coordination_service.cluster_register_with_barrier = True


@contextlib.contextmanager
def peer_failures(cluster: Cluster | None, joining_within: float | None = None) -> Iterator[None]:
    """Turn TensorFlow's errors about an unreachable or dead worker into one sentence.

    `joining_within`: the cluster is forming, and this many seconds were given to it.
    """
    try:
        yield
    except Exception as exc:
        if cluster is None or type(exc).__name__ not in PEER_ERRORS:
            raise
        # TensorFlow names tasks /job:worker/replica:0/task:1; the unhealthy or timed-out
        # ones are listed last, after the task that noticed.
        text = str(exc)
        for marker in ("unhealthy", "timed out task names", "remote target"):
            if marker in text:
                text = text[text.find(marker) :]
                break
        tasks = re.findall(r"/job:(chief|worker)/(?:replica:\d+/)?task:(\d+)", text)
        named = [f"{role} {index} " for role, index in tasks]
        who = [n for n in cluster.others() if any(n.startswith(t) for t in named)]
        who = ", ".join(who or cluster.others())
        if joining_within is not None:
            message = (
                f"{who} could not be reached within {joining_within:.0f} s (cluster_timeout); "
                "start every worker with the same command and its own TF_CONFIG, and check the "
                "addresses"
            )
        else:
            message = (
                f"{who} stopped responding ({type(exc).__name__}), so training stopped and "
                "model.keras was left as it was; restart every worker with the same command"
            )
        raise PipelineError(message) from None


def check_same_inputs(strategy, cluster: Cluster, config: Config) -> None:
    """Every worker must train on the same data and settings, or their steps would not match."""
    import tensorflow as tf

    # stages imports train, which imports this module: import it only when a cluster trains
    from pipeline.stages import fingerprint, get_stage

    stage = get_stage("train")
    digest, _ = fingerprint(stage, config)  # the train stage's: its inputs' checksums + settings
    words = np.frombuffer(bytes.fromhex(digest)[:16], dtype=np.int32)
    with peer_failures(cluster):
        seen = strategy.gather(tf.constant(words[None, :]), axis=0).numpy()
    if (seen != words).any():
        files = ", ".join(map(str, stage.inputs(config)))
        raise PipelineError(
            "the workers' prepared data, tokenizer or training settings differ; give every "
            f"worker the same copy of {files} and the same command"
        )


def save_as_worker(model) -> None:
    """Save as the chief does, into a folder that is then deleted.

    Saving reads variables that MultiWorkerMirroredStrategy may sync with collective ops, which
    every worker must join; only the chief's copy is kept.
    """
    scratch = Path(tempfile.mkdtemp(prefix="pipeline-worker-"))
    try:
        model.save(scratch / "model.keras")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def finish_together(cluster: Cluster, timeout: float) -> None:
    """Wait until every worker has done its part, the chief's being to write the model.

    A worker that exits 0 has thus seen the chief's model written; if the chief dies first,
    the worker fails naming it. The chief's work is done by then: a worker that vanishes at
    this point changes nothing, so the chief does not wait for stragglers.
    """
    from tensorflow.python.eager import context

    try:
        with peer_failures(cluster):
            context.context().wait_at_barrier("train-written", int(timeout * 1000))
    except PipelineError:
        if not cluster.chief:
            raise
