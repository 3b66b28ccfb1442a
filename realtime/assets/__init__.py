"""Package data: sample media (see ATTRIBUTION.md here) and small model files.

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
