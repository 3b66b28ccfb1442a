"""At most N times per second of source time: the landmark refresh and the motion signal's rate.

``RateLimit(fps, hz)`` is due on a frame when at least one nominal period has passed on
the frames' timestamps since it last ran (a period of whole frames at the nominal rate,
less half a frame, so jitter never skips a beat): on a 200 fps stream ``hz`` 50 is every
4th frame and 100 every 2nd; a stream that drops frames or arrives at a varying rate runs
it as often per second. ``hz`` None, or a rate at or above the stream's, is every frame.
"""
from __future__ import annotations


class RateLimit:
    """Due at most ``hz`` times per second of source time (see the module docstring)."""

    def __init__(self, fps: float, hz: float | None) -> None:
        self.every = 1 if hz is None else max(1, round(fps / hz))   # frames per tick at the nominal rate
        self.period_s = (self.every - 0.5) / fps if self.every > 1 else 0.0
        self.last_t: float | None = None

    def due(self, t: float) -> bool:
        """Whether a tick is due at source time ``t`` (a clock that went back restarts it)."""
        return self.last_t is None or t - self.last_t >= self.period_s or t < self.last_t

    def mark(self, t: float) -> None:
        self.last_t = t

    def reset(self) -> None:
        self.last_t = None
