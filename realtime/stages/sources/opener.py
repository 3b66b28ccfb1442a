"""``open_source``: the one entry point that turns a front end's options (a camera index,
a video path or URL, a folder of frames) into the right frame source and its policy."""
from __future__ import annotations

import os

import numpy as np

from realtime.stages.sources.base import CameraError, Source, SourceError, is_stream
from realtime.stages.sources.files import ImageFolderSource, VideoFileSource
from realtime.stages.sources.live import CameraSource, LiveVideoSource


def open_source(camera: int | None = None, video: str | os.PathLike | None = None,
                images: str | os.PathLike | None = None, *, fps: float | None = None,
                width: int | None = None, height: int | None = None, camera_fps: float | None = None,
                realtime: bool = False, stall_timeout: float = 1.0, on_stall: str = "exit",
                max_retries: int = 10) -> Source:
    """Open exactly one of ``camera`` (index), ``video`` (path) or ``images`` (folder).

    ``fps`` overrides a video header (high-speed recordings often carry 25 or 30) and is
    required for an image folder. ``width``/``height``/``camera_fps`` are requests to a
    camera (the driver may pick the nearest mode; ``.size`` and ``.fps`` say what it gave).
    ``realtime=True`` plays a video at its own rate with the live (newest-frame) policy;
    streams (FIFOs, ``/dev/stdin``, URLs) always get it, with stall detection.
    ``stall_timeout``/``on_stall``/``max_retries`` govern live sources that stop delivering.
    """
    given = [n for n, v in (("camera", camera), ("video", video), ("images", images)) if v is not None]
    if len(given) != 1:
        raise SourceError(f"give exactly one source (camera, video or images), got {given or 'none'}")
    if camera is not None:
        if isinstance(camera, bool) or not isinstance(camera, (int, np.integer)) or camera < 0:
            raise CameraError(f"camera index must be a non-negative integer, got {camera!r}")
        return CameraSource(int(camera), width=width, height=height, fps=camera_fps,
                            stall_timeout=stall_timeout, on_stall=on_stall, max_retries=max_retries)
    if video is not None:
        if realtime or is_stream(video):
            return LiveVideoSource(video, fps, stall_timeout=stall_timeout, on_stall=on_stall,
                                   max_retries=max_retries)
        return VideoFileSource(video, fps)
    return ImageFolderSource(images, fps)
