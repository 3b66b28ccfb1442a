"""The events between the spotter and the sinks: bookkeeping and the recognition hand-off.

An ``EventBook`` follows each event the spotter announces from its apex to its final
record (REALTIME.md, "Flow", steps 4-5):

- "apex" update (a predicted apex, or a confirmed one): the event opens; its (onset, apex)
  pair is cut from the rolling face
  buffer, aligned with the ONSET frame's transform (``core.face.align_pair``: one
  alignment for the pair, as in training) and submitted to the ``RecognitionWorker``;
  a provisional ``Event`` is emitted once the label is back. A later apex re-submits.
- "final" update: offset reached, micro/macro certain; the final ``Event`` is emitted as
  soon as its label is there. "rejected": withdrawn (not an expression).
- worker results are matched to their event; the latencies of every final event
  (``wait``, ``compute``, ``decision``, ``final``; see ``realtime.stages.pipeline``) are
  kept in bounded reservoirs, and the final events themselves up to ``keep_events``.

One book serves every face of a stream: open events are keyed by (face_id, onset frame),
each cut from its own face's buffer, so that one worker (and one batched engine call)
serves all faces. The pipeline owns the book and feeds it; faults go through the
pipeline's counter.
"""
from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from core.events import Event, expression_kind
from core.face import align_pair
from realtime.stages.framebuffer import FrameBuffer, shift_transform
from realtime.stages.results import StageStats, is_final
from realtime.stages.worker import RecognitionJob, RecognitionResult, RecognitionWorker


@dataclass
class _Open:
    """An event between its apex update and its emission as final."""

    onset_frame: int
    apex_frame: int
    onset_t: float
    apex_t: float
    peak_motion: float
    face_id: int | None
    decided_t: float                 # source time of the frame that confirmed the apex
    decided_captured_at: float       # perf_counter when that frame was captured
    buffer: FrameBuffer | None = None   # the face's rolling buffer the pair is cut from
    face_box: list[int] | None = None   # [x, y, w, h] of the face at the apex (source pixels)
    kind: str | None = None
    offset_frame: int | None = None
    offset_t: float | None = None
    result: RecognitionResult | None = None
    awaiting_label: bool = False
    label_time: float | None = None  # perf_counter when the label (or its failure) was there
    final_t: float | None = None     # source time of the frame that made the kind final
    final_lag_s: float = 0.0         # that frame's capture -> the final update (processing)
    provisional_sent: bool = False


class EventBook:
    """Open events, their labels and the final events of one stream (see the module docstring).

    EventBook(source_name, fps, worker, fault, keep_events=10_000)

    worker: the ``RecognitionWorker``, or None for spotting only (events carry no label);
    fault: ``fault(kind, message, count=1)``, the pipeline's fault counter. Each update
    names its face's ``FrameBuffer`` (pairs are cut from it)."""

    def __init__(self, source_name: str, fps: float, worker: RecognitionWorker | None,
                 fault: Callable[..., None], keep_events: int = 10_000) -> None:
        self.source_name = source_name
        self.fps = fps
        self.worker = worker
        self._fault = fault
        # final events, in order: the latest keep_events of them (memory stays flat over hours);
        # the counts below cover every one
        self.events: deque[Event] = deque(maxlen=keep_events)
        self.counts = {"events": 0, "micro": 0, "macro": 0, "unlabelled": 0}
        self.open: dict[tuple, _Open] = {}   # (face_id, onset_frame) -> open event
        self._jobs: list = []                # (job, on_drop) cut this frame, not yet submitted
        self.last_event: Event | None = None
        self.last_by_face: dict[int | None, Event] = {}
        self._withdrawn: list[tuple] = []     # (face_id, onset_frame) of shown provisional events taken back
        self.by_face: dict[int | None, dict[str, int]] = {}   # face_id -> final events, micro, macro
        self._decision_ms = StageStats()     # latencies of the final events (bounded reservoirs)
        self._wait_ms = StageStats()
        self._compute_ms = StageStats()
        self._final_ms = StageStats()

    # -- spotter updates -------------------------------------------------------------------
    def on_update(self, u, captured_at: float, *, face_id: int | None, rule: str, buffer: FrameBuffer) -> None:
        """A SpotUpdate of face ``face_id``: "apex" opens an event and submits its pair (cut
        from that face's ``buffer``), "final" closes it. ``rule``: the spotter's micro/macro rule."""
        key = (face_id, int(u.onset_frame))
        ev = self.open.get(key)
        if u.stage == "rejected":          # announced, then judged not an expression: withdrawn
            ev = self.open.pop(key, None)
            if ev is not None:
                self._take_back(face_id, key[1])
                if ev.provisional_sent:
                    self._withdrawn.append(key)
            return
        if ev is None:
            ev = _Open(onset_frame=key[1], apex_frame=int(u.apex_frame), onset_t=float(u.onset_t),
                       apex_t=float(u.apex_t), peak_motion=float(u.peak_motion), face_id=face_id,
                       decided_t=float(u.decided_t), decided_captured_at=captured_at, buffer=buffer)
            self.open[key] = ev
            self._submit(ev)
        elif int(u.apex_frame) != ev.apex_frame:
            # the apex moved before the event closed (a predicted apex confirmed elsewhere): label
            # the pair the record will name; the decision is now this update's (the provisional
            # record already sent keeps the prediction's)
            ev.apex_frame, ev.apex_t, ev.peak_motion = int(u.apex_frame), float(u.apex_t), float(u.peak_motion)
            ev.decided_t, ev.decided_captured_at = float(u.decided_t), captured_at
            ev.result = None
            self._submit(ev)
        if u.kind:
            ev.kind = u.kind
        if u.stage == "final":
            ev.offset_frame = max(int(u.offset_frame), ev.apex_frame)
            ev.offset_t = max(float(u.offset_t), ev.apex_t)
            ev.final_t = float(u.decided_t)
            ev.final_lag_s = max(0.0, time.perf_counter() - captured_at)
            if ev.kind not in ("micro", "macro"):
                ev.kind = expression_kind(ev.onset_t, ev.apex_t, ev.offset_t, rule, self.fps)

    def abort(self, why: str, face_id: int | None = None, *, every_face: bool = False) -> None:
        """Drop face ``face_id``'s open events (face lost, another subject), or every face's
        (``every_face``: recalibration)."""
        keys = [k for k in self.open if every_face or k[0] == face_id]
        if keys:
            self._fault("event_aborted", f"{self.source_name}: open event aborted ({why})", count=len(keys))
            for k in keys:
                del self.open[k]

    # -- recognition hand-off --------------------------------------------------------------
    def _submit(self, ev: _Open) -> None:
        def no_label():
            ev.awaiting_label = False
            ev.label_time = time.perf_counter()

        onset, apex = ev.buffer.get(ev.onset_frame), ev.buffer.get(ev.apex_frame)
        if apex is not None and apex.box is not None:
            ev.face_box = list(apex.box)
        if self.worker is None:
            return no_label()
        if onset is None or apex is None:
            self._fault("pair_outside_buffer", f"{self.source_name}: onset {ev.onset_frame} / apex {ev.apex_frame} "
                                               "no longer in the frame buffer; the event keeps no label")
            return no_label()
        m = onset.transform   # the ONSET's alignment for both, in each region's own pixels
        a, b = align_pair(onset.region, apex.region, shift_transform(m, onset.offset),
                          apex_transform=shift_transform(m, apex.offset))
        ev.awaiting_label = True
        self._jobs.append((RecognitionJob(key=(ev.face_id, ev.onset_frame, ev.apex_frame), onset_rgb=a, apex_rgb=b),
                           no_label))

    def submit_jobs(self) -> None:
        """Hand the pairs cut since the last call to the worker as one batch (the faces whose
        apexes came on the same frame share one engine call). The pipeline calls it once per
        frame, after the spotters' updates."""
        if not self._jobs:
            return
        jobs, self._jobs = self._jobs, []
        if not self.worker.submit_many([job for job, _ in jobs]):
            self._fault("recognition_dropped", f"{self.source_name}: recognition queue full, "
                                               f"{len(jobs)} pair(s) dropped", count=len(jobs))
            for _, no_label in jobs:
                no_label()

    def _on_result(self, r: RecognitionResult) -> float:
        """Attach a worker result to its event; returns the recogniser's compute time."""
        face_id, onset, apex = r.key
        if r.error is not None:
            self._fault("recognition_error", f"{self.source_name}: recognition failed ({r.error}); "
                                             "the run continues, the event keeps no label")
        ev = self.open.get((face_id, onset))
        if ev is not None and ev.apex_frame == apex:   # else aborted, or superseded by a later apex
            ev.result = r if r.ok else None
            ev.awaiting_label = False
            ev.label_time = r.ready_at
        return r.compute_ms

    def collect(self) -> float:
        """Take the results the worker finished since the last call; returns the
        recogniser's compute time for them, in ms (0 without a worker)."""
        if self.worker is None:
            return 0.0
        return sum(self._on_result(r) for r in self.worker.poll())

    def close_worker(self, wait: bool, timeout: float) -> list[float]:
        """Stop the worker (waiting up to ``timeout`` s for labels being computed when
        ``wait``); its last results are attached. Returns their compute times (ms)."""
        if self.worker is None:
            return []
        return [self._on_result(r) for r in self.worker.close(wait=wait, timeout=timeout)]

    # -- records ---------------------------------------------------------------------------
    def _make_event(self, ev: _Open, final: bool) -> Event:
        ready = ev.label_time if ev.label_time is not None else time.perf_counter()
        wait_ms = max(0.0, (ev.decided_t - ev.apex_t) * 1e3)
        compute_ms = max(0.0, (ready - ev.decided_captured_at) * 1e3)
        latency = {"decision": wait_ms + compute_ms, "wait": wait_ms, "compute": compute_ms}
        if ev.result is not None:
            latency["infer"] = ev.result.compute_ms
        finalised_t = None
        if final:
            finalised_t = ev.final_t + ev.final_lag_s
            latency["final"] = max(0.0, (finalised_t - ev.apex_t) * 1e3)
        # a provisional record needs a kind: "macro" once the event outlasted any ME, else "micro"
        kind = ev.kind or "micro"
        r = ev.result
        return Event(source=self.source_name, fps=self.fps, onset_frame=ev.onset_frame,
                     apex_frame=ev.apex_frame,
                     offset_frame=ev.offset_frame if ev.offset_frame is not None else ev.apex_frame,
                     onset_t=round(ev.onset_t, 6), apex_t=round(ev.apex_t, 6),
                     offset_t=round(ev.offset_t if ev.offset_t is not None else ev.apex_t, 6),
                     kind=kind, label=r.label if r is not None else None,
                     probs={k: round(v, 6) for k, v in r.probs.items()} if r is not None else {},
                     peak_motion=round(ev.peak_motion, 6), decided_t=round(ev.decided_t + compute_ms / 1e3, 6),
                     finalised_t=None if finalised_t is None else round(finalised_t, 6),
                     latency_ms={k: round(v, 3) for k, v in latency.items()}, face_id=ev.face_id,
                     face_box=ev.face_box)

    def emit_ready(self) -> list[Event]:
        """Events whose state changed: provisional once labelled, final once labelled and closed."""
        out = []
        for key in sorted(self.open):
            ev = self.open[key]
            if ev.awaiting_label:
                continue
            if ev.final_t is not None:
                e = self._make_event(ev, final=True)
                del self.open[key]
                self.events.append(e)
                self.counts["events"] += 1
                self.counts[e.kind] = self.counts.get(e.kind, 0) + 1
                self.counts["unlabelled"] += e.label is None
                per = self.by_face.setdefault(e.face_id, {"events": 0, "micro": 0, "macro": 0})
                per["events"] += 1
                per[e.kind] = per.get(e.kind, 0) + 1
                self._decision_ms.add(e.latency_ms["decision"])
                self._wait_ms.add(e.latency_ms["wait"])
                self._compute_ms.add(e.latency_ms["compute"])
                self._final_ms.add(e.latency_ms["final"])
            elif not ev.provisional_sent:
                e = self._make_event(ev, final=False)
                ev.provisional_sent = True
            else:
                continue
            out.append(e)
            self.last_event = e
            self.last_by_face[e.face_id] = e
        return out

    def _take_back(self, face_id: int | None, onset_frame: int) -> None:
        """A withdrawn event's provisional label is no longer what the face shows (the overlay
        and the web demo read ``last_event`` / ``last_by_face``); final records never had it."""
        shown = self.last_by_face.get(face_id)
        if shown is not None and shown.finalised_t is None and shown.onset_frame == onset_frame:
            del self.last_by_face[face_id]
        e = self.last_event
        if e is not None and e.finalised_t is None and e.face_id == face_id and e.onset_frame == onset_frame:
            self.last_event = None

    def take_withdrawn(self) -> list[tuple]:
        """(face_id, onset_frame) of the provisional events withdrawn since the last call."""
        out, self._withdrawn = self._withdrawn, []
        return out

    # -- end of stream ---------------------------------------------------------------------
    def flush(self) -> list[Event]:
        """End of stream, after ``close_worker``: events whose label did not come back are
        kept without one (``faults["label_missing"]``); returns the events that became final."""
        late = [ev for ev in self.open.values() if ev.awaiting_label]
        if late:  # the label did not come back in time: keep the event, without a label
            self._fault("label_missing", f"{self.source_name}: {len(late)} label(s) not back when the stream "
                                         "ended; those events are written without a label", count=len(late))
            for ev in late:
                ev.awaiting_label, ev.label_time = False, time.perf_counter()
        return [e for e in self.emit_ready() if is_final(e)]

    def drop_unfinished(self) -> None:
        """Events still open when the stream ended are not written (``faults["event_unfinished"]``)."""
        if self.open:
            self._fault("event_unfinished", f"{self.source_name}: {len(self.open)} event(s) still open at the end "
                                            "of the stream were not written", count=len(self.open))
            self.open.clear()

    # -- reporting -------------------------------------------------------------------------
    def intervals(self, now_t: float, face_id: int | None = None, recent: int = 8) -> list[tuple[float, float, str]]:
        """(onset_t, offset_t, kind) of face ``face_id``'s latest ``recent`` final events and of
        its open ones (kind "open", running to ``now_t`` until their offset is known): the
        overlay's shaded spans."""
        mine = (e for e in reversed(self.events) if e.face_id == face_id)
        out = [(e.onset_t, e.offset_t, e.kind) for e in reversed(list(itertools.islice(mine, recent)))]
        out += [(o.onset_t, o.offset_t if o.offset_t is not None else now_t, "open")
                for o in self.open.values() if o.face_id == face_id]
        return out

    def latency_summary(self) -> tuple[dict[str, float], dict[str, float]]:
        """(decision, final) latency figures of the final events so far (``{"n": 0}`` when
        none); decision carries the wait and compute medians too (RunSummary)."""
        decision = self._decision_ms.summary() if self._decision_ms.n else {"n": 0}
        if decision.get("n"):
            compute = self._compute_ms.summary()
            decision["wait_p50"] = self._wait_ms.summary()["p50"]
            decision["compute_p50"] = compute["p50"]
            decision["compute_p95"] = compute["p95"]
        final = self._final_ms.summary() if self._final_ms.n else {"n": 0}
        return decision, final
