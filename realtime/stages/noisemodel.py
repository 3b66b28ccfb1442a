"""The spotter's noise model: each channel's calm level from a rolling window of source
time (realtime.stages.spotter's module docstring, "noise model")."""
from __future__ import annotations

import math
from collections import deque

import numpy as np


def calm_levels(rows, quantile: float, floor: float) -> np.ndarray:
    """Calm level of each column of ``rows`` (frames x channels): its ``quantile``, at
    least ``floor``."""
    a = np.asarray(rows, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError("calm_levels needs a (frames, channels) array with at least one frame")
    return np.maximum(np.quantile(a, quantile, axis=0), floor)


def frames_for(ms: float, fps: float, minimum: int = 1) -> int:
    return max(minimum, int(round(ms * fps / 1000.0)))


class NoiseModel:
    """Calm level of each channel (expression regions, eyes, head), from a rolling window.

        noise = NoiseModel(fps, ("brows", "nose", "mouth", "eyes", "head"))
        noise.add([...], t)                   # one row per frame, px; t: its source time
        noise.calm                            # (channels,) calm levels, px

    The window and the refresh interval are in SOURCE TIME: a camera that drops
    frames or a stream whose rate varies keeps ``window_s`` seconds, not a number of frames.
    At the nominal rate they hold exactly the frames they did as frame counts.
    """

    def __init__(self, fps: float, channels: tuple[str, ...], window_s: float, quantile: float,
                 update_every_ms: float, floor: float) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"calm_quantile must be in (0, 1), got {quantile}")
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.fps = float(fps)
        self.channels = channels
        self.quantile, self.floor = float(quantile), float(floor)
        self.every_s = frames_for(update_every_ms, fps) / self.fps
        n = max(8, int(round(window_s * fps)))
        self.window_s = (n - 1) / self.fps            # n frames at the nominal rate
        self._rows: deque[np.ndarray] = deque(maxlen=8 * n)   # a safeguard; pruned by time
        self._times: deque[float] = deque(maxlen=8 * n)
        self._refreshed_t = -math.inf
        self._count = 0
        self._redate = False             # warm rows to be dated just before the first real one
        self.calm: np.ndarray | None = None
        self.warmed = False              # warmed up from a look-ahead (a recording)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def span_s(self) -> float:
        """Source time between the oldest and the newest row (0 with fewer than two)."""
        return self._times[-1] - self._times[0] if len(self._times) >= 2 else 0.0

    def add(self, row, t: float | None = None) -> None:
        t = self._count / self.fps if t is None else float(t)
        self._count += 1
        if self._redate:                 # a look-ahead's rows end one frame before this one
            shift = (t - 1.0 / self.fps) - self._times[-1]
            self._times = deque((x + shift for x in self._times), maxlen=self._times.maxlen)
            self._refreshed_t += shift
            self._redate = False
        self._rows.append(np.asarray(row, dtype=np.float64))
        self._times.append(t)
        while len(self._times) > 1 and self._times[0] < t - self.window_s - _TIME_TOL:
            self._times.popleft()
            self._rows.popleft()
        if self.calm is not None and t - self._refreshed_t >= self.every_s - _TIME_TOL:
            self.refresh(t)

    def refresh(self, t: float | None = None) -> None:
        self._refreshed_t = self._times[-1] if t is None and self._times else (t if t is not None else 0.0)
        self.calm = calm_levels(self._rows, self.quantile, self.floor)

    def warm_start(self, rows) -> None:
        """Start from these rows (a recording's look-ahead): they become the window, dated
        one frame apart just before the stream's start (source time 0)."""
        rows = [np.asarray(r, dtype=np.float64) for r in rows]
        if not rows:
            raise ValueError("warm_start needs at least one row of motion")
        rows = rows[-(int(round(self.window_s * self.fps)) + 1):]
        self._rows.clear()
        self._times.clear()
        self._rows.extend(rows)
        self._times.extend((i - len(rows)) / self.fps for i in range(len(rows)))
        self.refresh()
        self.warmed = True
        self._redate = True

    def clear(self) -> None:
        self._rows.clear()
        self._times.clear()
        self._refreshed_t = -math.inf
        self._redate = False
        self.calm = None
        self.warmed = False


_TIME_TOL = 1e-6
"""Seconds: frame times computed as index / fps differ from exact multiples by rounding."""
