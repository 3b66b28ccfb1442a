"""What a measurement ran on: the one machine description every benchmark report prints."""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import psutil

LIBRARIES = ("numpy", "opencv-contrib-python", "opencv-python", "dlib", "dlib-bin", "mediapipe",
             "ai-edge-litert", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "torch",
             "safetensors", "tensorrt", "nvidia-pytriton", "tritonclient", "ray")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Physical cores (ONNX Runtime and torch are fastest with one thread per core)."""
    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def load_average() -> dict | None:
    """The 1/5/15-minute load average (None where the OS has none): this machine is shared,
    so every report says how busy it was."""
    if not hasattr(os, "getloadavg"):
        return None
    a, b, c = os.getloadavg()
    return {"1min": round(a, 2), "5min": round(b, 2), "15min": round(c, 2)}


def library_versions(names=LIBRARIES) -> dict[str, str]:
    out = {}
    for dist in names:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def no_nvidia_driver() -> bool:
    """True where there is certainly no NVIDIA GPU to use (Linux without the NVIDIA driver
    loaded), so asking torch, and loading it (230-270 MB resident), can be skipped."""
    return sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia")


def _torch_for_gpu():
    """torch, if it is loaded already or there may be a GPU to ask it about; else None (a
    process that never needed torch is not made to load it to describe itself)."""
    if "torch" in sys.modules:
        return sys.modules["torch"]
    if no_nvidia_driver():
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def describe() -> dict:
    """Platform, CPU, cores, memory, GPU, library versions and the load average now.
    ``torch_threads`` and ``cuda`` are None where this process has not loaded torch."""
    torch = _torch_for_gpu()
    versions = library_versions()
    d = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores_physical": physical_cores(),
        "cores_logical": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": versions.get("torch"),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "cuda": torch.version.cuda if torch is not None else None,
        "gpu": None,
        "libraries": versions,
        "loadavg": load_average(),
    }
    if torch is not None and torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name(0)
        d["compute_capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
    return d
