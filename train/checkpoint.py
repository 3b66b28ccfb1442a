"""MoExt checkpoints: safetensors with the config, class names and run metadata inside.

File layout (one .safetensors file, CONTRACTS.md / issue 3 "Checkpoints"):
    tensors   the state dict of a MoExtClassifier ("classifier") or MoExtPretrainer
              ("pretrainer"), float32, or float16 if saved with dtype=torch.float16
              (floating tensors are converted back to float32 on load)
    metadata  (strings) format = "moext-checkpoint/1", kind, config (MoExtConfig JSON),
              class_names (JSON list), meta (JSON: epoch, metrics, data, ... anything the
              trainer wants to keep), dtype, tensors_sha256 (of the tensor bytes, checked on
              load so silent corruption of the data is caught too)

Loading checks the tensors against the config (missing, unexpected and shape-mismatched
keys) and, when the caller says which config it expects, the config itself ("width 0.5 in
the checkpoint vs 1.0 requested"). Every failure is a CheckpointError naming the file.

.pt / .pth files are read only with torch.load(weights_only=True): a pickle that carries
arbitrary Python objects is refused, never executed. ``load_state_file`` reads any
plain weights file (e.g. torchvision's ResNet-18 ImageNet weights for the trunk).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from core.files import file_sha256
from train.moext import MoExtClassifier, MoExtConfig, MoExtPretrainer

FORMAT = "moext-checkpoint/1"
KINDS = ("classifier", "pretrainer")
# Config fields that change the weights or what the outputs mean; dropout does not.
ARCH_FIELDS = ("width", "num_classes", "class_names", "input_size", "mean", "std", "motion_kernel", "proj_dim",
               "motion_extractor")
# What a classifier built from a pre-training checkpoint must share with it.
PRETRAIN_FIELDS = ("width", "mean", "std", "motion_kernel")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit what was asked for."""


# ---------------------------------------------------------------------------------------
# helpers


def checkpoint_hash(path: str | Path) -> str:
    """sha256 (hex) of the file's bytes: identifies a checkpoint (engine caches key on it)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return file_sha256(path)


def tensors_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in key order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _parse_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}.get(dtype, dtype)
    if dtype not in (torch.float32, torch.float16):
        raise CheckpointError(f"checkpoint dtype must be torch.float32 or torch.float16, got {dtype!r}")
    return dtype


def _kind_of(model_or_state, kind: str | None) -> str:
    if kind is not None:
        if kind not in KINDS:
            raise CheckpointError(f"kind must be one of {KINDS}, got {kind!r}")
        return kind
    if isinstance(model_or_state, MoExtClassifier):
        return "classifier"
    if isinstance(model_or_state, MoExtPretrainer):
        return "pretrainer"
    keys = list(model_or_state.keys())
    if any(k.startswith("reconstructor.") for k in keys):
        return "pretrainer"
    if "fc.weight" in keys:
        return "classifier"
    raise CheckpointError("cannot tell whether this state dict is a classifier or a pre-training model; pass kind=")


def _build(kind: str, cfg: MoExtConfig, device="cpu") -> nn.Module:
    return (MoExtClassifier if kind == "classifier" else MoExtPretrainer)(cfg).to(device)


def state_problems(state: Mapping[str, torch.Tensor], cfg: MoExtConfig, kind: str) -> list[str]:
    """Missing, unexpected and shape-mismatched keys of ``state`` for a ``kind`` model with ``cfg``."""
    with torch.device("meta"):
        own = _build(kind, cfg, "meta").state_dict()
    problems = []
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)} expected"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {missing[:4]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:4]}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches, e.g. {shapes[:3]}")
    return problems


def config_mismatches(found: MoExtConfig, requested: MoExtConfig, names=ARCH_FIELDS) -> list[str]:
    """["width 0.5 in the checkpoint vs 1.0 requested", ...] for the fields that differ."""
    out = []
    for name in names:
        a, b = getattr(found, name), getattr(requested, name)
        if a != b:
            out.append(f"{name} {_fmt(a)} in the checkpoint vs {_fmt(b)} requested")
    return out


def _fmt(v) -> str:
    return "(" + ", ".join(map(str, v)) + ")" if isinstance(v, tuple) else str(v)


# ---------------------------------------------------------------------------------------
# save


def save_checkpoint(path: str | Path, model_or_state: "nn.Module | Mapping[str, torch.Tensor]", cfg: MoExtConfig,
                    meta: dict | None = None, dtype=None, kind: str | None = None) -> Path:
    """Write a .safetensors checkpoint atomically (temp file + rename) and return its path.

    ``model_or_state``: a MoExtClassifier / MoExtPretrainer or its state dict (``kind`` says
    which when it cannot be told from the keys). ``meta`` must be JSON-serialisable.
    ``dtype=torch.float16`` halves the file; loading gives float32 again."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: checkpoints are written as .safetensors; use a name ending in .safetensors")
    kind = _kind_of(model_or_state, kind)
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else dict(model_or_state)
    problems = state_problems(state, cfg, kind)
    if problems:
        raise CheckpointError(f"{path}: refusing to save a {kind} state that does not match its config "
                              f"(width {cfg.width}, {cfg.num_classes} classes): " + "; ".join(problems))
    dtype = _parse_dtype(dtype)
    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous().clone()  # own storage: safetensors refuses shared memory
    try:
        meta_json = json.dumps(meta or {}, sort_keys=True)
    except TypeError as e:
        raise CheckpointError(f"{path}: meta must be JSON-serialisable ({e})") from e
    metadata = {
        "format": FORMAT,
        "kind": kind,
        "config": cfg.to_json(),
        "class_names": json.dumps(list(cfg.class_names)),
        "meta": meta_json,
        "dtype": str(dtype).replace("torch.", ""),
        "tensors_sha256": tensors_digest(tensors),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        _canonical_header(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _canonical_header(path: str | Path) -> None:
    """Rewrite the safetensors JSON header with sorted keys, in place.

    safetensors writes its header from a hash map, so the same tensors and metadata can
    give different bytes (and a different checkpoint_hash) from one save to the next. The
    header is 8 bytes of little-endian length + JSON padded with spaces; the sorted JSON has
    the same characters, so it fits in the same space and the data offsets stay valid."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        canon = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(canon) <= n:
            f.seek(8)
            f.write(canon + b" " * (n - len(canon)))


# ---------------------------------------------------------------------------------------
# load


def _read_header(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (corrupt or truncated?): {e}") from e


def checkpoint_info(path: str | Path) -> dict:
    """Header of a .safetensors checkpoint without reading the tensors:
    {"format", "kind", "config": MoExtConfig, "meta": dict, "dtype"}."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    md = _read_header(path)
    if md.get("format") != FORMAT or "config" not in md:
        raise CheckpointError(
            f"{path}: a safetensors file but not a MoExt checkpoint (metadata format {md.get('format')!r}, "
            f"expected {FORMAT!r}); write checkpoints with train.checkpoint.save_checkpoint, or load "
            "plain weights with load_state_file"
        )
    try:
        cfg = MoExtConfig.from_json(md["config"])
        meta = json.loads(md.get("meta", "{}"))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable config/meta in the metadata: {e}") from e
    kind = md.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{path}: unknown checkpoint kind {kind!r} (expected one of {KINDS})")
    return {"format": md["format"], "kind": kind, "config": cfg, "meta": meta,
            "dtype": md.get("dtype", "float32"), "tensors_sha256": md.get("tensors_sha256")}


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: the pickle holds Python objects other than tensors and plain containers, "
            "and loading them could run arbitrary code (only torch.load(weights_only=True) is used). "
            f"Re-save just the state dict (torch.save(model.state_dict(), ...)) or use .safetensors. Detail: "
            f"{str(e).splitlines()[0]}"
        ) from e
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable torch file (corrupt or truncated?): {e}") from e


def _as_state(obj, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise CheckpointError(f"{path}: expected a state dict (str -> tensor), possibly under 'state_dict' or 'model'")
    return dict(obj)


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of any weights file: .safetensors, or .pt/.pth read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file (corrupt or truncated?): {e}") from e
    if path.suffix in (".pt", ".pth", ".bin"):
        return _as_state(_torch_load(path), path)
    raise CheckpointError(f"{path}: unknown weights format {path.suffix!r}; use .safetensors, .pt or .pth")


def load_resnet18_trunk(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Start the trunk of a MoExtPretrainer / MoExtClassifier from a user-supplied
    torchvision-style ResNet-18 weights file (e.g. the ImageNet weights, read with
    weights_only=True; nothing is downloaded). Returns (missing, unexpected) trunk keys."""
    path = Path(path)
    state = load_state_file(path)
    try:
        return model.separator.trunk.load_resnet18(state)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e


def load_checkpoint(path: str | Path, cfg: MoExtConfig | None = None,
                    kind: str | None = None) -> tuple[dict[str, torch.Tensor], MoExtConfig, dict]:
    """(state dict in float32, config, meta) of a checkpoint, checked for consistency.

    .safetensors: our format (config in the metadata). .pt/.pth (weights_only): a state
    dict, or {"state_dict": ..., "config": {...}, "meta": {...}}; without a config inside,
    pass ``cfg``. When ``cfg`` is given for a checkpoint that has its own config, the two
    must agree on ARCH_FIELDS."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        info = checkpoint_info(path)
        state = load_state_file(path)
        want = info.get("tensors_sha256")
        if want and tensors_digest(state) != want:
            raise CheckpointError(f"{path}: tensor data does not match the checksum in its metadata (corrupt file)")
        found_cfg, meta, found_kind = info["config"], info["meta"], info["kind"]
    elif path.suffix in (".pt", ".pth"):
        obj = _torch_load(path)
        state = _as_state(obj, path)
        found_cfg, meta = None, {}
        if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
            try:
                found_cfg = MoExtConfig.from_dict(obj["config"])
            except (ValueError, TypeError) as e:
                raise CheckpointError(f"{path}: unreadable 'config' entry: {e}") from e
            meta = obj.get("meta") or {}
        if found_cfg is None:
            if cfg is None:
                raise CheckpointError(f"{path}: holds no MoExt config; pass cfg=MoExtConfig(...) describing it")
            found_cfg = cfg
        found_kind = None
    else:
        raise CheckpointError(f"{path}: unknown checkpoint format {path.suffix!r}; use .safetensors (or .pt/.pth)")

    found_kind = found_kind or _kind_of(state, kind)
    if cfg is not None:
        # proj_dim only shapes the pre-training model's projection head
        names = ARCH_FIELDS if found_kind == "pretrainer" else tuple(f for f in ARCH_FIELDS if f != "proj_dim")
        bad = config_mismatches(found_cfg, cfg, names)
        if bad:
            raise CheckpointError(f"{path}: config mismatch: " + "; ".join(bad))
    if kind is not None and kind != found_kind:
        raise CheckpointError(f"{path}: a {found_kind} checkpoint, but a {kind} was requested")
    problems = state_problems(state, found_cfg, found_kind)
    if problems:
        raise CheckpointError(f"{path}: tensors do not match the {found_kind} of its config "
                              f"(width {found_cfg.width}, {found_cfg.num_classes} classes): " + "; ".join(problems))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return state, found_cfg, meta


def load_classifier(path: str | Path, device="cpu", cfg: MoExtConfig | None = None,
                    allow_pretrain: bool = False) -> MoExtClassifier:
    """A MoExtClassifier in eval mode on ``device`` from a classifier checkpoint.

    ``cfg``: the config the caller expects (mismatches raise CheckpointError; its dropout is
    used). A pre-training checkpoint is accepted only with ``allow_pretrain=True``: the
    trunk, shape branch and motion extractor are loaded and the classifier head keeps its
    random initialisation (for starting fine-tuning)."""
    path = Path(path)
    if path.suffix == ".safetensors" and checkpoint_info(path)["kind"] == "pretrainer":
        if not allow_pretrain:
            raise CheckpointError(
                f"{path}: a pre-training checkpoint (no classifier head); fine-tune it first "
                "(python -m train.finetune --pretrained ...), or pass allow_pretrain=True to start from it"
            )
        state, pcfg, _ = load_checkpoint(path, kind="pretrainer")
        want = cfg or MoExtConfig(width=pcfg.width, mean=pcfg.mean, std=pcfg.std, motion_kernel=pcfg.motion_kernel)
        bad = config_mismatches(pcfg, want, PRETRAIN_FIELDS)
        if bad:
            raise CheckpointError(f"{path}: config mismatch: " + "; ".join(bad))
        model = MoExtClassifier(want)
        model.load_pretrained(state)
        return model.to(device).eval()
    state, found, _ = load_checkpoint(path, cfg=cfg, kind="classifier")
    model = MoExtClassifier(cfg if cfg is not None else found)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def load_pretrainer(path: str | Path, device="cpu", cfg: MoExtConfig | None = None) -> MoExtPretrainer:
    """A MoExtPretrainer (train mode) from a pre-training checkpoint, e.g. to resume."""
    state, found, _ = load_checkpoint(path, cfg=cfg, kind="pretrainer")
    model = MoExtPretrainer(cfg if cfg is not None else found)
    model.load_state_dict(state, strict=True)
    return model.to(device)


__all__ = [
    "FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "load_classifier", "load_pretrainer",
    "checkpoint_hash", "checkpoint_info", "load_state_file", "load_resnet18_trunk", "config_mismatches", "state_problems",
]
