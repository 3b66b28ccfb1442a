"""One inference server for many streams: the recogniser on a Triton Inference Server.

    python -m engines.serve                                          # demo weights, best engine here
    python -m engines.serve --engine runs/x/best.safetensors --device cuda --max-batch 64
    python -m engines.serve --engine moext-fp16.plan --instances 2
    python run_live.py --engine triton://localhost:8000/moext        # any front end, as a client
    python -m engines.serve --engine CKPT --model-repository repo    # for the standard tritonserver

Serving goes through PyTriton (nvidia-pytriton 0.7.0, Linux; it bundles tritonserver):
the recogniser runs in this process on any engine ``Recognizer.load`` accepts (ONNX Runtime
on the CPU, the CUDA engine or a TensorRT plan on a GPU) and Triton's dynamic batcher
merges the requests of many clients, waiting at most ``--queue-delay-us`` to fill a
batch of up to ``--max-batch`` pairs. Models (protocol: engines/serving/__init__.py):
- MODEL: onset, apex UINT8 (N, S, S, 3) -> probs FP32 (N, C);
- MODEL_info: the model information (classes, checkpoint hash, width, input contract,
  engine) as JSON, which the client engine checks on load.
``--instances N`` loads N recognisers (N model instances, each its own thread here; ONNX
Runtime splits the cores between them). Before starting, engines/serving/pytriton_env.py
fixes the two ways PyTriton's Python-backend stub breaks in this environment (another
libpython; numpy 2). Statistics are open (GET /v2/models/MODEL/stats); the other admin
endpoints (model loading, shared memory, logging, trace) need PyTriton's access token.
``--model-repository OUT`` writes the standard Triton model repository instead
(engines/triton_repo.py) and exits.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import numpy as np

from core.machine import physical_cores
from engines.export import cached_export, load_checkpoint_graph
from engines.recognizer import CHECKPOINT_ENGINES, DEMO_WEIGHTS, ENGINE_SUFFIXES, Recognizer
from engines.runners import EngineError
from engines.serving import (DEFAULT_HTTP_PORT, DEFAULT_MODEL, INFO_INPUT, INFO_MODEL_SUFFIX, INFO_OUTPUT, INPUT_NAMES,
                             OUTPUT_NAME, info_json, is_triton_spec, spec_url)
from engines.serving.pytriton_env import prepare_server_environment, prepare_stub_env
from engines.triton_repo import write_model_repository

log = logging.getLogger("engines.serve")


def load_recognizers(spec: str, device: str, runtime: str, instances: int) -> list[Recognizer]:
    """One recogniser per model instance (ONNX Runtime shares the physical cores among them)."""
    if is_triton_spec(spec):
        raise ValueError(f"{spec}: the server runs a local engine; give a checkpoint, an .onnx or a .plan")
    threads = max(1, physical_cores() // instances) if instances > 1 else None
    return [Recognizer.load(spec, device, engine=runtime, threads=threads) for _ in range(instances)]


def info_document(rec: Recognizer, max_batch: int) -> str:
    return info_json(rec.runner.model, precision=rec.precision, engine=rec.name, device=rec.device, max_batch=max_batch)


def bind_recognizers(triton, recognizers: list[Recognizer], *, name: str = DEFAULT_MODEL, max_batch: int = 64,
                     queue_delay_us: int = 2000) -> None:
    """Bind MODEL (dynamic batching, one instance per recogniser) and MODEL_info on a pytriton Triton."""
    from pytriton.decorators import batch  # optional heavy dependency (the server extra)
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    def instance(rec: Recognizer):
        @batch
        def infer(onset: np.ndarray, apex: np.ndarray) -> dict:
            return {OUTPUT_NAME: rec.predict(onset, apex)}  # (B, S, S, 3) uint8 x2 -> (B, C) float32
        return infer

    first = recognizers[0]
    s, c = first.runner.model.input_size, len(first.classes)
    triton.bind(model_name=name, infer_func=[instance(r) for r in recognizers],
                inputs=[Tensor(name=n, dtype=np.uint8, shape=(s, s, 3)) for n in INPUT_NAMES],
                outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(c,))],
                config=ModelConfig(max_batch_size=max_batch,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=queue_delay_us)),
                strict=True)
    doc = np.array([info_document(first, max_batch).encode()], dtype=np.object_)

    def info(requests) -> list[dict]:
        return [{INFO_OUTPUT: doc} for _ in requests]

    triton.bind(model_name=name + INFO_MODEL_SUFFIX, infer_func=info,
                inputs=[Tensor(name=INFO_INPUT, dtype=np.uint8, shape=(1,))],
                outputs=[Tensor(name=INFO_OUTPUT, dtype=bytes, shape=(1,))],
                config=ModelConfig(batching=False))


def serve(a: argparse.Namespace) -> int:
    done = prepare_server_environment(a.stub_env)  # before pytriton starts anything
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig  # optional

    recognizers = load_recognizers(a.engine, a.device, a.runtime, a.instances)
    rec = recognizers[0]
    log.info("engine %s %s on %s, classes %s, weights %s (%d instance%s); %s", rec.name, rec.precision, rec.device,
             list(rec.classes), rec.info()["weights"], a.instances, "s" * (a.instances > 1), done)
    config = TritonConfig(http_address=a.host, http_port=a.http_port, grpc_address=a.host, grpc_port=a.grpc_port,
                          metrics_address=a.host, metrics_port=a.metrics_port, log_verbose=a.log_verbose)
    # Statistics stay open (operators and the tests read them); model loading, shared memory, logging, trace don't.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])

    def stop_on_sigterm(signum, frame):
        raise KeyboardInterrupt  # pytriton's serve() stops the server on it

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        with Triton(config=config, security_config=security) as triton:
            bind_recognizers(triton, recognizers, name=a.model_name, max_batch=a.max_batch,
                             queue_delay_us=a.queue_delay_us)
            host = "localhost" if a.host in ("0.0.0.0", "::") else a.host
            print(f"serving {a.model_name} (max batch {a.max_batch}, queue delay {a.queue_delay_us} us) on "
                  f"http :{a.http_port}, grpc :{a.grpc_port}, metrics :{a.metrics_port}; clients: --engine "
                  f"{spec_url(host, a.http_port, a.model_name)}  (Ctrl+C stops)", flush=True)
            triton.serve()
    except KeyboardInterrupt:
        pass
    finally:
        for r in recognizers:
            r.close()
    return 0


def write_repository(a: argparse.Namespace) -> int:
    """--model-repository: the engine file (a checkpoint is exported to ONNX first) into OUT."""
    spec = DEMO_WEIGHTS if a.engine == "auto" else Path(a.engine)
    if ENGINE_SUFFIXES.get(spec.suffix.lower()) == "checkpoint":
        if a.runtime not in ("best", "onnx", "onnx-int8"):
            raise EngineError(f"a model repository holds an ONNX graph or a TensorRT plan; --runtime {a.runtime} is "
                              "not one (build a plan with python -m engines.build ... --engine tensorrt)")
        graph, info = load_checkpoint_graph(spec)
        spec = cached_export(graph, info, "int8" if a.runtime == "onnx-int8" else "fp32")
    folder = write_model_repository(a.model_repository, spec, name=a.model_name, max_batch=a.max_batch,
                                    queue_delay_us=a.queue_delay_us, instances=a.instances, device=a.device)
    print(f"wrote {folder}/config.pbtxt and {folder}/1/{'model.onnx' if spec.suffix == '.onnx' else 'model.plan'}; "
          f"start it with: tritonserver --model-repository={Path(a.model_repository).resolve()}  then use "
          f"--engine {spec_url('localhost', DEFAULT_HTTP_PORT, a.model_name)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m engines.serve",
        description="Serve the recogniser on a Triton Inference Server (PyTriton) with dynamic batching, for "
                    "many streams; clients use --engine triton://HOST:PORT/MODEL. Or write a model repository "
                    "for the standard tritonserver.",
        epilog="examples:\n  python -m engines.serve --engine auto --device cpu\n"
               "  python -m engines.serve --engine runs/x/best.safetensors --device cuda --instances 2\n"
               "  python -m engines.serve --engine moext-fp16.plan --max-batch 64 --queue-delay-us 1000\n"
               "  python -m engines.serve --engine runs/x/best.safetensors --model-repository model_repository\n"
               "  python -m engines.serve --prepare          # the one-time setup (PyPI), e.g. in a Dockerfile",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="auto", metavar="SPEC",
                   help="auto (demo weights), a checkpoint (.safetensors), an .onnx or a TensorRT .plan")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    p.add_argument("--runtime", choices=CHECKPOINT_ENGINES, default="best",
                   help="for checkpoints: the engine to run them on (default best: CUDA on a GPU, else ONNX Runtime)")
    p.add_argument("--model-name", default=DEFAULT_MODEL, help=f"served model name (default {DEFAULT_MODEL})")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0; 127.0.0.1 = this machine)")
    p.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--max-batch", type=int, default=64, help="largest batch the dynamic batcher forms (default 64)")
    p.add_argument("--queue-delay-us", type=int, default=2000,
                   help="longest wait for more requests to fill a batch, microseconds (default 2000)")
    p.add_argument("--instances", type=int, default=1, help="model instances, each its own recogniser (default 1)")
    p.add_argument("--model-repository", type=Path, metavar="OUT",
                   help="write a Triton model repository (config.pbtxt + model.onnx/model.plan) here and exit")
    p.add_argument("--stub-env", type=Path, metavar="DIR",
                   help="where to keep the side environment of Triton's Python stub (default: the cache dir)")
    p.add_argument("--prepare", action="store_true", help="prepare the stub's side environment and exit")
    p.add_argument("--log-verbose", type=int, default=0, help="Triton's own log verbosity (default 0)")
    a = p.parse_args(argv)
    if a.max_batch < 1 or a.instances < 1 or a.queue_delay_us < 0:
        p.error("--max-batch and --instances must be >= 1, --queue-delay-us >= 0")
    return a


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    a = parse_args(argv)
    try:
        if a.prepare:
            print(f"stub environment ready: {prepare_stub_env(a.stub_env)}")
            return 0
        if a.model_repository is not None:
            return write_repository(a)
        return serve(a)
    except (EngineError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
