"""Soak test of the live path: an hour (or more) of frames, resources sampled as it runs.

A lab runs the recogniser for hours during an experiment, so the live path must not leak.
This script streams ``--minutes-of-video`` of video-equivalent frames (frames / source
fps) through the same code as run_live.py: a recording is decoded again and again at full
speed (``realtime.stages.sources.open_source``, reopened on every loop so file handles that pile
up would show), every frame goes through ``realtime.stages.pipeline.Pipeline.process`` with the
recogniser in its worker thread, the overlay is drawn at display rate and final events go
to the JSON-lines event log (``realtime.stages.sinks.EventLog``, flushed and fsynced per line).
The stream keeps one clock across loops (frame index and time keep counting).

Every ``--sample-every`` seconds of wall time it records, for this process:
resident memory (RSS), open file descriptors, threads, the size of the temp and cache
folders the run writes to (its own TMPDIR and MOEXT_CACHE_DIR, under ``--work``), the
Python objects tracked by the garbage collector, frames processed, events and faults.

Verdict (printed with the numbers, exit status 0 = PASS, 1 = FAIL), all after a warm-up
(``--warmup``, share of the frames; allocators and caches fill first):
- memory: growth of RSS from the start of the measured part to its end (medians of the
  first and last tenth of the samples) below ``--max-growth`` (default 5%);
- open files and threads: flat (range within ``--fd-tolerance`` / ``--thread-tolerance``);
- temp and cache folders: growth within ``--temp-tolerance-mb``.

Writes ``soak.json`` (machine, settings, every sample, verdict, the pipeline's run summary)
and ``soak.png`` (the samples over video time) into ``--out``.

The default recording is a synthetic clip of a real face with micro-expressions
(``train.synth``, generated once at ``--fps`` into ``--work``); the default engine is the
bundled demo weights, or, when they are missing, a MoExt classifier of the paper's size
with random weights (the real network, engine and memory; its labels mean nothing).

examples:
  python scripts/soak.py --minutes-of-video 60 --fps 12 --out docs --work /tmp/soak
  python scripts/soak.py --minutes-of-video 2 --fps 10 --size 320x240 --sample-every 1 --out /tmp/soak
  python scripts/soak.py --video lab_session.avi --fps 200 --minutes-of-video 180 --engine runs/x/best.safetensors
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib
import psutil
import torch
from tqdm import tqdm

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

try:
    import realtime  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.machine import cpu_model, load_average, physical_cores  # noqa: E402
from engines.recognizer import load_engine  # noqa: E402
from realtime.stages.pipeline import Pipeline, PipelineConfig  # noqa: E402
from realtime.stages.sinks import EventLog  # noqa: E402
from realtime.stages.sources import open_source  # noqa: E402
from train.checkpoint import save_checkpoint  # noqa: E402
from train.moext import MoExtClassifier, MoExtConfig  # noqa: E402
from train.synth import write_clip  # noqa: E402


# ---------------------------------------------------------------------------------------
# measurement


def folder_bytes(path: Path) -> int:
    """Total size of the regular files under ``path`` (0 if it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed while walking
                pass
    return total


@dataclass
class Sample:
    wall_s: float          # since the stream started
    frames: int            # processed so far
    video_s: float         # frames / source fps
    rss_mb: float
    fds: int
    threads: int
    temp_mb: float         # TMPDIR + engine cache of this run
    gc_objects: int
    events: int
    faults: int
    fps: float             # frames per wall second since the previous sample
    cpu_s: float           # process CPU time (user + system)


class Sampler:
    """Resource samples of this process, taken by the frame loop (no extra thread)."""

    def __init__(self, fps: float, watch: list[Path]) -> None:
        self.proc = psutil.Process()
        self.fps = fps
        self.watch = watch
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()
        self._last = (self.t0, 0)

    def take(self, frames: int, events: int, faults: int) -> Sample:
        now = time.monotonic()
        dt = now - self._last[0]
        rate = (frames - self._last[1]) / dt if dt > 0 else 0.0
        self._last = (now, frames)
        with self.proc.oneshot():
            rss = self.proc.memory_info().rss
            fds = self.proc.num_fds() if hasattr(self.proc, "num_fds") else self.proc.num_handles()
            threads = self.proc.num_threads()
            cpu = self.proc.cpu_times()
        s = Sample(wall_s=round(now - self.t0, 3), frames=frames, video_s=round(frames / self.fps, 3),
                   rss_mb=round(rss / 2**20, 2), fds=fds, threads=threads,
                   temp_mb=round(sum(folder_bytes(p) for p in self.watch) / 2**20, 3),
                   gc_objects=len(gc.get_objects()), events=events, faults=faults, fps=round(rate, 2),
                   cpu_s=round(cpu.user + cpu.system, 2))
        self.samples.append(s)
        return s


# ---------------------------------------------------------------------------------------
# verdict (pure functions of the samples)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    values: dict = field(default_factory=dict)


def window_median(values: list[float], head: bool, share: float = 0.1) -> float:
    """Median of the first (head) or last share of the values (at least 3 of them)."""
    k = max(3, int(math.ceil(len(values) * share)))
    part = values[:k] if head else values[-k:]
    return float(statistics.median(part))


def slope_per_hour(x_s: list[float], y: list[float]) -> float:
    """Least-squares slope of y against x (seconds), per hour."""
    n = len(x_s)
    if n < 2:
        return 0.0
    mx, my = sum(x_s) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x_s)
    if sxx == 0:
        return 0.0
    return sum((a - mx) * (b - my) for a, b in zip(x_s, y)) / sxx * 3600.0


def measured_part(samples: list[Sample], warmup_frames: int) -> list[Sample]:
    return [s for s in samples if s.frames >= warmup_frames]


def judge(samples: list[Sample], warmup_frames: int, *, max_growth: float = 0.05, fd_tolerance: int = 2,
          thread_tolerance: int = 2, temp_tolerance_mb: float = 1.0) -> list[Check]:
    """Flatness checks on the samples after warm-up (see the module docstring)."""
    part = measured_part(samples, warmup_frames)
    if len(part) < 6:
        return [Check("samples", False, f"only {len(part)} samples after warm-up (need >= 6): run longer or "
                                        "sample more often (--sample-every)")]
    video = [s.video_s for s in part]
    rss = [s.rss_mb for s in part]
    base, end = window_median(rss, head=True), window_median(rss, head=False)
    growth = (end - base) / base
    slope = slope_per_hour(video, rss)
    checks = [Check("memory", growth < max_growth,
                    f"RSS {base:.1f} MB after warm-up -> {end:.1f} MB at the end: {growth:+.2%} "
                    f"(limit {max_growth:.0%}); trend {slope:+.1f} MB per hour of video; "
                    f"range {min(rss):.1f}..{max(rss):.1f} MB",
                    {"baseline_mb": base, "end_mb": end, "growth": growth, "slope_mb_per_video_hour": slope,
                     "min_mb": min(rss), "max_mb": max(rss)})]
    for name, key, tol in (("open files", "fds", fd_tolerance), ("threads", "threads", thread_tolerance)):
        v = [getattr(s, key) for s in part]
        rng = max(v) - min(v)
        checks.append(Check(name, rng <= tol, f"{key} {min(v)}..{max(v)} after warm-up (range {rng}, "
                                              f"tolerance {tol}); first {v[0]}, last {v[-1]}",
                            {"min": min(v), "max": max(v), "first": v[0], "last": v[-1]}))
    temp = [s.temp_mb for s in part]
    grew = max(temp) - temp[0]
    checks.append(Check("temp", grew <= temp_tolerance_mb,
                        f"temp+cache {temp[0]:.2f} MB after warm-up, max {max(temp):.2f} MB, last {temp[-1]:.2f} MB "
                        f"(growth {grew:+.2f} MB, tolerance {temp_tolerance_mb:g} MB)",
                        {"first_mb": temp[0], "max_mb": max(temp), "last_mb": temp[-1], "growth_mb": grew}))
    return checks


# ---------------------------------------------------------------------------------------
# inputs


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT (e.g. 640x480), got {text!r}") from None
    return w, h


def default_clip(work: Path, fps: float, size: tuple[int, int], seconds: float) -> Path:
    """A synthetic clip of a real face with micro-expressions at ``fps`` (made once)."""
    path = work / f"soak_clip_{fps:g}fps_{size[0]}x{size[1]}_{seconds:g}s.avi"
    if not path.is_file():
        print(f"writing the soak clip {path} ({seconds:g} s at {fps:g} fps, micro-expressions) ...", flush=True)
        write_clip(path, fps=fps, seconds=seconds, events="micro", size=size, seed=0)
    return path


def random_checkpoint(work: Path, width: float) -> Path:
    """A MoExt classifier of the given width with fixed random weights (the real network)."""
    path = work / f"random_moext_w{width:g}.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        cfg = MoExtConfig(width=width)
        save_checkpoint(path, MoExtClassifier(cfg).eval(), cfg, meta={"purpose": "soak test, random weights"})
    return path


def soak_engine(spec: str, work: Path, width: float, device: str, kind: str):
    """(recognizer or None, description): ``engines.recognizer.load_engine``, plus the
    soak's "random" spec (a random-weight MoExt of ``width``), which "auto" falls back to
    when the demo weights are missing."""
    if spec == "auto":
        rec, _ = load_engine("auto", device, engine=kind)
        if rec is not None:
            return rec, "demo weights"
        spec = "random"
        print("demo weights missing: using a random-weight MoExt classifier", flush=True)
    if spec == "random":
        rec, _ = load_engine(random_checkpoint(work, width), device, engine=kind)
        return rec, f"random weights, width {width:g}"
    rec, _ = load_engine(spec, device, engine=kind)
    return rec, spec if rec is not None else "none (spotting only)"


def machine() -> dict:
    """What the soak ran on (core.machine's CPU and core count, this process's view)."""
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "physical_cores": physical_cores(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "os": platform.platform()}


# ---------------------------------------------------------------------------------------
# the run


def run(args) -> dict:
    work = args.work
    fps = args.fps
    video = Path(args.video) if args.video else default_clip(work, fps, args.size, args.clip_seconds)
    recognizer, engine_desc = soak_engine(args.engine, work, args.width, args.device, args.engine_kind)
    target = int(round(args.minutes_of_video * 60 * fps))
    warmup_frames = int(round(args.warmup * target))
    draw = args.draw_fps > 0
    cfg = PipelineConfig(fps=fps, tracker=args.tracker, draw=draw, draw_fps=args.draw_fps if draw else None)
    pipe = Pipeline(cfg, recognizer, source_name=f"{video.name} (looped)")
    log = EventLog(work / "events.jsonl")
    sampler = Sampler(fps, [Path(os.environ["TMPDIR"]), Path(os.environ["MOEXT_CACHE_DIR"])])
    source_faults: dict[str, int] = {}
    frames, loops = 0, 0
    load_start = load_average()
    print(f"soak: {args.minutes_of_video:g} min of video = {target} frames at {fps:g} fps from {video.name}; "
          f"engine {engine_desc}; tracker {args.tracker}; overlay {cfg.draw_policy}; "
          f"load average {load_start}", flush=True)

    def faults_now() -> int:
        return sum(pipe.faults.values()) + sum(source_faults.values())

    next_sample = time.monotonic()
    bar = tqdm(total=target, unit="frame", file=sys.stderr, dynamic_ncols=True, mininterval=2.0,
               disable=args.quiet or None)
    try:
        while frames < target:
            with open_source(video=video, fps=fps) as src:
                for frame in src:
                    frame.index, frame.t = frames, frames / fps  # one clock across loops
                    r = pipe.process(frame)
                    log.handle(r)
                    frames += 1
                    bar.update(1)
                    if time.monotonic() >= next_sample:
                        s = sampler.take(frames, log.count, faults_now())
                        next_sample += args.sample_every
                        bar.set_postfix(rss=f"{s.rss_mb:.0f}MB", fds=s.fds, thr=s.threads, ev=s.events, refresh=False)
                    if frames >= target:
                        break
            for k, v in src.faults.items():
                source_faults[k] = source_faults.get(k, 0) + v
            loops += 1
            if src.frames_read == 0:
                raise SystemExit(f"error: {video}: no frame could be decoded; check the file")
    finally:
        bar.close()
    sampler.take(frames, log.count, faults_now())     # the last sample of the running stream
    log.handle_events(pipe.close(wait=True))
    log.close()
    if recognizer is not None:
        recognizer.close()
    after = Sampler(fps, sampler.watch).take(frames, log.count, faults_now())  # worker and engine released

    summary = pipe.summary()
    summary.faults = {**summary.faults, **{f"source_{k}": v for k, v in source_faults.items()}}
    checks = judge(sampler.samples, warmup_frames, max_growth=args.max_growth, fd_tolerance=args.fd_tolerance,
                   thread_tolerance=args.thread_tolerance, temp_tolerance_mb=args.temp_tolerance_mb)
    wall = sampler.samples[-1].wall_s
    return {
        "command": "python scripts/soak.py " + " ".join(shlex.quote(a) for a in args.argv),
        "passed": all(c.passed for c in checks),
        "checks": [asdict(c) for c in checks],
        "video_minutes": frames / fps / 60, "frames": frames, "loops": loops, "wall_s": wall,
        "achieved_fps": frames / wall if wall > 0 else 0.0, "events": log.count,
        "settings": {"video": str(video), "fps": fps, "minutes_of_video": args.minutes_of_video,
                     "engine": engine_desc, "engine_kind": args.engine_kind, "device": args.device,
                     "tracker": args.tracker, "overlay": cfg.draw_policy, "warmup_frames": warmup_frames,
                     "sample_every_s": args.sample_every, "max_growth": args.max_growth,
                     "fd_tolerance": args.fd_tolerance, "thread_tolerance": args.thread_tolerance,
                     "temp_tolerance_mb": args.temp_tolerance_mb,
                     "watched": {"tmpdir": os.environ["TMPDIR"], "cache": os.environ["MOEXT_CACHE_DIR"]}},
        "machine": {**machine(), "load_average_start": load_start, "load_average_end": load_average()},
        "engine_info": pipe.engine_info() if recognizer is not None else None,
        "summary": summary.to_dict(),
        "samples": [asdict(s) for s in sampler.samples],
        "after_close": {"fds": after.fds, "threads": after.threads, "rss_mb": after.rss_mb, "temp_mb": after.temp_mb},
    }


def plot(report: dict, path: Path) -> None:
    """Resource samples against video time: memory, files and threads, temp, throughput."""
    s = report["samples"]
    x = [v["video_s"] / 60 for v in s]
    warm = report["settings"]["warmup_frames"] / report["settings"]["fps"] / 60
    mem = next((c["values"] for c in report["checks"] if c["name"] == "memory"), {})
    fig, ax = plt.subplots(4, 1, figsize=(9, 9.5), sharex=True)
    ax[0].plot(x, [v["rss_mb"] for v in s], color="tab:blue", lw=1.2, label="resident memory (RSS)")
    if mem:
        b = mem["baseline_mb"]
        ax[0].axhspan(b, b * (1 + report["settings"]["max_growth"]), color="tab:green", alpha=0.12,
                      label=f"allowed growth ({report['settings']['max_growth']:.0%} over the post-warm-up level)")
    lo = min(v["rss_mb"] for v in s)
    ax[0].set_ylim(bottom=min(lo * 0.9, lo - 10), top=max(v["rss_mb"] for v in s) * 1.1)
    ax[0].set_ylabel("MB")
    ax[0].legend(loc="lower right", fontsize=8)
    ax[1].step(x, [v["fds"] for v in s], where="post", label="open file descriptors", color="tab:orange")
    ax[1].step(x, [v["threads"] for v in s], where="post", label="threads", color="tab:purple")
    ax[1].set_ylim(bottom=0, top=max(max(v["fds"] for v in s), max(v["threads"] for v in s)) * 1.3)
    ax[1].set_ylabel("count")
    ax[1].legend(loc="lower right", fontsize=8)
    ax[2].plot(x, [v["temp_mb"] for v in s], color="tab:brown", label="temp + engine cache folders")
    ax[2].set_ylim(bottom=0, top=max(1.0, max(v["temp_mb"] for v in s) * 1.3))
    ax[2].set_ylabel("MB")
    ax[2].legend(loc="lower right", fontsize=8)
    ax[3].plot(x, [v["fps"] for v in s], color="tab:gray", lw=0.8, label="frames per second (wall)")
    ax[3].set_ylabel("fps")
    ax[3].set_ylim(bottom=0)
    ev = ax[3].twinx()
    ev.plot(x, [v["events"] for v in s], color="tab:red", label="events written (cumulative)")
    ev.set_ylabel("events")
    ev.set_ylim(bottom=0)
    h1, l1 = ax[3].get_legend_handles_labels()
    h2, l2 = ev.get_legend_handles_labels()
    ax[3].legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    ax[3].set_xlabel(f"video time (min) at {report['settings']['fps']:g} fps")
    for a in ax:
        a.axvspan(0, warm, color="0.85", alpha=0.6, lw=0)
        a.grid(alpha=0.3)
    ax[0].text(warm / 2, ax[0].get_ylim()[0], "warm-up", ha="center", va="bottom", fontsize=8, color="0.4")
    verdict = "PASS" if report["passed"] else "FAIL"
    m = report["machine"]
    fig.suptitle(f"Soak: {report['video_minutes']:.0f} min of video, {report['frames']} frames in "
                 f"{report['wall_s'] / 60:.1f} min wall, {report['events']} events - {verdict}\n"
                 f"{m.get('cpu', '')}, {m.get('logical_cores')} cores, load average "
                 f"{(m.get('load_average_start') or {}).get('1min', '?')} -> "
                 f"{(m.get('load_average_end') or {}).get('1min', '?')}",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="scripts/soak.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("examples:"):], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes-of-video", type=float, default=60.0, metavar="M",
                    help="video-equivalent length to stream: frames = M * 60 * fps (default 60)")
    ap.add_argument("--fps", type=float, default=30.0,
                    help="source frame rate: the synthetic clip is made at this rate; overrides a --video header "
                         "(default 30)")
    ap.add_argument("--video", metavar="PATH", help="recording to loop instead of the synthetic clip")
    ap.add_argument("--size", type=parse_size, default=(640, 480), metavar="WxH",
                    help="synthetic clip frame size (default 640x480)")
    ap.add_argument("--clip-seconds", type=float, default=30.0, help="synthetic clip length (default 30)")
    ap.add_argument("--engine", default="auto", metavar="PATH|auto|random|none",
                    help="weights or engine file; auto = demo weights (random if missing); random = MoExt with "
                         "random weights; none = spotting only (default auto)")
    ap.add_argument("--engine-kind", default="best", choices=("best", "onnx", "torch", "cuda", "onnx-int8"),
                    help="engine for a checkpoint (engines.recognizer; default best)")
    ap.add_argument("--width", type=float, default=1.0, help="network width of the random-weight model (default 1.0)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    ap.add_argument("--tracker", default="fast", choices=("fast", "dlib", "mediapipe"))
    ap.add_argument("--draw-fps", type=float, default=30.0, metavar="F",
                    help="draw the overlay at most F times per wall second, like the window (0 = off; default 30)")
    ap.add_argument("--sample-every", type=float, default=5.0, metavar="S", help="seconds between samples (default 5)")
    ap.add_argument("--warmup", type=float, default=0.1, metavar="SHARE",
                    help="share of the frames before measuring (default 0.1)")
    ap.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth after warm-up (default 0.05)")
    ap.add_argument("--fd-tolerance", type=int, default=2, help="allowed range of open files (default 2)")
    ap.add_argument("--thread-tolerance", type=int, default=2, help="allowed range of threads (default 2)")
    ap.add_argument("--temp-tolerance-mb", type=float, default=1.0, help="allowed temp/cache growth (default 1 MB)")
    ap.add_argument("--out", type=Path, default=Path("soak-out"), help="folder for soak.json and soak.png")
    ap.add_argument("--work", type=Path, help="folder for the clip, weights, event log, temp and cache "
                                             "(default OUT/work)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.fps <= 0 or args.minutes_of_video <= 0 or args.sample_every <= 0 or not 0 <= args.warmup < 1:
        print("error: --fps, --minutes-of-video and --sample-every must be positive and --warmup in [0, 1)",
              file=sys.stderr)
        return 2
    if args.video and not Path(args.video).is_file():
        print(f"error: --video {args.video} does not exist", file=sys.stderr)
        return 2
    args.work = (args.work or args.out / "work").resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    # Everything this run writes to temp or cache lands under --work, where it is measured.
    for var, sub in (("TMPDIR", "tmp"), ("MOEXT_CACHE_DIR", "cache")):
        d = args.work / sub
        d.mkdir(exist_ok=True)
        os.environ[var] = str(d)
    tempfile.tempdir = os.environ["TMPDIR"]

    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "soak.png")
    print(f"\nsoak: {report['video_minutes']:.1f} min of video ({report['frames']} frames, {report['loops']} loops) in "
          f"{report['wall_s'] / 60:.1f} min wall ({report['achieved_fps']:.1f} fps); {report['events']} events; "
          f"faults {report['summary']['faults'] or 'none'}")
    a = report["after_close"]
    print(f"load average {report['machine']['load_average_start']} -> {report['machine']['load_average_end']}; "
          f"after closing the pipeline and engine: {a['threads']} threads, {a['fds']} open files, {a['rss_mb']:.0f} MB")
    for c in report["checks"]:
        print(f"  {'ok  ' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}")
    print(("PASS" if report["passed"] else "FAIL") + f"  (wrote {args.out / 'soak.json'}, {args.out / 'soak.png'})")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
