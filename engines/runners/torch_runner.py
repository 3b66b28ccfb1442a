"""Eager PyTorch fp32: the reference every other engine is compared against.

Runs train.moext.RecognitionGraph (normalisation + classifier + softmax) exactly as
trained, with no export step, on the CPU or a CUDA device.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engines.runners import EngineUnavailableError, ModelInfo, Runner


def pairs_to_tensor(batch: np.ndarray, device: torch.device | str, dtype=torch.float32) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float tensor in 0..255 on ``device``.

    The uint8 batch travels to the device first (4x fewer bytes than float32), then is
    permuted and cast there."""
    t = torch.from_numpy(batch).to(device, non_blocking=True)  # (N, H, W, 3) uint8
    return t.permute(0, 3, 1, 2).to(dtype).contiguous()  # (N, 3, H, W)


class TorchRunner(Runner):
    """Eager fp32 PyTorch on the module ``graph`` (forward(onset, apex) -> probs, inputs
    float32 NCHW 0..255: train.moext.RecognitionGraph)."""

    name = "torch"
    precision = "fp32"

    def __init__(self, graph: nn.Module, model: ModelInfo, device: str = "cpu", threads: int | None = None) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailableError("eager torch on cuda: torch.cuda.is_available() is False; use device='cpu'")
        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.device = device
        self.graph = graph.to(device=device, dtype=torch.float32).eval()

    @torch.inference_mode()
    def run(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        probs = self.graph(pairs_to_tensor(onset, self.device), pairs_to_tensor(apex, self.device))  # (N, C)
        return probs.float().cpu().numpy()

    def describe(self) -> dict:
        return {"torch": torch.__version__, "threads": torch.get_num_threads()}

    def close(self) -> None:
        self.graph = None
