"""Step 1 of the live path (face tracking) and a second process that runs it ahead.

``track_step`` is the tracker at its landmark rate, as ``Pipeline.process`` runs it.

``TrackedRecording`` decodes a recording and tracks its faces in a second process, and
hands the frame loop each frame with its tracking done (``Frame.tracked``), through a ring
of shared-memory frame slots: the tracker of frame n+k runs on one core while the
alignment, motion and spotting of frame n run on the other. The results are those of the
pipeline alone, frame for frame: the tracker depends only on the frames, never on what
follows it (``tests/test_trackproc.py`` compares both on a real face clip).

Why a process and not a thread: dlib's landmark call holds the GIL, so a tracking thread
beside the frame loop ran no faster than the loop alone (the frames/s of
``python -m realtime.bench`` did not rise). Nothing is dropped, so this suits recordings
(files and frame folders), not a live camera's newest-frame policy. Linux and macOS.

It is opt-in (``run_live.py --track-process``, ``realtime.bench --track-process``): on two
cores it gained 0.5-17 % in throughput, and its own models cost about 280 MB (README,
"Tracking in a second process").

    with TrackedRecording(open_source(video="clip.mp4"), pipe.config) as src:
        for frame in src:
            result = pipe.process(frame)
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing import Pipe, resource_tracker, shared_memory
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Iterator

import numpy as np

from realtime.stages.rate import RateLimit
from realtime.stages.sources import Frame, Source, SourceError, open_source

_ROOT = Path(__file__).resolve().parents[2]
DEPTH = 8            # frame slots in the ring: how far the tracking process may run ahead
START_TIMEOUT_S = 120.0   # the second process imports the tracker's models before its first frame


def track_once(tracker, image: np.ndarray, refresh: bool) -> list:
    """One frame's tracking results, one per followed face (a tracker with only ``update``,
    as ``realtime.bench.cli --compare`` passes in, gives one)."""
    update_all = getattr(tracker, "update_all", None)
    if update_all is not None:
        return list(update_all(image, refresh=refresh))
    return [tracker.update(image, refresh=refresh)]


def track_step(tracker, rate: RateLimit, t: float, image: np.ndarray) -> tuple[list, BaseException | None]:
    """Step 1 of ``Pipeline.process`` for a frame at source time ``t``: (tracking results,
    the tracker's exception or None); landmarks refreshed at ``rate`` (by source time)."""
    try:
        tracked = track_once(tracker, image, rate.due(t))
    except Exception as e:  # native code on a bad frame: the pipeline counts it
        return [], e
    if tracked and not all(getattr(tr, "held", False) for tr in tracked):
        rate.mark(t)
    return tracked, None


@dataclass(frozen=True)
class TrackSpec:
    """What the second process needs to build the pipeline's tracker and its rate."""
    kind: str
    redetect_every: int
    max_faces: int
    fps: float
    landmarks_hz: float | None

    @classmethod
    def of(cls, config) -> "TrackSpec":
        """From a ``PipelineConfig``."""
        return cls(config.tracker, int(config.redetect_every), int(config.max_faces), float(config.fps),
                   config.landmarks_hz)

    def tracker(self):
        from realtime.stages.multitrack import MultiFaceTracker
        from realtime.stages.tracker import FaceTracker
        if self.max_faces > 1:
            return MultiFaceTracker(self.kind, max_faces=self.max_faces, redetect_every=self.redetect_every)
        return FaceTracker(self.kind, redetect_every=self.redetect_every)


def _picklable(e: BaseException) -> BaseException:
    try:
        pickle.dumps(e)
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory (Linux: VmHWM; ru_maxrss would carry the
    launching process's peak across exec). None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0      # kB
    except OSError:
        pass
    return None


def _serve(conn: Connection, open_kw: dict, spec: TrackSpec, depth: int) -> None:
    """The second process: decode, track, copy each frame into the next free slot of a
    shared-memory ring, announce it; wait for the frame loop's acknowledgements when all
    ``depth`` slots are in use. Messages: ("ring", name, shape), ("frame", slot, index,
    t, decode_ms, (tracked, error)), ("end", frames_read, dropped, faults, end_reason),
    ("error", text), and last ("cpu", CPU seconds since the first frame, peak RSS MB); from the loop:
    ("free", n) and ("stop",)."""
    import cv2
    cv2.setNumThreads(1)          # this process's work is serial; a thread pool would only contend
    shm, ring, in_flight, stopped, c0 = None, None, 0, False, None

    def wait_free() -> bool:      # False: told to stop
        nonlocal in_flight
        while in_flight >= depth or conn.poll():
            msg = conn.recv()
            if msg[0] == "stop":
                return False
            in_flight -= msg[1]
        return True

    try:
        tracker = spec.tracker()
        rate = RateLimit(spec.fps, spec.landmarks_hz)
        with open_source(**open_kw) as src:
            c0 = time.process_time()      # this process's CPU (all threads) from its first frame on
            for n, frame in enumerate(src):
                tracked, error = track_step(tracker, rate, frame.t, frame.image)
                if ring is None:
                    shape = frame.image.shape
                    shm = shared_memory.SharedMemory(create=True, size=depth * int(np.prod(shape)))
                    ring = np.ndarray((depth, *shape), np.uint8, buffer=shm.buf)
                    conn.send(("ring", shm.name, shape))
                if not wait_free():
                    stopped = True
                    break
                ring[n % depth] = frame.image
                in_flight += 1
                conn.send(("frame", n % depth, frame.index, frame.t, frame.decode_ms,
                           (tracked, None if error is None else _picklable(error))))
            if not stopped:
                conn.send(("end", src.frames_read, src.dropped, dict(src.faults), getattr(src, "end_reason", None)))
    except BaseException as e:    # reaches the frame loop as a SourceError
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        try:                      # the loop copies the last frames out before it says stop
            while not stopped and conn.recv()[0] != "stop":
                pass
            conn.send(("cpu", 0.0 if c0 is None else time.process_time() - c0, _peak_rss_mb()))
        except (EOFError, OSError):
            pass
        ring = None
        if shm is not None:
            shm.close()
            shm.unlink()


class TrackedRecording:
    """A recording's frames, decoded and tracked in a second process (module docstring).

    ``source``: an opened file or folder source (its metadata is read here; the second
    process opens the same recording again); ``config``: the ``PipelineConfig`` whose
    tracker to run. Iterate once; ``close`` (or the ``with`` block) stops the process. The
    process is a fresh interpreter (``python -m realtime.stages.trackproc``), so the
    caller's script needs no ``if __name__ == "__main__"`` guard."""

    live = False

    def __init__(self, source: Source, config, depth: int = DEPTH) -> None:
        if os.name != "posix":
            raise SourceError(f"{source.name}: tracking in a second process needs Linux or macOS (it hands the "
                              "process a pipe by file descriptor); track in the frame loop (leave out --track-process)")
        if getattr(source, "live", False):
            raise SourceError(f"{source.name}: a live source keeps only its newest frame; track it in the "
                              "frame loop (TrackedRecording reads recordings, which drop nothing)")
        path = getattr(source, "path", None) or getattr(source, "folder", None)
        if path is None:
            raise SourceError(f"{source.name}: TrackedRecording needs a video file or a frame folder")
        self.source = source
        kind = "images" if Path(path).is_dir() else "video"
        self._open_kw = {kind: str(path), "fps": source.fps}
        self._spec = TrackSpec.of(config)
        self._depth = max(2, int(depth))
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._shm = None
        self._ring: np.ndarray | None = None
        self.shm_name: str | None = None     # the ring's shared-memory name, once it exists
        self._iterated = self._ended = False
        self.process_cpu_s = 0.0      # the second process's CPU time from its first frame to its last
        self.process_peak_rss_mb: float | None = None   # and its peak resident memory (known after close)

    def __getattr__(self, name):      # name, fps, faults, describe(), ...: the source's
        return getattr(self.__dict__["source"], name)

    def __enter__(self) -> "TrackedRecording":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "TrackedRecording":
        """Start the second process (iterating starts it too); it loads the tracker's models
        and decodes ahead while the caller gets ready."""
        if self._proc is None:
            ours, theirs = Pipe()
            job = json.dumps({"open": self._open_kw, "spec": dataclasses.asdict(self._spec), "depth": self._depth})
            env = dict(os.environ)    # this project importable from any directory, installed or not
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
            self._proc = subprocess.Popen([sys.executable, "-m", "realtime.stages.trackproc", str(theirs.fileno()),
                                           job], pass_fds=(theirs.fileno(),), env=env)
            theirs.close()
            self._conn = ours
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start, and wait until the first frame is decoded and tracked (a benchmark's clock
        starts after the second process's start-up)."""
        self.start()
        while self._ring is None and not self._ended:
            self._handle(self._recv(timeout))

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise RuntimeError("a TrackedRecording is read once; open the recording again to re-read it")
        self._iterated = True
        self.start()
        taken = 0
        try:
            while not self._ended:
                msg = self._recv(START_TIMEOUT_S if self._ring is None else 30.0)
                if msg[0] != "frame":
                    self._handle(msg)
                    continue
                _, slot, index, t, decode_ms, tracked = msg
                image = self._ring[slot].copy()
                self.source.frames_read += 1
                taken += 1
                if taken * 2 >= self._depth:       # hand the slots back in batches
                    self._conn.send(("free", taken))
                    taken = 0
                yield Frame(index=index, t=t, image=image, captured_at=time.perf_counter(),
                            decode_ms=decode_ms, tracked=tracked)
        finally:
            self.close()

    def _handle(self, msg) -> None:
        if msg[0] == "ring":
            self.shm_name = msg[1]
            self._shm = shared_memory.SharedMemory(name=msg[1])
            # the second process made it and unlinks it; Python < 3.13 would also have this
            # process's resource tracker "clean up" (and warn about) it at exit
            resource_tracker.unregister(self._shm._name, "shared_memory")
            self._ring = np.ndarray((self._depth, *msg[2]), np.uint8, buffer=self._shm.buf)
            self.source.size = (int(msg[2][1]), int(msg[2][0]))          # (w, h) of every frame
        elif msg[0] == "end":
            _, self.source.frames_read, self.source.dropped, faults, end_reason = msg
            self.source.faults.update(faults)
            if end_reason is not None:
                self.source.end_reason = end_reason
            self._ended = True
        else:
            raise SourceError(f"{self.source.name}: the tracking process failed ({msg[1]})")

    def _recv(self, timeout: float):
        deadline = time.monotonic() + timeout
        while not self._conn.poll(0.2):
            if self._proc.poll() is not None:
                raise SourceError(f"{self.source.name}: the tracking process ended without a word (exit code "
                                  f"{self._proc.returncode}); its error is printed above")
            if time.monotonic() > deadline:
                raise SourceError(f"{self.source.name}: no frame from the tracking process for {timeout:.0f} s")
        return self._conn.recv()

    def close(self) -> None:
        """Stop the second process (it frees the shared frames). The source stays open: it
        is its opener's to close."""
        self._ring = None
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._conn.send(("stop",))
                while self._conn.poll(10.0):         # frames not taken, then its CPU time
                    msg = self._conn.recv()
                    if msg[0] == "cpu":
                        _, self.process_cpu_s, self.process_peak_rss_mb = msg
            except (OSError, EOFError):
                pass
            try:
                self._proc.wait(10.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5.0)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the second process: FD (its end of the pipe) and a JSON job."""
    fd, job = (argv if argv is not None else sys.argv[1:])[:2]
    job = json.loads(job)
    _serve(Connection(int(fd)), job["open"], TrackSpec(**job["spec"]), int(job["depth"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
