"""Derive the face module's fitted constants from the bundled real faces and print them.

Regenerates, in the form core/face.py keeps them:

- MEAN_SHAPE_68: the Procrustes mean of dlib 68-point shapes (on HOG boxes, upsample 1,
  as FaceAligner uses; the mean keeps the orientation of the first face, single_face.jpg),
  scaled so brows to chin fill 80% of the 224x224 crop, centred, shifted down by 3% of
  the crop, then mirror-symmetrised (DATASETS.md, "Alignment").
- BLAZEFACE_TO_HOG: BlazeFace box -> dlib HOG box (centre offset in box sizes, scale),
  the mean over faces seen by both detectors; HOG boxes at upsample 0 and 1 are pooled
  because the HOG box itself steps with its image pyramid.
- LANDMARKS_TO_HOG: bounding box of the 68 landmarks -> HOG box (the tracker's box).
- MESH_TO_68: for each dlib point, the MediaPipe mesh vertex nearest to it on average
  (in inter-ocular units).

and reports the checks: landmark error between dlib on HOG boxes and dlib on mapped
BlazeFace boxes (mean distance / inter-ocular distance), and the alignment error of the
mesh against dlib (pixels in the 224 crop).

Faces: single_face.jpg, multi_face.jpg (five faces; HOG misses the one in sunglasses, so
four pair up), every frame of single_face.mp4.

Examples:
    python scripts/derive_template.py
    python scripts/derive_template.py --video-stride 3   # faster: every 3rd frame for the fits
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import assets  # noqa: E402
from core.face import (  # noqa: E402
    ALIGN_INDICES, BLAZEFACE_TO_HOG, CROP_SIZE, MEAN_SHAPE_68, MIRROR_68, BoxMapping, DlibDetector, FaceBox, FaceMesh,
    Landmarks68, MediaPipeDetector, alignment_transform, inter_ocular, landmark_error, landmarks_bbox,
    similarity_transform, transform_points,
)

FILL = 0.80        # brows-to-chin height / crop size
DOWN_SHIFT = 0.03  # shift of the face centre below the crop centre, fraction of the crop


@dataclass
class Face:
    source: str
    image: np.ndarray
    hog: dict[int, FaceBox]            # upsample -> HOG box
    dlib68: dict[int, np.ndarray]      # upsample -> (68, 2) landmarks on that box
    blazeface: FaceBox | None = None   # matched raw BlazeFace box
    extra: dict = field(default_factory=dict)


def read_frames(name: str, stride: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(assets.path(name)))
    frames, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % stride == 0:
            frames.append(frame)
        i += 1
    cap.release()
    return frames


def collect_faces(video_stride: int = 1) -> list[Face]:
    """Every face both HOG detectors (upsample 0 and 1) and BlazeFace find, matched by IoU."""
    images = [("single_face.jpg", cv2.imread(str(assets.path("single_face.jpg")))),
              ("multi_face.jpg", cv2.imread(str(assets.path("multi_face.jpg"))))]
    images += [(f"single_face.mp4#{i * video_stride}", f)
               for i, f in enumerate(read_frames("single_face.mp4", video_stride))]
    hog = {0: DlibDetector(upsample=0), 1: DlibDetector(upsample=1)}
    lm68 = Landmarks68()
    blaze = MediaPipeDetector()
    faces = []
    for source, img in images:
        boxes = {up: d.detect(img) for up, d in hog.items()}
        raw = [d.box for d in blaze.detect_blazeface(img)]
        for b1 in boxes[1]:
            b0 = max(boxes[0], key=lambda b: b.iou(b1), default=None)
            if b0 is None or b0.iou(b1) < 0.4:
                continue
            face = Face(source, img, {0: b0, 1: b1}, {0: lm68(img, b0), 1: lm68(img, b1)})
            bf = max(raw, key=lambda b: b.iou(b1), default=None)
            face.blazeface = bf if bf is not None and bf.iou(b1) > 0.3 else None
            faces.append(face)
    blaze.close()
    return faces


# ---- mean shape --------------------------------------------------------------------------

def normalise(shape: np.ndarray) -> np.ndarray:
    """Centroid at 0, RMS radius 1."""
    s = shape - shape.mean(0)
    return s / np.sqrt((s ** 2).sum(1).mean())


def procrustes_mean(shapes: list[np.ndarray], iters: int = 10) -> np.ndarray:
    """Generalised Procrustes analysis under similarity transforms: (68, 2), unit scale."""
    mean = normalise(shapes[0])
    for _ in range(iters):
        aligned = [transform_points(s, similarity_transform(s, mean)) for s in shapes]
        mean = normalise(np.mean(aligned, axis=0))
    return mean


def place_in_crop(shape: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Scale so brows (17-26) to chin (8) span FILL of the crop, centre it horizontally
    and the brows-to-chin span vertically, shifted down by DOWN_SHIFT of the crop."""
    brow_top, chin = shape[17:27, 1].min(), shape[8, 1]
    s = shape * (FILL * size / (chin - brow_top))
    cy = (s[17:27, 1].min() + s[8, 1]) / 2
    return s + np.array([size / 2 - s[:, 0].mean(), size / 2 - cy + DOWN_SHIFT * size])


def symmetrise(shape: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Average a crop-placed shape with its mirror image about the crop's vertical axis
    (x flipped, points renumbered): left and right come out exactly symmetric."""
    mirrored = shape[list(MIRROR_68)].copy()
    mirrored[:, 0] = size - mirrored[:, 0]
    return (shape + mirrored) / 2


# ---- box mappings ------------------------------------------------------------------------

def fit_box_mapping(pairs: list[tuple[FaceBox, FaceBox]]) -> BoxMapping:
    """Mean centre offset (in source box sizes) and geometric-mean scale, source -> target."""
    dx = [(t.center[0] - s.center[0]) / s.width for s, t in pairs]
    dy = [(t.center[1] - s.center[1]) / s.height for s, t in pairs]
    sc = [np.sqrt(t.width * t.height / (s.width * s.height)) for s, t in pairs]
    return BoxMapping(round(float(np.mean(dx)), 4), round(float(np.mean(dy)), 4),
                      round(float(np.exp(np.mean(np.log(sc)))), 4))


def describe(errors: list[float]) -> str:
    e = np.asarray(errors) * 100
    return f"mean {e.mean():.2f}%, median {np.median(e):.2f}%, max {e.max():.2f}% of inter-ocular distance"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--template-stride", type=int, default=12,
                    help="mean shape from every Nth frame of single_face.mp4 (default 12: six frames, "
                         "so one video does not outweigh the photos; face.py's template was made so)")
    ap.add_argument("--video-stride", type=int, default=1,
                    help="box mappings and mesh table from every Nth frame of single_face.mp4")
    args = ap.parse_args(argv)

    faces = collect_faces(args.video_stride)
    paired = [f for f in faces if f.blazeface is not None]
    print(f"{len(faces)} faces found by HOG (upsample 0 and 1), {len(paired)} also by BlazeFace")

    # Mean shape: the photos' faces and every template-stride-th frame of the clip.
    shapes = [f.dlib68[1] for f in faces
              if "#" not in f.source or int(f.source.split("#")[1]) % args.template_stride == 0]
    mean = symmetrise(place_in_crop(procrustes_mean(shapes)))
    print(f"\n# mean of {len(shapes)} shapes")
    print("\nMEAN_SHAPE_68 = np.array([")
    for x, y in mean:
        print(f"    ({x:.1f}, {y:.1f}),")
    print("], dtype=np.float32)")
    d = np.linalg.norm(mean - MEAN_SHAPE_68, axis=1)
    print(f"# vs the one in core/face.py: mean {d.mean():.2f} px, max {d.max():.2f} px")

    # Box mappings.
    bf_map = fit_box_mapping([(f.blazeface, f.hog[up]) for f in paired for up in (0, 1)])
    lm_map = fit_box_mapping([(landmarks_bbox(f.dlib68[up]), f.hog[up]) for f in faces for up in (0, 1)])
    print(f"\nBLAZEFACE_TO_HOG = {bf_map}")
    print(f"LANDMARKS_TO_HOG = {lm_map}")

    lm68 = Landmarks68()
    err_bf = [landmark_error(lm68(f.image, bf_map.apply(f.blazeface)), f.dlib68[1]) for f in paired]
    err_raw = [landmark_error(lm68(f.image, f.blazeface), f.dlib68[1]) for f in paired]
    err_hog = [landmark_error(f.dlib68[0], f.dlib68[1]) for f in faces]
    err_lm = [landmark_error(lm68(f.image, lm_map.apply(landmarks_bbox(f.dlib68[1]))), f.dlib68[1]) for f in faces]
    print("\nlandmark error against dlib on the HOG box (upsample 1):")
    print(f"  dlib on the raw BlazeFace box:     {describe(err_raw)}")
    print(f"  dlib on the mapped BlazeFace box:  {describe(err_bf)}")
    print(f"  dlib on the HOG box, upsample 0:   {describe(err_hog)}")
    print(f"  dlib on the box from landmarks:    {describe(err_lm)}")

    # Mesh -> 68 and its alignment error.
    mesh = FaceMesh()
    meshes = []
    for f in paired:
        # FaceMesh crops around the BlazeFace box its HOG-convention argument maps back to.
        pts, _ = mesh.mesh(f.image, BLAZEFACE_TO_HOG.apply(f.blazeface))
        meshes.append(pts[:, :2])
    dist = np.stack([np.linalg.norm(m[None, :, :] - f.dlib68[1][:, None, :], axis=2) / inter_ocular(f.dlib68[1])
                     for m, f in zip(meshes, paired)]).mean(0)  # (68, 468)
    table = dist.argmin(1)
    print(f"\nMESH_TO_68 = ({', '.join(str(int(i)) for i in table)})")
    print("# per alignment point (dlib -> mesh vertex, mean distance / inter-ocular):")
    for i in ALIGN_INDICES:
        order = np.argsort(dist[i])[:3]
        print(f"#   dlib {i:2d} -> mesh {table[i]:3d} ({dist[i, table[i]] * 100:.1f}%); next: "
              + ", ".join(f"{j} ({dist[i, j] * 100:.1f}%)" for j in order[1:]))
    align_px = []
    for m, f in zip(meshes, paired):
        a_dlib = alignment_transform(f.dlib68[1])
        a_mesh = alignment_transform(m[table])
        align_px.append(np.linalg.norm(transform_points(f.dlib68[1], a_mesh)
                                       - transform_points(f.dlib68[1], a_dlib), axis=1).mean())
    print(f"mesh alignment vs dlib alignment (dlib points through both transforms, 224 crop): "
          f"mean {np.mean(align_px):.2f} px, max {np.max(align_px):.2f} px")
    alt = table.copy()
    alt[39], alt[42] = 133, 362  # the inner eye corners DATASETS.md names
    alt_px = [np.linalg.norm(transform_points(f.dlib68[1], alignment_transform(m[alt]))
                             - transform_points(f.dlib68[1], alignment_transform(f.dlib68[1])), axis=1).mean()
              for m, f in zip(meshes, paired)]
    print(f"  same with eye corners 133/362: mean {np.mean(alt_px):.2f} px, max {np.max(alt_px):.2f} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
