"""Faults during a run and refusals at start: what a user sees, checked on real media.

Each test is one row of the README's "what happens when" table (docs/reliability.md):
- a camera or stream that stops delivering frames mid-run: noticed within about a second,
  said, retried or ended as the user chose, never a hang (a real OS pipe or FIFO whose
  reader blocks in a system call, as a driver does when a camera is unplugged);
- corrupt or truncated recordings, a frame of another size, a recogniser that raises:
  the run goes on and the fault is counted in the summary;
- an engine that needs a GPU on a CPU-only machine, an engine for another GPU, TensorRT
  version or set of weights, a checkpoint for another config, a pickle with arbitrary
  objects, a missing camera: refused at start with the fix in the message.

Every run that could hang is bounded: a subprocess timeout or a watchdog thread.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import onnx
import torch
from onnx import TensorProto, helper
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core.events import read_events
from engines.export import export_onnx, load_checkpoint_graph
from engines.recognizer import Recognizer
from engines.runners import EngineError, EngineUnavailableError
from engines.runners.tensorrt_runner import check_plan_metadata, read_plan_metadata
from realtime.stages.pipeline import Pipeline, PipelineConfig
from realtime.stages.sources import CameraError, Frame, LiveSource, open_source
from train.checkpoint import CheckpointError, load_checkpoint, load_classifier, load_state_file, save_checkpoint
from train.moext import MoExtClassifier, MoExtConfig
from train.synth import write_clip

ROOT = Path(__file__).resolve().parents[1]
CUDA = False
try:
    CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover
    pass


# ---------------------------------------------------------------------------------------
# helpers


def child_env(tmp: Path) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", MOEXT_CACHE_DIR=str(tmp / "moext-cache"),
               GRADIO_ANALYTICS_ENABLED="False")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_live(args: list[str], tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """run_live.py in a subprocess (a hang fails the test through the timeout)."""
    return subprocess.run([sys.executable, str(ROOT / "run_live.py"), *args], cwd=ROOT, env=child_env(tmp),
                          capture_output=True, text=True, timeout=timeout)


def within(seconds: float, fn, *args):
    """Run fn(*args) in a thread; fail if it has not returned after ``seconds`` (a hang)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # re-raised in the test's thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} did not return within {seconds} s: the run hangs"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture(scope="module")
def face_frames(asset):
    """The bundled real face clip (30 fps, 640x360), all 72 frames."""
    cap = cv2.VideoCapture(str(asset("single_face.mp4")))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    assert len(out) == 72
    return out


@pytest.fixture(scope="module")
def mjpg_clip(tmp_path_factory, face_frames):
    """The face clip as MJPG .avi: each frame is its own JPEG (corruption stays local)."""
    path = tmp_path_factory.mktemp("clips") / "face.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 360))
    for f in face_frames:
        w.write(f)
    w.release()
    return path


@pytest.fixture(scope="module")
def me_clip(tmp_path_factory):
    """A small synthetic clip of a real face with four micro-expressions (train.synth)."""
    path, _gt, truths = write_clip(tmp_path_factory.mktemp("me") / "me.avi", fps=30, seconds=8, events="micro",
                                   size=(320, 240), seed=3)
    assert len(truths) >= 3
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A narrow MoExt classifier checkpoint with fixed random weights."""
    torch.manual_seed(0)
    cfg = MoExtConfig(width=0.125)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "moext_w0125.safetensors",
                           MoExtClassifier(cfg).eval(), cfg, meta={"purpose": "fault tests"})


# ---------------------------------------------------------------------------------------
# a camera that stalls: a real pipe whose reader blocks in os.read


class PipeCamera(LiveSource):
    """A camera behind an OS pipe: raw BGR frames arrive as the producer writes them, and
    the reader thread blocks inside os.read when the producer stalls, as a capture driver
    does when a USB camera is unplugged or a network camera hangs."""

    def __init__(self, fd: int, size: tuple[int, int], **kw) -> None:
        super().__init__("pipe camera", 30.0, **kw)
        self.fd, (self.w, self.h) = fd, size
        self.eof = False
        self.reopens = 0
        self.readers: list[threading.Thread] = []
        self._t0 = None
        self._seq = 0

    def _start(self) -> None:
        super()._start()
        self.readers.append(self._reader.thread)

    def _read_forever(self):
        n = self.w * self.h * 3
        while True:
            buf = bytearray()
            while len(buf) < n:
                chunk = os.read(self.fd, n - len(buf))
                if not chunk:
                    self.eof = True
                    return
                buf += chunk
            t = time.perf_counter()
            self._t0 = self._t0 or t
            index, self._seq = self._seq, self._seq + 1
            image = np.frombuffer(bytes(buf), np.uint8).reshape(self.h, self.w, 3)
            yield Frame(index=index, t=t - self._t0, image=self._conform(image, index), captured_at=t)

    def _reopen(self) -> None:
        self.reopens += 1
        if self.eof:
            raise CameraError("pipe camera: the producer closed the pipe (device gone); nothing to reopen")


class Producer(threading.Thread):
    """Writes frames into the pipe at 30 fps following a script of ("frames", n) and
    ("stall", seconds) steps, then closes its end. ``stalled_at`` is when the last frame
    before the first stall went out."""

    def __init__(self, fd: int, frames: list[np.ndarray], script: list[tuple[str, float]]) -> None:
        super().__init__(daemon=True)
        self.fd, self.frames, self.script = fd, frames, script
        self.stalled_at: float | None = None
        self.sent = 0
        self._abort = threading.Event()

    def finish(self, reader_fd: int, source: PipeCamera) -> None:
        """Stop now, close the pipe and wait for the source's reader threads to see the end
        (only then is the read end closed: a blocked os.read keeps using its number)."""
        self._abort.set()
        self.join(10)
        for t in source.readers:
            t.join(10)
        os.close(reader_fd)

    def run(self) -> None:
        try:
            for what, amount in self.script:
                if self._abort.is_set():
                    break
                if what == "frames":
                    for _ in range(int(amount)):
                        if self._abort.is_set():
                            break
                        data = self.frames[self.sent % len(self.frames)].tobytes()
                        view = memoryview(data)
                        while view:
                            view = view[os.write(self.fd, view):]
                        self.sent += 1
                        time.sleep(1 / 30)
                else:
                    if self.stalled_at is None:
                        self.stalled_at = time.time()
                    self._abort.wait(amount)
        except OSError:  # the reader went away
            pass
        finally:
            os.close(self.fd)


def drive(src, pipe: Pipeline) -> dict:
    """The live loop of run_live.py: every frame through the pipeline until the source ends."""
    last = []
    for frame in src:
        pipe.process(frame)
        last.append(frame.index)
    pipe.close(wait=False)
    return {"indices": last, "ended": time.time()}


def stall_records(caplog):
    return [r for r in caplog.records if r.name == "realtime.stages.sources" and "no frame for" in r.getMessage()]


def test_stalled_camera_is_noticed_within_a_second_and_the_run_exits(face_frames, caplog):
    small = [cv2.resize(f, (320, 180)) for f in face_frames]
    r, w = os.pipe()
    producer = Producer(w, small, [("frames", 30), ("stall", 8.0), ("frames", 5)])
    src = PipeCamera(r, (320, 180), stall_timeout=1.0, on_stall="exit")
    pipe = Pipeline(PipelineConfig(fps=30, engine="none", draw=True, draw_fps=30), source_name=src.name)
    caplog.set_level("WARNING", logger="realtime.stages.sources")
    producer.start()
    out = within(15, drive, src, pipe)       # ends long before the producer's 8 s stall is over

    assert out["indices"] and out["indices"][-1] >= 20
    noticed = stall_records(caplog)[0].created - producer.stalled_at
    assert noticed < 1.0 + 0.8, f"stall noticed after {noticed:.2f} s"   # 1 s timeout + loaded-machine slack
    assert out["ended"] - producer.stalled_at < 1.0 + 2.0
    summary = pipe.summary(src)
    assert summary.faults.get("stall") == 1
    assert "delivered no frame for 1 s" in summary.end_reason and "--on-stall retry" in summary.end_reason
    assert "stopped early" in summary.format()
    src.close()
    producer.finish(r, src)


def test_stalled_camera_with_retry_waits_then_resumes_then_gives_up_cleanly(face_frames, caplog):
    small = [cv2.resize(f, (320, 180)) for f in face_frames]
    r, w = os.pipe()
    producer = Producer(w, small, [("frames", 20), ("stall", 1.7), ("frames", 20)])
    src = PipeCamera(r, (320, 180), stall_timeout=0.5, on_stall="retry", max_retries=4)
    pipe = Pipeline(PipelineConfig(fps=30, engine="none", draw=False), source_name=src.name)
    caplog.set_level("WARNING", logger="realtime.stages.sources")
    producer.start()
    out = within(30, drive, src, pipe)

    indices = out["indices"]
    assert max(indices) >= 30, "frames sent after the stall were not received: the retry did not resume"
    assert len(stall_records(caplog)) >= 2          # said while waiting
    assert any("still waiting (attempt" in m for m in src.messages)
    assert src.reopens == 4                          # the pipe then closed for good: reopened, then given up
    assert any("nothing to reopen" in m for m in src.messages)
    assert src.faults["stall"] >= 2 + 5
    assert "after 4 retries" in src.end_reason
    assert pipe.summary(src).faults["stall"] == src.faults["stall"]
    src.close()
    producer.finish(r, src)


# ---------------------------------------------------------------------------------------
# a stalled stream file: a FIFO fed by another process (e.g. ffmpeg ... -f yuv4mpegpipe)


def y4m_header(w: int, h: int) -> bytes:
    return f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode()


def y4m_frame(bgr: np.ndarray) -> bytes:
    return b"FRAME\n" + cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes()


class FifoFeeder(threading.Thread):
    """Writes a Y4M stream into a FIFO: ``n`` frames at 30 fps, then waits until
    ``resume`` is set (or ``stall_s`` passes), then ``more`` frames, then closes."""

    def __init__(self, fifo: Path, frames, n: int, stall_s: float, more: int = 0) -> None:
        super().__init__(daemon=True)
        self.fifo, self.frames, self.n, self.stall_s, self.more = fifo, frames, n, stall_s, more
        self.resume = threading.Event()
        self.stalled_at: float | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with open(self.fifo, "wb") as fh:   # blocks until the reader opens the FIFO
                h, w = self.frames[0].shape[:2]
                fh.write(y4m_header(w, h))
                for i in range(self.n):
                    fh.write(y4m_frame(self.frames[i % len(self.frames)]))
                    fh.flush()
                    time.sleep(1 / 30)
                self.stalled_at = time.time()
                self.resume.wait(self.stall_s)
                for i in range(self.more):
                    fh.write(y4m_frame(self.frames[i % len(self.frames)]))
                    fh.flush()
                    time.sleep(1 / 30)
        except (BrokenPipeError, OSError) as e:  # the reader is gone: fine
            self.error = e


@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("named pipes need a POSIX system")
    path = tmp_path / "camera.y4m"
    os.mkfifo(path)
    yield path
    try:  # release a feeder still waiting for a reader (the child failed before opening)
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_stalled_stream_in_realtime_mode_exits_with_status_3_and_a_summary(fifo, face_frames, tmp_path):
    small = [cv2.resize(f, (320, 180)) for f in face_frames]
    feeder = FifoFeeder(fifo, small, n=45, stall_s=60)
    feeder.start()
    summary = tmp_path / "summary.json"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_live.py"), "--video", str(fifo), "--realtime",
                             "--headless", "--engine", "none", "--quiet", "--summary-json", str(summary),
                             "--events", str(tmp_path / "events.jsonl")],
                            cwd=ROOT, env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        feeder.resume.set()
    assert feeder.stalled_at is not None
    assert proc.returncode == 3, err[-2000:]          # the source was lost mid-run
    assert time.time() - feeder.stalled_at < 1.0 + 5.0  # noticed and ended (summary written) in seconds
    s = json.loads(summary.read_text())
    assert s["faults"].get("stall") == 1 and s["frames"] > 0
    assert "delivered no frame for 1 s" in s["end_reason"]
    assert "stopped early" in out and "stall" in out
    assert read_events(tmp_path / "events.jsonl") is not None


PROBE_AFTER_STALL = r"""
import sys, time
from realtime.stages.sources import open_source
src = open_source(video=sys.argv[1], realtime=True, stall_timeout=0.5)
n = sum(1 for _ in src)
src.close()
print("ended", n, src.faults, flush=True)
time.sleep(3.0)          # a long-lived front end goes on (web demo, a lab harness reopening the stream)
print("alive", flush=True)
"""


def test_stream_that_resumes_after_a_stall_exit_does_not_crash_the_process(fifo, face_frames, tmp_path):
    """After the stall ended the stream, the producer sends more frames: the decoder thread
    still blocked in FFmpeg wakes up. Its capture must not have been released under it
    (that is a use-after-free: the process dies with SIGSEGV)."""
    small = [cv2.resize(f, (320, 180)) for f in face_frames]
    feeder = FifoFeeder(fifo, small, n=30, stall_s=30, more=30)
    feeder.start()
    proc = subprocess.Popen([sys.executable, "-c", PROBE_AFTER_STALL, str(fifo)], cwd=ROOT, env=child_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()                  # "ended ..." once the stall was handled
        assert line.startswith("ended"), proc.stderr.read()[-2000:]
        assert "'stall': 1" in line
        feeder.resume.set()                            # the stream comes back
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        feeder.resume.set()
    assert proc.returncode == 0, (f"the process died (exit status {proc.returncode}) when the stalled stream "
                                  f"resumed after close(); stderr: {err[-1500:]}")
    assert "alive" in out


def test_pipe_given_as_video_is_watched_for_stalls_instead_of_hanging(fifo, face_frames, tmp_path):
    """``--video /dev/stdin`` or a FIFO is a live stream even without --realtime: a stalled
    producer must end the run within seconds, not block the decoder forever."""
    small = [cv2.resize(f, (320, 180)) for f in face_frames]
    feeder = FifoFeeder(fifo, small, n=30, stall_s=60)
    feeder.start()
    summary = tmp_path / "summary.json"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_live.py"), "--video", str(fifo), "--headless",
                             "--engine", "none", "--quiet", "--summary-json", str(summary)],
                            cwd=ROOT, env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 90
        while feeder.stalled_at is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        try:
            proc.wait(timeout=max(1.0, 8.0 - (time.time() - (feeder.stalled_at or time.time()))))
        except subprocess.TimeoutExpired:
            pytest.fail("run_live.py --video FIFO kept waiting for frames 8 s after the producer stalled (hang)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        feeder.resume.set()
    assert proc.returncode in (0, 3), proc.stderr.read()[-2000:]
    s = json.loads(summary.read_text())
    assert s["faults"].get("stall") == 1


# ---------------------------------------------------------------------------------------
# bad recordings and frames: the run goes on, the fault is counted


def corrupt_copy(src: Path, dst: Path, seed: int = 0, flips: int = 2000) -> Path:
    """Random bytes overwritten in the middle third of the file (frame data, not headers)."""
    data = bytearray(src.read_bytes())
    rng = random.Random(seed)
    for _ in range(flips):
        i = rng.randrange(len(data) // 3, 2 * len(data) // 3)
        data[i] = rng.randrange(256)
    dst.write_bytes(bytes(data))
    return dst


def test_corrupt_frames_in_a_recording_are_skipped_counted_and_reported(mjpg_clip, tmp_path):
    bad = corrupt_copy(mjpg_clip, tmp_path / "corrupt.avi")
    with open_source(video=bad) as src:
        readable = sum(1 for _ in src)
    expected = dict(src.faults)
    assert expected.get("corrupt_frame", 0) >= 1 and readable < 72

    summary = tmp_path / "summary.json"
    p = run_live(["--video", str(bad), "--headless", "--engine", "none", "--summary-json", str(summary),
                  "--events", str(tmp_path / "events.jsonl")], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(summary.read_text())
    assert s["frames"] == readable                            # every decodable frame went through
    assert s["faults"].get("corrupt_frame") == expected["corrupt_frame"]
    assert "faults: " in p.stdout and "corrupt_frame" in p.stdout
    assert "undecodable frame(s)" in p.stderr                  # said as it happened


def test_truncated_recording_ends_cleanly_with_the_fault_in_the_summary(mjpg_clip, tmp_path):
    data = mjpg_clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 2 // 3])
    summary = tmp_path / "summary.json"
    p = run_live(["--video", str(cut), "--headless", "--engine", "none", "--summary-json", str(summary),
                  "--events", str(tmp_path / "events.jsonl")], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(summary.read_text())
    assert s["faults"].get("truncated") == 1
    assert 20 < s["frames"] < 72
    assert f"decoding stopped after {s['frames']} of 72 frames" in s["end_reason"]
    assert "stopped early" in p.stdout
    read_events(tmp_path / "events.jsonl")                    # the outputs are complete files


def test_truncated_mp4_without_its_index_is_refused_at_start(asset, tmp_path):
    data = asset("single_face.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    p = run_live(["--video", str(cut), "--headless", "--engine", "none"], tmp_path, timeout=60)
    assert p.returncode == 2
    assert "truncated" in p.stderr and "moov" in p.stderr and "ffmpeg" in p.stderr


def test_frame_of_another_size_mid_stream_is_counted_and_the_run_continues(face_frames, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(face_frames[:24]):
        if i == 12:
            f = cv2.resize(f, (320, 180))            # one frame from another camera mode
        cv2.imwrite(str(folder / f"img{i}.png"), f)
    summary = tmp_path / "summary.json"
    p = run_live(["--images", str(folder), "--fps", "30", "--headless", "--engine", "none",
                  "--summary-json", str(summary), "--signal", str(tmp_path / "signal.csv")], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(summary.read_text())
    assert s["frames"] == 24 and s["faults"].get("size_change") == 1
    assert s["frames_with_face"] >= 22              # the resized frame is tracked like the others
    assert "frame 12 is 320x180, not 640x360" in p.stderr and "size_change 1" in p.stdout
    rows = (tmp_path / "signal.csv").read_text().splitlines()
    assert len(rows) == 1 + 24


class FlakyRecognizer:
    """A real Recognizer whose first ``failures`` calls raise (an engine that errors at run
    time: a driver reset, a corrupt engine cache, out of memory)."""

    def __init__(self, inner, failures: int = 1) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, onset, apex):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
        return self.inner.predict(onset, apex)


@pytest.mark.slow
def test_recognizer_that_raises_is_counted_and_the_run_continues(me_clip, checkpoint, caplog):
    rec = FlakyRecognizer(Recognizer.load(checkpoint, device="cpu", engine="torch"), failures=1)
    src = open_source(video=me_clip)
    pipe = Pipeline(PipelineConfig(fps=src.fps, draw=False), rec, source_name=src.name)
    caplog.set_level("WARNING")

    def go():
        events = []
        for frame in src:
            events += pipe.process(frame).final_events
        events += pipe.close(wait=True)
        return events

    events = within(120, go)
    s = pipe.summary(src)
    assert s.frames == src.frames_read == 240        # the run went on to the end
    assert rec.calls >= 2                            # and the worker kept serving after the failure
    assert s.faults.get("recognition_error", 0) >= 1
    assert "recognition_error" in s.format()
    assert s.events >= 2 and 1 <= s.unlabelled < s.events
    assert [e.label for e in events if e.label is not None]     # later events are labelled
    assert any("recognition failed" in r.getMessage() and "injected" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------
# refused at start: engines, checkpoints, pickles, cameras


@pytest.mark.skipif(CUDA, reason="checks the CPU-only refusal; this machine has a GPU")
def test_tensorrt_plan_on_a_cpu_only_machine_is_refused_at_start_with_the_fix(tmp_path):
    plan = tmp_path / "moext-fp16.plan"
    plan.write_bytes(b"\0" * 1024)
    t0 = time.time()
    p = run_live(["--video", str(ROOT / "core/assets/single_face.mp4"), "--headless", "--engine", str(plan)],
                 tmp_path, timeout=60)
    assert p.returncode == 2 and time.time() - t0 < 60
    assert "TensorRT" in p.stderr and "onnx" in p.stderr      # what is missing and what to use instead
    assert "Traceback" not in p.stderr


@pytest.mark.skipif(CUDA, reason="checks the CPU-only refusal; this machine has a GPU")
def test_cuda_device_without_a_gpu_is_refused_with_the_fix_after_a_logged_fallback(checkpoint, caplog):
    caplog.set_level("WARNING", logger="engines.recognizer")
    with pytest.raises(EngineUnavailableError, match=r"use device='cpu'"):
        Recognizer.load(checkpoint, device="cuda")
    assert any("cuda engine unavailable" in r.getMessage() and "falling back to torch" in r.getMessage()
               for r in caplog.records)
    rec = Recognizer.load(checkpoint, device="auto", engine="torch")   # auto picks what runs here
    assert rec.device == "cpu"
    rec.close()


def test_plan_built_for_another_gpu_or_tensorrt_version_is_refused_with_the_rebuild_command(tmp_path):
    meta = {"format": 1, "tensorrt_version": "10.3.0", "gpu_name": "NVIDIA GeForce RTX 3060",
            "compute_capability": "8.6", "precision": "fp16", "input_size": 224, "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "classes": ["negative", "positive", "surprise"],
            "checkpoint_hash": "ab" * 32, "max_batch": 8}
    with pytest.raises(EngineError) as e:
        check_plan_metadata(meta, tensorrt_version="10.13.3", gpu_name="NVIDIA H100", compute_capability="9.0",
                            where="moext.plan")
    msg = str(e.value)
    assert "TensorRT 10.3.0, installed is 10.13.3" in msg and "RTX 3060" in msg and "H100" in msg
    assert "python -m engines.build" in msg and "--engine tensorrt" in msg
    with pytest.raises(EngineError, match="built from weights with hash"):
        check_plan_metadata(meta, tensorrt_version="10.3.0", gpu_name="NVIDIA GeForce RTX 3060",
                            compute_capability="8.6", expect_hash="cd" * 32)
    plan = tmp_path / "orphan.plan"
    plan.write_bytes(b"\0")
    with pytest.raises(EngineError, match="metadata file orphan.plan.json is missing.*rebuild"):
        read_plan_metadata(plan)


@pytest.mark.slow
def test_onnx_engine_for_other_weights_or_not_ours_is_refused(checkpoint, tmp_path):
    graph, info = load_checkpoint_graph(checkpoint)
    path = export_onnx(graph, info, tmp_path / "moext.onnx")
    with pytest.raises(EngineError, match="built from other weights.*python -m engines.build"):
        Recognizer.load(path, expect_hash="0" * 64)

    # a graph that is not a MoExt export (no moext.* metadata)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    foreign = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)])
    foreign.ir_version = 8
    onnx.save(foreign, tmp_path / "foreign.onnx")
    with pytest.raises(EngineError, match=r"not a MoExt recognition graph|not a graph written by engines.export"):
        Recognizer.load(tmp_path / "foreign.onnx")


def test_checkpoint_for_another_config_is_refused_naming_the_mismatch(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match=r"config mismatch: width 0\.125 in the checkpoint vs 0\.5 requested"):
        load_classifier(checkpoint, cfg=MoExtConfig(width=0.5))
    with pytest.raises(CheckpointError, match=r"num_classes 3 in the checkpoint vs 5 requested"):
        load_checkpoint(checkpoint, cfg=MoExtConfig(width=0.125, num_classes=5,
                                                    class_names=("a", "b", "c", "d", "e")))

    # tensors of width 0.125 under a header that claims width 0.25 (an edited or mixed-up file)

    with safe_open(str(checkpoint), framework="pt") as f:
        md = dict(f.metadata())
    cfg = json.loads(md["config"])
    cfg["width"] = 0.25
    md["config"] = json.dumps(cfg)
    md.pop("tensors_sha256", None)
    edited = tmp_path / "edited.safetensors"
    save_file(load_file(str(checkpoint)), str(edited), metadata=md)
    with pytest.raises(CheckpointError, match=r"edited\.safetensors: tensors do not match .*width 0\.25.*shape mismatches"):
        load_checkpoint(edited)

    # the same through the command line: refused at start, exit status 2, no traceback
    p = run_live(["--sample", "--headless", "--engine", str(edited)], tmp_path, timeout=90)
    assert p.returncode == 2 and "shape mismatches" in p.stderr and "Traceback" not in p.stderr
    other = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    p = run_live(["--sample", "--headless", "--engine", str(other)], tmp_path, timeout=90)
    assert p.returncode == 2 and "not a MoExt checkpoint" in p.stderr


class Payload:
    """A pickle that runs code when loaded freely (pickle's __reduce__)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_arbitrary_objects_is_refused_and_never_run(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    state = {k: v for k, v in __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(checkpoint)).items()}
    torch.save({"state_dict": state, "extra": Payload(marker)}, evil, pickle_protocol=2)
    for load in (load_checkpoint, load_state_file, load_classifier):
        with pytest.raises(CheckpointError, match=r"evil\.pt: refused.*arbitrary code.*safetensors"):
            load(evil)
    assert not marker.exists()

    # a raw pickle with a .pth name (not even a torch zip)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError):
        load_state_file(raw)
    assert not marker.exists()

    # the command line never unpickles: a .pt is not an engine file
    p = run_live(["--sample", "--headless", "--engine", str(evil)], tmp_path, timeout=90)
    assert p.returncode == 2 and ".safetensors" in p.stderr
    assert not marker.exists()


def test_missing_camera_is_a_clear_error_with_exit_status_2_and_no_hang(tmp_path):
    t0 = time.time()
    p = run_live(["--camera", "7", "--headless", "--engine", "none"], tmp_path, timeout=60)
    assert p.returncode == 2
    assert time.time() - t0 < 30
    assert "camera 7 could not be opened" in p.stderr and "--video PATH" in p.stderr
    assert "Traceback" not in p.stderr
