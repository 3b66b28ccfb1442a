"""Native libraries' side effects: MediaPipe / LiteRT / TFLite write to file descriptor 2
past Python's logging (``native_log_filter`` keeps their banner off the console), want
64-byte aligned inputs (``aligned``), and their tasks must be closed where no other of
their calls is running (``close_orphaned_tasks``). Used by core.face's BlazeFace detector."""
from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import re
import sys
import tempfile
import threading

import numpy as np

log = logging.getLogger("core.face")   # the detectors' logger: --log-level debug shows the banner


def aligned(a: np.ndarray, alignment: int = 64) -> np.ndarray:
    """``a`` as a C-contiguous array whose data starts on an ``alignment``-byte boundary
    (a copy only when it does not already). LiteRT copies, and warns on fd 2 about, any
    input that is not so aligned ("Input tensor memory is not aligned ...")."""
    if a.flags.c_contiguous and a.ctypes.data % alignment == 0:
        return a
    buf = np.empty(a.nbytes + alignment, np.uint8)
    start = (-buf.ctypes.data) % alignment
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out

# What MediaPipe, LiteRT, TFLite and absl/glog print on their own while a model is created,
# first run and destroyed: "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
# "INFO: [environment.cc:36] ...", "WARNING: Logging before InitGoogle() ...",
# "W0000 00:00:... inference_runner_litert.cc:1418] Input tensor memory is not aligned ...".
# Lines of ours ("INFO: exporting ...") and errors ("E0000 ...", "ERROR: ...") never match.
NATIVE_BANNER = re.compile(r"INFO: (\[\w+\.cc:\d+\]|Created TensorFlow Lite|Initialized TensorFlow Lite)"
                           r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \w+\.cc:\d+\]"
                           r"|WARNING: Logging before InitGoogle\(\)")
_native_lock = threading.RLock()


@contextlib.contextmanager
def native_log_filter():
    """Keep the native libraries' start-up banner (``NATIVE_BANNER``) off the console
    unless logging is at DEBUG (run_live.py --log-level debug).

    Those libraries write straight to file descriptor 2, past Python's logging, and
    GLOG_minloglevel / TF_CPP_MIN_LOG_LEVEL silence only part of it; so fd 2 goes to a
    temporary file for the duration, and afterwards every line that is not banner (an
    error, anything of ours written meanwhile) is passed on to the real stderr."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    with _native_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no fd 2 to redirect: say everything
            saved = None
        if saved is None:
            yield
            return
        try:
            with tempfile.TemporaryFile() as tmp:
                os.dup2(tmp.fileno(), 2)
                try:
                    yield
                finally:
                    try:
                        sys.stderr.flush()
                    except (OSError, ValueError, AttributeError):
                        pass
                    os.dup2(saved, 2)
                    tmp.seek(0)
                    text = tmp.read().decode("utf-8", errors="replace")
                    kept = "".join(line for line in text.splitlines(keepends=True) if not NATIVE_BANNER.match(line))
                    if kept:
                        os.write(2, kept.encode("utf-8"))
        finally:
            os.close(saved)


def close_task(task) -> None:
    """Close a MediaPipe task quietly, also during interpreter exit (weakref.finalize).

    At exit the task's dispatcher thread pool may already be shut down, so its close()
    raises; the process is ending and frees everything anyway, so the handle is dropped
    instead, which also keeps the task's own __del__ from failing during module teardown."""
    try:
        with native_log_filter():   # LiteRT says goodbye on fd 2 ("DestroyAccelerator ...")
            task.close()
    except Exception:
        task._handle = None


_orphans: collections.deque = collections.deque()   # tasks of detectors garbage-collected unclosed


def orphan_task(task) -> None:
    """weakref.finalize callback of a MediaPipeDetector nobody closed: only queue its task.

    The garbage collector can run this inside another MediaPipe call on the same thread (any
    allocation there may trigger it), and a task's close() goes through the Tasks API's
    dispatcher, whose thread-pool lock is not re-entrant: closing here deadlocked a test run
    (a detect() holding the lock, then this close() waiting for it). Queued tasks are closed
    by the next detector made or closed, and at exit (``close_orphaned_tasks``)."""
    _orphans.append(task)


def close_orphaned_tasks() -> None:
    """Close the tasks queued by ``orphan_task`` (called where no MediaPipe call is running)."""
    while True:
        try:
            task = _orphans.popleft()
        except IndexError:
            return
        close_task(task)


atexit.register(close_orphaned_tasks)
