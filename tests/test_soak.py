"""The soak script: a short run through the real live path, and its verdict on leaks.

The hour-long run is a benchmark (README, "Reliability"); this keeps a few minutes of
video-equivalent frames in the test suite, plus the verdict on made-up series so a leak
is shown to fail it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import soak  # noqa: E402


def _series(rss, fds=None, threads=None, temp=None):
    n = len(rss)
    fds = fds or [20] * n
    threads = threads or [9] * n
    temp = temp or [0.5] * n
    return [soak.Sample(wall_s=i, frames=i * 100, video_s=i * 10.0, rss_mb=r, fds=f, threads=t, temp_mb=m,
                        gc_objects=1000, events=0, faults=0, fps=100.0, cpu_s=i)
            for i, (r, f, t, m) in enumerate(zip(rss, fds, threads, temp))]


def _passed(checks):
    return {c.name: c.passed for c in checks}


def test_verdict_passes_flat_series_and_fails_each_kind_of_leak():
    flat = [500 + (i % 3) for i in range(40)]
    assert all(_passed(soak.judge(_series(flat), 0)).values())
    leaking = [500 + 2 * i for i in range(40)]                       # +16% over the run
    assert _passed(soak.judge(_series(leaking), 0)) == {"memory": False, "open files": True, "threads": True,
                                                       "temp": True}
    assert not _passed(soak.judge(_series(flat, fds=[20 + i // 5 for i in range(40)]), 0))["open files"]
    assert not _passed(soak.judge(_series(flat, threads=[9 + i // 10 for i in range(40)]), 0))["threads"]
    assert not _passed(soak.judge(_series(flat, temp=[0.5 + 0.1 * i for i in range(40)]), 0))["temp"]
    # growth during warm-up is not counted; too few samples after it is a failure that says so
    warm = [300 + 40 * i for i in range(6)] + flat
    assert _passed(soak.judge(_series(warm), warmup_frames=600))["memory"]
    short = soak.judge(_series(flat[:4]), 0)
    assert not short[0].passed and "samples" in short[0].detail


@pytest.mark.slow
def test_short_soak_through_the_live_path_is_flat(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--minutes-of-video", "3", "--fps", "15",
         "--size", "320x240", "--clip-seconds", "12", "--engine", "random", "--width", "0.25",
         "--sample-every", "0.5", "--warmup", "0.3", "--max-growth", "0.08", "--out", str(out), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads((out / "soak.json").read_text())
    assert report["frames"] == 3 * 60 * 15 and report["loops"] >= 15
    assert (out / "soak.png").stat().st_size > 10_000
    assert len(report["samples"]) >= 6
    assert report["summary"]["faults"] in ({}, None) or not any(report["summary"]["faults"].values())
    failed = [c for c in report["checks"] if not c["passed"]]
    assert done.returncode == 0 and not failed, (failed, done.stdout[-2000:])
    # after closing, the worker threads are gone and files are closed again
    assert report["after_close"]["threads"] <= report["samples"][0]["threads"]
