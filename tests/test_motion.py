"""The motion signal (realtime/stages/motion.py): region maths by hand, then a real aligned face
animated by local warps (mouth corners, eyelids) and a global shift."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.face import MEAN_SHAPE_68, FaceAligner
from realtime.stages.motion import (
    REGIONS_224,
    SPOT_REGIONS,
    MotionSample,
    MotionSignal,
    head_translation,
    region_boxes,
    region_motion,
    region_motions,
    spotting_value,
)

# ----------------------------------------------------------------------------- maths by hand


def test_regions_sit_on_the_template_and_scale():
    lm = MEAN_SHAPE_68
    x0, y0, x1, y1 = REGIONS_224["mouth"]
    assert x0 < lm[48, 0] and lm[54, 0] < x1 and y0 < lm[51, 1] and lm[57, 1] < y1
    # the brow box stops above the eyelids, the nose reference sits on the bridge
    assert REGIONS_224["brows"][3] < lm[37:39, 1].min() - 5
    assert REGIONS_224["nose_ref"][0] < lm[28, 0] < REGIONS_224["nose_ref"][2]
    b112, b224 = region_boxes(112), region_boxes(224)
    assert b112["mouth"] == tuple(int(v) for v in np.array(b224["mouth"]) // 2) or \
        all(abs(a - b / 2) <= 1 for a, b in zip(b112["mouth"], b224["mouth"]))
    assert "eyes" not in SPOT_REGIONS


def test_head_translation_is_the_nose_median():
    flow = np.zeros((112, 112, 2), np.float32)
    flow[..., 0], flow[..., 1] = 1.5, -0.5
    flow[40, 55] = (50.0, 50.0)                            # one wrong vector: the median ignores it
    box = region_boxes(112)["nose_ref"]
    assert head_translation(flow, box) == pytest.approx([1.5, -0.5])


def test_region_motion_removes_the_head():
    flow = np.zeros((112, 112, 2), np.float32)
    flow[...] = (2.0, 0.0)                                 # the whole face moved 2 px right
    box = (10, 10, 20, 30)                                 # 10 x 20 = 200 px
    flow[10:20, 10:20] += (0.0, 3.0)                       # half the box also moved 3 px down
    head = np.array([2.0, 0.0], np.float32)
    assert region_motion(flow, box, head) == pytest.approx(1.5)   # (100 * 3 + 100 * 0) / 200


def test_region_motions_in_crop_pixels_and_spotting_value():
    flow = np.zeros((112, 112, 2), np.float32)
    boxes = region_boxes(112)
    x0, y0, x1, y1 = boxes["eyes"]
    flow[y0:y1, x0:x1] = (0.0, 1.0)                        # only the eyes move, by 1 flow px
    regions, head = region_motions(flow, boxes, scale=2.0)  # 112 -> 224: x2
    assert regions["eyes"] == pytest.approx(2.0)
    assert head == pytest.approx([0.0, 0.0]) and regions["nose_ref"] == 0.0
    assert spotting_value(regions) == pytest.approx(max(regions[n] for n in SPOT_REGIONS))
    assert spotting_value(regions) < 0.5 * regions["eyes"]


def test_dis_recovers_a_known_translation():
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(0, 255, (256, 256), dtype=np.uint8), (0, 0), 2.0)
    a = np.ascontiguousarray(tex[60:172, 60:172])
    b = np.ascontiguousarray(tex[60:172, 59:171])          # content moved 1 px right
    m = MotionSignal(200.0, blur_sigma=0.0)
    m.update(a)
    s = m.update(b)
    assert s.head[0] == pytest.approx(2.0, abs=0.3)        # 1 px at 112 = 2 px of the 224 crop
    assert abs(s.head[1]) < 0.3
    assert s.value < 0.3                                   # a pure shift leaves no local motion


# ----------------------------------------------------------------------------- a real face


@pytest.fixture(scope="module")
def face_crop(asset):
    img = cv2.imread(str(asset("single_face.jpg")))
    crops, _ = FaceAligner().align_sample([img])
    return crops[0]


def gaussian_field(anchors, sigma: float, size: int = 224) -> np.ndarray:
    """Displacement (H, W, 2) in crop px: sum of Gaussian bumps around (x, y) -> (dx, dy)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    field = np.zeros((size, size, 2), np.float32)
    for (x, y), (dx, dy) in anchors:
        g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
        field[..., 0] += g * dx
        field[..., 1] += g * dy
    return field


def warp(img, field, amount, shift=(0.0, 0.0)):
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mx = (xx - amount * field[..., 0] - shift[0]).astype(np.float32)
    my = (yy - amount * field[..., 1] - shift[1]).astype(np.float32)
    return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def animate(face, field, amplitude, shift=(0.0, 0.0), fps=200.0, noise=1.5, seed=0):
    """0.5 s neutral, then a 60 ms rise to the apex held for 40 ms: the samples."""
    rng = np.random.default_rng(seed)
    n_neutral, n_rise, n_hold = int(0.5 * fps), int(0.06 * fps), int(0.04 * fps)
    profile = np.concatenate([np.zeros(n_neutral), 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n_rise)),
                              np.ones(n_hold)])
    motion = MotionSignal(fps)
    samples = []
    for i, p in enumerate(profile):
        frame = warp(face, field, amplitude * p, (shift[0] * p, shift[1] * p))
        frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        samples.append(motion.update(frame, hold=i >= n_neutral))
    return samples[n_neutral - 50:n_neutral], samples[-n_hold:]


def rise(before: list[MotionSample], after: list[MotionSample], key: str) -> float:
    get = (lambda s: s.value) if key == "value" else (lambda s: s.regions[key])
    return float(np.mean([get(s) for s in after]) - np.mean([get(s) for s in before]))


LM = MEAN_SHAPE_68


def test_mouth_corners_raise_the_mouth_and_the_signal(face_crop):
    field = gaussian_field([((LM[48, 0], LM[48, 1]), (-0.7, -0.7)), ((LM[54, 0], LM[54, 1]), (0.7, -0.7))], 10.0)
    before, after = animate(face_crop, field, amplitude=2.5)
    assert rise(before, after, "mouth") > 0.2
    assert rise(before, after, "value") > 0.2
    assert rise(before, after, "mouth") > 3 * max(rise(before, after, "brows"), rise(before, after, "eyes"))


def test_eyelids_move_the_eyes_not_the_signal(face_crop):
    lids = [(((LM[37, 0] + LM[38, 0]) / 2, (LM[37, 1] + LM[38, 1]) / 2), (0.0, 1.0)),
            (((LM[43, 0] + LM[44, 0]) / 2, (LM[43, 1] + LM[44, 1]) / 2), (0.0, 1.0))]
    field = gaussian_field(lids, 4.0)
    before, after = animate(face_crop, field, amplitude=4.0)
    eyes = rise(before, after, "eyes")
    assert eyes > 0.3
    assert rise(before, after, "value") < 0.5 * eyes       # a blink barely reaches the spotting value


def test_global_shift_is_cancelled_by_the_nose_reference(face_crop):
    zero = np.zeros((224, 224, 2), np.float32)
    before, after = animate(face_crop, zero, 0.0, shift=(2.0, 1.0))
    assert np.mean([s.regions["nose_ref"] for s in after]) == pytest.approx(np.hypot(2.0, 1.0), abs=0.5)
    field = gaussian_field([((LM[48, 0], LM[48, 1]), (-0.7, -0.7)), ((LM[54, 0], LM[54, 1]), (0.7, -0.7))], 10.0)
    b2, a2 = animate(face_crop, field, amplitude=2.5)
    # a 2.2 px head shift moves the spotting value far less than a 2.5 px mouth movement
    assert rise(before, after, "value") < 0.5 * rise(b2, a2, "value")


# ----------------------------------------------------------------------------- the reference


def test_reference_lags_then_holds_then_restarts(face_crop):
    fps = 100.0
    m = MotionSignal(fps, ref_lag_ms=100)                  # 10 frames
    assert m.lag == 10
    first = m.update(face_crop)
    assert not first.ready and first.value == 0.0
    ages = [m.update(face_crop).ref_age for _ in range(20)]
    assert ages[-1] == 10 and ages[0] == 1                 # grows to the lag, then rolls
    held = [m.update(face_crop, hold=True) for _ in range(30)]
    assert [s.ref_age for s in held][-1] == 39 and all(s.held for s in held)   # frozen
    after = m.update(face_crop, hold=False)
    assert after.ref_age <= 1 and not after.held           # restarts at the event's end
    m.reset()
    assert not m.update(face_crop).ready


def test_timings_and_bad_input(face_crop):
    m = MotionSignal(30.0)
    m.update(face_crop)
    s = m.update(face_crop)
    assert {"flow", "total"} <= set(s.timings_ms) and s.timings_ms["total"] >= s.timings_ms["flow"]
    with pytest.raises(ValueError, match="square"):
        m.update(np.zeros((100, 120, 3), np.uint8))
    with pytest.raises(ValueError, match="fps"):
        MotionSignal(0)
    with pytest.raises(ValueError, match="spot_regions"):
        MotionSignal(30, spot_regions=("ears",))
