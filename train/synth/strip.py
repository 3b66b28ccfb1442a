"""A figure a person can look at: per class the aligned onset, apex, their difference and flow.

Owns ``make_strip`` (a PNG rendered from render_pair without camera nuisance, with a blink
distractor row) and the optical flow it draws (``dense_flow``: Farneback onset -> apex).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from core.face import CROP_SIZE
from core.protocols import DEMO_3
from train.synth.config import REF_FACE_WIDTH, SynthConfig
from train.synth.identities import load_still
from train.synth.pairs import render_pair
from train.synth.rig import au_string, face_rig, sample_aus


def dense_flow(onset_bgr: np.ndarray, apex_bgr: np.ndarray) -> np.ndarray:
    """Farneback optical flow onset -> apex on grey crops: (H, W, 2) in pixels."""
    a, b = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (onset_bgr, apex_bgr))
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 5, 5, 1.1, 0)


def _label_tile(text_lines: Sequence[str], size: tuple[int, int]) -> np.ndarray:
    w, h = size
    tile = np.full((h, w, 3), 255, np.uint8)
    y = h // 2 - 12 * (len(text_lines) - 1)
    for k, line in enumerate(text_lines):
        scale, thick = (0.6, 2) if k == 0 else (0.45, 1)
        cv2.putText(tile, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
        y += 24
    return tile


def _flow_tile(onset: np.ndarray, flow: np.ndarray, gain: float = 6.0, step: int = 12) -> np.ndarray:
    tile = (onset.astype(np.float32) * 0.5 + 64).astype(np.uint8)
    mag = np.linalg.norm(flow, axis=2)
    for y in range(step // 2, tile.shape[0], step):
        for x in range(step // 2, tile.shape[1], step):
            if mag[y, x] > 0.3:
                dx, dy = flow[y, x] * gain
                cv2.arrowedLine(tile, (x, y), (int(round(x + dx)), int(round(y + dy))), (0, 255, 255), 1,
                                cv2.LINE_AA, tipLength=0.3)
    return tile


def make_strip(path: str | Path = "docs/synth_strip.png", identity: str = "sample_video", seed: int = 0,
               amplitude: float = 3.0, diff_gain: float = 8.0) -> Path:
    """PNG: per class (and a blink distractor) the aligned onset, apex, amplified signed
    difference (grey = no change) and the onset -> apex optical flow (arrows x6). Rendered
    without camera nuisance so only the expression shows."""
    cfg = SynthConfig.clean()
    still = load_still(identity)
    rows_spec = [(label, None, amplitude) for label in DEMO_3]
    blink_amp = 0.9 * face_rig(identity).eye_opening * REF_FACE_WIDTH / still.face_width
    rows_spec.append(("blink", (("AU45", 1.0),), blink_amp))
    tile, label_w, head_h = CROP_SIZE, 170, 30
    header = np.full((head_h, label_w + 4 * tile, 3), 255, np.uint8)
    for k, title in enumerate(("onset", "apex", f"apex - onset x{diff_gain:g}", "flow (arrows x6)")):
        cv2.putText(header, title, (label_w + k * tile + 8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                    cv2.LINE_AA)
    rows = [header]
    for i, (name, aus, amp) in enumerate(rows_spec):
        label = name if name in DEMO_3 else "negative"   # blink: AUs given, the label is unused
        aus = aus or sample_aus(name, np.random.default_rng([seed, i]))
        pair = render_pair(identity, label, "micro", seed=[seed, i], config=cfg, amplitude=amp, aus=aus)
        diff = pair.apex_crop.astype(np.float32) - pair.onset_crop.astype(np.float32)
        diff_img = np.clip(128 + diff_gain * diff.mean(2, keepdims=True), 0, 255).astype(np.uint8).repeat(3, 2)
        flow = dense_flow(pair.onset_crop, pair.apex_crop)
        text = [name if name in DEMO_3 else "blink (distractor)", au_string(pair.aus),
                f"{amp:.1f} px at jaw width {REF_FACE_WIDTH:.0f}"]
        rows.append(np.hstack([_label_tile(text, (label_w, tile)), pair.onset_crop, pair.apex_crop, diff_img,
                               _flow_tile(pair.onset_crop, flow)]))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"{out}: could not write the PNG; check the folder is writable")
    return out
