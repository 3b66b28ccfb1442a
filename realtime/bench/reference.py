"""The reference loop: a frozen yardstick of the machine's speed at the time of a run.

Shared machines vary from minute to minute, so every benchmark report also times this
plain loop (dlib 68 landmarks in a fixed box + 112x112 alignment warp + DIS ultrafast
optical flow, per decoded frame) on the warm-up frames. Its code is FROZEN: it must stay
exactly as it is, so that its frames/s compare between machines and between runs of any
version of the project; a faster pipeline must never make the yardstick faster. Do not
optimise it, refactor it or share its code with the live path.
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from core.face import alignment_transform, to_gray


def reference_loop(frames: list[np.ndarray], landmarks, box) -> dict:
    """A plain loop as a yardstick of the machine's speed right now (shared machines vary):
    dlib 68 landmarks in a fixed box + DIS ultrafast optical flow between consecutive
    112x112 aligned grey crops, per decoded frame (REALTIME.md's measured stage costs).
    Frozen (see the module docstring): keep this code exactly as it is."""
    if len(frames) < 3 or box is None:
        return {"fps": None, "frames": len(frames), "what": "no face in the warm-up frames"}
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    prev = None
    t0 = time.perf_counter()
    for img in frames:
        gray = to_gray(img)
        lm = landmarks(gray, box)
        crop = cv2.warpAffine(gray, alignment_transform(lm, 112), (112, 112), flags=cv2.INTER_LINEAR)
        if prev is not None:
            dis.calc(prev, crop, None)
        prev = crop
    dt = time.perf_counter() - t0
    return {"fps": round(len(frames) / dt, 1), "ms_per_frame": round(dt / len(frames) * 1e3, 3),
            "frames": len(frames),
            "what": "dlib 68 landmarks (fixed box) + 112x112 alignment warp + DIS ultrafast flow per decoded frame"}
