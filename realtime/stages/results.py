"""What the live path hands out: the per-frame record (``FrameResult``), the end-of-run
figures (``RunSummary``, printed by run_live.py and saved by the benchmark) and the
bounded per-stage timer they are computed from (``StageStats``). Plain records with no
behaviour of their own beyond formatting, so that the sinks, the browser codec and the
tools can read results without importing the pipeline that makes them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from core.events import Event
from core.face import FaceBox
from core.stats import QUANTILES, percentiles
from realtime.stages.sources import Frame


@dataclass
class FaceResult:
    """One followed face on one frame (``FrameResult.faces``)."""

    face_id: int | None
    box: FaceBox | None = None
    landmarks: np.ndarray | None = None      # (68, 2) image pixels
    value: float | None = None               # motion signal, px of the 224 crop
    score: float | None = None               # the spotter's score: multiples of the calm level
    regions: dict[str, float] | None = None  # per-region motion
    threshold: float | None = None
    in_event: bool = False
    calibrating: bool = False
    last_event: Event | None = None          # this face's latest event shown (provisional or final)

    def signal_row(self, frame: int, t: float, n_faces: int) -> dict:
        return {"frame": frame, "t": round(t, 6), "found": 1,
                "face_id": "" if self.face_id is None else self.face_id, "n_faces": n_faces,
                "value": "" if self.value is None else round(self.value, 5),
                "score": "" if self.score is None else round(self.score, 4),
                "threshold": "" if self.threshold is None else round(self.threshold, 5),
                "in_event": int(self.in_event)}


@dataclass
class FrameResult:
    """What ``Pipeline.process`` returns for one frame.

    ``faces``: every followed face (ordered by id); the top-level face fields (box,
    landmarks, face_id, value, score, regions, threshold, in_event, calibrating) are those
    of the first of them, the only one with ``max_faces`` 1."""

    frame: Frame
    index: int
    t: float
    found: bool
    box: FaceBox | None = None
    landmarks: np.ndarray | None = None      # (68, 2) image pixels
    face_id: int | None = None
    n_faces: int = 0
    value: float | None = None               # motion signal, px of the 224 crop (None without a face)
    score: float | None = None               # the spotter's score: multiples of the calm level
    regions: dict[str, float] | None = None  # per-region motion
    threshold: float | None = None           # the spotter's current threshold
    in_event: bool = False                   # the spotter holds an event open
    calibrating: bool = False
    new_events: list[Event] = field(default_factory=list)  # provisional and final, this frame
    withdrawn: list[tuple] = field(default_factory=list)    # (face_id, onset_frame) of provisional events
                                                            # judged not an expression on this frame
    overlay: np.ndarray | None = None        # annotated BGR image when drawn
    timings_ms: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0                  # frame latency: captured -> result ready
    message: str | None = None               # "no face", "face too small", tracker reason...
    faces: list[FaceResult] = field(default_factory=list)

    @property
    def final_events(self) -> list[Event]:
        return [e for e in self.new_events if e.finalised_t is not None]

    @property
    def provisional_events(self) -> list[Event]:
        return [e for e in self.new_events if e.finalised_t is None]

    def signal_rows(self) -> list[tuple[dict, dict[str, float] | None]]:
        """The per-frame signal table's rows for this frame (realtime.stages.sinks.SignalCSV):
        one per followed face, or one with ``found`` 0 when none; each with its regions."""
        if not self.faces:
            return [(self.signal_row(), self.regions)]
        return [(f.signal_row(self.index, self.t, self.n_faces), f.regions) for f in self.faces]

    def signal_row(self) -> dict:
        """The signal table's row of the first face (or of no face)."""
        return {"frame": self.index, "t": round(self.t, 6), "found": int(self.found),
                "face_id": "" if self.face_id is None else self.face_id, "n_faces": self.n_faces,
                "value": "" if self.value is None else round(self.value, 5),
                "score": "" if self.score is None else round(self.score, 4),
                "threshold": "" if self.threshold is None else round(self.threshold, 5),
                "in_event": int(self.in_event)}


def is_final(event: Event) -> bool:
    """Final events carry ``finalised_t``; provisional ones (label shown early) do not."""
    return event.finalised_t is not None


@dataclass
class RunSummary:
    """End-of-run figures (printed by run_live.py, saved by the benchmark)."""

    source: str
    source_fps: float
    frames: int
    dropped: int
    frames_with_face: int
    face_share: float
    events: int
    micro: int
    macro: int
    unlabelled: int
    achieved_fps: float          # frames / wall time between the first and the last frame
    realtime_factor: float       # achieved_fps / source_fps
    wall_s: float
    faults: dict[str, int]
    stages: dict[str, dict[str, float]]   # stage -> n, mean, p50, p95, p99, max (ms)
    decision_latency_ms: dict[str, float]
    final_latency_ms: dict[str, float]
    draw: str
    tracker: str
    engine: str | None
    end_reason: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)   # motion bursts judged not expressions, by reason
    lookahead_frames: int = 0    # recordings: frames the noise model was warmed up on before frame 0
    faces: dict[str, dict[str, int]] = field(default_factory=dict)  # face id -> frames, events, micro, macro

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self) -> str:
        lines = [f"== summary: {self.source}",
                 f"frames {self.frames} processed, {self.dropped} dropped; face in {self.face_share:.0%} "
                 f"({self.frames_with_face} frames)",
                 f"events {self.events}: {self.micro} micro, {self.macro} macro"
                 + (f" ({self.unlabelled} without label)" if self.unlabelled else "")
                 + ("; not expressions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
                    if self.rejected else ""),
                 f"achieved {self.achieved_fps:.1f} fps over {self.wall_s:.1f} s; source {self.source_fps:g} fps; "
                 f"real-time factor {self.realtime_factor:.2f}",
                 f"tracker {self.tracker}; engine {self.engine or 'none (spotting only)'}; drawing {self.draw}"]
        if len(self.faces) > 1:
            lines.append("faces: " + "; ".join(f"#{k} {v['events']} event(s) ({v['micro']} micro) in {v['frames']} frames"
                                               for k, v in self.faces.items()))
        if self.decision_latency_ms.get("n"):
            d, f = self.decision_latency_ms, self.final_latency_ms
            lines.append(f"decision latency p50 {d['p50']:.0f} ms, p95 {d['p95']:.0f} ms "
                         f"(wait p50 {d.get('wait_p50', 0):.0f} + compute p50 {d.get('compute_p50', 0):.0f}); "
                         f"final p50 {f.get('p50', 0):.0f} ms")
        if self.faults:
            lines.append("faults: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())))
        if self.end_reason:
            lines.append(f"stopped early: {self.end_reason}")
        if self.stages:
            lines.append(f"{'stage':10s} {'n':>7s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s}  (ms)")
            for name, s in self.stages.items():
                lines.append(f"{name:10s} {s['n']:7d} {s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f} {s['max']:8.2f}")
        return "\n".join(lines)


class StageStats:
    """Timing samples of one stage with bounded memory (reservoir sampling past ``cap``).

    Percentiles are exact up to ``cap`` samples and an unbiased sample after; ``max``,
    ``mean`` and ``n`` are exact. Long runs (hours at 200 fps) stay flat in memory."""

    def __init__(self, cap: int = 100_000, seed: int = 0) -> None:
        self.cap = cap
        self._buf = np.empty(min(cap, 1024), dtype=np.float32)
        self.n = 0
        self.total = 0.0
        self.max = 0.0
        self._rng = np.random.default_rng(seed)

    def add(self, ms: float) -> None:
        if self.n < self.cap:
            if self.n >= len(self._buf):
                self._buf = np.resize(self._buf, min(self.cap, 2 * len(self._buf)))
            self._buf[self.n] = ms
        else:
            j = int(self._rng.integers(0, self.n + 1))
            if j < self.cap:
                self._buf[j] = ms
        self.n += 1
        self.total += ms
        self.max = max(self.max, ms)

    def summary(self) -> dict[str, float]:
        """The keys of ``core.stats.percentiles``, zeros when empty. ``n``, ``mean`` and
        ``max`` are the exact running figures; the quantiles come from the float32 reservoir."""
        if self.n == 0:
            return {"n": 0, "mean": 0.0, **{f"p{q}": 0.0 for q in QUANTILES}, "max": 0.0}
        s = percentiles(self._buf[: min(self.n, self.cap)])
        return {**s, "n": self.n, "mean": self.total / self.n, "max": float(self.max)}

