"""One call at a time: the lock in front of an engine that is not reentrant.

Shared recognisers are called from many threads (each web-demo session has its own worker
thread). ONNX Runtime sessions and eager PyTorch are safe to call concurrently; two
engines are not:
- CudaRunner replays CUDA graphs that read fixed (static) input buffers and write fixed
  output buffers, through one pinned host buffer: two callers would overwrite each
  other's crops and read each other's probabilities;
- TensorRTRunner has one execution context, whose input shapes and tensor addresses are
  per-context state set before each launch.
A context (or graph set) per thread would multiply GPU memory by the number of sessions
for no gain on one GPU, so these runners take one lock around run() and close(): callers
queue, each gets the result of its own batch. (The Triton client keeps one HTTP client
per thread instead: engines/runners/triton_runner.py.)
"""
from __future__ import annotations

import functools
import threading

_LOCK = "_one_call_at_a_time_lock"


def one_call_at_a_time(method):
    """Decorate a runner method (run, close) so one thread at a time runs it on an instance.

    The lock is per instance, made on first use (dict.setdefault is atomic, so two first
    callers still share one lock), and shared by every decorated method of the instance."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        lock = self.__dict__.get(_LOCK) or self.__dict__.setdefault(_LOCK, threading.Lock())
        with lock:
            return method(self, *args, **kwargs)

    locked.one_call_at_a_time = True
    return locked


def is_serialized(method) -> bool:
    """Whether ``method`` is wrapped by one_call_at_a_time (tests check every non-reentrant engine)."""
    return bool(getattr(method, "one_call_at_a_time", False))
