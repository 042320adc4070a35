"""The thread that owns the model: micro-batches every request's reviews, and swaps in new models.

One worker thread scores every request: whatever is queued is gathered into one model batch (up
to serve_max_batch reviews, waiting at most serve_batch_wait_ms for more), so many small
concurrent requests cost about what one large batch costs. Cleaning and encoding are
Predictor's, never repeated here. Each worker process of the service has its own Scorer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import gc
import logging
import queue
import threading
import time
import weakref
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.predict import Predictor, artifact_stamps
from pipeline.serve import metrics

log = logging.getLogger(__name__)
SETTLE_SECONDS = 1.0  # a changed model's files must stay unchanged this long before a reload


def load_predictor(folder: Path, threads: int, engine: str = "auto") -> Predictor:
    """A fresh Predictor of `folder`: not get_predictor's, as a swapped-out one must be dropped."""
    return Predictor(Path(folder), engine=engine, threads=threads)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Scorer:
    """One thread scores every request: whatever is queued is gathered into one model batch.

    The model is reloaded when one of its files changes (predict.model_files): the new one is
    loaded in the background while the old one keeps answering, then swapped in between two
    batches, and the old one is let go (the scorer holds exactly one). A model that fails to
    load is logged and the previous one kept.
    """

    def __init__(
        self,
        artifacts_dir: Path,
        max_batch: int,
        wait_ms: float,
        model_threads: int = 1,
        engine: str = "auto",
    ) -> None:
        self.artifacts_dir = Path(artifacts_dir)
        self.engine = engine
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000
        self.model_threads = model_threads
        self.batches = 0  # model batches scored
        self.requests = 0  # jobs scored (one per /predict or /explain request)
        self._stamps = artifact_stamps(self.artifacts_dir)
        self._changing: tuple[tuple, float] = (self._stamps, 0.0)  # new stamps, first seen
        self.predictor, self.model_sha256 = self._load()  # PipelineError: caller says why
        self.loaded_at = _now()
        self.reload_error: str | None = None  # why the latest model files could not be loaded
        self._loading = False
        self._retired: list[tuple[weakref.ref, int]] = []  # swapped-out models, tries left
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="scorer", daemon=True)
        self._thread.start()

    def _load(self) -> tuple[Predictor, str]:
        try:
            predictor = load_predictor(self.artifacts_dir, self.model_threads, self.engine)
        except (PipelineError, OSError):
            metrics.MODEL_LOAD_FAILURES.inc()
            raise
        metrics.MODEL_LOADS.inc()
        metrics.serving(predictor.model_sha256, getattr(self, "model_sha256", None))
        return predictor, predictor.model_sha256

    def submit(self, texts: list[str]) -> concurrent.futures.Future:
        """Queue reviews; the future gets their positive probabilities in order."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((texts, future))
        return future

    async def score(self, texts: list[str]) -> np.ndarray:
        """Positive probabilities of `texts`, scored in whichever batch they join."""
        if not texts:
            return np.empty(0, dtype=np.float32)
        return await asyncio.wrap_future(self.submit(texts))

    def queued(self) -> int:
        """Requests waiting for a batch."""
        return self._jobs.qsize()

    def close(self) -> None:
        """Finish the batch under way, then stop the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            jobs, size = [job], len(job[0])
            deadline = time.monotonic() + self.wait_s
            while size < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    job = self._jobs.get(timeout=left) if left > 0 else self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:  # stop after this batch
                    self._jobs.put(None)
                    break
                jobs.append(job)
                size += len(job[0])
            self._score(jobs)
            self._free_retired()

    def _score(self, jobs: list[tuple[list[str], concurrent.futures.Future]]) -> None:
        jobs = [(texts, f) for texts, f in jobs if f.set_running_or_notify_cancel()]
        if not jobs:
            return  # every client went away
        texts = [text for job_texts, _ in jobs for text in job_texts]
        try:
            probs = self._current_predictor().predict_proba(texts)
        except Exception as exc:  # answered as a 500 for these requests; the worker lives on
            log.exception("scoring failed")
            for _, future in jobs:
                future.set_exception(exc)
            return
        self.batches += 1
        self.requests += len(jobs)
        metrics.BATCH_SIZE.observe(len(texts))
        start = 0
        for job_texts, future in jobs:
            future.set_result(probs[start : start + len(job_texts)])
            start += len(job_texts)

    def _free_retired(self) -> None:
        """Collect garbage until swapped-out models are gone (a few batches at most).

        A Keras model is full of reference cycles: only a collection frees it, else about a
        model's size stays for good per swap. A batch or explanation may still hold the old
        one when it is swapped out, so this runs after batches until it is free.
        """
        if not self._retired:
            return
        gc.collect()
        self._retired = [(ref, left - 1) for ref, left in self._retired if ref() and left > 1]

    def _current_predictor(self) -> Predictor:
        stamps = artifact_stamps(self.artifacts_dir)
        if stamps != self._stamps and not self._loading:
            # A new model is a few files (train writes model.keras, model.onnx, then the record
            # naming them): load once they have stopped changing, not from a half-written set.
            now = time.monotonic()
            if stamps != self._changing[0]:
                self._changing = (stamps, now)
            elif now - self._changing[1] >= SETTLE_SECONDS:
                self._loading = True
                threading.Thread(target=self._reload, args=(stamps,), daemon=True).start()
        return self.predictor

    def _reload(self, stamps: tuple) -> None:
        try:
            retired = weakref.ref(self.predictor)
            self.predictor, self.model_sha256 = self._load()
            self.loaded_at, self.reload_error = _now(), None
            self._retired = [*self._retired, (retired, 10)]
            log.info(
                "loaded the new model in %s (sha256 %s)", self.artifacts_dir, self.model_sha256[:12]
            )
        except (PipelineError, OSError) as exc:
            self.reload_error = str(exc)
            log.warning("kept the previous model: %s", exc)
        finally:
            self._stamps = stamps  # these files are dealt with; a later change loads again
            self._loading = False
