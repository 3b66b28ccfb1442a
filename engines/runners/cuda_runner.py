"""PyTorch on an NVIDIA GPU without TensorRT: fp16, channels-last, CUDA-graph replay.

Measured on an H200 (STACK.md, "GPU figures"): eager fp32 1.98 ms per pair at batch 1,
eager fp16 channels-last 1.87 ms (kernel-launch bound), fp16 CUDA-graph replay 0.51 ms.
So the runner:
1. casts RecognitionGraph to fp16 and channels-last memory format;
2. lets cuDNN pick its fastest kernels for each fixed batch size (cudnn.benchmark);
3. captures one CUDA graph per batch size in ``batch_sizes`` (1, 2, 4, ... 64): the
   graph reads a static uint8 NHWC input buffer, so the NHWC -> NCHW permute (which is
   already channels-last in memory) and the cast to fp16 are replayed with the network;
4. at run time pads a batch up to the nearest captured size, copies the uint8 crops in
   through pinned memory, replays, and returns the first N rows (eval-mode BatchNorm is
   per sample, so padding rows never change real rows).
5. serialises callers: the graphs read static buffers and write static outputs, so run()
   and close() take the runner's lock (engines/runners/exclusive.py); threads sharing one
   recogniser queue and each gets its own batch's result.

``compile=True`` additionally runs the network through torch.compile
(mode "max-autotune-no-cudagraphs": we capture graphs ourselves) with inductor's
persistent cache in the user's cache dir (TORCHINDUCTOR_CACHE_DIR), so the long first
compile (~100 s on the H200) is paid once per machine. AOTInductor packages are not used:
on the H200 they compiled but crashed the process when loaded (STACK.md).
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import nn

from engines.runners import EngineUnavailableError, ModelInfo, Runner, user_cache_dir
from engines.runners.exclusive import one_call_at_a_time

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def padded_size(n: int, sizes: tuple[int, ...]) -> int:
    """The smallest captured batch size >= n (n must not exceed the largest)."""
    for s in sorted(sizes):
        if s >= n:
            return s
    raise ValueError(f"batch of {n} exceeds the largest captured size {max(sizes)}")


class _Fp16Pairs(nn.Module):
    """uint8 NHWC onset/apex -> fp16 channels-last NCHW -> RecognitionGraph -> fp32 probs."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.inner = graph

    def forward(self, onset_u8: torch.Tensor, apex_u8: torch.Tensor) -> torch.Tensor:
        onset = onset_u8.permute(0, 3, 1, 2).half()  # (N, 3, S, S), channels-last strides
        apex = apex_u8.permute(0, 3, 1, 2).half()
        return self.inner(onset, apex).float()  # (N, C)


class CudaRunner(Runner):
    """fp16 channels-last RecognitionGraph with one CUDA graph per batch size."""

    name = "cuda"
    precision = "fp16"

    def __init__(self, graph: nn.Module, model: ModelInfo, device: str = "cuda",
                 batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES, cuda_graphs: bool = True,
                 compile: bool = False) -> None:
        if not torch.cuda.is_available():
            raise EngineUnavailableError("the CUDA engine needs an NVIDIA GPU and a CUDA build of torch "
                                         "(torch.cuda.is_available() is False)")
        self.model = model
        self.device = str(torch.device(device if device != "auto" else "cuda"))
        self.batch_sizes = tuple(sorted(set(int(b) for b in batch_sizes)))
        self.max_batch = None  # larger batches are split into chunks of max(batch_sizes)
        self.cuda_graphs = cuda_graphs
        self.compiled = compile
        size = model.input_size
        torch.backends.cudnn.benchmark = True
        net = graph.to(self.device).half().to(memory_format=torch.channels_last).eval()
        self.net: nn.Module = _Fp16Pairs(net).eval()
        if compile:
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(user_cache_dir("torchinductor")))
            self.net = torch.compile(self.net, mode="max-autotune-no-cudagraphs", dynamic=False)
        biggest = max(self.batch_sizes)
        # One pinned host buffer and one device buffer per input, shared by every graph.
        self.host = [torch.empty((biggest, size, size, 3), dtype=torch.uint8).pin_memory() for _ in range(2)]
        self.static_in = [torch.zeros((biggest, size, size, 3), dtype=torch.uint8, device=self.device) for _ in range(2)]
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        if cuda_graphs:
            self._capture()

    @torch.inference_mode()
    def _capture(self) -> None:
        pool = None
        side = torch.cuda.Stream(self.device)
        # Largest first, so the smaller graphs fit in the memory pool it leaves behind.
        for b in sorted(self.batch_sizes, reverse=True):
            on, ap = self.static_in[0][:b], self.static_in[1][:b]
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up: cuDNN autotuning and allocator growth happen outside capture
                    self.net(on, ap)
            torch.cuda.current_stream(self.device).wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                out = self.net(on, ap)  # (b, C) fp32, a static output buffer
            pool = g.pool()
            self.graphs[b] = (g, out)
        torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def _run_chunk(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        n = len(onset)
        for host, dev, x in zip(self.host, self.static_in, (onset, apex)):
            host[:n].numpy()[...] = x
            dev[:n].copy_(host[:n], non_blocking=True)
        if self.cuda_graphs:
            g, out = self.graphs[padded_size(n, self.batch_sizes)]
            g.replay()
            return out[:n].cpu().numpy()
        return self.net(self.static_in[0][:n], self.static_in[1][:n]).cpu().numpy()

    @one_call_at_a_time  # static buffers and graphs: one caller at a time
    def run(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        step = max(self.batch_sizes)
        if len(onset) <= step:
            return self._run_chunk(onset, apex)
        return np.concatenate([self._run_chunk(onset[i:i + step], apex[i:i + step]) for i in range(0, len(onset), step)])

    def describe(self) -> dict:
        return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(self.device),
                "batch_sizes": list(self.batch_sizes), "cuda_graphs": self.cuda_graphs, "torch_compile": self.compiled}

    @one_call_at_a_time  # never free the graphs under a running replay
    def close(self) -> None:
        self.graphs.clear()
        self.net = None
        self.static_in = self.host = []
        torch.cuda.empty_cache()
