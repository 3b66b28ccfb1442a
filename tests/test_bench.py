"""The latency benchmark (realtime/bench/): it runs a real recording through the live
Pipeline and writes a report a user can rely on -- stable keys, sane numbers, the plots,
the comparison with the paper's preprocessing and with eager torch. No timing threshold
is asserted (targets are reported, never enforced by a test).

The clip is made here by the generator (1.7 s at 200 fps, 640x480, one micro-expression
after the spotter's 1 s calibration); a random-init network of width 0.125 stands in for
the recogniser (latency does not depend on the weights). Every cache (the clip, the
random checkpoint, its ONNX export) goes to a temporary MOEXT_CACHE_DIR.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from realtime.bench import cli as bench
from realtime.bench import measure
from realtime.bench import report as bench_report
from realtime.bench.sample import SampleSpec, ensure_sample, sample_paths
from core.events import Event, read_ground_truth
from realtime.stages.pipeline import STAGES

FPS = 200.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory, cache_dir) -> Path:
    from train.synth import EventSpec, write_clip

    out = tmp_path_factory.mktemp("clip") / "short.avi"
    video, gt, truths = write_clip(out, "sample_video", fps=FPS, seconds=1.7, size=(640, 480), seed=3,
                                   events=[EventSpec("micro", "positive", onset_t=1.05, amplitude=4.0)])
    assert gt.is_file() and len(truths) == 1
    return video


@pytest.fixture(scope="module")
def report_dir(short_clip, tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("bench")
    code = bench.main([str(short_clip), "--fps", str(FPS), "--width", "0.125", "--warmup", "20",
                       "--out", str(out), "--quiet"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def report(report_dir) -> dict:
    return json.loads((report_dir / "report.json").read_text())


# --------------------------------------------------------------------------- the report


def test_report_has_the_stable_keys(report):
    for key in ("realtime_factor", "throughput_fps", "stages", "decision_latency_ms", "frame_latency_ms",
                "peak_rss_mb", "machine", "engine", "network", "targets", "source", "settings"):
        assert key in report, key
    assert set(report["stages"]) == set(STAGES)
    for name, s in report["stages"].items():
        for k in ("n", "p50", "p95", "p99", "max", "per_frame_ms"):
            assert k in s, (name, k)
    for stage in ("provisional", "final"):
        for k in ("n", "p50", "p95", "max", "wait_p50", "compute_p50"):
            assert k in report["decision_latency_ms"][stage], (stage, k)
    assert isinstance(report["decision_latency_ms"]["events"], list)
    assert set(report["targets"]) == {"realtime_factor", "provisional_decision_p95_ms"}


def test_report_numbers_are_sane(report, short_clip):
    frames = report["frames"]
    assert frames == 340 and report["dropped"] == 0          # the whole clip, nothing dropped
    assert report["source"]["fps"] == FPS and report["source"]["size"] == [640, 480]
    assert report["throughput_fps"] > 0 and report["wall_s"] > 0
    assert report["realtime_factor"] == pytest.approx(report["throughput_fps"] / FPS)
    assert report["throughput_fps"] == pytest.approx(frames / report["wall_s"])
    for name, s in report["stages"].items():
        assert 0 <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"], name
        assert s["per_frame_ms"] >= 0
    for name in ("decode", "detect", "landmarks", "align", "motion", "spot"):
        assert report["stages"][name]["n"] == frames, name     # the face is tracked on every frame
    assert report["settings"]["motion_hz"] is None             # the live path's default: every frame
    # landmarks run on every 4th frame at 200 fps (landmarks_hz 50): most frames reuse them
    assert report["stages"]["decode"]["p50"] > 0 and report["stages"]["landmarks"]["per_frame_ms"] > 0
    assert 0 < report["stages"]["draw"]["n"] <= frames        # display rate: at most every frame
    fl = report["frame_latency_ms"]
    assert 0 < fl["p50"] <= fl["p95"] <= fl["max"]
    assert report["frame_latency_with_decode_ms"]["p50"] >= fl["p50"]
    assert report["peak_rss_mb"] > 50 and report["cpu_ms_per_frame"] > 0
    assert report["settings"]["draw"].startswith("at most 60")
    m = report["machine"]
    assert m["cpu"] and m["cores_logical"] >= 1 and "torch" in m and "libraries" in m
    assert m["loadavg_before"] is None or m["loadavg_before"]["1min"] >= 0
    net = report["network"]
    assert net["width"] == 0.125 and net["params"] > 0 and net["random_init"] is True
    assert report["engine"]["engine"] and report["engine"]["device"] == "cpu"
    assert report["spotting"]["truth"]["micro"] == 1          # the ground truth beside the clip was read


def test_decision_latency_adds_up(report):
    """wait + compute = total for every event and stage; waits are whole frames at the
    source rate. The bench's clip holds a micro-expression, so at least one is decided."""
    for e in report["decision_latency_ms"]["events"]:
        p = e["provisional"]
        assert p["total_ms"] == pytest.approx(p["wait_ms"] + p["compute_ms"], abs=1e-2)
        assert p["wait_ms"] == pytest.approx(p["wait_frames"] / FPS * 1000, abs=1e-2)
        assert p["compute_ms"] >= 0
        if e["final"] is not None:
            f = e["final"]
            assert f["total_ms"] == pytest.approx(f["wait_ms"] + f["compute_ms"], abs=1e-2)
            assert f["total_ms"] >= p["wait_ms"]
    n = len(report["decision_latency_ms"]["events"])
    assert n >= 1, "the sample's micro-expression was not decided: no latency was measured"
    assert report["decision_latency_ms"]["provisional"]["n"] == n


def test_report_md_and_plots_are_written(report_dir, report):
    md = (report_dir / "report.md").read_text()
    assert "real-time factor" in md and "| stage |" in md and "decode" in md and "load average" in md
    assert sorted(report["plots"]) == ["latency.png", "motion.png", "stages.png"]
    for name in report["plots"]:
        data = (report_dir / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5_000, name


def test_compare_prints_ratios(short_clip, tmp_path, cache_dir, capsys):
    out = tmp_path / "cmp"
    code = bench.main([str(short_clip), "--fps", str(FPS), "--width", "0.125", "--warmup", "0",
                       "--max-frames", "40", "--no-plots", "--compare", "--compare-frames", "8",
                       "--compare-engines", "torch", "--compare-repeats", "2", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "paper (HOG + 68 points every frame)" in text and "tracker fast" in text
    assert "vs eager torch" in text
    r = json.loads((out / "report.json").read_text())
    pre = r["compare"]["preprocessing"]
    assert pre["frames"] == 8 and pre["paper"]["found"] == 8
    fast = pre["trackers"]["fast"]
    assert fast["found"] == 8 and fast["speedup_total_mean"] > 0
    assert fast["landmark_error_vs_paper"] is not None and fast["landmark_error_vs_paper"] < 0.2
    rows = {row["engine"]: row for row in r["compare"]["engines"]["rows"]}
    eager = rows["eager torch fp32 (cpu)"]
    assert eager["p50_ms"] > 0 and eager["speedup_vs_eager"] == 1.0
    assert eager["max_abs_dp_vs_eager"] == 0.0
    assert any(k.startswith("pipeline's engine") for k in rows)
    assert "## Compare: the paper's preprocessing" in (out / "report.md").read_text()


def test_run_live_bench_reaches_the_benchmark(short_clip, tmp_path, cache_dir):
    """run_live.py --bench hands its options to python -m realtime.bench."""
    from realtime.frontends.cli import main as live_main

    out = tmp_path / "live"
    code = live_main(["--bench", "--video", str(short_clip), "--fps", str(FPS), "--engine", "none",
                      "--bench-out", str(out), "--quiet"])
    assert code == 0
    r = json.loads((out / "report.json").read_text())
    assert r["frames"] == 340 and r["network"]["params"] == 0 and r["stages"]["infer"]["n"] == 0


def test_cli_errors_say_what_to_do(tmp_path, capsys, short_clip):
    assert bench.main([str(tmp_path / "missing.avi")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert bench.main([str(short_clip), "--engine", "x.safetensors", "--width", "1.0"]) == 2
    assert "not both" in capsys.readouterr().err
    assert bench.main([str(short_clip), "--fps", "-5"]) == 2
    assert "--fps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    assert "examples:" in capsys.readouterr().out


# --------------------------------------------------------------------------- pure helpers


def test_file_decision_latency_uses_the_source_clock():
    # apex at frame 100, confirmed on frame 112 at 200 fps: 12 frames = 60 ms waited
    d = measure.file_decision_latency(apex_frame=100, decided_frame=112, fps=200.0, compute_ms=7.5)
    assert d == {"wait_ms": 60.0, "wait_frames": 12, "compute_ms": 7.5, "total_ms": 67.5}
    assert measure.file_decision_latency(100, 100, 30.0, 2.0)["total_ms"] == 2.0
    assert bench_report.realtime_factor(400.0, 200.0) == 2.0


def test_targets_are_judged_in_the_right_direction():
    assert bench_report.target_status("realtime_factor", 2.4)["met"] is True
    assert bench_report.target_status("realtime_factor", 2.4)["stretch_met"] is False
    assert bench_report.target_status("provisional_decision_p95_ms", 80.0)["met"] is True
    assert bench_report.target_status("provisional_decision_p95_ms", 55.0)["stretch_met"] is True
    assert bench_report.target_status("provisional_decision_p95_ms", 120.0)["met"] is False
    assert bench_report.target_status("realtime_factor", None)["met"] is None


def _event(onset, apex, offset, latency, final):
    return Event(source="x", fps=FPS, onset_frame=onset, apex_frame=apex, offset_frame=offset,
                 onset_t=onset / FPS, apex_t=apex / FPS, offset_t=offset / FPS, kind="micro", label="positive",
                 probs={"positive": 0.7, "negative": 0.3}, latency_ms=latency,
                 finalised_t=(offset + 10) / FPS if final else None)


def test_event_rows_split_provisional_and_final():
    prov = _event(10, 20, 20, {"decision": 35.0, "wait": 25.0, "compute": 10.0, "infer": 6.0}, final=False)
    fin = _event(10, 20, 40, {"decision": 35.0, "wait": 25.0, "compute": 10.0, "final": 160.0}, final=True)
    update = SimpleNamespace(stage="final", onset_frame=10, decided_frame=50)   # 30 frames after the apex
    truth = [SimpleNamespace(onset_frame=12, apex_frame=22, offset_frame=40, kind="micro", label="positive")]
    (row,) = measure.event_rows([prov, fin], [update], FPS, truth)
    assert row["provisional"] == {"total_ms": 35.0, "wait_ms": 25.0, "wait_frames": 5, "compute_ms": 10.0,
                                  "infer_ms": 6.0, "apex_frame": 20, "from_true_apex_ms": 25.0}
    assert row["final"] == {"total_ms": 160.0, "wait_ms": 150.0, "wait_frames": 30, "compute_ms": 10.0}
    assert row["offset_frame"] == 40 and row["confidence"] == 0.7
    assert row["truth"]["iou"] == pytest.approx(29 / 31, abs=1e-3) and row["truth"]["apex_error_ms"] == -10.0
    s = measure.decision_summary([row])
    assert s["provisional"]["p95"] == 35.0 and s["final"]["wait_p50"] == 150.0 and s["final"]["compute_p50"] == 10.0


def test_stat_summary_keeps_keys_when_empty():
    assert measure.stat_summary([]) == {"n": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    s = measure.stat_summary([1.0, 2.0, math.nan, 3.0])
    assert s["n"] == 3 and s["p50"] == 2.0 and s["max"] == 3.0


# --------------------------------------------------------------------------- the default sample


def test_sample_is_generated_once_and_keyed_by_its_settings(tmp_path):
    spec = SampleSpec(seconds=0.2, events="none", size=(160, 120))
    video, gt = ensure_sample(spec, folder=tmp_path, progress=False)
    assert video.is_file() and gt.is_file() and read_ground_truth(gt) == []
    assert (video, gt) == sample_paths(spec, tmp_path)
    stamp = video.stat().st_mtime_ns
    assert ensure_sample(spec, folder=tmp_path, progress=False) == (video, gt)
    assert video.stat().st_mtime_ns == stamp                  # reused, not regenerated
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    other, _ = sample_paths(SampleSpec(seconds=0.2, events="none", size=(160, 120), seed=1), tmp_path)
    assert other != video
    default, _ = sample_paths(folder=tmp_path)
    assert "200fps" in default.name and "640x480" in default.name


def test_default_sample_holds_enough_events_for_a_p95():
    """Issue 16: the default clip's decision-latency p95 must be a percentile, not the
    maximum of a handful: the generator's schedule for it (the same one make_clip draws,
    without rendering a frame) holds at least MIN_SAMPLE_EVENTS micro-expressions."""
    import numpy as np

    from realtime.bench.sample import DEFAULT_SAMPLE, MIN_SAMPLE_EVENTS
    from train.synth.config import SynthConfig
    from train.synth.timing import _frames, schedule_events

    spec = DEFAULT_SAMPLE
    plans = schedule_events(_frames(spec.seconds, spec.fps), spec.fps, np.random.default_rng([spec.seed, 1]),
                            spec.events, SynthConfig())
    assert sum(p.kind == "micro" for p in plans) >= MIN_SAMPLE_EVENTS
    assert spec.fps == 200 and spec.size == (640, 480)
