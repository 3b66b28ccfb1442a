"""The load test (python -m realtime.bench.loadtest): K cameras against one server.

One end-to-end run as a user runs it (the tool starts its own ``python -m engines.serve``
on loopback ports, as tests/test_serve.py's fixture does, with the stub environment in
pytest's cache): one camera process for a few seconds through the server and with its
own engine, and a short replay of the recorded pairs. Skipped, with the reason, without
the serve extra. The pure parts (the ping-pong schedule and its ground truth, the merge
of the cameras' figures, the server-statistics arithmetic, the verdict) are checked
directly with hand-made inputs.
"""
from __future__ import annotations

import json

import pytest

from realtime.bench import loadtest
from realtime.bench.loadserver import batch_histogram, stats_delta
from test_serve import HAS_CLIENT, HAS_PYTRITON, _stub_env_dir

pytestmark = pytest.mark.usefixtures("cache_dir")


def test_pingpong_keeps_neighbours_and_maps_the_event_both_ways():
    frames, events = loadtest.pingpong(40, 2, 9, (4, 5, 7))
    assert frames[:10] == list(range(10))                        # once to the end of the window
    assert frames[10:17] == [8, 7, 6, 5, 4, 3, 2]                # then backwards to its start
    assert frames[17:24] == [3, 4, 5, 6, 7, 8, 9]                # and forwards again
    assert all(abs(a - b) == 1 for a, b in zip(frames, frames[1:]))   # no seam anywhere
    assert events[0] == (4, 5, 7)
    on, ap, off = events[1]                                      # reversed: the old offset is the onset
    assert (frames[on], frames[ap], frames[off]) == (7, 5, 4)
    on, ap, off = events[2]
    assert (frames[on], frames[ap], frames[off]) == (4, 5, 7)
    assert len(events) == 5 and all(e[2] < 40 for e in events)
    with pytest.raises(ValueError, match="window"):
        loadtest.pingpong(40, 4, 9, (4, 5, 7))                    # no calm frame before the onset


def test_server_statistics_arithmetic():
    before = {"inference_count": 10, "execution_count": 10,
              "batch_stats": [{"batch_size": 1, "compute_infer": {"count": 10, "ns": 1}}],
              "inference_stats": {"queue": {"count": 10, "ns": 10_000_000}}}
    after = {"inference_count": 30, "execution_count": 16,
             "batch_stats": [{"batch_size": 1, "compute_infer": {"count": 12, "ns": 1}},
                             {"batch_size": 3, "compute_infer": {"count": 4, "ns": 1}},
                             {"batch_size": 8, "compute_infer": {"count": 0, "ns": 0}}],
             "inference_stats": {"queue": {"count": 30, "ns": 70_000_000}}}
    assert batch_histogram(before, after) == {1: 2, 3: 4}
    d = stats_delta(before, after)
    assert (d["inferences"], d["executions"], d["pairs_per_execution"]) == (20, 6, 3.333)
    assert d["queue_ms_mean"] == 3.0 and d["compute_infer_ms_mean"] is None


def _camera(i, pairs, infer, decision, dropped=0, frames=100):
    return {"index": i, "frames": frames, "dropped": dropped, "achieved_fps": 30.0, "delivered_fps": 30.0,
            "cpu_cores": 0.5, "cpu_ms_per_frame": 10.0, "pairs": pairs, "pairs_dropped": 0, "played": 3,
            "spotted": 2, "false_alarms": 0, "events": 2, "unlabelled": 0, "infer_ms": infer, "decision_ms": decision}


def test_merge_run_pools_cameras_and_keeps_failures():
    cams = [_camera(0, 4, [10.0, 20.0], [100.0]), _camera(1, 6, [30.0], [200.0, 300.0], dropped=25, frames=75),
            {"index": 2, "error": "RuntimeError: boom"}]
    run = loadtest.merge_run(3, "server", cams, seconds=5.0, events_per_s=1.25)
    assert run["pairs"] == 10 and run["pairs_per_s"] == 2.0 and run["cameras_ok"] == 2
    assert run["infer_ms"]["n"] == 3 and run["infer_ms"]["p50"] == 20.0
    assert run["decision_ms"]["n"] == 3 and run["decision_ms"]["p50"] == 200.0
    assert run["dropped"] == 25 and run["dropped_share"] == 0.125      # 25 of 200 frames delivered
    assert run["offered_events_per_s"] == 3.75 and run["errors"] == ["RuntimeError: boom"]
    assert run["per_camera"][2] == {"camera": 2, "error": "RuntimeError: boom"}
    v = loadtest.verdict([run, dict(run, mode="local", pairs_per_s=1.0)])
    assert v["k"] == 3 and v["ratio"] == 2.0 and v["met"]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_PYTRITON or not HAS_CLIENT, reason=(
    "the serve extra is not installed (pip install -e '.[serve]' && pip install --no-deps nvidia-pytriton==0.7.0; "
    "Linux only)"))
def test_one_camera_through_the_server_and_in_process_and_a_replay(request, tmp_path_factory, tmp_path):
    out = tmp_path / "lt"
    code = loadtest.main(["--cameras", "1", "--seconds", "3", "--replay-clients", "3", "--replay-seconds", "1",
                          "--local-batch", "1", "--record-seconds", "4", "--device", "cpu", "--out", str(out),
                          "--stub-env", str(_stub_env_dir(request, tmp_path_factory))])
    assert code == 0
    r = json.loads((out / "report.json").read_text())
    assert (out / "loadtest.png").stat().st_size > 10_000
    assert {"machine", "recording", "runs", "replay", "verdict", "server"} <= set(r)
    assert r["machine"]["cores_logical"] >= 1 and r["machine"]["loadavg"] is not None
    assert r["recording"]["events_per_s"] >= 1.0                     # dense: an event a second or more
    runs = {x["mode"]: x for x in r["runs"]}
    assert set(runs) == {"server", "local"} and all(x["k"] == 1 and not x["errors"] for x in runs.values())
    for run in runs.values():
        cam = run["per_camera"][0]
        for key in ("frames", "dropped", "achieved_fps", "delivered_fps", "cpu_ms_per_frame", "pairs"):
            assert cam[key] is not None, key
        assert run["pairs"] > 0 and run["spotted"] > 0                  # events recognised
        assert run["infer_ms"]["n"] > 0 and run["decision_ms"]["p95"] >= run["decision_ms"]["p50"] > 0
        assert 10 < cam["achieved_fps"] <= 31
    # the pairs of the server run went through the server, and the in-process run left it idle
    assert runs["server"]["server"]["inferences"] >= runs["server"]["pairs"] > 0
    assert runs["local"]["server"]["inferences"] == 0
    assert runs["server"]["per_camera"][0]["faults"].get("recognition_error", 0) == 0
    replay = r["replay"]
    (srv,), (loc,) = replay["server"], replay["local"]
    assert srv["concurrency"] == loc["concurrency"] == 3 and srv["errors"] == loc["errors"] == 0
    assert srv["pairs"] > 0 and loc["pairs"] > 0 and srv["latency_ms"]["p95"] >= srv["latency_ms"]["p50"] > 0
    stats = srv["server"]
    assert stats["inferences"] == srv["pairs"]                         # every replayed pair, counted by Triton
    assert 0 < stats["executions"] <= stats["inferences"]
    assert sum(int(k) * v for k, v in stats["batch_sizes"].items()) == stats["inferences"]
