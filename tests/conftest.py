"""Shared fixtures and the skip rules for GPU, TensorRT and browser tests."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import torch

from core import assets

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]


def _cuda_available() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:
        return False


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return None


SKIPS = {
    "gpu": (lambda: _cuda_available(), "no CUDA GPU on this machine (torch.cuda.is_available() is False)"),
    "tensorrt": (
        lambda: importlib.util.find_spec("tensorrt") is not None and _cuda_available(),
        "TensorRT is not installed (its PyPI wheel fetches the library from NVIDIA's index, "
        "unreachable here) or no CUDA GPU",
    ),
    "browser": (
        lambda: chromium_path() is not None and importlib.util.find_spec("playwright") is not None,
        "Chromium (apt-get install chromium) or the playwright package is missing",
    ),
}


def pytest_collection_modifyitems(config, items):
    cache: dict[str, bool] = {}
    for item in items:
        for mark, (check, reason) in SKIPS.items():
            if mark in item.keywords:
                if mark not in cache:
                    cache[mark] = bool(check())
                if not cache[mark]:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def asset():
    return assets.path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Engine exports and generated clips go to the session's folder, never the user's cache."""
    d = tmp_path_factory.getbasetemp() / "moext-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOEXT_CACHE_DIR", str(d))
        yield d
