"""Frame sources for the live path: camera, video file, folder of images, in-memory arrays.

One interface for everything that produces frames (REALTIME.md, "source"):

    with open_source(video="clip.mp4") as src:        # or camera=0, images="dir/", ...
        for frame in src:                              # Frame(index, t, image, captured_at)
            result = pipeline.process(frame)

``Frame``
    ``index``        frame number from the start of the source. For files and folders it
                     counts every frame of the file. For live sources it counts every frame
                     the device delivered, so frames dropped as stale leave gaps.
    ``t``            seconds from the start of the source: ``index / fps`` for files and
                     folders (the recording's own clock, so a 200 fps file is timed at 200
                     fps however fast we decode it); the capture clock for cameras and
                     streams (``time.perf_counter()`` at capture minus the first frame's).
    ``image``        OpenCV BGR uint8 (H, W, 3); greyscale input gets three equal channels.
    ``captured_at``  ``time.perf_counter()`` when the frame loop got the frame (frame latency
                     runs from here; a file's frames decoded ahead count from when they are
                     taken, not from when they waited in the read-ahead queue).
    ``decode_ms``    time spent reading/decoding it (the "decode" stage).
    ``tracked``      None, or the frame's tracking done already (``realtime.stages.trackproc``
                     decodes and tracks a recording in a second process).

``Source`` (from ``open_source``)
    ``.fps``, ``.name``, ``.size`` (w, h), ``.live`` (True for cameras, streams and
    ``realtime`` files), ``.frames_read``, ``.dropped`` (stale frames a live source discarded), ``.faults``
    (dict: kind -> count), ``.end_reason`` (None, or why the stream stopped early),
    ``.messages`` (the warnings shown to the user), iteration, ``.close()``, context manager.

Policies (each one a user relies on):
- Live sources (cameras; streams: FIFOs, ``/dev/stdin``, URLs; files opened with
  ``realtime=True``) read in a background thread that keeps only the NEWEST frame: the
  frame loop never waits on a backlog and a slow consumer shows up as ``dropped``, never
  as lag. Files and folders otherwise drop nothing (benchmark mode); a video file is
  decoded ``read_ahead`` frames ahead in a background thread (OpenCV's decoder releases
  the GIL, so decoding runs on another core while the frame loop works), waiting when
  that many frames are ready.
- A frame whose size differs from the first frame's is resized to the first size and
  counted as ``faults["size_change"]`` (the tracker, the smoothed alignment and the video
  writer all assume one size per stream).
- A file that fails to decode mid-way (truncated or corrupt) ends the stream cleanly:
  ``end_reason`` says how many frames were read out of how many the header announced,
  ``faults["truncated"]`` is counted. Isolated undecodable frames are skipped
  (``faults["corrupt_frame"]``) as long as decoding resumes within a few frames.
- An unreadable image in a folder is skipped (``faults["unreadable_image"]``).
- A live source that delivers nothing for ``stall_timeout`` seconds (default 1 s) is
  reported (``faults["stall"]``); then, per ``on_stall``, it is waited for / reopened
  ("retry", up to ``max_retries`` times) or the stream ends ("exit"). No hang either way,
  and no crash when a read blocked in the driver wakes up after the source was closed
  (``SafeCapture``).

Errors at open time raise a ``SourceError`` subclass whose message says which input was
wrong and what to do.

The package re-exports its public API (``from realtime.stages.sources import open_source,
Frame, ...``); the code lives in ``base`` (Frame, Source, errors, helpers), ``decode`` (the
read-ahead and newest-frame threads), ``files`` (video files, image folders, arrays, the
child-process probe), ``live`` (cameras and streams) and ``opener`` (``open_source``).
"""
from realtime.stages.sources.base import (
    IMAGE_EXTENSIONS, MAX_FPS, MAX_SIDE, CameraError, Frame, ImageFolderError, SafeCapture, Source, SourceError,
    VideoFileError, check_fps, is_stream, natural_key, truncation_tolerance,
)
from realtime.stages.sources.files import ArraySource, ImageFolderSource, VideoFileSource, VideoInfo, probe_video
from realtime.stages.sources.live import CameraSource, LiveSource, LiveVideoSource
from realtime.stages.sources.opener import open_source

__all__ = [
    "IMAGE_EXTENSIONS", "MAX_FPS", "MAX_SIDE", "ArraySource", "CameraError", "CameraSource", "Frame",
    "ImageFolderError", "ImageFolderSource", "LiveSource", "LiveVideoSource", "SafeCapture", "Source",
    "SourceError", "VideoFileError", "VideoFileSource", "VideoInfo", "check_fps", "is_stream", "natural_key",
    "open_source", "probe_video", "truncation_tolerance",
]
