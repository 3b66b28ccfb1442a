"""The native libraries' start-up banner is kept off the console below DEBUG
(core.face.native_log_filter); everything else written to fd 2 meanwhile gets through."""
from __future__ import annotations

import logging
import os

import numpy as np

from core.face import NATIVE_BANNER, aligned, native_log_filter

BANNER = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
          "INFO: [environment.cc:36] Creating LiteRT environment with options\n"
          "WARNING: Logging before InitGoogle() is written to STDERR\n"
          "W0000 00:00:1796186176.598691    3298 inference_runner_litert.cc:1418] Input tensor memory not aligned\n"
          "W0000 00:00:1796186176.598691    3298 inference_feedback_manager.cc:114] Feedback manager needs a model\n")
OURS = ("INFO: exporting moext_demo.safetensors to ONNX (once)\n"
        "E0000 00:00:1796186176.598691    3298 face_detector.cc:1] a real error\n"
        "ERROR: something the user must see\n")


def test_banner_pattern():
    assert all(NATIVE_BANNER.match(line) for line in BANNER.splitlines())
    assert not any(NATIVE_BANNER.match(line) for line in OURS.splitlines())


def test_filter_drops_the_banner_and_keeps_the_rest(capfd, caplog):
    caplog.set_level(logging.INFO, logger="core.face")
    with native_log_filter():
        os.write(2, (BANNER + OURS).encode())
    err = capfd.readouterr().err
    assert err == OURS


def test_debug_lets_everything_through(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="core.face")
    with native_log_filter():
        os.write(2, BANNER.encode())
    assert capfd.readouterr().err == BANNER


def test_fd2_is_restored_after_an_exception(capfd, caplog):
    caplog.set_level(logging.WARNING, logger="core.face")
    try:
        with native_log_filter():
            os.write(2, b"ERROR: kept\n")
            raise RuntimeError("model broken")
    except RuntimeError:
        pass
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "ERROR: kept\nafter\n"


def test_detector_input_is_copied_to_an_aligned_buffer_only_when_needed():
    raw = np.zeros(64 * 64 * 3 + 1, np.uint8)[1:].reshape(64, 64, 3)    # data one byte off
    raw[...] = np.arange(raw.size, dtype=np.uint8).reshape(raw.shape)
    out = aligned(raw)
    assert out.ctypes.data % 64 == 0 and out.flags.c_contiguous and np.array_equal(out, raw)
    assert aligned(out) is out                                             # already aligned: no copy
