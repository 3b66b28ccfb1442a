"""File facts shared by training and the engines: the sha256 that names a checkpoint.

``file_sha256`` needs no deep-learning framework, so a front end can find a checkpoint's
cached engine (``engines.runners.cached_onnx_path``) without importing torch."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
