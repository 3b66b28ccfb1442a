"""The shared face module on the bundled real faces (DATASETS.md, "Alignment"):
detectors, the BlazeFace -> HOG box mapping, the 468-point mesh, and alignment."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from core import face, native
from core.face import (
    ALIGN_INDICES, BLAZEFACE_TO_HOG, CROP_SIZE, MEAN_SHAPE_68, MIRROR_68, TEMPLATE_5, BoxMapping, DlibDetector,
    FaceAligner, FaceBox, FaceMesh, FaceModelError, Landmarks68, MediaPipeDetector, NoFaceError,
    alignment_transform, box_from_landmarks, landmark_error, shape_residual, square_tiles, transform_points,
    warp_face,
)


def read_frames(path, every: int = 1) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            frames.append(frame)
        i += 1
    cap.release()
    assert frames, f"could not decode {path}"
    return frames


@pytest.fixture(scope="module")
def hog():
    return DlibDetector(upsample=1)


@pytest.fixture(scope="module")
def blaze():
    det = MediaPipeDetector()
    yield det
    det.close()


@pytest.fixture(scope="module")
def lm68():
    return Landmarks68()


@pytest.fixture(scope="module")
def mesh():
    return FaceMesh()


@pytest.fixture(scope="module")
def aligner(hog, lm68):
    """The training aligner (HOG upsample 1 + dlib 68 points), models shared."""
    return FaceAligner(hog, lm68)


@pytest.fixture(scope="module")
def single(asset):
    return cv2.imread(str(asset("single_face.jpg")))


@pytest.fixture(scope="module")
def multi(asset):
    return cv2.imread(str(asset("multi_face.jpg")))


def paired_faces(hog, blaze, images):
    """(image, HOG box, mapped BlazeFace box) for every face both detectors find."""
    out = []
    for img in images:
        mapped = blaze.detect(img)
        for hb in hog.detect(img):
            best = max(mapped, key=lambda b: b.iou(hb))
            assert best.iou(hb) > 0.4, "a HOG face has no BlazeFace counterpart"
            out.append((img, hb, best))
    return out


# ---- detection -------------------------------------------------------------------------------

def test_single_face_found_by_both_detectors(hog, blaze, single):
    (h,), (b,) = hog.detect(single), blaze.detect(single)
    assert h.iou(b) > 0.6
    assert blaze.name == "mediapipe" and hog.name == "dlib"


def test_multi_face_blazeface_finds_all_five_and_hog_the_unoccluded_four(hog, blaze, multi):
    boxes = blaze.detect(multi)
    assert len(boxes) == 5
    assert [b.area for b in boxes] == sorted((b.area for b in boxes), reverse=True)
    assert min(a.iou(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]) == 0.0  # five distinct faces
    # dlib's HOG detector misses the man in sunglasses (top left): a known HOG weakness.
    hog_boxes = hog.detect(multi)
    assert len(hog_boxes) == 4
    matched = {max(range(5), key=lambda i: boxes[i].iou(h)) for h in hog_boxes}
    assert len(matched) == 4
    (missed,) = set(range(5)) - matched
    cx, cy = boxes[missed].center
    assert cx < 400 and cy < 250


def test_blazeface_tiles_find_small_faces(multi):
    """Without tiles the 1000x667 photo is letterboxed to 128x128 and its ~105 px faces
    fall below the threshold."""
    det = MediaPipeDetector(tiles=False)
    try:
        assert len(det.detect(multi)) < 5
    finally:
        det.close()


def test_no_face_frames_give_no_detection(hog, blaze, asset):
    frames = read_frames(asset("no_face.mp4"))
    # The animated lettering in frames 75-91 draws BlazeFace scores up to 0.74: test all of
    # those, and every 4th frame elsewhere.
    picked = [i for i in range(len(frames)) if 75 <= i <= 91 or i % 4 == 0]
    assert [i for i in picked if blaze.detect(frames[i])] == []
    assert [i for i in range(0, len(frames), 24) if hog.detect(frames[i])] == []


def test_a_detector_collected_inside_a_mediapipe_call_does_not_deadlock(single):
    """An unclosed MediaPipeDetector can be garbage-collected while this thread is inside
    another MediaPipe call, whose dispatcher holds concurrent.futures' global submit lock
    (not re-entrant): its task is then queued, not closed there (closing there hung a test
    run), and the next detector made closes it."""
    import concurrent.futures.thread as cft
    import gc
    import threading

    face.MediaPipeDetector().close()   # mediapipe's first import keeps its caller's frame (and detector) alive
    done = threading.Event()

    def collected_inside_a_call():
        det = face.MediaPipeDetector()
        det.detect(single)
        with cft._global_shutdown_lock:   # what a detect()'s dispatcher submit holds when the GC strikes
            del det
            gc.collect()
        done.set()

    t = threading.Thread(target=collected_inside_a_call, daemon=True)
    t.start()
    t.join(60)
    assert done.is_set(), "closing a collected detector inside a MediaPipe call deadlocked"
    assert len(native._orphans) >= 1
    face.MediaPipeDetector().close()          # the next detector closes the queued task
    assert not native._orphans


def test_square_tiles_cover_wide_and_tall_frames():
    tiles = square_tiles(667, 1000)
    assert [t[2] for t in tiles] == [667] * 3
    assert tiles[0][0] == 0 and tiles[-1][0] + 667 == 1000
    assert all(b[0] - a[0] <= 667 / 2 for a, b in zip(tiles, tiles[1:]))  # overlap >= half a tile
    assert square_tiles(500, 520) == []
    assert all(t[0] == 0 for t in square_tiles(1000, 600))


# ---- box conventions -------------------------------------------------------------------------

def test_box_mapping_round_trips():
    box = FaceBox(100, 50, 220, 170, 0.9)
    m = BoxMapping(dx=-0.02, dy=-0.05, scale=0.95)
    back = m.invert(m.apply(box))
    assert np.allclose([back.left, back.top, back.right, back.bottom], [100, 50, 220, 170])
    assert m.apply(box).score == 0.9


def test_landmarks_on_mapped_blazeface_boxes_match_hog_boxes(hog, blaze, lm68, single, multi, asset):
    """dlib's predictor expects HOG boxes; on mapped BlazeFace boxes its landmarks stay
    within a few percent of the inter-ocular distance (DATASETS.md)."""
    images = [single, multi] + read_frames(asset("single_face.mp4"), every=12)
    errors = [landmark_error(lm68(img, b), lm68(img, h)) for img, h, b in paired_faces(hog, blaze, images)]
    assert len(errors) == 1 + 4 + 6
    assert np.mean(errors) < 0.03 and max(errors) < 0.05, errors


def test_box_from_landmarks_reproduces_the_landmarks(hog, lm68, single, multi):
    """Tracking feeds each frame's landmark box to the next frame: a fixed point."""
    for img in (single, multi):
        for h in hog.detect(img):
            lm = lm68(img, h)
            assert landmark_error(lm68(img, box_from_landmarks(lm)), lm) < 0.03
            assert box_from_landmarks(lm).iou(h) > 0.75


def test_shape_residual_separates_faces_from_noise(hog, lm68, single, multi):
    for img in (single, multi):
        for h in hog.detect(img):
            assert shape_residual(lm68(img, h)) < 10
    assert shape_residual(MEAN_SHAPE_68) < 1e-3
    rng = np.random.default_rng(0)
    assert shape_residual(rng.uniform(0, 200, (68, 2))) > 30


# ---- 468-point mesh ---------------------------------------------------------------------------

def test_mesh_alignment_matches_dlib_alignment(hog, blaze, lm68, mesh, single, multi, asset):
    """The mesh's five alignment points give nearly the dlib alignment: dlib's own points
    land within a few pixels of each other in the 224 crop under the two transforms."""
    images = [single, multi] + read_frames(asset("single_face.mp4"), every=24)
    errors = []
    for img, h, b in paired_faces(hog, blaze, images):
        ref = lm68(img, h)
        pts, presence = mesh.mesh(img, b)
        assert pts.shape == (468, 3) and presence > 0.9
        m68 = mesh(img, b)
        assert m68.shape == (68, 2) and m68.dtype == np.float32
        a_dlib, a_mesh = alignment_transform(ref), alignment_transform(m68)
        errors.append(np.linalg.norm(transform_points(ref, a_mesh) - transform_points(ref, a_dlib), axis=1).mean())
    assert np.mean(errors) < 5.0 and max(errors) < 7.0, errors
    assert face.MESH_ALIGN_INDICES[1] == 152  # the chin, as DATASETS.md names it


def test_mesh_presence_is_low_on_a_non_face(mesh, asset):
    frame = read_frames(asset("no_face.mp4"), every=40)[1]
    _, presence = mesh.mesh(frame, FaceBox(280, 190, 390, 300))
    assert presence < 0.5


# ---- alignment ---------------------------------------------------------------------------------

def test_mirror_permutation_is_an_involution():
    assert sorted(MIRROR_68) == list(range(68))
    assert all(MIRROR_68[MIRROR_68[i]] == i for i in range(68))
    assert MIRROR_68[39] == 42 and MIRROR_68[8] == 8 and MIRROR_68[24] == 19


def test_template_is_the_mirror_symmetric_mean_shape():
    assert np.array_equal(TEMPLATE_5, MEAN_SHAPE_68[list(ALIGN_INDICES)])
    mirrored = MEAN_SHAPE_68[list(MIRROR_68)].copy()
    mirrored[:, 0] = CROP_SIZE - mirrored[:, 0]
    assert np.abs(mirrored - MEAN_SHAPE_68).max() < 0.11


def test_alignment_is_repeatable(aligner, single):
    (a,), m1 = aligner.align_sample([single])
    (b,), m2 = aligner.align_sample([single])
    assert a.shape == (CROP_SIZE, CROP_SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(m1, m2)


@pytest.mark.parametrize("angle,tx,ty", [(0, 20, 15), (8, 20, 15), (-10, -30, 10)])
def test_moved_copy_aligns_to_the_same_crop(aligner, single, angle, tx, ty):
    """A shifted/rotated copy of the image aligns to nearly the same crop: closer than a
    one-pixel shift of the crop would be."""
    (ref,), m = aligner.align_sample([single])
    h, w = single.shape[:2]
    move = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    move[:, 2] += (tx, ty)
    moved = cv2.warpAffine(single, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    (crop,), _ = aligner.align_sample([moved])
    one_px = m.copy()
    one_px[:, 2] += 1.0
    shifted_1px = np.abs(warp_face(single, one_px).astype(float) - ref).mean()
    assert np.abs(crop.astype(float) - ref).mean() < 0.8 * shifted_1px


def test_fast_aligner_matches_the_training_aligner(aligner, blaze, lm68, single):
    """BlazeFace boxes (mapped) + dlib landmarks give the training (HOG) crop."""
    (ref,), m = aligner.align_sample([single])
    (crop,), _ = FaceAligner(blaze, lm68).align_sample([single])
    one_px = m.copy()
    one_px[:, 2] += 1.0
    assert np.abs(crop.astype(float) - ref).mean() < 0.8 * np.abs(warp_face(single, one_px).astype(float) - ref).mean()


def test_transform_from_onset_applies_to_all_frames(aligner, single):
    onset, apex = single, np.ascontiguousarray(single[:, ::-1])  # apex deliberately different
    crops, m = aligner.align_sample([onset, apex])
    assert np.array_equal(crops[1], warp_face(apex, m))


def test_no_face_raises_a_clear_error(aligner, asset):
    frame = read_frames(asset("no_face.mp4"), every=50)[0]
    with pytest.raises(NoFaceError, match=r"no_face.mp4 frame 0 \(onset frame\): no face found"):
        aligner.align_sample([frame], where="no_face.mp4 frame 0")


# ---- construction and errors -----------------------------------------------------------------------

def test_face_models_kinds():
    det, lms = face.face_models("mediapipe")
    assert isinstance(det, MediaPipeDetector) and isinstance(lms, FaceMesh)
    det.close()
    det, lms = face.face_models("dlib")
    assert isinstance(det, DlibDetector) and isinstance(lms, Landmarks68)
    with pytest.raises(ValueError, match="fast, dlib, mediapipe"):
        face.face_models("haar")


def test_missing_model_files_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FaceModelError, match="nothing.tflite.*not found"):
        MediaPipeDetector(model_path=tmp_path / "nothing.tflite")
    with pytest.raises(FaceModelError, match="nothing.tflite.*not found"):
        FaceMesh(model_path=tmp_path / "nothing.tflite")
    with pytest.raises(FaceModelError, match="gone.tflite is missing.*mediapipe==0.10.21"):
        face.mediapipe_model_path("gone.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(FaceModelError, match="bad.tflite: could not load"):
        MediaPipeDetector(model_path=bad)
    with pytest.raises(FaceModelError, match="bad.tflite: could not load"):
        FaceMesh(model_path=bad)


def test_blazeface_mapping_constant_is_near_identity():
    """The fitted mapping is a small correction (a few percent), not a different box."""
    assert abs(BLAZEFACE_TO_HOG.dx) < 0.1 and abs(BLAZEFACE_TO_HOG.dy) < 0.1
    assert 0.85 < BLAZEFACE_TO_HOG.scale < 1.15


def test_nms_keeps_the_best_of_overlapping_detections_and_every_separate_face():
    def det(x, y, s, score):
        return face.BlazeFaceDetection(face.FaceBox(x, y, x + s, y + s), np.zeros((6, 2), np.float32), score)

    a, a_weaker, b = det(10, 10, 100, 0.9), det(14, 12, 100, 0.95), det(300, 40, 90, 0.6)
    edge = det(10 + 100 - 30, 10, 100, 0.5)      # IoU with the kept box ~0.18 <= 0.3: a separate face
    kept = face._nms([a, a_weaker, b, edge], 0.3)
    assert kept == [a_weaker, b, edge]            # best score first; the overlapping 0.9 one dropped
    assert face._nms([], 0.3) == []
