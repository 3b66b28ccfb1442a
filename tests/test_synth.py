"""Synthetic micro-expressions (train/synth/): the warps are where the ground truth says,
timing obeys the ME limits, output is deterministic, pairs are aligned like real data and
move in each class's direction, identities are split by person.

Motion is measured here independently of the generator: frame differences and OpenCV
optical flow inside the face box that dlib finds on the first frame.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from core.events import TRUTH_KINDS, expression_kind, read_ground_truth
from core.face import MEAN_SHAPE_68, DlibDetector, FaceAligner, dlib_predictor_path, transform_points
from train import synth
from core.protocols import DEMO_3
from train.synth import EventSpec, SynthConfig
from train.synth.identities import _face_models
from train.synth.track_render import _render_tracks

STATIC_CAMERA = SynthConfig(drift_px=0.0, drift_deg=0.0, drift_scale=0.0, light_drift=0.0, flicker=0.0)


def face_region(frame: np.ndarray) -> tuple[int, int, int, int]:
    box = DlibDetector(upsample=1).detect(frame)[0]
    h = box.height
    return int(box.left), int(max(0, box.top - 0.3 * h)), int(box.right), int(box.bottom + 0.1 * h)


def grey_regions(frames, region):
    x0, y0, x1, y1 = region
    return [cv2.cvtColor(f[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY) for f in frames]


def event_mask(n, truths, before=0, after=0):
    inside = np.zeros(n, bool)
    for t in truths:
        inside[max(0, t.onset_frame - before):t.offset_frame + after + 1] = True
    return inside


# --------------------------------------------------------------------------- identities

def test_split_is_by_person_and_disjoint():
    train, ev = synth.train_identities(), synth.eval_identities()
    assert train and ev and not set(train) & set(ev)
    persons = lambda names: {synth.IDENTITIES[n].person for n in names}  # noqa: E731
    assert not persons(train) & persons(ev)
    # the live demo's sample video (and the photo of the same man) are unseen faces
    assert {"sample_video", "sample_photo"} <= set(ev)
    assert set(train) | set(ev) == set(synth.IDENTITIES)
    assert synth.identities_for("train") == train and synth.identities_for("eval") == ev
    with pytest.raises(ValueError, match="unknown identity"):
        synth.identities_for("nobody")


def test_one_face_per_still_and_same_person_check():
    """Each still holds exactly one detectable face; dlib's face descriptor puts the sample
    photo and video frame together (< 0.6) and every train face far from every eval face."""
    import dlib

    rec = dlib.face_recognition_model_v1(str(dlib_predictor_path().parent / "dlib_face_recognition_resnet_model_v1.dat"))
    det = DlibDetector(upsample=1)
    desc = {}
    for name, ident in synth.IDENTITIES.items():
        img = ident()
        boxes = det.detect(img)
        assert len(boxes) == 1, f"{name}: {len(boxes)} faces"
        still = synth.load_still(name)
        rgb = np.ascontiguousarray(cv2.cvtColor(still.image, cv2.COLOR_BGR2RGB))
        shape = dlib.full_object_detection(still.box.to_dlib(), [dlib.point(int(x), int(y)) for x, y in still.landmarks])
        desc[name] = np.array(rec.compute_face_descriptor(rgb, shape))
    assert np.linalg.norm(desc["sample_photo"] - desc["sample_video"]) < 0.6
    cross = [np.linalg.norm(desc[a] - desc[b]) for a in synth.train_identities() for b in synth.eval_identities()]
    assert min(cross) > 0.6


# --------------------------------------------------------------------------- timing

@pytest.mark.parametrize("fps", [200, 100, 30, 25])
def test_ground_truth_timing_limits(fps):
    cfg = SynthConfig()
    n = int(60 * fps)
    plans = synth.schedule_events(n, fps, np.random.default_rng(fps), "mixed", cfg)
    plans += synth.schedule_events(n, fps, np.random.default_rng(fps + 1), "distractors", cfg)
    kinds = {p.kind for p in plans}
    assert kinds == {"micro", "macro", "blink"}
    for p in plans:
        t = p.truth(fps)
        total, rise = (t.offset_frame - t.onset_frame) / fps, (t.apex_frame - t.onset_frame) / fps
        assert t.onset_frame < t.apex_frame < t.offset_frame
        if p.kind == "micro":
            assert total < 0.5 and 0.04 <= rise <= 0.25 + 1e-9, (total, rise)
            assert t.label in DEMO_3
        elif p.kind == "macro":
            assert total > 0.5 and t.label in DEMO_3
        else:
            assert 0.1 - 1e-9 <= total <= 0.3 + 1e-9 and t.label is None and t.au == "AU45"
    for plans_ in (synth.schedule_events(n, fps, np.random.default_rng(7), m, cfg) for m in ("mixed", "micro")):
        assert plans_[0].onset_frame >= fps * synth.LEAD_IN_S
        for a, b in zip(plans_, plans_[1:]):
            assert b.onset_frame - a.offset_frame >= fps * synth.MIN_GAP_S
        assert plans_[-1].offset_frame < n


def test_distractor_and_none_modes():
    rng = np.random.default_rng(0)
    assert {p.kind for p in synth.schedule_events(6000, 200, rng, "distractors")} <= {"macro", "blink"}
    assert synth.schedule_events(6000, 200, rng, "none") == []
    assert {p.kind for p in synth.schedule_events(6000, 200, rng, "micro")} == {"micro"}
    with pytest.raises(ValueError, match="neutral at the start"):
        synth.schedule_events(1000, 200, rng, [EventSpec("micro", "positive", onset_t=0.5)])


def test_envelope_is_smooth_profile():
    f = np.arange(0, 40)
    env = synth.raised_cosine_envelope(f, 10, 20, 0, 35)
    assert env[:11].max() == 0 and env[35:].max() == 0 and env[20] == 1
    assert np.all(np.diff(env[10:21]) > 0) and np.all(np.diff(env[20:36]) < 0)


# --------------------------------------------------------------------------- clips

def test_clip_motion_peaks_at_labelled_apex():
    """Static camera (noise and JPEG on): the difference from the first frame peaks within a
    few frames of each labelled apex and stays at noise level outside every event."""
    specs = [EventSpec("micro", "positive", 1.1, 2.0), EventSpec("blink", None, 2.65),
             EventSpec("micro", "surprise", 3.95, 2.0)]
    frames, truths = synth.make_clip("sample_video", 200, 4.6, specs, (640, 480), seed=1, config=STATIC_CAMERA)
    frames = list(frames)
    assert len(frames) == 920 and frames[0].shape == (480, 640, 3)
    assert [t.kind for t in truths] == ["micro", "blink", "micro"]
    g = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), 1.5) for x in grey_regions(frames, face_region(frames[0]))]
    motion = np.array([np.percentile(np.abs(x - g[0]), 98) for x in g])
    outside = ~event_mask(len(frames), truths, before=1, after=1)
    noise = motion[outside][1:]
    for t in truths:
        seg = motion[t.onset_frame:t.offset_frame + 1]
        assert abs(t.onset_frame + int(seg.argmax()) - t.apex_frame) <= 3, t
        assert seg.max() > 2 * noise.max(), (t, seg.max(), noise.max())
    assert noise.max() < 2 * np.median(noise)


def test_clip_with_camera_nuisance_at_30fps():
    """Default nuisance (drift, roll, flicker, noise, JPEG) at 30 fps: optical flow between
    frames 100 ms apart, minus the median (head) motion, is high in every event only."""
    specs = [EventSpec("micro", "negative", 1.2, 3.0), EventSpec("macro", "positive", 2.8, 5.0),
             EventSpec("micro", "surprise", 6.1, 3.0)]
    frames, truths = synth.make_clip("group_back", 30, 7.0, specs, (640, 480), seed=3)
    frames = list(frames)
    assert truths[1].kind == "macro" and (truths[1].offset_frame - truths[1].onset_frame) / 30 > 0.5
    g = grey_regions(frames, face_region(frames[0]))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    k = 3
    motion = np.zeros(len(g))
    for i in range(k, len(g)):
        flow = dis.calc(g[i - k], g[i], None)
        motion[i] = np.percentile(np.linalg.norm(flow - np.median(flow.reshape(-1, 2), 0), axis=2), 98)
    quiet = ~event_mask(len(g), truths, after=k)
    quiet[:k] = False
    for t in truths:
        assert motion[t.onset_frame:t.offset_frame + k + 1].max() > 1.5 * motion[quiet].max(), t
    # the head does drift: frames drift apart from the first one even when no event runs
    still_diff = [np.abs(g[i].astype(np.float32) - g[0]).mean() for i in np.flatnonzero(quiet)]
    assert max(still_diff) > 1.5 * min(still_diff)


def test_clip_is_deterministic():
    def first(seed, n=30, start=190):
        frames, truths = synth.make_clip("sample_photo", 200, 3.0, "micro", (320, 240), seed=seed)
        out = [f for i, f in zip(range(start + n), frames) if i >= start]
        return out, truths

    a, ta = first(5)
    b, tb = first(5)
    c, tc = first(6)
    assert [t.to_dict() for t in ta] == [t.to_dict() for t in tb]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [t.to_dict() for t in ta] != [t.to_dict() for t in tc] or not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0], c[0])


def test_write_clip_round_trips(tmp_path):
    video, gt, truths = synth.write_clip(tmp_path / "c.avi", "group_left", fps=200, seconds=2.5,
                                         events=[EventSpec("micro", "negative", 1.2)], size=(320, 240), seed=2)
    cap = cv2.VideoCapture(str(video))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(200)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 500
    back = read_ground_truth(gt)
    assert [t.to_dict() for t in back] == [t.to_dict() for t in truths]
    assert back[0].source == "c.avi" and back[0].kind == "micro" and back[0].label == "negative"
    row = json.loads(gt.read_text().splitlines()[0])
    assert {"onset_frame", "apex_frame", "offset_frame", "kind", "label", "fps", "onset_t", "apex_t",
            "offset_t"} <= row.keys()


# --------------------------------------------------------------------------- pairs

def test_pairs_cache(tmp_path):
    rows = synth.make_pairs("train", 2, seed=0, out_dir=tmp_path, macro_per_class=1, progress=False)
    assert len(rows) == 9
    with open(tmp_path / "index.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == synth.CACHE_COLUMNS
        table = list(reader)
    persons = {synth.IDENTITIES[n].person for n in synth.train_identities()}
    for r in table:
        assert r["dataset"] == "synth" and r["subject"].startswith("synth/")
        assert r["subject"].split("/", 1)[1] in persons
        assert r["raw_label"] in DEMO_3 and r["kind"] in ("micro", "macro")
        for key in ("onset_path", "apex_path"):
            img = cv2.imread(str(tmp_path / r[key]))
            assert img is not None and img.shape == (224, 224, 3)
    assert {r["raw_label"] for r in table} == set(DEMO_3)
    assert {r["kind"] for r in table} == {"micro", "macro"}
    from train.cache import load_pair, read_cache

    df = read_cache(tmp_path)
    assert len(df) == 9 and set(df["dataset"]) == {"synth"}
    onset, apex = load_pair(tmp_path, df.iloc[0])
    assert onset.shape == apex.shape == (224, 224, 3) and onset.dtype == np.uint8
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["dataset"] == "synth" and meta["alignment"]["crop_size"] == 224 and len(meta["key"]) == 16
    again = synth.make_pairs("train", 2, seed=0, out_dir=tmp_path / "again", macro_per_class=1, progress=False)
    assert again == rows
    assert np.array_equal(cv2.imread(str(tmp_path / rows[0]["apex_path"])),
                          cv2.imread(str(tmp_path / "again" / rows[0]["apex_path"])))
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "meta.json").write_text(json.dumps({"key": "abc", "settings": {}}))
    with pytest.raises(ValueError, match="another crop cache"):
        synth.make_pairs("train", 1, out_dir=tmp_path / "real", progress=False)


def _crop_disagreement(m_ours: np.ndarray, m_ref: np.ndarray) -> float:
    """Mean distance, in crop pixels, between where the two transforms put the same face."""
    q = MEAN_SHAPE_68.astype(np.float64)
    return float(np.linalg.norm(transform_points(transform_points(q, cv2.invertAffineTransform(m_ref)), m_ours) - q,
                                axis=1).mean())


def test_pair_alignment_matches_face_aligner():
    """The crop transform is the one FaceAligner computes on the onset frame: exactly with
    align="detect", within about a pixel (dlib's own jitter) with the fast "carry"."""
    aligner = FaceAligner()
    errs = []
    for i, name in enumerate(["sample_video", "sample_photo", "group_back", "group_left"]):
        pair = synth.render_pair(name, DEMO_3[i % 3], "micro", seed=[11, i], full_frame=(i == 0))
        errs.append(_crop_disagreement(pair.transform, aligner.transform_of(pair.onset)))
    assert np.mean(errs) < 1.0 and max(errs) < 1.5, errs
    pair = synth.render_pair("astronaut", "positive", "micro", seed=3, align="detect")
    assert np.allclose(pair.transform, aligner.transform_of(pair.onset))
    assert np.array_equal(pair.onset_crop, cv2.warpAffine(pair.onset, pair.transform, (224, 224),
                                                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


def _region_flow(flow: np.ndarray, points, r: int = 6) -> np.ndarray:
    """Mean flow in a (2r+1)^2 window around each template point (crop coordinates)."""
    out = []
    for x, y in np.round(MEAN_SHAPE_68[list(points)]).astype(int):
        out.append(flow[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 2).mean(0))
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_class_motion_direction_on_aligned_pairs(seed):
    """Farneback flow onset -> apex on aligned crops: positive moves the mouth corners up and
    out, negative the inner brows down and together, surprise the brows up."""
    cfg = SynthConfig.clean(pair_pose_deg=8.0, pair_mirror_p=0.5)
    flows = {}
    for label, aus in (("positive", [("AU12", 1.0)]), ("negative", [("AU4", 1.0)]),
                       ("surprise", [("AU1", 1.0), ("AU2", 1.0)])):
        pair = synth.render_pair("sample_video", label, "micro", seed=[seed, 5], config=cfg, amplitude=3.0, aus=aus)
        a, b = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (pair.onset_crop, pair.apex_crop))
        flows[label] = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 5, 5, 1.1, 0)
    left, right = _region_flow(flows["positive"], (48, 54))       # image-left / image-right mouth corner
    assert left[1] < -0.5 and right[1] < -0.5                      # up
    assert left[0] < -0.2 and right[0] > 0.2                       # out
    inner_l, inner_r = _region_flow(flows["negative"], (21, 22))
    assert inner_l[1] > 0.4 and inner_r[1] > 0.4                   # down
    assert inner_l[0] > 0.2 and inner_r[0] < -0.2                  # together
    brows = _region_flow(flows["surprise"], range(17, 27))
    assert np.all(brows[:, 1] < -0.4)                              # up
    mouth = _region_flow(flows["surprise"], (48, 54, 57))
    assert np.abs(mouth).max() < 0.25                              # nothing else moves


# --------------------------------------------------------------------------- CLI

def test_cli_help_and_strip(tmp_path):
    out = subprocess.run([sys.executable, "-m", "train.synth", "--help"], capture_output=True, text=True, check=True)
    for word in ("clip", "clips", "pairs", "strip", "examples:"):
        assert word in out.stdout
    png = tmp_path / "strip.png"
    synth.main(["strip", "--out", str(png)])
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 4 * 224 and img.shape[1] > 4 * 224


def test_cli_clips_writes_manifest(tmp_path):
    synth.main(["clips", "--split", "eval", "--n", "2", "--distractor-only", "1", "--fps", "30", "--seconds", "3",
                "--size", "320x240", "--out", str(tmp_path)])
    with open(tmp_path / "clips.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["events"] for r in rows] == ["mixed", "distractors"]
    assert all(r["split"] == "eval" for r in rows)
    kinds = {t.kind for t in read_ground_truth(tmp_path / rows[1]["ground_truth"])}
    assert kinds <= {"macro", "blink"}


@pytest.mark.slow
def test_ten_second_200fps_clip_is_fast():
    synth.load_still("sample_video")
    t0 = time.process_time()
    frames, _ = synth.make_clip("sample_video", 200, 10.0, "mixed", (640, 480), seed=0)
    n = sum(1 for _ in frames)
    cpu = time.process_time() - t0
    print(f"10 s at 200 fps, 640x480: {n} frames in {cpu:.1f} s CPU")
    assert n == 2000 and cpu < 30


# --------------------------------------------------------------------------- the hard set

HARD_DISTRACTORS = ("blink", "wink", "gaze", "speech", "head", "light")


def _assert_expression_rule(truths):
    """Every expression's kind is what the one micro/macro rule says (core.events)."""
    for t in truths:
        if t.kind in ("micro", "macro"):
            assert expression_kind(t.onset_t, t.apex_t, t.offset_t) == t.kind, t


@pytest.mark.parametrize("fps", [30, 200])
def test_ground_truth_obeys_the_micro_macro_rule_in_every_set(fps):
    cfg = SynthConfig()
    n = int(60 * fps)
    for mode in ("mixed", "distractors", "micro"):
        _assert_expression_rule([p.truth(fps) for p in synth.schedule_events(n, fps, np.random.default_rng(fps), mode,
                                                                               cfg)])
    for seed in range(4):
        tracks, _ = synth.schedule_hard("sample_video", int(20 * fps), fps, np.random.default_rng(seed))
        _assert_expression_rule([t.truth(fps) for t in tracks])
        _, truths, _ = synth.make_sequence("group_back", fps, seed)
        _assert_expression_rule(truths)


def _overlaps(a, b) -> bool:
    return a.onset_frame <= b.offset_frame and b.onset_frame <= a.offset_frame


@pytest.mark.parametrize("fps", [30, 60, 100, 200])
def test_hard_schedule_holds_every_kind(fps):
    """20 s hard clips: every new kind is there (light when asked), an expression, speech or
    a head turn from frame 0, macro-expressions held >= 1 s, MEs in speech pauses and
    clear of every other event, log-spread ME amplitudes."""
    n = int(20 * fps)
    starts, me_in_pause, amps = set(), 0, []
    for seed in range(6):
        light = seed % 2 == 1
        tracks, start = synth.schedule_hard("sample_video", n, fps, np.random.default_rng([seed, 11]), light=light)
        truths = [t.truth(fps) for t in tracks]
        kinds = {t.kind for t in truths}
        assert {"micro", "macro", "blink", "wink", "gaze", "speech", "head"} <= kinds, (seed, kinds)
        assert ("light" in kinds) == light
        assert kinds <= set(TRUTH_KINDS)
        starts.add(start)
        if start != "head":
            assert min(t.onset_frame for t in truths if t.kind in ("speech", "macro")) == 0
        else:
            assert any(t.kind == "head" and t.onset_frame == 0 for t in truths)
        assert any(t.kind == "macro" and t.offset_t - t.onset_t >= 1.0 for t in truths)
        assert all(0 <= t.onset_frame < t.offset_frame < n for t in truths)
        micro = [t for t in truths if t.kind == "micro"]
        speech = [t for t in truths if t.kind == "speech"]
        assert len(micro) >= 3
        for m in micro:
            assert m.amplitude > 0 and m.label in DEMO_3
            assert not any(_overlaps(m, o) for o in truths if o is not m), m
            if any(0 < m.onset_frame - s.offset_frame <= 1.0 * fps for s in speech):
                me_in_pause += 1
            clear = synth.HardConfig().me_clear_s * fps - 1                  # nothing else close to an ME
            assert all(o.onset_frame - m.offset_frame >= clear or m.onset_frame - o.offset_frame >= clear
                       for o in truths if o is not m), m
            amps.append(m.amplitude)
        for t in truths:
            if t.kind in ("speech", "head", "gaze", "wink", "blink", "light"):
                assert t.label is None and t.amplitude > 0
    assert starts >= {"speech", "macro"}
    assert me_in_pause >= 6
    assert max(amps) / min(amps) > 5          # tiny to clear


def test_hard_distractor_tracks_have_the_right_shape():
    fps = 200
    hc = synth.HardConfig()
    sc = synth.face_scale("sample_video")
    rng = np.random.default_rng(0)
    for _ in range(20):
        sp = synth.speech_track(0, 4 * fps, fps, rng, hc, sc)
        assert sp is not None and sp.kind == "speech" and 0.3 <= sp.offset_frame / fps <= 4.0
        opening = sp.curves["open"]
        # syllables: the jaw opens and closes 3-6 times a second, irregularly
        rises = np.flatnonzero((opening[1:] > 0.5 * opening.max()) & (opening[:-1] <= 0.5 * opening.max()))
        rate = len(rises) / (sp.offset_frame / fps)
        assert 1.0 <= rate <= 7.0, rate
        head = synth.head_track(0, fps, rng, hc, sc)
        assert 0.3 <= head.offset_frame / fps <= 1.5 + 1e-9 and head.au in ("AU51", "AU52", "AU54", "AU54+AU53")
        light = synth.light_track(0, fps, rng, hc)
        assert 0.5 <= light.offset_frame / fps <= 2.0 + 1e-9 and 0.1 <= light.amplitude <= 0.3
        wink = synth.eye_track("wink", 0, fps, rng, hc, sc)
        assert wink.sides in ((1.0, 0.0), (0.0, 1.0)) and wink.au == "AU46"
        gaze = synth.gaze_track(0, fps, rng, hc, sc)
        assert 0.4 <= gaze.offset_frame / fps <= 2.5 + 1e-9 and gaze.au in ("AU61", "AU62")
        for style in synth.MACRO_STYLES:
            m = synth.macro_track(style, 0, fps, rng, hc, sc, long=True)
            t = m.truth(fps)
            assert t.kind == "macro" and t.offset_t - t.onset_t >= 1.0
            assert (t.label is None) == (style == "yawn")


def _region_change(frames, k, lm, points, pad=6):
    x0, y0 = (lm[points].min(0) - pad).astype(int)
    x1, y1 = (lm[points].max(0) + pad).astype(int)
    a = frames[0][y0:y1, x0:x1].astype(np.float32)
    b = frames[k][y0:y1, x0:x1].astype(np.float32)
    return float(np.abs(a - b).mean())


def test_hard_tracks_move_what_they_should():
    """Rendered without camera nuisance, each distractor changes its own part of the face:
    a blink both eyes, a wink one, a gaze shift the eyes only, speech the mouth, a light
    sweep the brightness, a head turn everything."""
    fps = 30
    hc = synth.HardConfig()
    sc = synth.face_scale("sample_video")
    rng = np.random.default_rng(1)
    gap = 40
    tracks = [synth.eye_track("blink", 0, fps, rng, hc, sc), synth.eye_track("wink", 0, fps, rng, hc, sc),
              synth.gaze_track(0, fps, rng, hc, sc), synth.speech_track(0, 60, fps, rng, hc, sc),
              synth.head_track(0, fps, rng, hc, sc, "turn"), synth.light_track(0, fps, rng, hc)]
    at = 5
    placed = []
    for t in tracks:
        placed.append(dataclasses.replace(t, onset_frame=at, apex_frame=t.apex_frame + at,
                                          offset_frame=t.offset_frame + at))
        at = placed[-1].offset_frame + gap
    cam = synth.SynthConfig.clean()
    frames = list(_render_tracks("sample_video", placed, at, fps, (320, 240), 0, cam, 0.0, (0.0, 0.0), 0.0))
    lm = _face_models()[1](frames[0], _face_models()[0].detect(frames[0])[0])
    left_eye, right_eye = list(range(36, 42)), list(range(42, 48))
    mouth, brows = list(range(48, 68)), list(range(17, 27))
    blink, wink, gaze, speech, head, light = placed
    ch = lambda t, pts: _region_change(frames, t.apex_frame, lm, pts)  # noqa: E731
    assert min(ch(blink, left_eye), ch(blink, right_eye)) > 3 * ch(blink, mouth)
    assert max(ch(wink, left_eye), ch(wink, right_eye)) > 3 * min(ch(wink, left_eye), ch(wink, right_eye))
    assert min(ch(gaze, left_eye), ch(gaze, right_eye)) > 3 * max(ch(gaze, mouth), 0.2)
    assert ch(speech, mouth) > 3 * max(ch(speech, left_eye), ch(speech, right_eye), 0.2)
    assert min(ch(head, pts) for pts in (left_eye, right_eye, mouth, brows)) > 2.0
    face = lm.min(0).astype(int), lm.max(0).astype(int)
    mean = lambda k: frames[k][face[0][1]:face[1][1], face[0][0]:face[1][0]].mean()  # noqa: E731
    assert abs(mean(light.apex_frame) / mean(0) - 1) > 0.04
    for t in placed:                           # back to the still after each event
        assert _region_change(frames, t.offset_frame + 2, lm, list(range(68))) < 0.5


def test_hard_clip_is_deterministic():
    def first(seed, n=20):
        frames, truths, info = synth.make_hard_clip("sample_photo", 30, 4.0, "hard", (160, 120), seed=seed)
        return [f for _, f in zip(range(n), frames)], truths, info

    a, ta, ia = first(5)
    b, tb, ib = first(5)
    c, tc, _ = first(6)
    assert [t.to_dict() for t in ta] == [t.to_dict() for t in tb] and ia == ib
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [t.to_dict() for t in ta] != [t.to_dict() for t in tc]
    assert not np.array_equal(a[3], c[3])


def test_cli_hard_set_and_distractor_only_clips(tmp_path):
    synth.main(["clips", "--set", "hard", "--split", "eval", "--n", "3", "--distractor-only", "2", "--fps", "30",
                "--seconds", "5", "--size", "160x120", "--seed", "2", "--out", str(tmp_path)])
    with open(tmp_path / "clips.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["clip_type"] for r in rows] == ["hard", "talking", "lighting"]
    assert all(r["set"] == "hard" and r["split"] == "eval" for r in rows)
    assert {f"n_{k}" for k in TRUTH_KINDS} <= rows[0].keys()
    for r in rows:
        truths = read_ground_truth(tmp_path / r["ground_truth"])
        kinds = [t.kind for t in truths]
        for k in TRUTH_KINDS:
            assert int(r[f"n_{k}"]) == kinds.count(k)
        _assert_expression_rule(truths)
        cap = cv2.VideoCapture(str(tmp_path / r["video"]))
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 150
    talking = {t.kind for t in read_ground_truth(tmp_path / rows[1]["ground_truth"])}
    lighting = {t.kind for t in read_ground_truth(tmp_path / rows[2]["ground_truth"])}
    assert "speech" in talking and talking <= {"speech", "blink"}
    assert lighting == {"light"}
    # and over longer clips: never an expression in a distractor-only clip
    for seed in range(5):
        for clip_type, allowed in (("talking", {"speech", "blink"}), ("lighting", {"light"})):
            tracks, _ = synth.schedule_hard("group_back", 20 * 30, 30, np.random.default_rng(seed), clip_type)
            assert {t.kind for t in tracks} <= allowed and tracks


def test_ground_truth_amplitude_is_optional():
    from core.events import GroundTruth

    old = GroundTruth(1, 2, 3, "micro", "positive", 30.0)
    assert "amplitude" not in old.to_dict()              # files written before it read back unchanged
    new = GroundTruth.from_dict({**old.to_dict(), "kind": "speech", "label": None, "amplitude": 1.5})
    assert new.to_dict()["amplitude"] == 1.5
    with pytest.raises(ValueError):
        GroundTruth(1, 2, 3, "sneeze", None, 30.0)
    with pytest.raises(ValueError):
        GroundTruth(1, 2, 3, "light", None, 30.0, amplitude=-1.0)


# --------------------------------------------------------------------------- sequences

def test_sequence_schedule():
    """One ME per sequence, onset within the first 300 ms (some at 30-100 ms), 0.3-2 s long."""
    early = 0
    for seed in range(60):
        _, truths, n = synth.make_sequence("sample_video", 200, seed)
        assert len(truths) == 1
        t = truths[0]
        assert t.kind == "micro" and t.label in DEMO_3 and t.amplitude > 0
        assert 0.03 - 1e-9 <= t.onset_t <= 0.3 + 1e-9
        early += t.onset_t <= 0.1
        assert 0.3 - 1e-9 <= n / 200 <= 2.0 + 1e-9 and t.offset_frame < n
    assert 5 <= early <= 40


def test_write_sequences(tmp_path):
    from realtime.stages.sources import ImageFolderSource

    rows = synth.write_sequences(tmp_path, 2, fps=200, seed=1, size=(160, 120))
    with open(tmp_path / "sequences.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["folder"] for r in table] == ["seq_000", "seq_001"] and len(rows) == 2
    for r in table:
        folder = tmp_path / r["folder"]
        files = sorted(folder.glob("img*.jpg"))
        assert len(files) == int(r["frames"]) and files[0].name == "img0001.jpg"
        src = ImageFolderSource(folder, 200)
        assert [f.name for f in src.files] == [f.name for f in files]      # read in order
        truths = read_ground_truth(tmp_path / f"{r['folder']}.gt.jsonl")
        assert len(truths) == 1 and truths[0].kind == "micro" and truths[0].onset_t <= 0.3
        assert truths[0].offset_frame < len(files) and truths[0].source == r["folder"]
    # rewriting with other settings leaves no stale frame behind
    synth.write_sequences(tmp_path, 1, fps=200, seed=7, size=(160, 120))
    _, _, n = synth.make_sequence(synth.eval_identities()[0], 200, 7 * 10007)
    assert len(list((tmp_path / "seq_000").glob("img*.jpg"))) == n


# --------------------------------------------------------------------------- the standard set

def _clip_digest(mode, identity, fps, seconds, seed):
    import hashlib

    frames, truths = synth.make_clip(identity, fps, seconds, mode, (160, 120), seed=seed)
    h = hashlib.sha256()
    for f in frames:
        h.update(f.tobytes())
    g = hashlib.sha256("\n".join(json.dumps(t.to_dict(), separators=(",", ":")) for t in truths).encode())
    return h.hexdigest()[:16], g.hexdigest()[:16]


@pytest.mark.parametrize("args, expected", [
    (("mixed", "sample_photo", 30, 6.0, 3), ("a56378b008384577", "4547a28fa4061b09")),
    (("distractors", "group_back", 60, 5.0, 4), ("8068126ecebc6e48", "c9b46dc0b506ebbe")),
])
def test_standard_set_is_unchanged(args, expected):
    """The standard clips and their ground truth are byte-identical to the generator's before
    the hard set was added (digests of its output; opencv-contrib-python is pinned)."""
    assert _clip_digest(*args) == expected
