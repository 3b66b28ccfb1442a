"""Where a batch's jobs run on this machine (``realtime.batch.pool``).

``run_serial``: one after the other in this process (a recogniser already loaded can be
used); ``run_processes``: a pool of spawned worker processes, at most two jobs each in
flight, made again when a worker dies (the recordings it held retried once, then listed as
failed). Also the worker setup the Ray runner shares: threads per worker, log level, and
FFmpeg's / OpenCV's own console messages off (``quiet_native``).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as _q
import signal
import sys
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Sequence

import cv2

from realtime.batch.job import Job, failed_result, run_job

log = logging.getLogger("realtime.batch.pool")


def quiet_native(level: int) -> None:
    """FFmpeg's and OpenCV's own console messages off (a truncated file prints one per bad
    frame; the batch reports it in the tables) unless debugging; before the first video is
    opened (spawned workers and Ray tasks inherit it)."""
    if level > logging.DEBUG:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def worker_setup(threads: int, level: int) -> None:
    """A worker process's threads, log level and native console messages."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    quiet_native(level)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    logging.getLogger().setLevel(level)
    try:
        cv2.setNumThreads(threads)
    except Exception:
        pass
    if "torch" in sys.modules:
        try:
            sys.modules["torch"].set_num_threads(threads)
        except Exception:
            pass


_QUEUE = None


def _process_init(queue, threads: int, level: int) -> None:
    global _QUEUE
    _QUEUE = queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl+C is the driver's to handle
    worker_setup(threads, level)


def _process_task(job: Job) -> dict:
    q = _QUEUE
    return run_job(job, report=(lambda i, n: q.put_nowait((i, n))) if q is not None else None)


def run_serial(jobs: Sequence[Job], *, recognizer=None, on_progress, on_result) -> None:
    """Jobs one after the other in this process (the pipeline's own log messages at the
    jobs' level meanwhile, as in a worker)."""
    logger = logging.getLogger("realtime")
    before = logger.level
    if jobs:
        logger.setLevel(jobs[0].log_level)
    try:
        for job in jobs:
            on_result(job, run_job(job, recognizer=recognizer, report=on_progress))
    finally:
        logger.setLevel(before)


def run_processes(jobs: Sequence[Job], workers: int, *, on_progress, on_result, max_tasks: int = 40) -> None:
    """Jobs in ``workers`` spawned processes, at most 2 per worker in flight; results in
    the order they finish. A worker that dies (killed, out of memory, a crash in native
    code) breaks the pool: it is made again and the recordings it held are retried once,
    then listed as failed."""
    ctx = mp.get_context("spawn")
    progress = ctx.Queue()
    level = jobs[0].log_level if jobs else logging.ERROR
    threads = jobs[0].threads if jobs else 1

    def make_pool():
        kw = dict(max_workers=workers, mp_context=ctx, initializer=_process_init, initargs=(progress, threads, level))
        if sys.version_info >= (3, 11):
            kw["max_tasks_per_child"] = max_tasks    # a fresh process now and then: memory stays flat
        return ProcessPoolExecutor(**kw)

    def drain():
        while True:
            try:
                i, n = progress.get_nowait()
            except (_q.Empty, OSError, EOFError, ValueError):
                return
            on_progress(i, n)

    pending = deque(jobs)
    crashes: Counter = Counter()
    pool = make_pool()
    running: dict = {}
    try:
        while pending or running:
            while pending and len(running) < 2 * workers:
                job = pending.popleft()
                running[pool.submit(_process_task, job)] = job
            done, _ = wait(list(running), timeout=0.3, return_when=FIRST_COMPLETED)
            drain()
            broken = False
            for f in done:
                job = running.pop(f)
                try:
                    res = f.result()
                except BrokenProcessPool:
                    broken = True
                    crashes[job.index] += 1
                    if crashes[job.index] >= 2:
                        on_result(job, failed_result(job, "the worker process died while analysing it, twice "
                                                          "(killed, out of memory, or a crash in native code)"))
                    else:
                        pending.appendleft(job)
                    continue
                on_result(job, res)
            if broken:
                for f, job in list(running.items()):    # the rest of the broken pool's work goes again
                    pending.appendleft(job)
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                log.warning("a worker process died; starting the pool again")
                pool = make_pool()
        drain()
    except BaseException:
        _terminate(pool)
        raise
    else:
        pool.shutdown(wait=True)


def _terminate(pool) -> None:
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            p.terminate()
        except Exception:
            pass
    try:
        pool.shutdown(wait=False, cancel_futures=True)
    except Exception:
        pass
