"""What the MoExt inference server and its clients agree on (one place).

Three pieces speak this protocol: ``python -m engines.serve`` (a Triton Inference Server
through PyTriton), engines/triton_repo.py (a model repository for the standard Triton
server) and the client runner engines/runners/triton_runner.py, which ``Recognizer.load``
uses for an engine spec ``triton://HOST:PORT/MODEL`` (HTTP port; default 8000/moext).

The served model MODEL takes the recogniser's pairs in one of two layouts, read by the
client from the model's metadata:
- PyTriton (engines.serve): onset, apex UINT8 (N, S, S, 3), the input contract as is;
- standard Triton (onnxruntime / tensorrt backend): the ONNX graph's own FP32 (N, 3, S, S)
  in 0..255 (core.contract.to_nchw_float), since a TensorRT plan takes nothing else;
and returns probs FP32 (N, C). The model's facts (classes, checkpoint hash, width, input
contract, precision) travel as one JSON document, ``info_json``: PyTriton serves it from
a second model MODEL_info (one BYTES output, no batching); a model repository carries it
in config.pbtxt as the parameter "moext.info". The client reads either and runs the same
checks as for a local engine file.
"""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from engines.runners import EngineError, ModelInfo

SCHEME = "triton"
DEFAULT_HOST = "localhost"
DEFAULT_HTTP_PORT = 8000
DEFAULT_MODEL = "moext"
INFO_MODEL_SUFFIX = "_info"  # PyTriton: MODEL_info answers the info document
INFO_INPUT = "request"  # its one (ignored) input, UINT8 (1,)
INFO_OUTPUT = "info"  # BYTES (1,): info_json
INFO_PARAMETER = "moext.info"  # model repository: the same document as a config parameter
INFO_FORMAT = 1
INPUT_NAMES = ("onset", "apex")
OUTPUT_NAME = "probs"
# The server's install (PyTriton pins numpy<2, this project needs numpy 2: see pytriton_env.py).
INSTALL_HINT = ("pip install -e '.[serve]' && pip install --no-deps nvidia-pytriton==0.7.0 "
                "(Linux only; README, 'Serving many streams (Triton)')")


def is_triton_spec(spec: object) -> bool:
    return str(spec).lower().startswith(f"{SCHEME}://")


def parse_url(spec: str) -> tuple[str, int, str]:
    """"triton://HOST:PORT/MODEL" -> (host, port, model); port and model have defaults."""
    parts = urlsplit(str(spec))
    if parts.scheme.lower() != SCHEME or not parts.hostname:
        raise ValueError(f"{spec!r}: expected triton://HOST[:PORT][/MODEL], e.g. triton://localhost:8000/moext")
    try:
        port = parts.port or DEFAULT_HTTP_PORT
    except ValueError:
        raise ValueError(f"{spec!r}: the port is not a number") from None
    model = parts.path.strip("/") or DEFAULT_MODEL
    if "/" in model:
        raise ValueError(f"{spec!r}: one model name after the port, got {model!r}")
    return parts.hostname, port, model


def spec_url(host: str, port: int, model: str = DEFAULT_MODEL) -> str:
    return f"{SCHEME}://{host}:{port}/{model}"


def serve_hint(port: int = DEFAULT_HTTP_PORT, model: str = DEFAULT_MODEL) -> str:
    """The command that starts a server the client can reach (quoted in every refusal)."""
    extra = "" if port == DEFAULT_HTTP_PORT else f" --http-port {port}"
    extra += "" if model == DEFAULT_MODEL else f" --model-name {model}"
    return f"python -m engines.serve --engine CHECKPOINT_OR_ENGINE{extra}"


def info_json(model: ModelInfo, *, precision: str, engine: str, device: str, max_batch: int | None) -> str:
    """The served model's facts as one JSON document (what the client checks)."""
    doc = {"format": INFO_FORMAT, "classes": list(model.classes), "width": float(model.width),
           "checkpoint_hash": model.checkpoint_hash, "input_size": int(model.input_size),
           "mean": list(model.mean), "std": list(model.std), "params": int(model.params),
           "weights": str(model.weights).rsplit("/", 1)[-1], "precision": precision, "engine": engine,
           "device": device, "max_batch": max_batch}
    return json.dumps(doc, sort_keys=True)


def info_from_json(text: str | bytes, where: str) -> tuple[ModelInfo, dict]:
    """(ModelInfo, the whole document) from ``info_json``'s output; EngineError if unreadable."""
    try:
        doc = json.loads(text)
        info = ModelInfo(classes=tuple(doc["classes"]), width=float(doc["width"]),
                         checkpoint_hash=str(doc["checkpoint_hash"]), input_size=int(doc["input_size"]),
                         mean=tuple(doc["mean"]), std=tuple(doc["std"]), params=int(doc.get("params", 0)),
                         weights=where)
    except (ValueError, TypeError, KeyError) as e:
        raise EngineError(f"{where}: the server's model information is unreadable ({type(e).__name__}: {e}); "
                          "it is not a MoExt model served by engines.serve or written by engines.triton_repo") from None
    return info, doc


__all__ = ["DEFAULT_HTTP_PORT", "DEFAULT_MODEL", "INFO_MODEL_SUFFIX", "INFO_PARAMETER", "INPUT_NAMES", "INSTALL_HINT",
           "OUTPUT_NAME", "info_from_json", "info_json", "is_triton_spec", "parse_url", "serve_hint", "spec_url"]
