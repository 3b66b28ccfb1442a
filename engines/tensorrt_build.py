"""Build a TensorRT plan from a MoExt checkpoint (ONNX -> TensorRT builder -> serialized plan).

Steps (engines.build --engine tensorrt calls ``build_plan``):
1. export the ONNX graph the precision needs (engines/export.py, engines/quantize.py);
2. parse it with TensorRT's ONNX parser into a network definition;
3. one optimisation profile for batch 1..max on both inputs (``profile_shapes``);
4. a timing cache file, reused across builds on the same GPU and TensorRT version;
5. serialize the plan and write its metadata JSON beside it (``plan_metadata``).

Precision (``build_recipe``), because TensorRT 11 removed the weak-typing builder flags
(STACK.md; NVIDIA's 10.x -> 11.x migration guide):
- TensorRT >= 11 (no BuilderFlag.FP16): networks are strongly typed, so FP16 parses the
  fp16 ONNX (fp16 weights and arithmetic, fp32 inputs/outputs) and INT8 parses the Q/DQ
  ONNX (explicit quantisation, calibrated on aligned face crops).
- TensorRT 10 (flags present): FP16 parses the fp32 ONNX and sets BuilderFlag.FP16; INT8
  parses the Q/DQ ONNX and sets INT8 (and FP16 for the layers left unquantised).
- FP32 parses the fp32 ONNX and clears TF32 where that flag exists, so FP32 means fp32.

TensorRT cannot be installed on the machines this project is developed on (its wheel
fetches the library from NVIDIA's index): everything up to the TensorRT calls is pure
and tested there; the calls themselves follow the documented Python API.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engines.runners import EngineUnavailableError, ModelInfo, user_cache_dir
from engines.runners.tensorrt_runner import METADATA_VERSION, metadata_path
import json
from engines.export import export_onnx, load_checkpoint_graph
from engines.runners.tensorrt_runner import installed_gpu
from engines.quantize import calibration_pairs, quantize_qdq

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
INPUTS = ("onset", "apex")


@dataclass(frozen=True)
class BuildRecipe:
    """Which ONNX graph to parse and which builder flags to set or clear."""

    onnx_precision: str  # "fp32" | "fp16" | "int8" (the Q/DQ graph)
    set_flags: tuple[str, ...] = ()
    clear_flags: tuple[str, ...] = ()
    strongly_typed: bool = False


def build_recipe(precision: str, available_flags: set[str] | frozenset[str]) -> BuildRecipe:
    """The build recipe for ``precision`` given the names in the installed trt.BuilderFlag."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    weakly_typed = "FP16" in available_flags  # TensorRT <= 10
    tf32 = ("TF32",) if "TF32" in available_flags else ()
    if precision == "fp32":
        return BuildRecipe("fp32", clear_flags=tf32, strongly_typed=not weakly_typed)
    if precision == "fp16":
        if weakly_typed:
            return BuildRecipe("fp32", set_flags=("FP16",))
        return BuildRecipe("fp16", strongly_typed=True)
    if "INT8" in available_flags:
        return BuildRecipe("int8", set_flags=("INT8", "FP16") if weakly_typed else ("INT8",))
    return BuildRecipe("int8", strongly_typed=True)


def profile_shapes(max_batch: int, input_size: int = 224, opt_batch: int = 1) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Optimisation profile: input name -> (min, opt, max) shapes, batch 1..max_batch.

    ``opt_batch`` is the batch TensorRT tunes kernels for; the live path runs batch 1."""
    if max_batch < 1:
        raise ValueError(f"max batch must be >= 1, got {max_batch}")
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"opt batch must be within 1..{max_batch}, got {opt_batch}")
    shape = (3, input_size, input_size)
    return {name: ((1, *shape), (opt_batch, *shape), (max_batch, *shape)) for name in INPUTS}


def plan_metadata(info: ModelInfo, *, precision: str, max_batch: int, opt_batch: int, tensorrt_version: str,
                  gpu_name: str, compute_capability: str, recipe: BuildRecipe) -> dict:
    """The JSON written beside a plan (read back by engines.runners.tensorrt_runner)."""
    return {
        "format": METADATA_VERSION,
        "engine": "tensorrt",
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "precision": precision,
        "onnx_precision": recipe.onnx_precision,
        "builder_flags": list(recipe.set_flags),
        "strongly_typed": recipe.strongly_typed,
        "input_size": info.input_size,
        "inputs": {n: "float32 (N, 3, S, S) RGB 0..255" for n in INPUTS},
        "output": "probs float32 (N, C) softmax",
        "normalisation": "inside the graph: (x / 255 - mean) / std",
        "mean": list(info.mean),
        "std": list(info.std),
        "classes": list(info.classes),
        "width": info.width,
        "params": info.params,
        "checkpoint_hash": info.checkpoint_hash,
        "checkpoint": Path(info.weights).name if info.weights else "",
        "max_batch": max_batch,
        "opt_batch": opt_batch,
    }


def timing_cache_path(tensorrt_version: str, compute_capability: str) -> Path:
    return user_cache_dir("tensorrt") / f"timing-trt{tensorrt_version}-sm{compute_capability.replace('.', '')}.cache"


def _build_serialized(onnx_path: Path, recipe: BuildRecipe, shapes: dict, cache_file: Path, workspace_gb: float):
    """The TensorRT calls: parse, configure, build. Returns the serialized plan (bytes)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if recipe.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # ignored (always on) in TensorRT 11
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    for name in recipe.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in recipe.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    cache_file.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(serialized))


def build_plan(checkpoint: str | Path, out: str | Path, *, precision: str = "fp16", max_batch: int = 64,
               opt_batch: int = 1, calib: str | Path | None = None, workspace_gb: float = 4.0,
               keep_onnx: bool = False) -> Path:
    """checkpoint (.safetensors) -> TensorRT plan at ``out`` + ``out``.json. Returns ``out``."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineUnavailableError(
            "TensorRT is not installed: pip install 'moext-live[tensorrt]' (its wheel downloads the library from "
            "NVIDIA's index, so it needs that index reachable) on a machine with an NVIDIA GPU; without it use "
            "--engine cuda or --engine onnx") from None


    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe = build_recipe(precision, {n for n in dir(trt.BuilderFlag) if n.isupper()})
    graph, info = load_checkpoint_graph(checkpoint)
    gpu_name, cc = installed_gpu("cuda")
    shapes = profile_shapes(max_batch, info.input_size, opt_batch)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / f"moext-{recipe.onnx_precision}.onnx"
        if recipe.onnx_precision == "int8":

            fp32 = export_onnx(graph, info, Path(tmp) / "moext-fp32.onnx", precision="fp32")
            onset, apex = calibration_pairs(calib)
            quantize_qdq(fp32, onnx_path, onset, apex, target="tensorrt")
        else:
            export_onnx(graph, info, onnx_path, precision=recipe.onnx_precision)
        log.info("building TensorRT %s %s plan (recipe %s) on %s", trt.__version__, precision, recipe, gpu_name)
        plan = _build_serialized(onnx_path, recipe, shapes, timing_cache_path(trt.__version__, cc), workspace_gb)
        if keep_onnx:
            (out.parent / f"{out.stem}.{recipe.onnx_precision}.onnx").write_bytes(onnx_path.read_bytes())
    out.write_bytes(plan)
    meta = plan_metadata(info, precision=precision, max_batch=max_batch, opt_batch=opt_batch,
                         tensorrt_version=trt.__version__, gpu_name=gpu_name, compute_capability=cc, recipe=recipe)
    metadata_path(out).write_text(json.dumps(meta, indent=2))
    return out
