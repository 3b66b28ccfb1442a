"""Frame sources on real media: what a user gets from each file, folder and failure."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

import realtime.stages.sources.files as sources
from realtime.stages.sources import (
    ArraySource, CameraError, Frame, ImageFolderError, LiveSource, SafeCapture, SourceError, VideoFileError,
    VideoFileSource, natural_key, open_source,
)
from realtime.stages.sources.decode import ReadAhead as _ReadAhead


def _frames(path, n=None):
    cap = cv2.VideoCapture(str(path))
    out = []
    while n is None or len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


@pytest.fixture(scope="module")
def mjpg_clip(tmp_path_factory, asset):
    """single_face.mp4 re-encoded as MJPG .avi (an index-free container: cut bytes leave
    a readable head, like a recording interrupted mid-write)."""
    path = tmp_path_factory.mktemp("clips") / "single_face.avi"
    frames = _frames(asset("single_face.mp4"))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 360))
    for f in frames:
        w.write(f)
    w.release()
    return path


def test_single_face_video_frames_fps_and_clock(asset):
    with open_source(video=asset("single_face.mp4")) as src:
        frames = list(src)
    assert src.fps == pytest.approx(30.0)
    assert len(frames) == 72 == src.frames_read
    assert [f.index for f in frames] == list(range(72))
    assert frames[-1].t == pytest.approx(71 / 30)
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8
    assert src.size == (640, 360)
    assert src.dropped == 0 and src.faults == {} and src.end_reason is None
    assert all(f.decode_ms >= 0 for f in frames)
    assert all(a.captured_at <= b.captured_at for a, b in zip(frames, frames[1:]))


def _decode_threads():
    return [t for t in threading.enumerate() if t.name.startswith("decode:") and t.is_alive()]


def test_read_ahead_gives_every_frame_in_order_and_stops_when_abandoned(asset):
    path = asset("single_face.mp4")
    with VideoFileSource(path, read_ahead=0) as src:
        plain = [f.image for f in src]
    with VideoFileSource(path, read_ahead=4) as src:
        ahead = list(src)
    assert len(ahead) == len(plain) == 72 and [f.index for f in ahead] == list(range(72))
    assert all(np.array_equal(a.image, b) for a, b in zip(ahead, plain))
    # the loop leaves early: the decoding thread stops and the capture is released
    with VideoFileSource(path, read_ahead=4) as src:
        for f in src:
            if f.index == 5:
                break
    deadline = time.monotonic() + 5
    while _decode_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _decode_threads() and src._cap.released
    assert src.frames_read <= 5 + 1 + 4 + 1   # at most depth (+ one in hand) decoded past the last frame


def test_read_ahead_is_bounded_in_bytes(asset, monkeypatch):
    frame_bytes = 640 * 360 * 3
    monkeypatch.setattr(sources, "READ_AHEAD_BYTES", 3 * frame_bytes)
    assert VideoFileSource(asset("single_face.mp4"), read_ahead=8).read_ahead == 3
    monkeypatch.setattr(sources, "READ_AHEAD_BYTES", frame_bytes - 1)
    src = VideoFileSource(asset("single_face.mp4"), read_ahead=8)
    assert src.read_ahead == 0                       # a frame larger than the budget: decoded in the loop
    with src:
        assert len(list(src)) == 72 and not _decode_threads()


def test_read_ahead_raises_the_decoders_error_in_the_loop():
    def frames():
        yield Frame.from_array(np.zeros((8, 8, 3), np.uint8), 0, fps=1)
        raise RuntimeError("decoder broke")

    got = []
    with pytest.raises(RuntimeError, match="decoder broke"):
        for f in _ReadAhead(frames(), 2, "decode:test"):
            got.append(f.index)
    assert got == [0]


def test_no_face_and_hevc_clips_decode(asset):
    with open_source(video=asset("no_face.mp4")) as src:
        n = sum(1 for _ in src)
    assert n == 95 and src.fps == pytest.approx(23.67, abs=0.01)
    with open_source(video=asset("face_noface.mov")) as src:
        frames = list(src)
    assert len(frames) == 169 and frames[0].image.shape == (540, 960, 3)


def test_fps_override_retimes_a_high_speed_file(asset):
    with open_source(video=asset("single_face.mp4"), fps=200) as src:
        frames = list(src)
    assert src.fps == 200.0 and src.header_fps == pytest.approx(30.0)
    assert frames[-1].t == pytest.approx(71 / 200)


@pytest.mark.parametrize("bad", [0, -5, float("nan"), 1e9])
def test_unusable_fps_override_is_refused(asset, bad):
    with pytest.raises(VideoFileError, match="frame rate"):
        open_source(video=asset("single_face.mp4"), fps=bad)


def test_truncated_mp4_is_refused_with_the_reason(asset, tmp_path):
    data = asset("single_face.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) sits at the end of this file
    with pytest.raises(VideoFileError, match="truncated"):
        open_source(video=cut)


def test_truncated_recording_stops_cleanly_and_says_how_far(mjpg_clip, tmp_path):
    data = mjpg_clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with open_source(video=cut) as src:
        frames = list(src)
    assert 20 < len(frames) < 72
    assert src.faults.get("truncated") == 1
    assert f"after {len(frames)} of 72 frames" in src.end_reason
    assert src.end_reason in src.messages


def test_non_video_file_gives_a_clear_error(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 100)
    with pytest.raises(VideoFileError, match="could not be opened"):
        open_source(video=fake)


def test_missing_path_and_folder_as_video(tmp_path):
    with pytest.raises(VideoFileError, match="does not exist"):
        open_source(video=tmp_path / "nope.mp4")
    with pytest.raises(VideoFileError, match="--images"):
        open_source(video=tmp_path)


def test_missing_camera_fails_fast_with_advice():
    t0 = time.perf_counter()
    with pytest.raises(CameraError, match="camera 99 could not be opened") as e:
        open_source(camera=99)
    assert time.perf_counter() - t0 < 10
    assert "index" in str(e.value)


def test_bad_camera_index_and_source_choice():
    with pytest.raises(CameraError):
        open_source(camera=-1)
    with pytest.raises(SourceError, match="exactly one"):
        open_source()
    with pytest.raises(SourceError, match="exactly one"):
        open_source(camera=0, video="x.mp4")


def _write_frames(folder, frames, names):
    folder.mkdir(parents=True, exist_ok=True)
    for f, n in zip(frames, names):
        cv2.imwrite(str(folder / n), f)


def test_image_folder_natural_order_and_fps(asset, tmp_path):
    frames = _frames(asset("single_face.mp4"), 12)
    # dataset style: img2 must come before img10
    names = [f"img{i}.jpg" for i in range(1, 13)]
    _write_frames(tmp_path / "ep", frames, names)
    (tmp_path / "ep" / "notes.txt").write_text("not a frame")
    with open_source(images=tmp_path / "ep", fps=200) as src:
        got = list(src)
    assert len(got) == 12 and src.fps == 200
    assert [f.index for f in got] == list(range(12))
    assert got[11].t == pytest.approx(11 / 200)
    # order follows the numbers: frame k is the k-th written frame (JPEG changes pixels a little)
    assert np.abs(got[9].image.astype(int) - frames[9].astype(int)).mean() < 4
    assert sorted(names, key=natural_key)[:3] == ["img1.jpg", "img2.jpg", "img3.jpg"]


def test_image_folder_errors(asset, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFolderError, match="no images"):
        open_source(images=tmp_path / "empty", fps=30)
    with pytest.raises(ImageFolderError, match="does not exist"):
        open_source(images=tmp_path / "missing", fps=30)
    _write_frames(tmp_path / "ok", _frames(asset("single_face.mp4"), 2), ["a1.png", "a2.png"])
    with pytest.raises(ImageFolderError, match="--fps"):
        open_source(images=tmp_path / "ok")


def test_unreadable_image_and_size_change_are_counted(asset, tmp_path):
    frames = _frames(asset("single_face.mp4"), 6)
    frames[4] = cv2.resize(frames[4], (320, 180))
    _write_frames(tmp_path / "ep", frames, [f"f{i:03d}.png" for i in range(6)])
    (tmp_path / "ep" / "f002.png").write_bytes(b"broken")
    with open_source(images=tmp_path / "ep", fps=100) as src:
        got = list(src)
    assert [f.index for f in got] == [0, 1, 3, 4, 5]           # the broken frame is skipped, time kept
    assert all(f.image.shape == (360, 640, 3) for f in got)     # the odd-sized frame is resized
    assert src.faults == {"unreadable_image": 1, "size_change": 1}


def test_array_source_and_frame_from_array(asset):
    img = cv2.imread(str(asset("single_face.jpg")))
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    with ArraySource([img, gray, cv2.resize(img, (100, 100))], fps=50, name="still") as src:
        got = list(src)
    assert [f.image.shape for f in got] == [img.shape] * 3
    assert src.faults == {"size_change": 1}
    f = Frame.from_array(gray, index=10, fps=20)
    assert f.t == 0.5 and f.image.shape == gray.shape + (3,)


def test_realtime_video_drops_stale_frames_instead_of_lagging(asset):
    src = open_source(video=asset("single_face.mp4"), realtime=True)
    assert src.live
    got = []
    t0 = time.perf_counter()
    for frame in src:
        got.append(frame)
        time.sleep(0.1)  # a consumer at 10 fps on a 30 fps stream
    elapsed = time.perf_counter() - t0
    assert elapsed < 72 / 30 + 1.0                       # finished on the stream's clock, no backlog
    assert src.dropped > 30
    assert src.frames_read + src.dropped == 72           # every frame either used or counted as dropped
    assert got[-1].t == pytest.approx(got[-1].index / 30)


class _StallingDevice(LiveSource):
    """A device that delivers a few frames, then hangs (``stall``) or disappears (``end``)."""

    def __init__(self, how: str, **kw) -> None:
        super().__init__("fake camera", 30.0, **kw)
        self.how = how
        self.opened = 1

    def _read_forever(self):
        if self.opened > 1:
            return  # reopening finds nothing
        for i in range(3):
            yield Frame(index=i, t=i / 30, image=np.zeros((48, 64, 3), np.uint8))
        if self.how == "stall":
            time.sleep(30)

    def _reopen(self) -> None:
        self.opened += 1


def test_stalled_live_source_is_noticed_within_a_second_and_exits():
    src = _StallingDevice("stall", stall_timeout=0.5, on_stall="exit")
    t0 = time.perf_counter()
    got = list(src)
    assert got[-1].index == 2 and len(got) + src.dropped == 3  # newest-frame policy
    assert time.perf_counter() - t0 < 2.0
    assert src.faults == {"stall": 1}
    assert "no frame for 0.5 s" in src.end_reason and "--on-stall retry" in src.end_reason


def test_unplugged_live_source_is_reopened_then_given_up():
    src = _StallingDevice("end", stall_timeout=0.3, on_stall="retry", max_retries=2)
    got = list(src)
    assert got[-1].index == 2 and src.opened == 3   # two reopen attempts, then a clean stop
    assert src.faults["stall"] == 3
    assert "stopped delivering frames" in src.end_reason


def test_safe_capture_defers_release_until_a_blocked_read_returns():
    class BlockingCapture:  # stands in for a driver read stuck on a stalled device
        def __init__(self):
            self.go = threading.Event()
            self.released_during_read = False
            self.reading = False
            self.released = False

        def read(self):
            self.reading = True
            self.go.wait(5)
            self.reading = False
            return True, np.zeros((4, 4, 3), np.uint8)

        def release(self):
            self.released_during_read |= self.reading
            self.released = True

    raw = BlockingCapture()
    cap = SafeCapture(raw)
    t = threading.Thread(target=cap.read)
    t.start()
    time.sleep(0.1)
    cap.release()                       # the frame loop gives up while the read is blocked
    assert not raw.released
    raw.go.set()
    t.join(2)
    assert raw.released and not raw.released_during_read
    assert cap.read() == (False, None)  # nothing is read from a released capture
