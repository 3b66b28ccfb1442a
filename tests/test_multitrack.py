"""realtime.stages.multitrack: every face followed, ids stable when faces leave and return,
one detection shared by all faces. Real BlazeFace + dlib on the bundled group photo."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from realtime.stages.multitrack import MultiFaceTracker


@pytest.fixture(scope="module")
def group(asset):
    return cv2.imread(str(asset("multi_face.jpg")))          # five real people


def _hide(img, box, pad=0.3):
    """A copy of ``img`` with the face in ``box`` covered by a flat patch (someone left)."""
    out = img.copy()
    x0, y0 = int(box.left - pad * box.width), int(box.top - pad * box.height)
    x1, y1 = int(box.right + pad * box.width), int(box.bottom + pad * box.height)
    out[max(0, y0):y1, max(0, x0):x1] = 128
    return out


def _by_id(results):
    return {r.face_id: r for r in results if r.found}


def test_every_face_gets_its_own_stable_id(group):
    tracker = MultiFaceTracker("fast", max_faces=4, redetect_every=5)
    first = _by_id(tracker.update_all(group))
    assert sorted(first) == [0, 1, 2, 3] and all(r.n_faces == 5 for r in first.values())
    for _ in range(12):                                        # periodic re-detections included
        now = _by_id(tracker.update_all(group))
        assert sorted(now) == [0, 1, 2, 3]
        for k, r in now.items():                                # each id stays on its face
            assert r.box.iou(first[k].box) > 0.8
    tracker.close()


def test_a_face_that_leaves_and_returns_keeps_its_id_and_a_newcomer_gets_a_new_one(group):
    tracker = MultiFaceTracker("fast", max_faces=5, redetect_every=5)
    first = _by_id(tracker.update_all(group))
    assert sorted(first) == [0, 1, 2, 3, 4]
    gone = first[2].box
    without = _hide(group, gone)
    for _ in range(8):
        now = _by_id(tracker.update_all(without))
    assert sorted(now) == [0, 1, 3, 4]                          # #2 lost, the others untouched
    for _ in range(8):
        back = _by_id(tracker.update_all(group))
    assert sorted(back) == [0, 1, 2, 3, 4]                     # the same place: the same id
    assert back[2].box.iou(gone) > 0.7

    # max_faces 4 and five people: the fifth is taken (with a new id) only when a slot frees
    small = MultiFaceTracker("fast", max_faces=4, redetect_every=5)
    start = _by_id(small.update_all(group))
    assert sorted(start) == [0, 1, 2, 3]
    hidden = _hide(group, start[0].box)
    for _ in range(8):
        now = _by_id(small.update_all(hidden))
    assert len(now) == 4 and 0 not in now and 4 in now         # the fifth face, a new id
    assert all(now[4].box.iou(start[k].box) < 0.1 for k in (1, 2, 3))
    tracker.close()
    small.close()


def test_held_frames_reuse_every_face_and_no_face_says_so(group):
    tracker = MultiFaceTracker("fast", max_faces=4, redetect_every=30)
    tracker.update_all(group)
    held = tracker.update_all(group, refresh=False)
    assert len(held) == 4 and all(r.held and r.timings_ms["landmarks"] == 0 for r in held)
    blank = np.full_like(group, 90)
    tracker.reset()
    out = tracker.update_all(blank)
    assert len(out) == 1 and not out[0].found and out[0].face_id is None and "no face" in out[0].reason
    with pytest.raises(ValueError, match="max_faces"):
        MultiFaceTracker("fast", max_faces=0)
    tracker.close()
