"""Archives (python -m realtime.batch): inputs and manifests, failure isolation, resume after
a kill, the exports read back with real readers, the same tables through a real local Ray
runtime, and python -m realtime.evaluate running through the batch runner.

Real clips (train.synth, 3 s at 30 and 60 fps), a corrupt file (junk bytes) and a truncated
one (a valid .avi cut in half); real worker processes, a real Ray runtime (skipped where Ray
is not installed: it is in the "test" extra on Linux)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.events import Event
from realtime.batch import cli as batch
from realtime.batch import discovery, job, runner, tables
from realtime.batch.exports import (INTERVAL_COLUMNS, MEGC_COLUMNS, IntervalWriter, MegcWriter, first_frame_number,
                                    write_eaf)
from realtime.evaluate import cli as evaluate
from realtime.frontends import cli
from realtime.stages.recording import RecordingSettings
from train.synth import write_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """clips/: two good recordings (30 and 60 fps), a corrupt and a truncated one, and a
    manifest giving subjects and sessions."""
    d = tmp_path_factory.mktemp("study")
    clips = d / "clips"
    write_clip(clips / "s1_a.avi", identity="sample_video", fps=30, seconds=3, events="micro", seed=1)
    write_clip(clips / "s2_b.avi", identity="group_left", fps=60, seconds=3, events="mixed", seed=2)
    (clips / "broken.avi").write_bytes(os.urandom(40_000))
    whole = (clips / "s1_a.avi").read_bytes()
    (clips / "cut.avi").write_bytes(whole[: len(whole) // 2])
    manifest = d / "study.csv"
    manifest.write_text("path,subject,session,fps\n"
                        "clips/s1_a.avi,s1,pre,30\n"
                        "clips/s2_b.avi,s2,post,\n"
                        "clips/broken.avi,s3,pre,\n"
                        "clips/cut.avi,s1,post,30\n")
    return d


def _manifest(out: Path) -> dict[str, dict]:
    with open(out / "manifest.csv", newline="") as fh:
        return {r["recording"]: r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def processes_run(study, tmp_path_factory):
    """The study through two worker processes, from the command line."""
    out = tmp_path_factory.mktemp("out_proc")
    t0 = time.perf_counter()
    code = batch.main([str(study / "study.csv"), "--out", str(out), "--jobs", "2", "--engine", "none", "--quiet"])
    return out, code, time.perf_counter() - t0


# ----------------------------------------------------------------------------- inputs

def test_manifest_folder_glob_and_bad_inputs(study, tmp_path, capsys):
    recs = discovery.read_manifest(study / "study.csv")
    assert [r.rid for r in recs] == ["clips/s1_a.avi", "clips/s2_b.avi", "clips/broken.avi", "clips/cut.avi"]
    assert (recs[0].subject, recs[0].session, recs[0].fps) == ("s1", "pre", 30.0)
    assert recs[1].fps is None and recs[1].path.is_absolute() and all(r.problem is None for r in recs)

    # a row naming a missing file is kept (listed as failed later), with the row and the fix
    m = tmp_path / "m.csv"
    m.write_text("file,participant\nnope.avi,p1\n")
    [r] = discovery.read_manifest(m)
    assert r.subject == "p1" and "row 2" in r.problem and "does not exist" in r.problem
    for text, needle in (("video,fps\nx.avi,fast\n", "row 2: fps 'fast'"), ("name\nx.avi\n", "no 'path' column"),
                         ("path\n", "no recording rows"), ("", "is empty")):
        m.write_text(text)
        with pytest.raises(discovery.BatchError, match=needle):
            discovery.read_manifest(m)

    # a folder (recursively), a glob, a file; ids relative to the folder given; --fps fills the gaps
    found = discovery.collect([str(study / "clips")], fps=25)
    assert sorted(r.rid for r in found) == ["broken.avi", "cut.avi", "s1_a.avi", "s2_b.avi"]
    assert {r.fps for r in found} == {25.0}
    assert [r.rid for r in discovery.collect([str(study / "clips" / "s2*.avi")])] == ["s2_b.avi"]
    sub = discovery.collect([str(study)], subject_pattern=r"(?P<subject>s\d)_")
    assert {r.rid: r.subject for r in sub}["clips/s2_b.avi"] == "s2"
    # two inputs with the same name get distinct ids; one file named twice is analysed once
    other = tmp_path / "other"
    other.mkdir()
    (other / "s1_a.avi").write_bytes((study / "clips" / "s1_a.avi").read_bytes())
    both = discovery.collect([str(study / "clips" / "s1_a.avi"), str(other / "s1_a.avi"),
                              str(study / "clips" / "s1_a.avi")])
    assert len(both) == 2 and len({r.rid for r in both}) == 2 and all(r.rid.startswith("s1_a.avi#") for r in both)
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad, needle in (([str(tmp_path / "missing")], "no such file or folder"),
                        ([str(tmp_path / "*.mp4")], "matches no video"),
                        ([str(empty)], "no video file"),
                        ([str(study / "study.csv"), "--x"], "no such file")):
        with pytest.raises(discovery.BatchError, match=needle):
            discovery.collect(bad)
    with pytest.raises(discovery.BatchError, match="no \\(\\?P<subject>"):
        discovery.collect([str(study)], subject_pattern="s(\\d)")
    # the command line says what is wrong and exits 2
    assert batch.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert batch.main([str(study / "study.csv")]) == 2                       # no --out
    assert batch.main([str(study / "study.csv"), "--out", str(tmp_path / "o"), "--engine", "x.onnx"]) == 2
    # one batch at a time per output folder
    with runner.output_lock(tmp_path / "busy"):
        capsys.readouterr()
        assert batch.main([str(study / "study.csv"), "--out", str(tmp_path / "busy"), "--engine", "none"]) == 2
        assert "another batch" in capsys.readouterr().err
    assert not (tmp_path / "busy" / "recordings").exists()


# ----------------------------------------------------------------------------- a batch

def test_failures_are_isolated_and_listed(processes_run, study):
    out, code, _ = processes_run
    assert code == batch.EXIT_FAILED                      # finished, with failures listed
    rows = _manifest(out)
    assert {k: v["status"] for k, v in rows.items()} == {
        "clips/s1_a.avi": "done", "clips/s2_b.avi": "done", "clips/broken.avi": "failed", "clips/cut.avi": "failed"}
    assert "could not be opened" in rows["clips/broken.avi"]["error"]
    assert "decoding stopped" in rows["clips/cut.avi"]["error"]
    # the done ones are complete: event log, per-frame signal (one row per frame), result
    for rid, frames in (("clips/s1_a.avi", 90), ("clips/s2_b.avi", 180)):
        folder = out / "recordings" / job.dirname_for(rid)
        res = json.loads((folder / "result.json").read_text())
        assert res["status"] == "done" and res["frames"] == frames and res["fps"] in (30.0, 60.0)
        with open(folder / "signal.csv") as fh:
            assert sum(1 for _ in fh) == frames + 1
    # combined tables: subject and session from the manifest; failed recordings' events left out
    with open(out / "events.csv", newline="") as fh:
        events = list(csv.DictReader(fh))
    assert events and {e["recording"] for e in events} <= {"clips/s1_a.avi", "clips/s2_b.avi"}
    assert {(e["subject"], e["session"]) for e in events if e["recording"] == "clips/s1_a.avi"} == {("s1", "pre")}
    assert any(e["kind"] == "micro" for e in events if e["recording"] == "clips/s1_a.avi")
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the batch / test extra) is not installed")
    table = pq.read_table(out / "events.parquet")
    assert table.num_rows == len(events) and table.schema.field("onset_frame").type == "int64"
    assert pq.read_table(out / "recordings.parquet").column("status").to_pylist() == ["done", "done", "failed",
                                                                                        "failed"]
    report = (out / "report.md").read_text()
    assert "Failed recordings (2)" in report and "clips/broken.avi" in report and "| s1 |" in report
    assert (out / "plots" / "per_subject.png").stat().st_size > 1000 and (out / "report.html").is_file()
    summary = json.loads((out / "batch.json").read_text())
    assert summary["executor"]["kind"] == "processes" and summary["recordings"]["failed"] == 2
    assert summary["memory_mb"]["parent_peak_rss"] > 0 and len(summary["memory_mb"]["worker_peak_rss"]) >= 1
    assert sorted(p.name for p in (out / "exports" / "elan").iterdir()) == ["clips__s1_a.avi.eaf",
                                                                           "clips__s2_b.avi.eaf"]


@pytest.mark.slow
def test_ray_local_runtime_gives_the_same_tables(processes_run, study, tmp_path):
    """The same study as Ray tasks on a real local Ray runtime started here."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e \".[test]\" installs it on Linux)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 2 ** 20,
             logging_level="ERROR")
    try:
        out = tmp_path / "out_ray"
        recs = discovery.collect([str(study / "study.csv")])
        run = runner.run_recordings(recs, RecordingSettings(engine="none"), out, ray=True, progress=False)
        tables.write_outputs(run, RecordingSettings(engine="none"))
    finally:
        ray.shutdown()
    assert run.executor["kind"] == "ray" and run.executor["cpus"] == 2
    assert {r["status"] for r in run.rows.values()} == {"done", "failed"}
    # workers were Ray's processes, not this one
    assert run.worker_rss and all(not w.endswith(f":{os.getpid()}") for w in run.worker_rss)
    assert tables.compare_outputs(processes_run[0], out) == []


def test_second_run_skips_retry_failed_and_changed_inputs(processes_run, study):
    out = processes_run[0]
    before = {p.parent.name: p.stat().st_mtime_ns for p in (out / "recordings").glob("*/result.json")}
    # the same command again, from the front door: nothing to do
    assert cli.main(["--batch", str(study / "study.csv"), "--out", str(out), "--engine", "none", "--quiet"]) == 1
    assert {p.parent.name: p.stat().st_mtime_ns for p in (out / "recordings").glob("*/result.json")} == before
    assert json.loads((out / "batch.json").read_text())["recordings"]["skipped_unchanged"] == 4
    # --retry-failed: only the two failed ones again
    recs = discovery.collect([str(study / "study.csv")])
    run = runner.run_recordings(recs, RecordingSettings(engine="none"), out, retry_failed=True, progress=False)
    assert (run.analysed, run.skipped) == (2, 2)
    assert {rid for rid, r in run.rows.items() if r["status"] == "failed"} == {"clips/broken.avi", "clips/cut.avi"}
    # a changed input is analysed again without being asked (its key changed): here repaired
    (study / "clips" / "cut.avi").write_bytes((study / "clips" / "s1_a.avi").read_bytes())
    run = runner.run_recordings(recs, RecordingSettings(engine="none"), out, progress=False)
    assert (run.analysed, run.rows["clips/cut.avi"]["status"]) == (1, "done")
    # other settings are another key: nothing of the old run is trusted for them
    plan_only = runner.run_recordings([recs[2]], RecordingSettings(engine="none", me_rule="casme"), out,
                                      progress=False)
    assert plan_only.analysed == 1


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups (SIGKILL of the batch and its workers)")
def test_killed_batch_leaves_nothing_half_written_and_a_restart_finishes(study, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("s1_a.avi", "s2_b.avi"):
        (clips / name).write_bytes((study / "clips" / name).read_bytes())
    write_clip(clips / "long.avi", identity="astronaut", fps=30, seconds=8, events="micro", seed=3)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "realtime.batch", str(clips), "--out", str(out), "--jobs", "1", "--engine", "none",
           "--quiet"]
    p = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:    # kill once one recording is published and another is half-way
            done = list((out / "recordings").glob("*/result.json"))
            busy = [q for q in (out / ".partial").glob("*") if (q / "signal.csv").is_file()] if done else []
            if done and busy and (busy[0] / "signal.csv").stat().st_size > 0:
                break
            assert p.poll() is None, p.stdout.read().decode()[-2000:]
            time.sleep(0.05)
        else:
            pytest.fail("the batch did not get going")
        os.killpg(p.pid, signal.SIGKILL)       # the whole process group: a machine going down
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    published = {q.parent.name for q in (out / "recordings").glob("*/result.json")}
    assert 1 <= len(published) < 3
    for name in published:                    # whatever was published is whole
        res = json.loads((out / "recordings" / name / "result.json").read_text())
        assert res["status"] == "done" and res["frames"] > 0
    half = [q.name.split(".")[0] for q in (out / ".partial").iterdir()]
    assert half and not (set(half) & {n.split(".")[0] for n in published})
    rows = _manifest(out)
    assert [r["status"] for r in rows.values()].count("done") <= len(published)
    before = {n: (out / "recordings" / n / "result.json").stat().st_mtime_ns for n in published}
    # the restart finishes the rest and trusts only what was published
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"{3 - len(published)} analysed now, {len(published)} unchanged and skipped" in r.stdout
    assert {n: (out / "recordings" / n / "result.json").stat().st_mtime_ns for n in published} == before
    assert {v["status"] for v in _manifest(out).values()} == {"done"}
    assert not any((out / ".partial").iterdir())


# ----------------------------------------------------------------------------- exports

def _event(onset, apex, offset, kind, label, face=0, fps=30.0, probs=None):
    return Event(source="x", fps=fps, onset_frame=onset, apex_frame=apex, offset_frame=offset,
                 onset_t=onset / fps, apex_t=apex / fps, offset_t=offset / fps, kind=kind, label=label,
                 probs=probs or ({label: 0.7} if label else {}), face_id=face, finalised_t=offset / fps)


def test_elan_export_reads_back_with_pympi(tmp_path, study):
    Elan = pytest.importorskip("pympi.Elan", reason="pympi-ling (the batch / test extra) is not installed")
    media = study / "clips" / "s1_a.avi"
    events = [_event(30, 33, 36, "micro", "surprise"), _event(60, 70, 95, "macro", None),
              _event(10, 12, 14, "micro", "negative", face=1)]
    path = write_eaf(tmp_path / "elan" / "rec.eaf", events, media=media, subject="s1")
    eaf = Elan.Eaf(str(path))
    assert set(eaf.get_tier_names()) == {"face 0 micro", "face 0 macro", "face 1 micro", "face 1 macro"}
    assert eaf.get_annotation_data_for_tier("face 0 micro") == [(1000, 1233, "surprise")]
    assert eaf.get_annotation_data_for_tier("face 0 macro") == [(2000, 3200, "unlabelled")]
    assert eaf.get_annotation_data_for_tier("face 1 micro") == [(333, 500, "negative")]
    assert eaf.get_parameters_for_tier("face 0 micro")["PARTICIPANT"] == "s1"
    [m] = eaf.media_descriptors
    assert m["MEDIA_URL"] == media.resolve().as_uri()
    assert (path.parent / m["RELATIVE_MEDIA_URL"]).resolve() == media.resolve()
    # no event at all: the tiers are there, ready for manual coding
    empty = Elan.Eaf(str(write_eaf(tmp_path / "empty.eaf", [], media=media)))
    assert set(empty.get_tier_names()) == {"face 0 micro", "face 0 macro"}


def test_megc_and_interval_exports_read_back(tmp_path):
    frames = tmp_path / "006_1"
    frames.mkdir()
    for n in (101, 102, 103):
        (frames / f"img{n}.jpg").write_bytes(b"\xff\xd8")
    assert first_frame_number(frames) == 101 and first_frame_number(tmp_path / "v.avi") == 1
    w = MegcWriter(tmp_path / "megc.csv")
    w.add("006_1", [_event(20, 25, 30, "micro", "positive", fps=200.0), _event(0, 5, 400, "macro", None, fps=200.0)],
          base=101)
    w.add("clip", [_event(3, 4, 9, "micro", None)], base=1)
    w.close()
    df = pd.read_csv(tmp_path / "megc.csv", dtype={"vid": str})
    assert tuple(df.columns) == MEGC_COLUMNS
    assert df.values.tolist() == [["006_1", 101, 501, "mae"], ["006_1", 121, 131, "me"], ["clip", 4, 10, "me"]]

    iw = IntervalWriter(tmp_path / "intervals.csv")
    iw.add("sub1/a.avi", [_event(30, 33, 36, "micro", "surprise")], media="/data/a.avi", subject="sub1",
           session="pre")
    iw.close()
    t = pd.read_csv(tmp_path / "intervals.csv")
    assert tuple(t.columns) == INTERVAL_COLUMNS and len(t) == 1
    row = t.iloc[0]
    assert (row["Observation id"], row["Subject"], row["Behavior"], row["Modifiers"], row["Behavior type"]) == (
        "sub1/a.avi", "sub1", "micro", "surprise", "STATE")
    assert (row["Start (s)"], row["Stop (s)"], row["Duration (s)"], row["Confidence"]) == (1.0, 1.233, 0.233, 0.7)


# ----------------------------------------------------------------------------- evaluation

def test_evaluate_runs_through_the_batch_runner(study, tmp_path):
    """realtime.evaluate.cli's videos go through the batch runner: its outputs in --work, and a
    second evaluation there reuses them (the same report)."""
    clips = tmp_path / "eval"
    clips.mkdir()
    for name in ("s1_a.avi", "s1_a.gt.jsonl"):
        (clips / name).write_bytes((study / "clips" / name).read_bytes())
    work, rep1, rep2 = tmp_path / "work", tmp_path / "r1.json", tmp_path / "r2.json"
    assert evaluate.main([str(clips), "--engine", "none", "--quiet", "--work", str(work), "--out", str(rep1)]) == 0
    result = work / "recording" / "recordings" / "s1_a.avi" / "result.json"
    stamp = result.stat().st_mtime_ns
    assert json.loads(result.read_text())["status"] == "done"
    assert evaluate.main([str(clips), "--engine", "none", "--quiet", "--work", str(work), "--out", str(rep2)]) == 0
    assert result.stat().st_mtime_ns == stamp
    a, b = json.loads(rep1.read_text()), json.loads(rep2.read_text())
    assert a["pooled"] == b["pooled"] and a["pooled"]["micro"]["tp"] >= 1
