"""Classify pre-cut onset/apex samples without the live loop: ``python -m engines.predict --help``.

Inputs (one positional form):
- two image files: ONSET APEX;
- a folder of sample folders, each holding onset.<ext> and apex.<ext> (a folder that
  itself holds onset.* and apex.* is one sample);
- a CSV of pairs with columns onset, apex and optionally sample (paths relative to the
  CSV's folder).

Faces are aligned with the shared face module (core.face.FaceAligner: dlib
detection + 68 landmarks, transform computed on the onset and applied to the apex, as in
training) unless --aligned says the images already are 224x224 aligned crops.

Output CSV, one row per sample: sample, onset, apex, label (the most probable class),
p_<class> for every class of the weights, error (empty unless the sample failed, e.g.
no face found; such rows have no probabilities).
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
from core.contract import INPUT_SIZE, bgr_to_rgb
from core.face import ensure_bgr
from tqdm import tqdm
from core.face import FaceAligner
from engines.recognizer import Recognizer

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class PredictInputError(ValueError):
    """The positional inputs do not name images, a samples folder or a CSV of pairs."""


def _find(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTS:
        for name in (stem + ext, stem + ext.upper()):
            if (folder / name).is_file():
                return folder / name
    return None


def collect_samples(inputs: list[Path]) -> list[tuple[str, Path, Path]]:
    """(sample name, onset path, apex path) for each sample the inputs name."""
    if len(inputs) == 2 and all(p.suffix.lower() in IMAGE_EXTS for p in inputs):
        for p in inputs:
            if not p.is_file():
                raise PredictInputError(f"{p}: no such image")
        return [(inputs[0].stem, inputs[0], inputs[1])]
    if len(inputs) != 1:
        raise PredictInputError("give ONSET APEX image files, one folder of samples, or one CSV of pairs")
    src = inputs[0]
    if src.suffix.lower() == ".csv":
        if not src.is_file():
            raise PredictInputError(f"{src}: no such CSV")
        with open(src, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"onset", "apex"} <= set(reader.fieldnames):
                raise PredictInputError(f"{src}: needs columns onset and apex (and optionally sample); "
                                        f"found {reader.fieldnames}")
            rows = list(reader)
        out = []
        for i, r in enumerate(rows):
            on, ap = (Path(r[k]) if Path(r[k]).is_absolute() else src.parent / r[k] for k in ("onset", "apex"))
            out.append((r.get("sample") or f"{i:04d}", on, ap))
        return out
    if src.is_dir():
        onset, apex = _find(src, "onset"), _find(src, "apex")
        if onset and apex:
            return [(src.name, onset, apex)]
        out = []
        for d in sorted(p for p in src.iterdir() if p.is_dir()):
            onset, apex = _find(d, "onset"), _find(d, "apex")
            if onset and apex:
                out.append((d.name, onset, apex))
        if not out:
            raise PredictInputError(f"{src}: no sample folders with onset.<ext> and apex.<ext> images inside")
        return out
    raise PredictInputError(f"{src}: not an image pair, a folder of samples or a .csv of pairs")


def load_pair(onset_path: Path, apex_path: Path, aligner=None) -> tuple[np.ndarray, np.ndarray]:
    """Read a pair and return aligned (224, 224, 3) uint8 RGB crops (aligner None: already aligned)."""

    imgs = []
    for p in (onset_path, apex_path):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{p}: cannot read this image")
        if img.dtype != np.uint8:
            raise ValueError(f"{p}: {img.dtype} image; expected 8-bit")
        imgs.append(ensure_bgr(img))
    if aligner is None:
        for p, img in zip((onset_path, apex_path), imgs):
            if img.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
                raise ValueError(f"{p}: {img.shape[1]}x{img.shape[0]} is not an aligned {INPUT_SIZE}x{INPUT_SIZE} "
                                 "crop; drop --aligned to align faces here")
        crops = imgs
    else:
        crops, _ = aligner.align_sample(imgs, where=str(onset_path))
    return bgr_to_rgb(crops[0]), bgr_to_rgb(crops[1])


def predict_samples(samples, recognizer, aligned: bool = False, batch: int = 32, progress: bool = True):
    """Yield one result dict per sample (columns of the output CSV)."""

    aligner = None
    if not aligned:

        aligner = FaceAligner()
    classes = recognizer.classes
    pending: list[tuple[dict, np.ndarray, np.ndarray]] = []

    def flush():
        if not pending:
            return []
        probs = recognizer.predict(np.stack([p[1] for p in pending]), np.stack([p[2] for p in pending]))
        done = []
        for (row, _, _), pr in zip(pending, probs):
            row["label"] = classes[int(pr.argmax())]
            row.update({f"p_{c}": f"{float(v):.6f}" for c, v in zip(classes, pr)})
            done.append(row)
        pending.clear()
        return done

    for name, on, ap in tqdm(samples, desc="samples", unit="pair", disable=not progress):
        row = {"sample": name, "onset": str(on), "apex": str(ap), "label": "", "error": ""}
        try:
            crop_on, crop_ap = load_pair(on, ap, aligner)
        except Exception as e:  # no face, unreadable file: reported in the row, the run goes on
            row["error"] = f"{type(e).__name__}: {e}"
            yield row
            continue
        pending.append((row, crop_on, crop_ap))
        if len(pending) >= batch:
            yield from flush()
    yield from flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m engines.predict",
        description="Classify onset/apex samples (image pair, folder of sample folders, or CSV of pairs) and "
                    "write a CSV of class probabilities.",
        epilog="""examples:
  python -m engines.predict onset.png apex.png
  python -m engines.predict samples/ --out predictions.csv          # samples/<name>/onset.jpg, apex.jpg
  python -m engines.predict pairs.csv --weights my.safetensors       # CSV columns: sample, onset, apex
  python -m engines.predict crops/ --aligned --weights moext.onnx    # already aligned 224x224 crops""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", type=Path, nargs="+", help="ONSET APEX images, a samples folder, or a CSV of pairs")
    p.add_argument("--weights", default="auto",
                   help="checkpoint (.safetensors), .onnx, .plan, or auto (demo weights; default)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--engine", default="best", help="for checkpoints: best, cuda, onnx, onnx-int8 or torch")
    p.add_argument("--aligned", action="store_true", help="inputs are already aligned 224x224 crops")
    p.add_argument("--out", default="predictions.csv", help="output CSV (default predictions.csv; - for stdout)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


    try:
        samples = collect_samples(a.inputs)
    except PredictInputError as e:
        p.error(str(e))
    try:
        rec = Recognizer.load(a.weights, device=a.device, engine=a.engine)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    engine = f"{rec.name} {rec.precision} on {rec.device}"
    columns = ["sample", "onset", "apex", "label", *[f"p_{c}" for c in rec.classes], "error"]
    out = sys.stdout if a.out == "-" else open(a.out, "w", newline="")
    n_ok = n_bad = 0
    try:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        for row in predict_samples(samples, rec, aligned=a.aligned, batch=a.batch, progress=not a.quiet):
            writer.writerow(row)
            n_bad += bool(row["error"])
            n_ok += not row["error"]
    finally:
        if out is not sys.stdout:
            out.close()
        rec.close()
    print(f"{n_ok} samples classified, {n_bad} failed ({engine}); "
          f"wrote {'stdout' if a.out == '-' else a.out}", file=sys.stderr)
    return 0 if n_ok else 1


if __name__ == "__main__":
    sys.exit(main())
