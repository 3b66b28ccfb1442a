"""Aligned onset / apex training pairs, written as a crop cache.

Owns ``render_pair`` (an onset and an apex camera frame of one expression with per-pair
nuisance, both aligned with the ONSET's similarity transform as training on real data is,
DATASETS.md "Alignment"), ``SynthPair``, and ``make_pairs`` / ``cache_meta``: the crops in
train.cache's crop-cache format (index.csv with CACHE_COLUMNS, meta.json, synth.csv).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from core.face import (
    ALIGN_INDICES,
    CROP_SIZE,
    TEMPLATE_5,
    alignment_transform,
    transform_points,
    warp_face,
)
from core.protocols import DEMO_3
from train.synth.camera import (
    _cast_gains,
    _check_size,
    _face_centre,
    _jpeg,
    head_motion,
    placement,
)
from train.synth.config import REF_FACE_WIDTH, SynthConfig
from train.synth.identities import IDENTITIES, detect_landmarks, identities_for
from train.synth.output import write_csv
from train.synth.rig import au_string, face_rig, sample_aus, sample_sides
from train.synth.timing import _frames, raised_cosine_envelope


@dataclass
class SynthPair:
    """One rendered pair: camera frames, the onset's alignment and the aligned crops (BGR).

    ``onset`` / ``apex`` are the camera frame (full_frame=True) or the part of it that
    the crop needs, whose top-left corner sits at ``origin`` in the frame; ``transform`` and
    ``onset_landmarks`` are in the coordinates of these arrays."""

    identity: str
    kind: str
    label: str
    onset: np.ndarray            # (h, w, 3) camera image
    apex: np.ndarray
    origin: tuple[int, int]      # (x, y) of onset[0, 0] in the frame
    transform: np.ndarray        # 2x3, onset landmarks -> TEMPLATE_5 (applied to both frames)
    onset_landmarks: np.ndarray  # (68, 2)
    onset_crop: np.ndarray       # (224, 224, 3)
    apex_crop: np.ndarray
    aus: tuple[tuple[str, float], ...]
    amplitude: float             # apex px at REF_FACE_WIDTH
    mirror: bool
    onset_frame: int
    apex_frame: int


def _camera(image: np.ndarray, rng: np.random.Generator, gain: float, bias: float,
            shade: np.ndarray | None, white: np.ndarray | None, cfg: SynthConfig) -> np.ndarray:
    """White balance, exposure, shading, sensor noise and (sometimes) JPEG: one pair frame."""
    out = image.astype(np.float32)
    if shade is not None:
        out *= shade[..., None]
    out *= np.float32(gain) if white is None else (gain * white).astype(np.float32)
    out += np.float32(bias)
    sigma = float(rng.uniform(*cfg.noise_sigma))
    if sigma > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if cfg.pair_jpeg_p > 0 and rng.random() < cfg.pair_jpeg_p:
        out = _jpeg(out, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return out


def _crop_source_region(m: np.ndarray, size: tuple[int, int], margin: int = 8) -> tuple[int, int, int, int]:
    """Frame rectangle that a crop with alignment ``m`` reads, on the 8x8 JPEG grid."""
    inv = cv2.invertAffineTransform(m)
    c = CROP_SIZE
    corners = transform_points(np.array([[0, 0], [c, 0], [0, c], [c, c]], np.float64), inv)
    x0, y0 = (np.floor(corners.min(0)) - margin).astype(int) // 8 * 8
    x1, y1 = np.ceil(corners.max(0) + margin).astype(int)
    return max(0, x0), max(0, y0), min(size[0], x1), min(size[1], y1)


def render_pair(identity: str, label: str, kind: str = "micro", seed: int | Sequence[int] = 0,
                config: SynthConfig | None = None, size: tuple[int, int] = (640, 480),
                amplitude: float | None = None, aus: Sequence[tuple[str, float]] | None = None,
                full_frame: bool = False, align: str = "carry") -> SynthPair:
    """Render an onset and an apex camera frame of one expression and align both with the
    ONSET's transform (DATASETS.md), as training on real data does.

    Nuisance per pair: mirror, face size, roll and position (a similarity on the still),
    white balance, exposure, shading, noise, JPEG, and a small head motion and gain change
    between onset and apex. kind "micro": apex at the drawn amplitude; kind "macro": the
    pseudo-apex 4 frames (at 30 fps) into a macro rise, the 5th frame counting the onset as
    the 1st, as the paper does for macro-expressions (train.datasets.PSEUDO_APEX_STEP). Only the part of the frame the crop needs is rendered unless
    ``full_frame``.

    align "carry": the still's dlib landmarks (detected once) carried to the onset frame by
    the known placement (fast; agrees with FaceAligner on the onset to about dlib's own
    jitter, see tests); "detect": dlib detection + 68 landmarks on the rendered onset, i.e.
    exactly FaceAligner.transform_of(onset) (about 3x slower)."""
    if align not in ("carry", "detect"):
        raise ValueError(f"align must be 'carry' or 'detect', got {align!r}")
    if label not in DEMO_3:
        raise ValueError(f"label must be one of {DEMO_3}, got {label!r}")
    if kind not in ("micro", "macro"):
        raise ValueError(f"pair kind must be micro or macro, got {kind!r}")
    cfg = config or SynthConfig()
    size = _check_size(size)
    rng = np.random.default_rng(seed)
    mirror = bool(rng.random() < cfg.pair_mirror_p)
    rig = face_rig(identity, mirror)
    still = rig.still
    aus = tuple(aus) if aus is not None else sample_aus(label, rng)
    sides = sample_sides(rng)
    face_w = float(rng.uniform(*cfg.pair_face_width)) * min(size[0] / 640, size[1] / 480)
    place = placement(still, size, face_w, float(rng.uniform(-cfg.pair_pose_deg, cfg.pair_pose_deg)),
                      (float(rng.uniform(-1, 1)) * 0.1 * size[0], float(rng.uniform(-1, 1)) * 0.08 * size[1]))
    if kind == "micro":
        amp = amplitude if amplitude is not None else float(rng.uniform(*cfg.micro_amplitude))
        apex_frame = min(max(_frames(float(rng.uniform(*cfg.micro_rise_s)), 200), 8), 50)   # at 200 fps
        strength = amp
    else:
        amp = amplitude if amplitude is not None else float(rng.uniform(*cfg.macro_amplitude))
        rise = float(rng.uniform(*cfg.macro_rise_s))
        strength = amp * float(raised_cosine_envelope(cfg.macro_pseudo_apex_s, 0.0, rise, 0, rise + 1.0))
        apex_frame = cfg.macro_pseudo_apex_frames
    # amplitude is quoted at REF_FACE_WIDTH in the frame: in still pixels that is
    # strength * still.face_width / REF_FACE_WIDTH, whatever the face size in the frame
    apex_still = rig.warp(rig.field(aus, sides), strength * still.face_width / REF_FACE_WIDTH)
    centre = transform_points(_face_centre(still.landmarks)[None], place[:2])[0]
    shift = np.clip(rng.normal(0, cfg.pair_drift_px, 2), -2 * cfg.pair_drift_px, 2 * cfg.pair_drift_px)
    roll = float(np.clip(rng.normal(0, cfg.pair_drift_deg), -2 * cfg.pair_drift_deg, 2 * cfg.pair_drift_deg))
    move = head_motion(float(shift[0]), float(shift[1]), roll, 0.0, centre)   # onset -> apex head motion
    gains = _cast_gains(rng, cfg.colour_cast)      # one white balance for both frames
    gain = float(rng.uniform(*cfg.pair_gain))
    gain_apex = gain * (1 + float(rng.uniform(-cfg.pair_flicker, cfg.pair_flicker)))
    bias = float(rng.uniform(-cfg.pair_bias, cfg.pair_bias))
    shade_amount, shade_angle = float(rng.uniform(0, cfg.pair_shading)), float(rng.uniform(0, 2 * np.pi))

    lm_frame = transform_points(still.landmarks, place[:2])
    m_frame = alignment_transform(lm_frame, CROP_SIZE)
    margin = 8 if align == "carry" else int(0.35 * face_w)   # the detector needs context
    x0, y0, x1, y1 = (0, 0, size[0], size[1]) if full_frame else _crop_source_region(m_frame, size, margin)
    to_region = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]])
    region = (x1 - x0, y1 - y0)
    shade = None
    if shade_amount > 0:   # a linear illumination gradient across the whole frame
        xx, yy = np.meshgrid((np.arange(x0, x1, dtype=np.float32) / size[0]) * 2 - 1,
                             (np.arange(y0, y1, dtype=np.float32) / size[1]) * 2 - 1)
        shade = 1 + shade_amount * (math.cos(shade_angle) * xx + math.sin(shade_angle) * yy)
    onset_img = cv2.warpAffine(still.image, (to_region @ place)[:2], region,
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    apex_img = cv2.warpAffine(apex_still, (to_region @ move @ place)[:2], region,
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    onset_img = _camera(onset_img, rng, gain, bias, shade, gains, cfg)
    apex_img = _camera(apex_img, rng, gain_apex, bias, shade, gains, cfg)
    if align == "detect":
        lm_onset = detect_landmarks(onset_img, where=f"onset of a {identity} pair")[1]
    else:
        lm_onset = transform_points(still.landmarks, (to_region @ place)[:2]).astype(np.float32)
    m = alignment_transform(lm_onset, CROP_SIZE)
    return SynthPair(identity, kind, label, onset_img, apex_img, (x0, y0), m, lm_onset,
                     warp_face(onset_img, m), warp_face(apex_img, m), aus, float(amp), mirror, 0, apex_frame)


CACHE_COLUMNS = ("dataset", "subject", "sample", "kind", "raw_label", "onset_frame", "apex_frame",
                 "onset_path", "apex_path")
CACHE_DATASET = "synth"


def cache_meta(config: SynthConfig, identities: Sequence[str], n_per_class: int, macro_per_class: int,
               seed: int, align: str = "carry") -> dict:
    """meta.json of a synthetic crop cache: alignment settings, generator settings and a key."""
    alignment = {
        "crop_size": CROP_SIZE,
        "align_indices": list(ALIGN_INDICES),
        "template_5": np.round(TEMPLATE_5, 3).tolist(),
        "transform": "similarity on the onset frame, applied unchanged to the apex",
        "landmarks": ("dlib HOG (upsample=1) + 68-point predictor on each identity still, carried to the "
                      "onset frame by the known placement transform") if align == "carry" else
                     "dlib HOG (upsample=1) + 68-point predictor on each rendered onset frame",
    }
    generator = {
        "seed": seed, "n_per_class": n_per_class, "macro_per_class": macro_per_class,
        "identities": list(identities), "classes": list(DEMO_3), "config": asdict(config),
        "ref_face_width": REF_FACE_WIDTH,
    }
    key = hashlib.sha256(json.dumps([alignment, generator], sort_keys=True).encode()).hexdigest()[:16]
    return {"dataset": CACHE_DATASET, "protocol": "demo", "alignment": alignment, "generator": generator, "key": key}


def make_pairs(identities: str | Sequence[str], n_per_class: int, seed: int = 0,
               out_dir: str | Path = "cache/synth", *, macro_per_class: int = 0,
               config: SynthConfig | None = None, align: str = "carry", progress: bool = True) -> list[dict]:
    """Write aligned onset/apex crops of synthetic expressions as a crop cache.

    Layout (CONTRACTS, crop cache; read with train.cache.read_cache / load_pair):
    out_dir/index.csv with CACHE_COLUMNS, out_dir/meta.json,
    out_dir/crops/synth/<identity>/<sample>_{onset,apex}.png (224x224 BGR). The folder is
    rewritten, so it must not hold a cache of real data. dataset "synth",
    subject "synth/<person>" (stills of one person share a subject, so leave-one-subject-out
    never splits a person), raw_label in DEMO_3, kind micro (and macro pseudo-apex pairs).
    align: see render_pair ("detect" runs dlib on every onset, like train.cache on real
    data). Per-pair generator details go to out_dir/synth.csv. Returns the index rows."""
    names = identities_for(identities)
    if n_per_class < 0 or macro_per_class < 0:
        raise ValueError(f"pair counts must be >= 0, got n_per_class={n_per_class}, macro_per_class={macro_per_class}")
    cfg = config or SynthConfig()
    out = Path(out_dir)
    meta_path = out / "meta.json"
    if meta_path.is_file():
        try:
            old_dataset = json.loads(meta_path.read_text(encoding="utf-8")).get("dataset")
        except (json.JSONDecodeError, AttributeError):
            old_dataset = None
        if old_dataset != CACHE_DATASET:
            raise ValueError(f"{out} holds another crop cache (meta.json is not a synthetic one); "
                             "write synthetic pairs to their own folder, e.g. cache/synth")
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(kind, ci, label, j)
            for kind, n in (("micro", n_per_class), ("macro", macro_per_class))
            for ci, label in enumerate(DEMO_3) for j in range(n)]
    rows, details = [], []
    for kind, ci, label, j in tqdm(jobs, desc="synthetic pairs", unit="pair", disable=not progress):
        identity = names[(j + ci) % len(names)]
        pair = render_pair(identity, label, kind, seed=[seed, 0 if kind == "micro" else 1, ci, j], config=cfg,
                           align=align)
        sample = f"{identity}_{kind}_{label}_{j:05d}"
        rel = Path("crops") / CACHE_DATASET / identity
        (out / rel).mkdir(parents=True, exist_ok=True)
        onset_path, apex_path = rel / f"{sample}_onset.png", rel / f"{sample}_apex.png"
        for p, img in ((onset_path, pair.onset_crop), (apex_path, pair.apex_crop)):
            if not cv2.imwrite(str(out / p), img):
                raise OSError(f"{out / p}: could not write the crop; check the folder is writable and has space")
        rows.append({
            "dataset": CACHE_DATASET, "subject": f"{CACHE_DATASET}/{IDENTITIES[identity].person}",
            "sample": sample, "kind": kind, "raw_label": label, "onset_frame": pair.onset_frame,
            "apex_frame": pair.apex_frame, "onset_path": onset_path.as_posix(), "apex_path": apex_path.as_posix(),
        })
        details.append({"sample": sample, "identity": identity, "split": IDENTITIES[identity].split,
                        "au": au_string(pair.aus), "amplitude_px": round(pair.amplitude, 3),
                        "mirror": int(pair.mirror)})
    for name, table, cols in (("index.csv", rows, CACHE_COLUMNS),
                              ("synth.csv", details, ("sample", "identity", "split", "au", "amplitude_px", "mirror"))):
        write_csv(out / name, table, cols)
    meta = cache_meta(cfg, names, n_per_class, macro_per_class, seed, align)
    (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return rows
