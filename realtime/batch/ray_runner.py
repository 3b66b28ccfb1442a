"""The batch's jobs as Ray tasks (``realtime.batch.ray_runner``, ``--ray``).

One CPU per task, on the cluster at ``--ray-address`` or a local runtime started (and
stopped) here; frames done are pushed to a counter actor for the progress bar. A task
whose worker dies is listed as failed; an engine that cannot be loaded, or a BatchError,
stops the batch. Ray is an optional dependency (the "batch" extra, Linux wheels): it is
imported only when a Ray batch runs.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Sequence

from realtime.batch.discovery import BatchError
from realtime.batch.job import EngineLoadError, Job, failed_result, run_job
from realtime.batch.pool import worker_setup


def _ray_task(job: Job, counter) -> dict:
    if not getattr(_ray_task, "ready", False):
        worker_setup(job.threads, job.log_level)
        _ray_task.ready = True
    return run_job(job, report=(lambda i, n: counter.add.remote(i, n)) if counter is not None else None)


class _RayCounter:
    """Frames done per recording, pushed by the tasks, taken by the driver."""

    def __init__(self) -> None:
        self.items: list = []

    def add(self, i: int, n: int) -> None:
        self.items.append((i, n))

    def take(self) -> list:
        out, self.items = self.items, []
        return out


def ray_available() -> tuple[bool, str]:
    try:
        import ray  # noqa: F401  -- optional (the batch extra, Linux wheels): only asked for with --ray
    except Exception as e:
        return False, (f"Ray is not installed ({type(e).__name__}: {e}); install the batch extra: "
                       "pip install -e \".[batch]\" (Ray wheels are Linux-only here)")
    return True, ""


def run_ray(jobs: Sequence[Job], *, address: str | None, cpus: int | None, on_progress, on_result) -> dict:
    """Jobs as Ray tasks (one CPU each) on the cluster at ``address`` ("auto": the one
    this node belongs to; None: a local runtime with ``cpus`` CPUs, stopped at the end).
    Returns what the cluster was ({"address", "cpus", "nodes"})."""
    ok, why = ray_available()
    if not ok:
        raise BatchError(f"--ray: {why}")
    import ray  # optional (the batch extra): imported only when a Ray batch runs

    started_here = not ray.is_initialized()
    if started_here:
        kw = dict(log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False,
                  runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "OPENCV_LOG_LEVEL": "ERROR"}})
        if address:
            kw.pop("include_dashboard")
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=cpus, object_store_memory=128 * 2 ** 20, **kw)
    info = {"address": address or "local", "cpus": int(ray.cluster_resources().get("CPU", 0)),
            "nodes": len([n for n in ray.nodes() if n.get("Alive")])}
    task = ray.remote(num_cpus=1, max_retries=1)(_ray_task)
    counter = ray.remote(num_cpus=0)(_RayCounter).remote()
    limit = max(2, 2 * info["cpus"])
    pending, running = deque(jobs), {}
    try:
        while pending or running:
            while pending and len(running) < limit:
                job = pending.popleft()
                running[task.remote(job, counter)] = job
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.3)
            for i, n in ray.get(counter.take.remote()):
                on_progress(i, n)
            for ref in ready:
                job = running.pop(ref)
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, (EngineLoadError, BatchError)):
                        raise cause from None
                    res = failed_result(job, f"the Ray task failed: {str(e).splitlines()[0][:500]}")
                except ray.exceptions.RayError as e:   # the worker died (killed, out of memory)
                    res = failed_result(job, f"the Ray worker died while analysing it ({type(e).__name__})")
                on_result(job, res)
        for i, n in ray.get(counter.take.remote()):
            on_progress(i, n)
    except BaseException:
        for ref in running:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        raise
    finally:
        try:
            ray.kill(counter)
        except Exception:
            pass
        if started_here:
            ray.shutdown()
    return info
