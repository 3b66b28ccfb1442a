"""The recogniser's input contract (one place).

A recogniser takes onset/apex pairs as ALIGNED 224x224 crops, uint8, RGB, shaped
(N, 224, 224, 3) (a single (224, 224, 3) pair is promoted to N = 1). Callers that hold
OpenCV BGR frames convert once with ``bgr_to_rgb``. Normalisation (ImageNet mean/std on
[0, 1] RGB, see train.moext.MoExtConfig) happens inside the engine's graph, never here.
"""
from __future__ import annotations

import numpy as np

INPUT_SIZE = 224
# ImageNet statistics on RGB in [0, 1]: the default normalisation of MoExtConfig.
NORM_MEAN = (0.485, 0.456, 0.406)
NORM_STD = (0.229, 0.224, 0.225)


class InputContractError(ValueError):
    """Onset/apex arrays that do not meet the recogniser's input contract."""


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[..., ::-1])


def check_pairs(onset: np.ndarray, apex: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (onset, apex) as contiguous uint8 arrays of shape (N, size, size, 3)."""
    out = []
    for name, arr in (("onset", onset), ("apex", apex)):
        if not isinstance(arr, np.ndarray):
            raise InputContractError(f"{name}: expected a numpy array, got {type(arr).__name__}")
        if arr.dtype != np.uint8:
            raise InputContractError(
                f"{name}: expected dtype uint8 (aligned RGB crops in 0..255), got {arr.dtype}; "
                "convert with np.clip(x, 0, 255).astype(np.uint8) if your crops are float"
            )
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != (size, size, 3):
            raise InputContractError(
                f"{name}: expected shape (N, {size}, {size}, 3) or ({size}, {size}, 3), got {arr.shape}; "
                "align faces with core.face.align_sample first"
            )
        out.append(np.ascontiguousarray(arr))
    if out[0].shape[0] != out[1].shape[0]:
        raise InputContractError(
            f"onset and apex batch sizes differ: {out[0].shape[0]} vs {out[1].shape[0]}"
        )
    if out[0].shape[0] == 0:
        raise InputContractError("empty batch: give at least one onset/apex pair")
    return out[0], out[1]


def to_nchw_float(batch: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in 0..255 (the engines' graph input)."""
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
