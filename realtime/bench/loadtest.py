"""Load test: K simulated cameras against one inference server (``python -m realtime.bench.loadtest``).

    python -m realtime.bench.loadtest                                  # K = 1,2,4,8, both modes, replay
    python -m realtime.bench.loadtest --cameras 1,4 --seconds 10 --fps 30 --out runs/lt
    python -m realtime.bench.loadtest --modes server --max-batch 64 --queue-delay-us 2000
    python -m realtime.bench.loadtest --cameras 1 --seconds 5 --replay-clients 1,4 --replay-seconds 3

What runs (README, "Load test"):

- The recording: a real face animated by the generator (``train.synth.make_clip``, events
  "micro") is DENSE IN EVENTS by looping: the standard generator keeps events >= 1 s
  apart after a 1 s neutral start, so a short clip with one micro-expression is played
  once to its event, then its window (the event with ``--margin`` seconds of calm either
  side) is played backwards and forwards in turn (ping-pong: no seam, the head never
  jumps; a reversed expression is still an onset -> apex -> offset). Default 30 fps
  640x480, about 1.2 micro-expressions a second, ground truth beside it
  (``clip.gt.jsonl``), made once into the user's cache dir.
- A camera is an OS process (multiprocessing, spawn) running what ``run_live.py --video
  CLIP --realtime --headless --engine ENGINE`` runs: ``open_source(..., realtime=True)``
  (the file decoded in a reader thread at its own rate, only the newest frame kept, stale
  frames dropped and counted), the real tracker and ``Pipeline`` (causal, no drawing),
  the recognition worker. All K load first, then start together (camera i ``i/K`` of an
  event period later, so their events do not coincide) and stop after ``--seconds``.
- Modes for the same K: ``server``: every camera uses ``--engine triton://127.0.0.1:PORT/moext``
  against ONE ``python -m engines.serve`` started here (realtime.bench.loadserver);
  ``local``: every camera loads its own engine in-process (``--engine``, default auto:
  the demo weights on ONNX Runtime here).
- Per run: pairs/s recognised (pairs whose label came back by the deadline, all cameras),
  p50/p95 of the recognition call (``Event.latency_ms["infer"]``) and of the decision
  latency (``latency_ms["decision"]``), dropped frames per camera and in total, achieved
  and delivered fps per camera, events spotted against those played (IoU >= 0.5), the CPU
  of each camera process and of the server, the server's batch sizes, the load average.
- Replay: the onset/apex pairs the pipeline's recognition worker sent on the recording
  (recorded once, ``pairs.npz``) sent back to back by M threads straight to the server
  (the client engine, tritonclient over HTTP), pairs/s and call latency vs M, with the
  batch sizes Triton executed; and the same pairs through an in-process engine.

Outputs in ``--out`` (default runs/loadtest): report.json (with ``core.machine.describe()``),
loadtest.png, pairs.npz, serve.log; a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing as mp
import os
import queue
import resource
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import psutil

from core.events import GroundTruth, read_ground_truth, write_ground_truth
from core.stats import percentiles
from engines.runners import user_cache_dir
from realtime.bench.loadserver import (LoadSampler, ServerProcess, other_jobs, replay, server_available,
                                       stats_delta)

log = logging.getLogger("realtime.bench.loadtest")

MODES = ("server", "local")


# ---------------------------------------------------------------------------------------
# the recording: one micro-expression, played in ping-pong


@dataclass(frozen=True)
class RecordingSpec:
    """The dense recording (every field goes into its cache key)."""

    fps: float = 30.0
    size: tuple[int, int] = (640, 480)
    seconds: float = 30.0             # file length: the run, the start offsets and some slack
    seed: int = 1                     # generator seed: one micro-expression of 0.23 s with seed 1
    margin_s: float = 0.3             # calm either side of the event in the looped window
    identity: str = "sample_video"    # the bundled real face (train.synth identities)
    source_s: float = 3.0             # the generated clip: 1 s neutral, one event, a tail


def pingpong(total: int, start: int, end: int, event: tuple[int, int, int]) -> tuple[list[int], list[tuple]]:
    """Source frame of each of ``total`` output frames, and the event's (onset, apex, offset)
    in output frames each time it plays.

    Frames 0..end play once, then end-1..start backwards, start+1..end forwards, and so on:
    consecutive output frames are always neighbours in the source. Backwards the event
    plays reversed: its offset becomes the onset. (pure)"""
    on, ap, off = event
    if not 0 <= start < on <= ap <= off < end:
        raise ValueError(f"the window [{start}, {end}] must hold the event {event} with a frame to spare either side")
    frames = list(range(min(total, end + 1)))
    events = [(on, ap, off)] if off < total else []
    forward = False
    while len(frames) < total:
        pos = len(frames)
        if forward:
            seg = range(start + 1, end + 1)
            ev = (pos + on - start - 1, pos + ap - start - 1, pos + off - start - 1)
        else:
            seg = range(end - 1, start - 1, -1)
            ev = (pos + end - 1 - off, pos + end - 1 - ap, pos + end - 1 - on)
        frames.extend(seg)
        if ev[2] < total:
            events.append(ev)
        forward = not forward
    return frames[:total], events


def recording_paths(spec: RecordingSpec, folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    from realtime.bench.sample import generator_digest  # the benchmark's rule: a changed generator, a new clip

    folder = Path(folder) if folder is not None else user_cache_dir("loadtest")
    key = hashlib.sha1(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:8]
    video = folder / (f"dense_{spec.identity}_{spec.fps:g}fps_{spec.seconds:g}s_{spec.size[0]}x{spec.size[1]}"
                      f"_seed{spec.seed}_{generator_digest()}{key}.avi")
    return video, video.with_name(video.stem + ".gt.jsonl")


def dense_recording(spec: RecordingSpec, folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The dense recording and its ground truth, generated first if not cached (MJPG .avi)."""
    video, gt = recording_paths(spec, folder)
    if video.is_file() and gt.is_file():
        return video, gt
    from train.synth import make_clip  # the generator, as python -m train.synth clip --events micro

    frames, truths = make_clip(identity=spec.identity, fps=spec.fps, seconds=spec.source_s, events="micro",
                               size=spec.size, seed=spec.seed, source=video.name)
    if not truths:
        raise ValueError(f"seed {spec.seed}: the generator placed no micro-expression in {spec.source_s:g} s; "
                         "try another --seed")
    src, t = list(frames), truths[0]
    m = max(1, round(spec.margin_s * spec.fps))
    start, end = max(0, t.onset_frame - m), min(len(src) - 1, t.offset_frame + m)
    order, events = pingpong(round(spec.seconds * spec.fps), start, end, (t.onset_frame, t.apex_frame, t.offset_frame))
    out = [GroundTruth(onset_frame=a, apex_frame=b, offset_frame=c, kind="micro", label=t.label, fps=spec.fps,
                       onset_t=round(a / spec.fps, 6), apex_t=round(b / spec.fps, 6), offset_t=round(c / spec.fps, 6),
                       au=t.au, source=video.name) for a, b, c in events]
    video.parent.mkdir(parents=True, exist_ok=True)
    tmp = video.with_name(f".{video.stem}.{os.getpid()}.tmp.avi")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), float(spec.fps), tuple(spec.size))
    if not writer.isOpened():
        raise RuntimeError(f"{tmp}: OpenCV could not open an MJPG writer here")
    try:
        for i in order:
            writer.write(src[i])
        writer.release()
        write_ground_truth(gt, out)
        os.replace(tmp, video)     # last: the video's presence means "complete"
    finally:
        writer.release()
        if tmp.exists():
            tmp.unlink()
    return video, gt


def recording_facts(video: Path, gt: Path, spec: RecordingSpec) -> dict:
    truths = read_ground_truth(gt)
    period = (truths[-1].onset_t - truths[1].onset_t) / (len(truths) - 2) if len(truths) > 2 else spec.seconds
    return {"video": str(video), "ground_truth": str(gt), "fps": spec.fps, "size": list(spec.size),
            "seconds": spec.seconds, "events": len(truths), "event_period_s": round(period, 3),
            "events_per_s": round(1.0 / period, 3), "label": truths[0].label if truths else None,
            "generator": f"train.synth make_clip(identity={spec.identity!r}, fps={spec.fps:g}, seconds="
                         f"{spec.source_s:g}, events='micro', seed={spec.seed}) in ping-pong, margin {spec.margin_s:g} s"}


# ---------------------------------------------------------------------------------------
# pairs the pipeline really sends (for the replay)


class PairRecorder:
    """A recogniser that keeps a copy of the first ``limit`` pairs it is asked about."""

    def __init__(self, recognizer, limit: int = 64) -> None:
        self._rec, self.limit = recognizer, limit
        self.onsets: list[np.ndarray] = []
        self.apexes: list[np.ndarray] = []
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._rec, name)

    def predict(self, onset, apex):
        with self._lock:
            pairs = zip(np.asarray(onset).reshape(-1, *onset.shape[-3:]), np.asarray(apex).reshape(-1, *apex.shape[-3:]))
            for a, b in pairs:
                if len(self.onsets) < self.limit:
                    self.onsets.append(a.copy())
                    self.apexes.append(b.copy())
        return self._rec.predict(onset, apex)


def record_pairs(video: Path, rec, settings, path: Path, seconds: float = 20.0) -> dict:
    """Run the recording through the live path (file mode, nothing dropped; ``rec`` a loaded
    recogniser, ``settings`` the RecordingSettings) and save the onset/apex pairs its
    recognition worker sent as ``path`` (npz: onset, apex)."""
    from realtime.stages.recording import drive, make_pipeline
    from realtime.stages.sources import open_source

    recorder = PairRecorder(rec)
    with open_source(video=str(video)) as src:
        pipe = make_pipeline(src, settings, recorder)
        outcome = drive(src, pipe, [], max_frames=int(seconds * src.fps))
    if not recorder.onsets:
        raise RuntimeError(f"{video}: the pipeline sent no pair to the recogniser in {seconds:g} s")
    onset, apex = np.stack(recorder.onsets), np.stack(recorder.apexes)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, onset=onset, apex=apex)
    return {"file": str(path), "pairs": len(onset), "events": outcome.summary.events}


# ---------------------------------------------------------------------------------------
# one camera (a child process)


@dataclass
class CameraJob:
    index: int
    mode: str
    engine: str          # "auto", a path, or triton://...
    device: str
    video: str
    gt: str
    fps: float
    seconds: float
    offset_s: float      # start this long after the common start
    result: str          # JSON written here
    log: str
    nice: int = 0        # added to the process's niceness (--camera-nice)


class _Events:
    """A sink that keeps every final event (a camera's record of what it recognised)."""

    def __init__(self) -> None:
        self.final: list = []
        self.provisional = 0

    def handle(self, result) -> None:
        for e in result.new_events:
            if e.finalised_t is None:
                self.provisional += 1
            else:
                self.final.append(e)

    def handle_events(self, events) -> None:
        self.final.extend(e for e in events if e.finalised_t is not None)


def warm_up(pipe) -> dict:
    """One blank pair through the pipeline's own recognition worker (its thread opens its
    connection or session here, not on the first event); returns the worker's counters then."""
    if getattr(pipe, "worker", None) is None:
        return {}
    from realtime.stages.worker import RecognitionJob

    blank = np.zeros((224, 224, 3), np.uint8)
    pipe.worker.submit(RecognitionJob(key=("warm-up",), onset_rgb=blank, apex_rgb=blank))
    pipe.worker.wait(60.0)     # the results are taken here, never reach the event book
    return dict(pipe.worker.stats())


def camera_main(job: CameraJob, ready, go, start_at) -> None:
    """One simulated camera: load, say ready, wait for the common start, play the recording
    in real time through the live path for ``job.seconds``, write what happened as JSON."""
    logging.basicConfig(filename=job.log, level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    out: dict = {"index": job.index, "mode": job.mode}
    try:
        if job.nice:
            os.nice(job.nice)
        from engines.recognizer import load_engine
        from realtime.evaluate.scoring import score_intervals
        from realtime.stages.recording import RecordingSettings, drive, make_pipeline
        from realtime.stages.sources import open_source

        t0 = time.perf_counter()
        rec, note = load_engine(job.engine, job.device)
        if rec is None:
            raise RuntimeError(f"--engine {job.engine}: no recogniser ({note})")
        source = open_source(video=job.video, fps=job.fps, realtime=True)
        pipe = make_pipeline(source, RecordingSettings(engine=job.engine, device=job.device, causal=True), rec)
        base = warm_up(pipe)
        out["load_s"] = round(time.perf_counter() - t0, 2)
        ready.put(job.index)
        go.wait()
        time.sleep(max(0.0, start_at.value + job.offset_s - time.time()))
        events, seen, snap = _Events(), {}, {}
        c0, w0 = time.process_time(), time.perf_counter()
        deadline = w0 + job.seconds

        def snapshot() -> None:
            worker = pipe.worker.stats() if getattr(pipe, "worker", None) is not None else {}
            counters = ("submitted", "completed", "dropped", "faults")
            snap.update(worker={k: worker.get(k, 0) - base.get(k, 0) for k in counters},
                        frames=pipe.frames,
                        dropped=source.dropped, wall=time.perf_counter() - w0, cpu=time.process_time() - c0,
                        last_index=seen.get("last", 0))

        def until_deadline(result):
            seen.setdefault("first", result.index)
            seen["last"] = result.index
            if time.perf_counter() < deadline:
                return None
            snapshot()
            return 0

        outcome = drive(source, pipe, [events], on_result=until_deadline, close_timeout=15.0)
        if not snap:   # the recording ended before the deadline
            snapshot()
        source.close()
        rec.close()
        truths = [t for t in read_ground_truth(job.gt)
                  if t.onset_frame >= seen.get("first", 0) and t.offset_frame <= snap["last_index"]]
        score = score_intervals(events.final, truths, job.fps, "micro")
        s = outcome.summary
        wall = snap["wall"]
        worker = snap["worker"]
        out.update(
            frames=snap["frames"], dropped=snap["dropped"], wall_s=round(wall, 3),
            achieved_fps=round(snap["frames"] / wall, 2),
            delivered_fps=round((snap["frames"] + snap["dropped"]) / wall, 2),
            cpu_s=round(snap["cpu"], 3), cpu_cores=round(snap["cpu"] / wall, 3),
            cpu_ms_per_frame=round(1e3 * snap["cpu"] / max(1, snap["frames"]), 3),
            pairs_submitted=int(worker.get("submitted", 0)), pairs=int(worker.get("completed", 0)),
            pairs_dropped=int(worker.get("dropped", 0)), recognition_faults=int(worker.get("faults", 0)),
            played=len(truths), spotted=score.tp, false_alarms=score.fp, missed=score.fn,
            events=len(events.final), unlabelled=sum(e.label is None for e in events.final),
            infer_ms=[e.latency_ms["infer"] for e in events.final if "infer" in e.latency_ms],
            decision_ms=[e.latency_ms["decision"] for e in events.final if e.label is not None],
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            faults=s.faults, stages={k: {"p50": round(v["p50"], 3), "mean": round(v["mean"], 3)}
                                     for k, v in s.stages.items() if v.get("n")},
            engine=s.engine)
    except BaseException as e:  # the parent reports it; a camera never hangs the run
        out["error"] = f"{type(e).__name__}: {e}"
        try:
            ready.put(job.index)
        except Exception:
            pass
    Path(job.result).write_text(json.dumps(out))


# ---------------------------------------------------------------------------------------
# a run: K cameras in one mode


def run_cameras(k: int, mode: str, engine: str, a: argparse.Namespace, rec: dict, server: ServerProcess | None,
                ready_timeout: float = 600.0) -> dict:
    """K camera processes in one mode, started together; their results merged (``merge_run``)."""
    ctx = mp.get_context("spawn")
    ready, go, start_at = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    period = rec["event_period_s"]
    with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp:
        jobs = [CameraJob(i, mode, engine, a.device, rec["video"], rec["ground_truth"], rec["fps"], a.seconds,
                          i * period / k, f"{tmp}/camera{i}.json", f"{tmp}/camera{i}.log", a.camera_nice)
                for i in range(k)]
        procs = [ctx.Process(target=camera_main, args=(j, ready, go, start_at), name=f"camera{j.index}")
                 for j in jobs]
        t_load = time.perf_counter()
        for p in procs:
            p.start()
        for _ in procs:
            try:
                ready.get(timeout=ready_timeout)
            except queue.Empty:
                break
        load_s = time.perf_counter() - t_load
        jobs_now = other_jobs()
        server = server if server is not None and server.exit_code() is None else None
        stats0 = server.stats() if server else None
        scpu0 = server.cpu_seconds() if server else 0.0
        mcpu0 = psutil.cpu_times()
        w0 = time.perf_counter()
        with LoadSampler() as sampler:
            start_at.value = time.time() + 0.5
            go.set()
            for p in procs:
                p.join(a.seconds + period + 120)
        wall = time.perf_counter() - w0
        mcpu1 = psutil.cpu_times()
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        cams = []
        for j, p in zip(jobs, procs):
            try:
                cams.append(json.loads(Path(j.result).read_text()))
            except (OSError, ValueError):
                tail = Path(j.log).read_text(errors="replace")[-1500:] if Path(j.log).exists() else ""
                cams.append({"index": j.index, "mode": mode, "error": f"no result (exit code {p.exitcode}) {tail}"})
        for c in cams:
            if "error" in c:
                log.warning("K=%d %s, camera %d: %s", k, mode, c["index"], c["error"])
        server_part = None
        if server and server.exit_code() is not None:
            server_part = {"exited": server.exit_code(), "log": str(server.log_path)}
            log.error("the server exited (%s) during the K=%d %s run; see %s", server.exit_code(), k, mode,
                      server.log_path)
        elif server:
            server_part = dict(stats_delta(stats0, server.stats()),
                               cpu_s=round(server.cpu_seconds() - scpu0, 2), rss_mb=round(server.rss_mb(), 1))
            server_part["cpu_cores"] = round(server_part["cpu_s"] / wall, 3)
    busy = sum(getattr(mcpu1, f) - getattr(mcpu0, f) for f in ("user", "system", "nice", "irq", "softirq"))
    machine = dict(sampler.summary(), cpu_cores_busy=round(busy / wall, 3), other_jobs=jobs_now)
    run = merge_run(k, mode, cams, a.seconds, rec["events_per_s"])
    run.update(load_s=round(load_s, 1), server=server_part, machine=machine)
    return run


def _pct(values: list[float]) -> dict:
    p = percentiles(values)
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in p.items()}


def merge_run(k: int, mode: str, cams: list[dict], seconds: float, events_per_s: float) -> dict:
    """One run's figures from its cameras' JSON (pure): totals, percentiles over every
    camera's events, and a compact per-camera table."""
    ok = [c for c in cams if "error" not in c]
    infer = [x for c in ok for x in c["infer_ms"]]
    decision = [x for c in ok for x in c["decision_ms"]]
    frames, dropped = sum(c["frames"] for c in ok), sum(c["dropped"] for c in ok)
    keys = ("frames", "dropped", "achieved_fps", "delivered_fps", "cpu_cores", "cpu_ms_per_frame", "pairs",
            "pairs_dropped", "played", "spotted", "false_alarms", "events", "unlabelled", "load_s", "peak_rss_mb")
    per = [{"camera": c["index"], **{x: c.get(x) for x in keys}, "faults": c.get("faults", {})} if "error" not in c
           else {"camera": c["index"], "error": c["error"]} for c in cams]
    pairs = sum(c["pairs"] for c in ok)
    return {"k": k, "mode": mode, "cameras_ok": len(ok), "seconds": seconds,
            "pairs": pairs, "pairs_per_s": round(pairs / seconds, 3),
            "offered_events_per_s": round(k * events_per_s, 3),
            "infer_ms": _pct(infer), "decision_ms": _pct(decision),
            "frames": frames, "dropped": dropped, "dropped_share": round(dropped / max(1, frames + dropped), 4),
            "achieved_fps": [c["achieved_fps"] for c in ok], "delivered_fps": [c["delivered_fps"] for c in ok],
            "camera_cpu_cores": round(sum(c["cpu_cores"] for c in ok), 3),
            "camera_cpu_ms_per_frame": round(float(np.mean([c["cpu_ms_per_frame"] for c in ok])), 3) if ok else None,
            "played": sum(c["played"] for c in ok), "spotted": sum(c["spotted"] for c in ok),
            "pairs_dropped": sum(c["pairs_dropped"] for c in ok), "per_camera": per,
            "errors": [c["error"] for c in cams if "error" in c]}


# ---------------------------------------------------------------------------------------
# replay: the server's capacity


def run_replay(a: argparse.Namespace, pairs_file: Path, local, server: ServerProcess | None) -> dict:
    """The recorded pairs at the highest rate: M threads to the server, then to ``local``
    (an in-process recogniser)."""
    from engines.recognizer import Recognizer

    data = np.load(pairs_file)
    onset, apex = data["onset"], data["apex"]
    out: dict = {"pairs_file": str(pairs_file), "unique_pairs": len(onset), "seconds": a.replay_seconds,
                 "server": [], "local": []}
    remote = Recognizer.load(server.url) if server is not None and server.exit_code() is None else None
    for rec in (local, remote):
        if rec is not None:
            replay(rec, onset, apex, 1, 0.5)   # warm-up
    with LoadSampler() as sampler:
        for m in a.replay_clients:
            if remote is not None and server.exit_code() is None:
                s0, c0 = server.stats(), server.cpu_seconds()
                r = replay(remote, onset, apex, m, a.replay_seconds)
                if server.exit_code() is not None:   # it crashed under this load: say so, keep the rest
                    r["server_exited"] = server.exit_code()
                    out["server_crash"] = (f"the server exited ({server.exit_code()}) during the replay with {m} "
                                           f"clients; see {server.log_path}")
                    log.error(out["server_crash"])
                else:
                    cpu = server.cpu_seconds() - c0
                    r["server"] = dict(stats_delta(s0, server.stats()), cpu_s=round(cpu, 2),
                                       cpu_cores=round(cpu / r["seconds"], 3),
                                       cpu_ms_per_pair=round(1e3 * cpu / r["pairs"], 3) if r["pairs"] else None)
                out["server"].append(r)
            out["local"].append(replay(local, onset, apex, m, a.replay_seconds))
        if a.local_batch > 1:
            out["local_batched"] = replay(local, onset, apex, 1, a.replay_seconds, pairs_per_call=a.local_batch)
    out["machine"] = dict(sampler.summary(), other_jobs=other_jobs())
    out["local_engine"] = " ".join(str(local.info().get(x, "")) for x in ("engine", "precision", "device"))
    if remote is not None:
        remote.close()
    return out


# ---------------------------------------------------------------------------------------
# the report


def _f(x, nd=1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def markdown(r: dict) -> str:
    rows = ["| K | mode | pairs/s | events spotted / played | infer p50 / p95 ms | decision p50 / p95 ms | "
            "dropped frames (total, share) | achieved fps per camera | camera CPU ms/frame | cameras' CPU (cores) | "
            "server CPU (cores) | server pairs per execution | load avg 1 min |",
            "| " + " | ".join(["---"] * 13) + " |"]
    for run in r["runs"]:
        i, d, s, mach = run["infer_ms"], run["decision_ms"], run.get("server") or {}, run["machine"]
        fps = run["achieved_fps"]
        rows.append(
            f"| {run['k']} | {run['mode']} | {run['pairs_per_s']:.2f} | {run['spotted']} / {run['played']} | "
            f"{_f(i.get('p50'))} / {_f(i.get('p95'))} | {_f(d.get('p50'), 0)} / {_f(d.get('p95'), 0)} | "
            f"{run['dropped']} ({run['dropped_share']:.1%}) | "
            f"{(f'{min(fps):.1f}-{max(fps):.1f}' if fps else '-')} | {_f(run['camera_cpu_ms_per_frame'], 2)} | "
            f"{_f(run['camera_cpu_cores'], 2)} | {_f(s.get('cpu_cores'), 2)} | "
            f"{_f(s.get('pairs_per_execution'), 2)} | {_f(mach.get('loadavg_1min_mean'), 1)} |"
            + (f" errors: {len(run['errors'])}" if run["errors"] else ""))
    out = "\n".join(rows)
    rp = r.get("replay")
    if rp:
        local = {x["concurrency"]: x for x in rp["local"]}
        lines = ["| clients | server pairs/s | server call p50 / p95 ms | server batch sizes executed (size: count) | "
                 "server CPU (cores) | in-process pairs/s | in-process call p50 / p95 ms |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for m in sorted(set(local) | {x["concurrency"] for x in rp["server"]}):
            s = next((x for x in rp["server"] if x["concurrency"] == m), None)
            lo = local.get(m)
            st = (s or {}).get("server") or {}
            sb = ", ".join(f"{k}: {v}" for k, v in st.get("batch_sizes", {}).items())
            if s and "server_exited" in s:
                sb = f"SERVER CRASHED (exit {s['server_exited']}) after {s['pairs']} pairs"
            lines.append(f"| {m} | {_f(s and s['pairs_per_s'])} | {_f(s and s['latency_ms'].get('p50'))} / "
                         f"{_f(s and s['latency_ms'].get('p95'))} | {sb or '-'} | "
                         f"{_f(st.get('cpu_cores'), 2)} | {_f(lo and lo['pairs_per_s'])} | "
                         f"{_f(lo and lo['latency_ms'].get('p50'))} / {_f(lo and lo['latency_ms'].get('p95'))} |")
        if rp.get("local_batched"):
            b = rp["local_batched"]
            lines.append(f"\nin-process, one caller, {b['pairs_per_call']} pairs per call: {b['pairs_per_s']:.1f} "
                         f"pairs/s (call p50 {b['latency_ms'].get('p50', 0):.1f} ms)")
        out += (f"\n\nReplay of {rp['unique_pairs']} recorded pairs, {rp['seconds']:g} s per row:\n\n"
                + "\n".join(lines))
    v = r.get("verdict")
    if v and v.get("ratio") is not None:
        out += (f"\n\nK={v['k']}: server {v['server_pairs_per_s']:.2f} pairs/s vs in-process {v['local_pairs_per_s']:.2f} "
                f"pairs/s = {v['ratio']:.2f}x (target {v['target']:g}x: {'met' if v['met'] else 'NOT met'})")
    return out


def verdict(runs: list[dict], target: float = 1.5) -> dict:
    """Server vs in-process pairs/s at the largest K run in both modes."""
    both = sorted({r["k"] for r in runs if r["mode"] == "server"} & {r["k"] for r in runs if r["mode"] == "local"})
    if not both:
        return {}
    k = both[-1]
    s = next(r for r in runs if r["k"] == k and r["mode"] == "server")["pairs_per_s"]
    lo = next(r for r in runs if r["k"] == k and r["mode"] == "local")["pairs_per_s"]
    ratio = s / lo if lo else None
    return {"k": k, "server_pairs_per_s": s, "local_pairs_per_s": lo, "ratio": None if ratio is None else round(ratio, 3),
            "target": target, "met": ratio is not None and ratio >= target}


def plot(r: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")   # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 8.5))
    style = {"server": ("tab:blue", "o", "one server (triton://)"), "local": ("tab:orange", "s", "in-process engine each")}
    for mode, (colour, marker, label) in style.items():
        runs = sorted((x for x in r["runs"] if x["mode"] == mode), key=lambda x: x["k"])
        if not runs:
            continue
        ks = [x["k"] for x in runs]
        ax[0, 0].plot(ks, [x["pairs_per_s"] for x in runs], marker=marker, color=colour, label=label)
        ax[0, 1].plot(ks, [x["decision_ms"].get("p95", np.nan) for x in runs], marker=marker, color=colour,
                      label=f"{label}: decision p95")
        ax[0, 1].plot(ks, [x["infer_ms"].get("p95", np.nan) for x in runs], marker=marker, color=colour, ls="--",
                      label=f"{label}: infer p95")
        ax[1, 0].plot(ks, [100 * x["dropped_share"] for x in runs], marker=marker, color=colour, label=label)
    runs = [x for x in r["runs"]]
    if runs:
        ks = sorted({x["k"] for x in runs})
        ax[0, 0].plot(ks, [k * r["recording"]["events_per_s"] for k in ks], color="grey", ls=":",
                      label="events played (K x events/s)")
    ax[0, 0].set(title="pairs recognised per second, all cameras", xlabel="cameras K", ylabel="pairs/s")
    ax[0, 1].set(title="latency p95 (decision: apex -> label; infer: the call)", xlabel="cameras K", ylabel="ms",
                 yscale="log")
    ax[1, 0].set(title="frames dropped (share of frames delivered)", xlabel="cameras K", ylabel="%")
    rp = r.get("replay")
    if rp:
        for key, colour, label in (("server", "tab:blue", "server (M client threads)"),
                                   ("local", "tab:orange", "in-process engine (M threads)")):
            rows = sorted(rp.get(key, []), key=lambda x: x["concurrency"])
            if rows:
                ms = [x["concurrency"] for x in rows]
                ax[1, 1].plot(ms, [x["pairs_per_s"] for x in rows], marker="o", color=colour, label=label)
                for x in rows:
                    ax[1, 1].annotate(f"p95 {x['latency_ms'].get('p95', 0):.0f} ms", (x["concurrency"], x["pairs_per_s"]),
                                      fontsize=7, textcoords="offset points", xytext=(3, 4), color=colour)
        ax[1, 1].set_xscale("log", base=2)
    ax[1, 1].set(title="replay: recorded pairs at the highest rate", xlabel="concurrent callers M", ylabel="pairs/s")
    ks = sorted({x["k"] for x in r["runs"]})
    for a_ in (ax[0, 0], ax[0, 1], ax[1, 0]):
        a_.set_xticks(ks)
    if rp:
        ms = sorted({x["concurrency"] for x in rp.get("server", []) + rp.get("local", [])})
        ax[1, 1].set_xticks(ms, [str(m) for m in ms])
    for a_ in ax.flat:
        a_.grid(alpha=0.3)
        if a_.get_legend_handles_labels()[0]:
            a_.legend(fontsize=8)
    m = r["machine"]
    fig.suptitle(f"Load test: {r['recording']['fps']:g} fps {r['recording']['size'][0]}x{r['recording']['size'][1]}, "
                 f"{r['settings']['seconds']:g} s per run; {m['cpu']}, {m['cores_logical']} cores", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------
# the command


def _ints(text: str) -> list[int]:
    try:
        v = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return v


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 640x480, got {text!r}") from None
    return w, h


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m realtime.bench.loadtest",
        description="K simulated cameras (processes replaying a recording dense in micro-expressions in real time "
                    "through the live path) against one inference server, and against an in-process engine each; "
                    "then the server's capacity on recorded pairs.",
        epilog="examples:\n  python -m realtime.bench.loadtest\n"
               "  python -m realtime.bench.loadtest --cameras 1,2 --seconds 10 --replay-clients 1,4,16\n"
               "  python -m realtime.bench.loadtest --modes local --cameras 8 --fps 60\n"
               "  python -m realtime.bench.loadtest --no-replay --max-batch 16 --queue-delay-us 500",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=_ints, default=[1, 2, 4, 8], help="camera counts K (default 1,2,4,8)")
    p.add_argument("--modes", default="server,local", help="server, local or both (default server,local)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds each camera plays per run (default 20)")
    p.add_argument("--fps", type=float, default=30.0, help="the recording's frame rate (default 30)")
    p.add_argument("--size", type=_size, default=(640, 480), help="frame size WxH (default 640x480)")
    p.add_argument("--seed", type=int, default=1, help="generator seed of the looped micro-expression (default 1)")
    p.add_argument("--margin", type=float, default=0.3, help="calm seconds either side of the event (default 0.3)")
    p.add_argument("--engine", default="auto", help="the engine (server and in-process; default auto: demo weights)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--max-batch", type=int, default=64, help="server: largest batch (default 64)")
    p.add_argument("--queue-delay-us", type=int, default=2000, help="server: batching wait, us (default 2000)")
    p.add_argument("--instances", type=int, default=1, help="server: model instances (default 1)")
    p.add_argument("--stub-env", help="server: its stub environment folder (default: the cache dir)")
    p.add_argument("--camera-nice", type=int, default=0,
                   help="run the cameras at this niceness (e.g. 10: the server, and the machine's other work, first)")
    p.add_argument("--replay-clients", type=_ints, default=[1, 2, 4, 8, 16], help="replay concurrency M (default 1,2,4,8,16)")
    p.add_argument("--replay-seconds", type=float, default=8.0, help="seconds per replay row (default 8)")
    p.add_argument("--local-batch", type=int, default=8, help="also replay in-process at this many pairs per call (1: off)")
    p.add_argument("--no-replay", action="store_true", help="skip the replay")
    p.add_argument("--record-seconds", type=float, default=20.0,
                   help="seconds of the recording run (file mode) to record the replay's pairs from (default 20)")
    p.add_argument("--no-plot", action="store_true", help="skip loadtest.png")
    p.add_argument("--out", type=Path, default=Path("runs/loadtest"), help="output folder (default runs/loadtest)")
    a = p.parse_args(argv)
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not a.modes or set(a.modes) - set(MODES):
        p.error(f"--modes takes {', '.join(MODES)} (comma-separated), got {','.join(a.modes)}")
    if a.seconds <= 0 or a.fps <= 0 or a.replay_seconds <= 0 or a.margin < 0.2:
        p.error("--seconds, --fps and --replay-seconds must be positive; --margin at least 0.2 s (the spotter "
                "needs calm between events)")
    return a


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    a = parse_args(argv)
    from core.machine import describe

    needs_server = "server" in a.modes or not a.no_replay
    why = server_available() if needs_server else None
    if why and "server" in a.modes:
        print(f"error: the server mode needs the serve extra: {why}; or run --modes local --no-replay", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    machine = describe()
    from engines.recognizer import load_engine
    from realtime.stages.recording import RecordingSettings

    local, note = load_engine(a.engine, a.device)   # first: a checkpoint is exported once, here
    if local is None:
        print(f"error: --engine {a.engine}: no recogniser ({note})", file=sys.stderr)
        return 2
    server = None
    if needs_server and not why:   # it starts while the recording is made
        server = ServerProcess(a.engine, a.device, max_batch=a.max_batch, queue_delay_us=a.queue_delay_us,
                               instances=a.instances, log_path=a.out / "serve.log", stub_env=a.stub_env)
        server.launch()
    report: dict = {"tool": "realtime.bench.loadtest",
                    "command": "python -m realtime.bench.loadtest " + " ".join(sys.argv[1:] if argv is None else argv),
                    "machine": machine, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                    "runs": [], "server": None}
    try:
        spec = RecordingSpec(fps=a.fps, size=a.size, seconds=a.seconds + 8.0, seed=a.seed, margin_s=a.margin)
        print(f"recording: {a.fps:g} fps {a.size[0]}x{a.size[1]}, dense in micro-expressions (made once) ...", flush=True)
        video, gt = dense_recording(spec)
        report["recording"] = rec = recording_facts(video, gt, spec)
        print(f"  {video.name}: {rec['events']} events, one every {rec['event_period_s']:.2f} s", flush=True)
        pairs_file = a.out / "pairs.npz"
        report["pairs"] = pairs = record_pairs(video, local, RecordingSettings(engine=a.engine, device=a.device, causal=True),
                                               pairs_file, a.record_seconds)
        print(f"  recorded {pairs['pairs']} pairs the pipeline sent -> {pairs_file}", flush=True)
        if server is not None:
            print("waiting for the server (python -m engines.serve) ...", flush=True)
            server.wait_ready()
            report["server"] = {"url": server.url, "start_s": round(server.start_s, 1), "command": server.cmd}
        for k in a.cameras:
            for mode in a.modes:
                if mode == "server" and server.exit_code() is not None:
                    print(f"K={k} server: skipped, the server is down (exit {server.exit_code()}; see "
                          f"{server.log_path})", flush=True)
                    continue
                engine = server.url if mode == "server" else a.engine
                print(f"K={k} {mode}: {k} camera process(es), {a.seconds:g} s ...", flush=True)
                run = run_cameras(k, mode, engine, a, rec, server)
                report["runs"].append(run)
                print(f"  {run['pairs_per_s']:.2f} pairs/s, spotted {run['spotted']}/{run['played']}, dropped "
                      f"{run['dropped']} frames, decision p95 {run['decision_ms'].get('p95', float('nan')):.0f} ms"
                      + (f"; errors: {run['errors']}" if run["errors"] else ""), flush=True)
        if not a.no_replay:
            print("replay of the recorded pairs ...", flush=True)
            report["replay"] = run_replay(a, pairs_file, local, server)
    except BaseException as e:   # keep what was measured: the report is written below, then re-raised
        report["aborted"] = f"{type(e).__name__}: {e}"
        failure = e
    else:
        failure = None
    finally:
        if server is not None:
            crashed = server.exit_code()
            code = server.stop()
            if report["server"]:
                report["server"].update(stop_s=round(server.stop_s, 1), exit_code=code, crashed=crashed is not None)
        local.close()
    report["verdict"] = verdict(report["runs"])
    report["machine_end"] = {"loadavg": os.getloadavg(), "other_jobs": other_jobs()}
    (a.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    if not a.no_plot and "recording" in report:
        plot(report, a.out / "loadtest.png")
    print()
    print(f"machine: {machine['cpu']}, {machine['cores_logical']} cores, load average at start {machine['loadavg']}")
    print(markdown(report))
    print(f"\nwrote {a.out / 'report.json'}" + ("" if a.no_plot else f" and {a.out / 'loadtest.png'}"))
    if failure is not None:
        raise failure
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
