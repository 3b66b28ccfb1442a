"""The benchmark's report: what the measured pass means, for programs and for people.

It owns report.json's layout (``build_report``: stable keys, schema ``moext-bench/1``,
the targets judged but never enforced), report.md (``markdown``), the plots
(stages.png, latency.png, motion.png; matplotlib, Agg), the cProfile text and the
headline printed at the end. It measures nothing itself (realtime.bench.measure,
realtime.bench.compare do).
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import pstats
import shlex
import time
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np

from realtime.bench.measure import (BenchConfig, Clip, Engine, Measured, decision_summary, event_rows, landmarks_every,
                                    spotting_scores, stat_summary)
from realtime.stages.pipeline import STAGES, PipelineConfig

matplotlib.use("Agg")   # files only, never a window: before pyplot
import matplotlib.pyplot as plt  # noqa: E402

SCHEMA = "moext-bench/1"


TARGETS = {
    "realtime_factor": {"target": 2.0, "stretch": 3.0, "better": "higher",
                        "what": "real-time factor of the whole per-frame path (200 fps, 640x480, 2 CPU cores)"},
    "provisional_decision_p95_ms": {"target": 100.0, "stretch": 60.0, "better": "lower",
                                    "what": "provisional decision latency p95 after the apex (CPU engine)"},
}


# ---------------------------------------------------------------------------------------
# figures


def realtime_factor(throughput_fps: float, source_fps: float) -> float:
    """Frames processed per second over frames the source delivers per second."""
    return throughput_fps / source_fps if source_fps > 0 else 0.0


def target_status(name: str, value: float | None) -> dict:
    t = TARGETS[name]
    if value is None:
        return {**t, "value": None, "met": None, "stretch_met": None}
    ok = (lambda lim: value >= lim) if t["better"] == "higher" else (lambda lim: value <= lim)
    return {**t, "value": value, "met": bool(ok(t["target"])), "stretch_met": bool(ok(t["stretch"]))}


def build_report(clip: Clip, cfg: BenchConfig, engine: Engine, warm: dict, m: Measured, machine: dict,
                 argv: Sequence[str] | None) -> dict:
    """report.json's content (without --compare, the profile and the plots: run adds them)."""
    s = m.summary
    fps = s.source_fps
    throughput = m.frames / m.wall_s if m.wall_s > 0 else 0.0
    stages = {}
    for name in STAGES:
        st = dict(s.stages.get(name) or stat_summary([]))
        for k in ("p50", "p95", "p99"):   # the pipeline keeps samples in float32: no percentile above the max
            st[k] = min(st[k], st["max"])
        st["per_frame_ms"] = st["mean"] * st["n"] / m.frames if m.frames else 0.0   # amortised over all frames
        ran = m.stage_ms.get(name, np.zeros(0))
        ran = ran[np.isfinite(ran)]
        # the quick end of the distribution: close to the cost on an idle machine when neighbours are busy
        st["p10"] = float(np.percentile(ran, 10)) if ran.size else 0.0
        st["min"] = float(ran.min()) if ran.size else 0.0
        stages[name] = st
    process = dict(s.stages.get("process") or stat_summary([]))
    per_frame_total = sum(v["per_frame_ms"] for v in stages.values())
    rows = event_rows(m.emitted, m.updates, fps, clip.truth)
    decision = decision_summary(rows)
    decision["events"] = rows
    decision["definition"] = (
        "apex captured -> label ready. Files: the capture clock is simulated (frame i captured at i/fps): "
        "wait_ms = (decided_frame - apex_frame) / fps * 1000 (frames the spotter waited), compute_ms = measured "
        "wall time from the deciding frame in hand to the label back (processing, queue, inference); "
        "total = wait + compute. provisional: first record of the event (label shown at the apex); final: "
        "micro/macro certain and label back")
    engine_info = {"spec": engine.spec, "note": engine.note or None}
    if engine.recognizer is not None:
        info = engine.recognizer.info()
        engine_info.update({k: v for k, v in info.items() if k not in ("classes",)})
    command = "python -m realtime.bench" + ("" if not argv else " " + " ".join(shlex.quote(a) for a in argv))
    frame_lat = stat_summary(m.frame_ms.tolist())
    with_decode = stat_summary((m.frame_ms + m.decode_ms).tolist())
    report = {
        "schema": SCHEMA,
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {"video": str(clip.path) if not clip.sample else f"<cache>/{clip.path.name}",
                   "sample": clip.sample, "fps": fps, "size": m.source.get("size"),
                   "frames_read": m.source.get("frames_read"), "header_fps": m.source.get("header_fps"),
                   "header_frames": m.source.get("header_frames"),
                   "ground_truth": None if clip.truth_path is None else clip.truth_path.name,
                   "end_reason": m.source.get("end_reason")},
        "settings": {"tracker": cfg.tracker, "max_faces": cfg.max_faces, "spin": cfg.spin, "engine": engine.spec, "device": cfg.device,
                     "warmup_frames": warm["frames"], "max_frames": cfg.max_frames,
                     "draw": s.draw, "drawn_frames": stages["draw"]["n"],
                     "redetect_every": PipelineConfig().redetect_every,
                     "landmarks_every": landmarks_every(fps), "motion_hz": cfg.motion_hz,
                     "tracking": "second process" if cfg.track_process else "frame loop"},
        "frames": m.frames,
        "dropped": s.dropped,
        "wall_s": m.wall_s,
        "throughput_fps": throughput,
        "realtime_factor": realtime_factor(throughput, fps),
        "cpu_ms_per_frame": m.cpu_s / m.frames * 1e3 if m.frames else 0.0,
        "cpu_cores_busy": m.cpu_s / m.wall_s if m.wall_s > 0 else 0.0,
        "loop_thread_cpu_ms_per_frame": m.loop_cpu_s / m.frames * 1e3 if m.frames else 0.0,
        "cpu_bound_fps_estimate": m.frames / m.loop_cpu_s if m.loop_cpu_s > 0 else None,
        "stages": stages,
        "stages_per_frame_total_ms": per_frame_total,
        "process_ms": process,
        "frame_latency_ms": frame_lat,
        "frame_latency_with_decode_ms": with_decode,
        "decision_latency_ms": decision,
        "spotting": spotting_scores(m.emitted, clip.truth, fps),
        "peak_rss_mb": m.peak_rss_mb,
        "tracking_process": m.tracking_process,
        "rss_mb": {"start": m.rss_start_mb, "peak_sampled": m.rss_peak_sampled_mb},
        "machine": {**machine, "loadavg_before": m.load_before, "loadavg_after": m.load_after,
                    "reference_loop": warm.get("reference_loop")},
        "engine": engine_info,
        "network": engine.network,
        "faults": s.faults,
        "targets": {"realtime_factor": target_status("realtime_factor", realtime_factor(throughput, fps)),
                    "provisional_decision_p95_ms": target_status(
                        "provisional_decision_p95_ms",
                        decision["provisional"]["p95"] if decision["provisional"]["n"] else None)},
        "warmup": warm,
        "pipeline_summary": s.to_dict(),
        "compare": None,
        "profile": None,
        "plots": [],
    }
    return report


# ---------------------------------------------------------------------------------------
# report.md and the headline


def _f(x, nd=2, unit="") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{nd}f}{unit}"


def _tracking_rss(r: dict) -> str:
    tp = r.get("tracking_process")
    if not tp or tp.get("peak_rss_mb") is None:
        return ""
    return f" (+ {tp['peak_rss_mb']:.0f} MB in the tracking process)"


def _met(t: dict) -> str:
    if t["value"] is None:
        return "no events"
    return ("met" if t["met"] else "NOT met") + (", stretch met" if t["stretch_met"] else "")


def markdown(r: dict) -> str:
    """report.md: the same figures as report.json, as tables a person reads."""
    mach, net, eng, st = r["machine"], r["network"], r["engine"], r["settings"]
    every = st.get("landmarks_every")
    lm_rate = "" if every is None else (" (68 landmarks on every frame)" if every == 1
                                        else f" (68 landmarks on 1 frame in {every}, held on the others)")
    load = mach.get("loadavg_before") or {}
    load_after = mach.get("loadavg_after") or {}
    dec = r["decision_latency_ms"]
    prov, fin = dec["provisional"], dec["final"]
    t_rt, t_dec = r["targets"]["realtime_factor"], r["targets"]["provisional_decision_p95_ms"]
    src = r["source"]
    size = "x".join(map(str, src["size"])) if src.get("size") else "?"
    lines = [
        "# Latency benchmark of the live path",
        "",
        f"`{r['command']}` ({r['created']})",
        "",
        f"Input: {src['video']} ({size} at {src['fps']:g} fps, {r['frames']} frames"
        f"{', the generated 200 fps sample with ground truth' if src['sample'] else ''}); "
        f"tracker `{st['tracker']}`{lm_rate}, up to {st.get('max_faces', 1)} face(s) followed; engine {eng.get('engine') or 'none'} {eng.get('precision') or ''} on "
        f"{eng.get('device') or '-'}; network width {net.get('width')}, "
        f"{_f((net.get('params') or 0) / 1e6, 2)} M parameters"
        f"{' (random init: timing only)' if net.get('random_init') else ''}; "
        f"drawing {st['draw']} ({st['drawn_frames']} of {r['frames']} frames drawn); "
        f"warm-up {st['warmup_frames']} frames (separate pass, not measured); {r['dropped']} frames dropped.",
        "",
        f"Machine: {mach.get('cpu')}, {mach.get('cores_physical')} cores ({mach.get('cores_logical')} logical), "
        f"GPU {mach.get('gpu') or 'none'}; load average {load.get('1min', '?')} / {load.get('5min', '?')} / "
        f"{load.get('15min', '?')} (1/5/15 min) before, {load_after.get('1min', '?')} after"
        + (f"; reference loop {mach['reference_loop']['fps']} frames/s"
           if (mach.get("reference_loop") or {}).get("fps") else "") + ".",
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| throughput (decode + whole per-frame path) | {_f(r['throughput_fps'], 1)} frames/s | |",
        f"| real-time factor (throughput / {src['fps']:g} fps) | {_f(r['realtime_factor'], 2)} | "
        f">= {t_rt['target']:g} (stretch {t_rt['stretch']:g}): {_met(t_rt)} |",
        f"| provisional decision latency p50 / p95 / max | {_f(prov['p50'], 1)} / {_f(prov['p95'], 1)} / "
        f"{_f(prov['max'], 1)} ms ({prov['n']} events) | p95 <= {t_dec['target']:g} ms "
        f"(stretch {t_dec['stretch']:g}): {_met(t_dec)} |",
        f"| of which waited (algorithmic) / compute, p50 | {_f(prov['wait_p50'], 1)} / "
        f"{_f(prov['compute_p50'], 1)} ms | |",
        f"| final (micro/macro certain) decision latency p50 / p95 / max | {_f(fin['p50'], 1)} / {_f(fin['p95'], 1)} / "
        f"{_f(fin['max'], 1)} ms | |",
        f"| frame latency p50 / p95 / p99 / max (frame in hand -> result) | {_f(r['frame_latency_ms']['p50'])} / "
        f"{_f(r['frame_latency_ms']['p95'])} / {_f(r['frame_latency_ms']['p99'])} / "
        f"{_f(r['frame_latency_ms']['max'])} ms | |",
        f"| frame latency with decode p50 / p95 | {_f(r['frame_latency_with_decode_ms']['p50'])} / "
        f"{_f(r['frame_latency_with_decode_ms']['p95'])} ms | |",
        f"| CPU time per frame: process (all threads) / frame-loop thread | {_f(r['cpu_ms_per_frame'])} / "
        f"{_f(r['loop_thread_cpu_ms_per_frame'])} ms ({_f(r['cpu_cores_busy'], 2)} cores busy on average) | |",
        f"| frames/s if the frame loop had a core to itself (1000 / loop-thread CPU ms) | "
        f"{_f(r['cpu_bound_fps_estimate'], 0)} frames/s | |",
        f"| peak memory (RSS) | {_f(r['peak_rss_mb'], 0)} MB{_tracking_rss(r)} | |",
        "",
        "## Stages (ms)",
        "",
        "Time inside each stage on the frames where it ran (p10 / p50 / p95 / p99 / max; on a busy machine p10 "
        "is the closest to an idle machine's cost), and amortised over every frame (what counts against the "
        "per-frame budget of 1000 / fps / real-time factor).",
        "",
        "| stage | frames | p10 | p50 | p95 | p99 | max | per frame (amortised) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in r["stages"].items():
        lines.append(f"| {name} | {s['n']} | {_f(s.get('p10'))} | {_f(s['p50'])} | {_f(s['p95'])} | {_f(s['p99'])} | "
                     f"{_f(s['max'])} | {_f(s['per_frame_ms'], 3)} |")
    p = r["process_ms"]
    lines.append(f"| whole process() call | {p['n']} | | {_f(p['p50'])} | {_f(p['p95'])} | {_f(p['p99'])} | "
                 f"{_f(p['max'])} | {_f(p['mean'], 3)} |")
    budget = 1000.0 / src["fps"]
    lines += ["", f"Budget per frame at {src['fps']:g} fps: {budget:.2f} ms for real time, {budget / 2:.2f} ms for a "
                  f"real-time factor of 2; the stages add up to {r['stages_per_frame_total_ms']:.2f} ms per frame.", ""]
    lines += ["## Events", "",
              "Decision latency per event: provisional = label shown once the apex is confirmed, final = kind "
              "certain and label back. wait = frames the spotter had to see after the apex (source clock), "
              "compute = measured processing + queue + inference.", "",
              "| onset-apex-offset | kind | label (conf.) | provisional: wait + compute = total (ms) | "
              "final: wait + compute = total (ms) | ground truth (IoU, apex error) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for e in dec["events"]:
        pv, fv = e["provisional"], e.get("final")
        ftxt = (f"{_f(fv['wait_ms'], 0)} + {_f(fv['compute_ms'], 0)} = {_f(fv['total_ms'], 0)}" if fv else "-")
        tr = e.get("truth")
        ttxt = (f"{tr['kind']} {tr['label'] or ''} {tr['onset_frame']}-{tr['apex_frame']}-{tr['offset_frame']} "
                f"({tr['iou']:.2f}, {tr['apex_error_ms']:+.0f} ms)" if tr else "-")
        conf = f" ({e['confidence']:.2f})" if e.get("confidence") is not None else ""
        offset = e["offset_frame"] if e["offset_frame"] is not None else "?"
        lines.append(f"| {e['onset_frame']}-{e['apex_frame']}-{offset} | {e['kind']} | {e['label'] or '-'}{conf} | "
                     f"{_f(pv['wait_ms'], 0)} ({pv['wait_frames']} frames) + {_f(pv['compute_ms'], 0)} = "
                     f"{_f(pv['total_ms'], 0)} | {ftxt} | {ttxt} |")
    if not dec["events"]:
        lines.append("| (no event spotted) | | | | | |")
    sp = r.get("spotting")
    if sp:
        lines += ["", f"Spotting against the ground truth ({sp['truth']['micro']} micro, {sp['truth']['macro']} macro, "
                      f"{sp['truth']['blink']} blinks as distractors; MEGC rule, IoU >= 0.5):", "",
                  "| kind | TP | FP | FN | F1 | apex error median (ms) |", "| --- | --- | --- | --- | --- | --- |"]
        for k in ("micro", "macro", "all"):
            v = sp[k]
            lines.append(f"| {k} | {v['tp']} | {v['fp']} | {v['fn']} | {_f(v['f1'], 2)} | "
                         f"{_f(v['apex_error_ms_median'], 1)} |")
    cmp_ = r.get("compare")
    if cmp_:
        pre = cmp_["preprocessing"]
        pp = pre["paper"]
        lines += ["", "## Compare: the paper's preprocessing vs our trackers", "",
                  f"Same {pre['frames']} decoded frames, same process. Paper: {pp['what']} (found the face on "
                  f"{pp['found']} frames). Mean / p95 ms per frame; speed-up = paper mean / tracker mean.", "",
                  "| preprocessing | detect | landmarks | total | speed-up (total / detect) | found | "
                  "landmark error vs paper (NME) |", "| --- | --- | --- | --- | --- | --- | --- |",
                  f"| paper: HOG + 68 points every frame | {_f(pp['detect']['mean'])} / {_f(pp['detect']['p95'])} | "
                  f"{_f(pp['landmarks']['mean'])} / {_f(pp['landmarks']['p95'])} | {_f(pp['total']['mean'])} / "
                  f"{_f(pp['total']['p95'])} | 1 | {pp['found']} | - |"]
        for kind, e in pre["trackers"].items():
            if "error" in e:
                lines.append(f"| tracker {kind} | | | | | | {e['error']} |")
                continue
            lines.append(f"| tracker {kind} | {_f(e['detect']['mean'])} / {_f(e['detect']['p95'])} | "
                         f"{_f(e['landmarks']['mean'])} / {_f(e['landmarks']['p95'])} | {_f(e['total']['mean'])} / "
                         f"{_f(e['total']['p95'])} | x{_f(e['speedup_total_mean'], 1)} / "
                         f"x{_f(e['speedup_detect_mean'], 1)} "
                         f"| {e['found']} | {_f(e['landmark_error_vs_paper'], 3)} |")
        eng_c = cmp_.get("engines") or {}
        lines += ["", "## Compare: engines at batch 1", "",
                  f"Real aligned pairs ({eng_c.get('pairs', 0)}) from the same frames; latency of "
                  "`Recognizer.predict` (input checks and layout included); speed-up = eager torch p50 / engine p50.",
                  ""]
        if eng_c.get("note"):
            lines += [eng_c["note"], ""]
        lines += ["| engine | precision | device | p50 (ms/pair) | p95 | min | speed-up vs eager | "
                  "max abs dp vs eager |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in eng_c.get("rows", []):
            if "p50_ms" in row:
                speed = "x" + _f(row["speedup_vs_eager"], 2) if row.get("speedup_vs_eager") else "-"
                dp = row.get("max_abs_dp_vs_eager")
                lines.append(f"| {row['engine']} | {row['precision']} | {row['device']} | {_f(row['p50_ms'])} | "
                             f"{_f(row['p95_ms'])} | {_f(row['min_ms'])} | {speed} | "
                             f"{'-' if dp is None else '%.1e' % dp} |")
            else:
                lines.append(f"| {row['engine']} | | | | | | | {row.get('note', '')} |")
    lines += ["", "## Machine, engine, network", "", "```json",
              json.dumps({"machine": mach, "engine": eng, "network": net}, indent=2, default=str), "```"]
    if r.get("profile"):
        lines += ["", "## Profile (cProfile of the measured pass; slows the run)", "",
                  f"Top functions by own time: see `{r['profile']}`."]
    if r.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in r["plots"]]
    lines += ["", "## Definitions", "",
              "- stage latency: time inside each stage of `Pipeline.process` on the frames where it ran "
              "(decode = the source's read/decode; infer = the recogniser's compute time, counted on the frame "
              "that collected the result: the recogniser runs in a worker thread, off the frame loop).",
              "- throughput: frames / wall time of the measured loop (decode included), nothing dropped; "
              "real-time factor = throughput / source fps.",
              "- frame latency: decoded frame in hand -> its result (overlay included when drawn).",
              f"- decision latency: {dec['definition']}.",
              "- CPU time per frame: process CPU time (every thread) over the measured loop / frames, and the "
              "frame-loop thread's own CPU time / frames; on a busy machine they are steadier than wall time. "
              "1000 / loop-thread ms estimates the throughput with a core to itself (it leaves out the worker "
              "thread and OpenCV's helper threads, and neighbours still slow caches down).",
              "- reference loop: " + str((mach.get("reference_loop") or {}).get("what", "-")) + "; compare its "
              "frames/s between machines (or runs) to see how busy the machine was.", ""]
    return "\n".join(lines)


def headline(r: dict) -> str:
    p = r["decision_latency_ms"]["provisional"]
    f = r["decision_latency_ms"]["final"]
    load = (r["machine"].get("loadavg_before") or {}).get("1min", "?")
    lines = [f"== benchmark: {r['frames']} frames at {r['source']['fps']:g} fps, load average {load}",
             f"throughput {r['throughput_fps']:.1f} frames/s, real-time factor {r['realtime_factor']:.2f} "
             f"(target >= 2.0: {_met(r['targets']['realtime_factor'])})",
             f"CPU per frame {r['cpu_ms_per_frame']:.2f} ms (all threads and processes), {r['loop_thread_cpu_ms_per_frame']:.2f} ms "
             f"(frame-loop thread: ~{r['cpu_bound_fps_estimate'] or 0:.0f} frames/s on an idle core); "
             f"{r['cpu_cores_busy']:.2f} cores busy on average",
             f"frame latency p50 {r['frame_latency_ms']['p50']:.2f} ms, p95 {r['frame_latency_ms']['p95']:.2f} ms, "
             f"p99 {r['frame_latency_ms']['p99']:.2f} ms",
             f"decision latency over {p['n']} events: provisional p50 {p['p50']:.0f} ms, p95 {p['p95']:.0f} ms "
             f"(target <= 100: {_met(r['targets']['provisional_decision_p95_ms'])}); final p50 {f['p50']:.0f} ms, "
             f"p95 {f['p95']:.0f} ms",
             f"peak RSS {r['peak_rss_mb']:.0f} MB" + _tracking_rss(r),
             f"{'stage':10s} {'n':>6s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s} {'/frame':>8s}  (ms)"]
    for name, s in r["stages"].items():
        lines.append(f"{name:10s} {s['n']:6d} {s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f} {s['max']:8.2f} "
                     f"{s['per_frame_ms']:8.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# plots (matplotlib, Agg) and the profile


KIND_COLOURS = {"micro": "tab:orange", "macro": "tab:blue", "blink": "tab:grey"}


def plot_stages(r: dict, path: Path) -> Path:
    names = list(r["stages"])
    st = r["stages"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    y = np.arange(len(names))
    floor = 1e-3   # log axis: stages that did not run sit at the floor
    a.barh(y - 0.2, [max(st[n]["p50"], floor) for n in names], 0.4, left=floor, label="p50", color="tab:blue")
    a.barh(y + 0.2, [max(st[n]["p95"], floor) for n in names], 0.4, left=floor, label="p95", color="tab:orange")
    a.scatter([max(st[n]["p99"], floor) for n in names], y + 0.2, marker="|", s=120, color="k", label="p99",
              zorder=3)
    a.set_xscale("log")
    a.set_yticks(y, [f"{n} ({st[n]['n']})" for n in names])
    a.invert_yaxis()
    a.set_xlabel("ms on the frames where the stage ran (number of frames), log scale")
    a.set_title("per-stage latency")
    a.legend(loc="lower right")
    bottom = 0.0
    colours = plt.get_cmap("tab10")
    for i, n in enumerate(names):
        v = st[n]["per_frame_ms"]
        b.bar(0, v, 0.6, bottom=bottom, color=colours(i), label=n)
        bottom += v
    fps = r["source"]["fps"]
    b.axhline(1000 / fps, color="r", ls="--", lw=1, label=f"real time ({1000 / fps:.1f} ms)")
    b.axhline(500 / fps, color="g", ls="--", lw=1, label=f"factor 2 ({500 / fps:.1f} ms)")
    b.set_xticks([])
    b.set_ylabel("ms per frame (amortised)")
    b.set_title("budget")
    b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{r['throughput_fps']:.0f} frames/s, real-time factor {r['realtime_factor']:.2f} at {fps:g} fps "
                 f"(load {((r['machine'].get('loadavg_before') or {}).get('1min', '?'))})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(r: dict, m: Measured, path: Path) -> Path:
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    v = m.frame_ms + m.decode_ms
    if v.size:
        hi = float(np.percentile(v, 99.5)) * 1.2 + 1e-3
        a.hist(np.clip(v, 0, hi), bins=80, color="tab:blue", alpha=0.8)
        for q, ls in ((50, "-"), (95, "--"), (99, ":")):
            x = float(np.percentile(v, q))
            a.axvline(x, color="k", ls=ls, lw=1, label=f"p{q} {x:.1f} ms")
        a.set_yscale("log")
        a.legend()
    a.set_xlabel("frame latency incl. decode (ms)")
    a.set_ylabel("frames")
    a.set_title("frame latency")
    ev = r["decision_latency_ms"]["events"]
    if ev:
        x = np.arange(len(ev))
        wait = [e["provisional"]["wait_ms"] or 0 for e in ev]
        comp = [e["provisional"]["compute_ms"] or 0 for e in ev]
        b.bar(x - 0.2, wait, 0.4, color="tab:grey", label="provisional: waited (frames)")
        b.bar(x - 0.2, comp, 0.4, bottom=wait, color="tab:orange", label="provisional: compute")
        fw = [(e["final"] or {}).get("wait_ms") or 0 for e in ev]
        fc = [(e["final"] or {}).get("compute_ms") or 0 for e in ev]
        b.bar(x + 0.2, fw, 0.4, color="silver", label="final: waited")
        b.bar(x + 0.2, fc, 0.4, bottom=fw, color="tab:red", label="final: compute")
        t = r["targets"]["provisional_decision_p95_ms"]
        b.axhline(t["target"], color="g", ls="--", lw=1, label=f"target p95 {t['target']:g} ms")
        b.set_xticks(x, [f"{e['kind'][0]}{e['apex_frame']}" for e in ev], rotation=45, fontsize=7)
        b.legend(fontsize=7)
    else:
        b.text(0.5, 0.5, "no event spotted", ha="center", va="center", transform=b.transAxes)
    b.set_ylabel("ms after the apex")
    b.set_title("decision latency per event")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_motion(r: dict, m: Measured, truth: list | None, path: Path) -> Path:
    fig, a = plt.subplots(figsize=(12, 3.8))
    a.plot(m.t, m.value, lw=0.7, color="k", label="motion score (x calm level)")
    a.set_yscale("log")
    a.plot(m.t, m.threshold, lw=0.8, ls="--", color="tab:red", label="threshold")
    fps = r["source"]["fps"]
    top = np.nanmax(m.value) if np.isfinite(m.value).any() else 1.0
    seen = set()
    for e in r["decision_latency_ms"]["events"]:
        off = e["offset_frame"] if e["offset_frame"] is not None else e["apex_frame"]
        lab = f"spotted {e['kind']}"
        a.axvspan(e["onset_frame"] / fps, off / fps, color=KIND_COLOURS.get(e["kind"], "y"), alpha=0.25,
                  label=None if lab in seen else lab)
        seen.add(lab)
        a.axvline(e["apex_frame"] / fps, color=KIND_COLOURS.get(e["kind"], "y"), lw=1)
        if e["provisional"]["total_ms"] is not None:
            td = e["apex_frame"] / fps + e["provisional"]["total_ms"] / 1000
            a.plot([td], [top * 1.02], marker="v", color="tab:green", ms=6,
                   label=None if "label" in seen else "label ready (provisional)")
            seen.add("label")
        if e["label"]:
            a.text(e["apex_frame"] / fps, top * 1.08, e["label"], fontsize=7, ha="center")
    end_t = float(m.t[-1]) if m.t.size else 0.0
    for g in truth or []:
        if g.onset_t > end_t:
            continue
        lab = f"truth {g.kind}"
        a.plot([g.onset_t, g.offset_t], [-0.05 * top] * 2, lw=5, color=KIND_COLOURS.get(g.kind, "y"),
               solid_capstyle="butt", label=None if lab in seen else lab)
        seen.add(lab)
        if g.label:
            a.text(g.apex_t, -0.14 * top, g.label, fontsize=7, ha="center")
    a.set_xlabel("source time (s)")
    a.set_ylabel("motion (px of the 224 crop)")
    a.set_ylim(-0.2 * top, top * 1.18)
    a.set_xlim(0, max(end_t, 1e-3))
    a.set_title("motion signal, spotted events (shaded) and ground truth (bars)")
    a.legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_profile(prof, path: Path, top: int = 45) -> Path:
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    buf.write("# cProfile of the measured pass, sorted by own time (tottime)\n")
    st.sort_stats("tottime").print_stats(top)
    buf.write("\n# ... and by cumulative time\n")
    st.sort_stats("cumulative").print_stats(top)
    path.write_text(buf.getvalue())
    return path


def json_default(o):
    """json.dumps' default= for the report: numpy scalars and arrays, paths, dataclasses."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)
