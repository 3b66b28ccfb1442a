"""Asynchronous recognition: the recogniser runs off the frame loop (REALTIME.md).

Events are rare and frames are not, so the frame loop hands an (onset, apex) pair to a
background thread and goes on with the next frame; the label comes back a few frames
later through ``poll()``.

    worker = RecognitionWorker(recognizer)
    worker.submit(RecognitionJob(key=onset_frame, onset_rgb=a, apex_rgb=b))   # never blocks
    for result in worker.poll():        # each frame: whatever has finished
        ...result.probs, result.compute_ms, result.error
    worker.wait(timeout=10)             # files/benchmarks: collect what is still running
    worker.close()

- ``submit`` never blocks: the queue is bounded (``max_queue``); a job that does not fit
  is refused and counted in ``dropped`` (a live stream must not build a backlog).
- Jobs waiting together are run as one batch (up to ``max_batch``): the recogniser takes
  (N, 224, 224, 3) pairs.
- An exception inside the recogniser is caught: the job comes back with ``error`` set,
  ``faults`` is counted, the message is logged once per kind, and the thread keeps
  serving later jobs.
- The recogniser is only ever called from this one thread.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Hashable

import numpy as np

log = logging.getLogger("realtime.stages.worker")


@dataclass
class RecognitionJob:
    """An aligned onset/apex pair to classify; both (224, 224, 3) uint8 RGB."""

    key: Hashable
    onset_rgb: np.ndarray
    apex_rgb: np.ndarray
    submitted_at: float = field(default_factory=time.perf_counter)
    context: Any = None  # whatever the submitter needs back with the result


@dataclass
class RecognitionResult:
    """What came back for a job: probabilities (class -> p) or an error message."""

    key: Hashable
    probs: dict[str, float] | None
    label: str | None
    compute_ms: float        # time inside recognizer.predict for the batch this job was in
    queued_ms: float         # submitted -> picked up by the worker
    ready_at: float          # time.perf_counter() when the result was available
    submitted_at: float
    error: str | None = None
    context: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def confidence(self) -> float:
        return max(self.probs.values()) if self.probs else 0.0


class RecognitionWorker:
    """A background thread with a bounded queue in front of one recogniser."""

    def __init__(self, recognizer, *, max_queue: int = 8, max_batch: int = 4, name: str = "recognition") -> None:
        if recognizer is None:
            raise ValueError("RecognitionWorker needs a recogniser (engines.recognizer.Recognizer.load(...))")
        self.recognizer = recognizer
        self.classes = tuple(recognizer.classes)
        self.max_batch = max(1, int(max_batch))
        self._jobs: queue.Queue = queue.Queue(maxsize=max(1, int(max_queue)))
        self._results: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self.submitted = 0
        self.batches = 0              # engine calls made
        self.largest_batch = 0
        self.completed = 0
        self.dropped = 0
        self.faults = 0
        self.last_error: str | None = None
        self._errors_seen: set[str] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- frame-loop side -------------------------------------------------------------
    def submit(self, job: RecognitionJob) -> bool:
        """Queue a job without blocking; False (and ``dropped`` += 1) when the queue is full."""
        return self.submit_many([job])

    def submit_many(self, jobs: list[RecognitionJob]) -> bool:
        """Queue jobs that coincide (the pairs of several faces on one frame) as ONE entry:
        they go to the engine in one batch call. Never blocks; False (and ``dropped`` +=
        len(jobs)) when the queue is full."""
        if self._closed:
            raise RuntimeError("RecognitionWorker is closed")
        if not jobs:
            return True
        with self._lock:
            self._pending += len(jobs)
        try:
            self._jobs.put_nowait(list(jobs))
        except queue.Full:
            with self._lock:
                self._pending -= len(jobs)
                self.dropped += len(jobs)
                self._idle.notify_all()
            log.warning("recognition queue full (%d entries): %d pair(s) dropped", self._jobs.maxsize, len(jobs))
            return False
        self.submitted += len(jobs)
        return True

    def poll(self) -> list[RecognitionResult]:
        """Results finished since the last call (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    @property
    def pending(self) -> int:
        """Jobs submitted whose result has not been produced yet."""
        with self._lock:
            return self._pending

    def wait(self, timeout: float | None = None) -> list[RecognitionResult]:
        """Block until every submitted job has a result (or ``timeout`` s); return all unpolled results."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._idle.wait(left)
        return self.poll()

    def close(self, wait: bool = False, timeout: float = 10.0) -> list[RecognitionResult]:
        """Stop the thread; returns unpolled results. With ``wait``, queued jobs are given up
        to ``timeout`` s to finish first; jobs that have not started by then are dropped."""
        if self._closed:
            return self.poll()
        results = self.wait(timeout) if wait else []
        self._closed = True
        while True:  # drop what has not started (also frees room for the stop signal)
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                with self._lock:
                    self._pending -= len(job)
                    self._idle.notify_all()
        self._jobs.put(None)
        self._thread.join(timeout=timeout if wait else 1.0)
        return results + self.poll()

    def stats(self) -> dict:
        return {"submitted": self.submitted, "batches": self.batches, "largest_batch": self.largest_batch,
                "completed": self.completed, "dropped": self.dropped,
                "faults": self.faults, "pending": self.pending, "last_error": self.last_error}

    # -- worker side -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            entry = self._jobs.get()          # a list of jobs submitted together
            if entry is None:
                return
            batch = list(entry)
            while len(batch) < self.max_batch:   # and whatever else is waiting
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._jobs.put(None)  # keep the stop signal for the loop
                    break
                batch.extend(nxt)
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            self._run_batch(batch)

    def _run_batch(self, batch: list[RecognitionJob]) -> None:
        started = time.perf_counter()
        probs = None
        error = None
        try:
            onset = np.stack([j.onset_rgb for j in batch])  # (N, 224, 224, 3)
            apex = np.stack([j.apex_rgb for j in batch])
            probs = np.asarray(self.recognizer.predict(onset, apex), dtype=np.float64)  # (N, C)
            if probs.shape != (len(batch), len(self.classes)):
                raise ValueError(f"recogniser returned shape {probs.shape}, expected "
                                 f"({len(batch)}, {len(self.classes)})")
        except Exception as e:  # any failure of the engine is a counted fault, never a crash
            error = f"{type(e).__name__}: {e}"
            probs = None
        ready = time.perf_counter()
        compute_ms = (ready - started) * 1e3
        for i, job in enumerate(batch):
            if error is None:
                p = {c: float(v) for c, v in zip(self.classes, probs[i])}
                label = max(p, key=p.get)
            else:
                p, label = None, None
            self._results.put(RecognitionResult(
                key=job.key, probs=p, label=label, compute_ms=compute_ms,
                queued_ms=(started - job.submitted_at) * 1e3, ready_at=ready,
                submitted_at=job.submitted_at, error=error, context=job.context))
        with self._lock:
            if error is None:
                self.completed += len(batch)
            else:
                self.faults += len(batch)
                self.last_error = error
                kind = error.split(":", 1)[0]
                if kind not in self._errors_seen:
                    self._errors_seen.add(kind)
                    log.error("recognition failed (%s); the run continues, the event keeps no label", error)
            self._pending -= len(batch)
            self._idle.notify_all()
