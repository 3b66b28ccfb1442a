"""The decode threads behind the sources: ``ReadAhead`` decodes a recording a bounded
number of frames ahead and drops nothing (files and folders); ``LatestFrameReader`` reads
a live device or stream and keeps only the newest frame, counting the stale ones as
drops (cameras, streams, ``realtime`` playback). Both hand frames to the frame loop
across threads, and an exception in the reading thread reaches the loop, never the void."""
from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

from realtime.stages.sources.base import Frame, Source


class ReadAhead:
    """Runs a frame generator in a background thread, at most ``depth`` frames ahead.

    Nothing is dropped: the thread waits while ``depth`` frames are ready. The generator
    is iterated and closed in that thread only; its exception is raised in the consumer.
    """

    _END = object()

    def __init__(self, frames: Iterator[Frame], depth: int, name: str) -> None:
        self._frames = frames
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        end = self._END
        try:
            for frame in self._frames:
                if not self._put(frame):
                    break
        except BaseException as e:  # handed to the consumer, raised there
            end = e
        finally:
            self._frames.close()
        self._put(end)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            item.captured_at = time.perf_counter()
            yield item

    def stop(self, timeout: float = 5.0) -> None:
        """Stop decoding ahead; waits up to ``timeout`` for a read in progress."""
        self._stop.set()
        self._thread.join(timeout)


class LatestFrameReader:
    """Background reader keeping only the newest frame (stale ones are counted as drops).

    ``owner``: the ``live.LiveSource`` it reads for (its ``_read_forever`` generator)."""

    def __init__(self, owner: Source) -> None:
        self.owner = owner
        self.cond = threading.Condition()
        self.latest: Frame | None = None
        self.finished = False   # the device/file has no more frames (or failed)
        self.stop = False
        self.thread = threading.Thread(target=self._run, name=f"source:{owner.name}", daemon=True)

    def _run(self) -> None:
        try:
            for frame in self.owner._read_forever():
                with self.cond:
                    if self.stop:
                        break
                    if self.latest is not None:
                        self.owner.dropped += 1  # never consumed: stale by now
                    self.latest = frame
                    self.cond.notify()
        except Exception as e:  # a backend that throws must not kill the process silently
            self.owner._fault("reader_error", f"{self.owner.name}: reading failed ({type(e).__name__}: {e})")
        finally:
            with self.cond:
                self.finished = True
                self.cond.notify()

    def take(self, timeout: float) -> Frame | None | bool:
        """The newest frame; None on timeout; False when the reader has finished."""
        with self.cond:
            if self.latest is None and not self.finished:
                self.cond.wait(timeout)
            if self.latest is not None:
                frame, self.latest = self.latest, None
                return frame
            return False if self.finished else None

