"""Export the MoExt recognition network to ONNX (the input of every compiled engine).

The exported graph is train.moext.RecognitionGraph (MOEXT.md: backbone + shape branch
run once on the 2N onset/apex frames, motion extractor, classifier, softmax):

    inputs   onset, apex : float32 (N, 3, 224, 224), RGB, values 0..255, N dynamic
    output   probs       : float32 (N, C), softmax over the checkpoint's class names

Normalisation is INSIDE the graph: x -> (x / 255 - mean) / std with the checkpoint's
mean/std (ImageNet by default, core/contract.py), so a caller only converts the
aligned uint8 HWC crops to float NCHW (core.contract.to_nchw_float).

Two variants, both one self-contained file (weights inline, opset 18):
- fp32: the reference graph, run by ONNX Runtime and TensorRT FP32.
- fp16: weights and arithmetic in float16 with float32 inputs/outputs (cast at the
  boundary), the input of a strongly typed TensorRT 11 FP16 build (STACK.md: TensorRT 11
  has no FP16 builder flag).

The model's facts travel in the ONNX metadata_props (keys "moext.*", read back by
``engines.runners.info_from_props``), so an engine file says which weights and classes it holds.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from engines.runners import BUILD_HINT, EngineError, ModelInfo, cached_onnx_path
from train.checkpoint import checkpoint_hash, load_classifier
from train.moext import RecognitionGraph
import hashlib
from engines.quantize import calibration_pairs, quantize_qdq

log = logging.getLogger(__name__)

OPSET = 18
FORMAT_VERSION = "1"
INPUT_DOC = "onset, apex: float32 (N,3,S,S) RGB 0..255; inside: (x/255 - mean)/std; output probs (N,C) softmax"


class Fp16Graph(nn.Module):
    """Run ``graph`` in float16 behind float32 inputs and outputs."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.inner = graph.half()  # not "graph": torch.fx reserves that attribute name

    def forward(self, onset: torch.Tensor, apex: torch.Tensor) -> torch.Tensor:
        return self.inner(onset.half(), apex.half()).float()


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the dynamo exporter's chatter (missing torchvision ops, deprecations)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def metadata_props(info: ModelInfo, precision: str) -> dict[str, str]:
    """The ONNX metadata_props an engine carries (strings only, as ONNX requires)."""
    return {
        "moext.format": FORMAT_VERSION,
        "moext.classes": json.dumps(list(info.classes)),
        "moext.width": repr(float(info.width)),
        "moext.checkpoint_hash": info.checkpoint_hash,
        "moext.input_size": str(int(info.input_size)),
        "moext.mean": json.dumps(list(info.mean)),
        "moext.std": json.dumps(list(info.std)),
        "moext.normalisation": "inside the graph: (x / 255 - mean) / std",
        "moext.input": INPUT_DOC,
        "moext.precision": precision,
        "moext.params": str(int(info.params)),
        "moext.weights": Path(info.weights).name if info.weights else "",
    }


def export_onnx(graph: nn.Module, info: ModelInfo, out: str | Path, *, precision: str = "fp32",
                opset: int = OPSET) -> Path:
    """Write ``graph`` (forward(onset, apex) -> probs) to one ONNX file with a dynamic batch.

    Returns the path. The model is validated with onnx.checker (full check, with shape
    inference) before it is written; the write is atomic (tmp file + rename)."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16 for an ONNX export, got {precision!r} "
                         "(int8 comes from engines.quantize)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = graph.cpu().float().eval()
    module = (Fp16Graph(graph) if precision == "fp16" else graph).eval()
    s = info.input_size
    example = (torch.full((2, 3, s, s), 128.0), torch.full((2, 3, s, s), 128.0))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            module, example, None, input_names=["onset", "apex"], output_names=["probs"],
            dynamic_shapes=({0: batch}, {0: batch}), opset_version=opset, dynamo=True,
            external_data=False, optimize=True, verbose=False,
        )
    proto = program.model_proto
    proto.producer_name = "moext-live engines.export"
    proto.doc_string = INPUT_DOC
    del proto.metadata_props[:]
    for k, v in metadata_props(info, precision).items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto, full_check=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=out.parent)
    os.close(fd)
    try:
        onnx.save_model(proto, tmp, save_as_external_data=False)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if precision == "fp16":
        graph.float()  # Fp16Graph converted the caller's module in place; give it back in fp32
    return out


def load_checkpoint_graph(checkpoint: str | Path) -> tuple[nn.Module, ModelInfo]:
    """(RecognitionGraph in fp32 eval mode, ModelInfo) from a .safetensors checkpoint."""

    checkpoint = Path(checkpoint)
    classifier = load_classifier(checkpoint, device="cpu")  # CheckpointError names the file and the problem
    cfg = classifier.cfg
    graph = RecognitionGraph(classifier).eval()
    info = ModelInfo(
        classes=tuple(cfg.class_names),
        width=float(cfg.width),
        checkpoint_hash=checkpoint_hash(checkpoint),
        input_size=int(cfg.input_size),
        mean=tuple(float(v) for v in cfg.mean),
        std=tuple(float(v) for v in cfg.std),
        params=sum(p.numel() for p in classifier.parameters()),
        weights=str(checkpoint),
    )
    return graph, info


def cached_export(graph: nn.Module, info: ModelInfo, precision: str = "fp32", calib: str | Path | None = None) -> Path:
    """The ONNX export of a loaded checkpoint, made once and kept in the user's cache dir
    under the checkpoint's content hash (changed weights get a new file).

    precision "int8" quantises the cached fp32 export (engines.quantize) on ``calib``
    (a crop cache dir or a face video; default: the bundled sample video)."""

    if precision == "int8":
        tag = "video" if calib is None else hashlib.sha1(str(Path(calib).resolve()).encode()).hexdigest()[:8]
        out = cached_onnx_path(info.checkpoint_hash, f"int8-{tag}")
        if not out.is_file():

            fp32 = cached_export(graph, info, "fp32")
            log.info("quantising %s to int8 (once; cached)", fp32)
            onset, apex = calibration_pairs(calib)
            quantize_qdq(fp32, out, onset, apex)
        return out
    out = cached_onnx_path(info.checkpoint_hash, precision)
    if not out.is_file():
        log.info("exporting %s to %s (once; cached by checkpoint hash)", info.weights, out)
        export_onnx(graph, info, out, precision=precision)
    return out


def check_onnx_file(path: str | Path) -> onnx.ModelProto:
    """Load and validate an ONNX file; EngineError naming the file if it is broken."""
    path = Path(path)
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as e:
        raise EngineError(f"{path}: not a valid ONNX model ({str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__}); "
                          f"rebuild it with {BUILD_HINT.format(engine='onnx', out=path)}") from None
    return proto


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m engines.export",
        description="Export a MoExt checkpoint to ONNX (inputs onset/apex float32 NCHW RGB 0..255, "
                    "output probs; dynamic batch; normalisation inside). engines.build calls this too.",
        epilog="examples:\n  python -m engines.export runs/demo/best.safetensors --out moext.onnx\n"
               "  python -m engines.export ckpt.safetensors --precision fp16 --out moext-fp16.onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help=".safetensors checkpoint (train.checkpoint format)")
    p.add_argument("--out", type=Path, required=True, help="output .onnx file")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    p.add_argument("--opset", type=int, default=OPSET)
    a = p.parse_args(argv)
    graph, info = load_checkpoint_graph(a.checkpoint)
    out = export_onnx(graph, info, a.out, precision=a.precision, opset=a.opset)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {a.precision}, classes {list(info.classes)})")


if __name__ == "__main__":
    main()
