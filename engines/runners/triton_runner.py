"""A client engine: the recogniser served by a Triton Inference Server, over HTTP.

``Recognizer.load("triton://HOST:PORT/MODEL")`` (or ``--engine triton://...`` in
run_live.py, the web demo and the benchmark) returns a Recognizer whose batches go to the
server started by ``python -m engines.serve``, or to a standard Triton server on a model
repository written by engines/triton_repo.py. Protocol: engines/serving/__init__.py.

On load the runner checks what a local engine file is checked for: the server answers
(else EngineError naming the URL and the command that starts a server), it serves MODEL
with the MoExt model information (classes, checkpoint hash, input contract), inputs and
outputs have the expected names, types and shapes, the output has one column per class,
and ``expect_hash`` matches the served weights (else EngineError naming both hashes).
Inputs are validated against core/contract.py by the Recognizer before they are sent.

Threads: tritonclient's HTTP client is not thread-safe (its documentation: one client
per thread), so the runner keeps one client per calling thread. Concurrent callers
therefore send concurrent requests, which is what lets the server batch them.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

from core.contract import to_nchw_float
from engines.runners import EngineError, Runner
from engines.serving import (INFO_MODEL_SUFFIX, INFO_PARAMETER, INPUT_NAMES, INSTALL_HINT, OUTPUT_NAME, info_from_json,
                             parse_url, serve_hint, spec_url)

LAYOUTS = {"UINT8": "nhwc_uint8", "FP32": "nchw_fp32"}  # input datatype -> how crops are sent


def _first_line(e: BaseException) -> str:
    msg = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
    msg = (msg or "").strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:300]}" if msg else type(e).__name__


def served_layout(metadata: dict, config: dict, classes: int, input_size: int, where: str) -> str:
    """How to send crops to the served model, from its metadata and config (pure).

    Returns "nhwc_uint8" (onset/apex UINT8 (N, S, S, 3): engines.serve) or "nchw_fp32"
    (FP32 (N, 3, S, S) in 0..255: the ONNX graph or plan of a model repository).
    EngineError if the model is not a batched MoExt recogniser with ``classes`` outputs."""
    s = input_size
    if int(config.get("max_batch_size", 0) or 0) < 1:
        raise EngineError(f"{where}: the model is served without batching (max_batch_size 0); serve it with "
                          "python -m engines.serve or a model repository from engines.triton_repo")
    inputs = {i["name"]: i for i in metadata.get("inputs", [])}
    outputs = {o["name"]: o for o in metadata.get("outputs", [])}
    if sorted(inputs) != sorted(INPUT_NAMES) or list(outputs) != [OUTPUT_NAME]:
        raise EngineError(f"{where}: the model's inputs are {sorted(inputs)} and outputs {sorted(outputs)}, expected "
                          f"{list(INPUT_NAMES)} -> ['{OUTPUT_NAME}']: not a MoExt recogniser")
    types = {i["datatype"] for i in inputs.values()}
    layout = LAYOUTS.get(types.pop()) if len(types) == 1 else None
    want = {"nhwc_uint8": [s, s, 3], "nchw_fp32": [3, s, s]}.get(layout)
    for name, i in inputs.items():
        if want is None or [int(d) for d in i["shape"][1:]] != want:
            raise EngineError(f"{where}: input {name!r} is {i['datatype']} {i['shape']}, expected UINT8 "
                              f"[-1, {s}, {s}, 3] or FP32 [-1, 3, {s}, {s}] (the input contract, core/contract.py)")
    out = outputs[OUTPUT_NAME]
    if out["datatype"] != "FP32" or [int(d) for d in out["shape"][1:]] != [classes]:
        raise EngineError(f"{where}: output {OUTPUT_NAME!r} is {out['datatype']} {out['shape']}, but the served model "
                          f"information lists {classes} classes (FP32 [-1, {classes}] expected)")
    return layout


class ClientPerThread:
    """One client per calling thread, made by ``make()`` on the thread's first call
    (tritonclient's HTTP client must not be shared between threads). A thread's client
    goes away with the thread; close() closes the ones still alive."""

    def __init__(self, make) -> None:
        self._make = make
        self._local = threading.local()
        self._alive: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()
        self.closed = False

    def get(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make()
            with self._lock:
                self._alive.add(client)
        return client

    def close(self) -> None:
        self.closed = True
        with self._lock:
            clients, self._alive = list(self._alive), weakref.WeakSet()
        for c in clients:
            try:
                c.close()
            except Exception:  # a client of a dead server: nothing left to release
                pass


class TritonRunner(Runner):
    """The recogniser on a Triton server (HTTP, one client per calling thread)."""

    name = "triton"

    def __init__(self, spec: str, *, expect_hash: str | None = None, timeout_s: float = 60.0,
                 connect_timeout_s: float = 5.0) -> None:
        try:
            import tritonclient.http as http  # optional heavy dependency (gevent): only client engines need it
        except ImportError as e:
            raise EngineError(f"{spec}: a Triton client engine needs tritonclient ({e}); install it with "
                              "pip install -e '.[serve]' (Linux)") from None
        self._http = http
        self.host, self.port, self.model_name = parse_url(spec)
        self.url = spec_url(self.host, self.port, self.model_name)
        self._clients = ClientPerThread(lambda: http.InferenceServerClient(
            f"{self.host}:{self.port}", connection_timeout=connect_timeout_s, network_timeout=timeout_s))
        client = self._client()
        self._check_server(client)
        try:
            metadata = client.get_model_metadata(self.model_name)
            config = client.get_model_config(self.model_name)
            text = self._info_document(client, config)
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"{self.url}: the server answered but its model {self.model_name!r} could not be "
                              f"described ({_first_line(e)})") from None
        self.model, self.served = info_from_json(text, self.url)
        self.layout = served_layout(metadata, config, len(self.model.classes), self.model.input_size, self.url)
        if expect_hash is not None and self.model.checkpoint_hash != expect_hash:
            raise EngineError(
                f"{self.url} serves other weights: checkpoint hash {self.model.checkpoint_hash[:16]}... "
                f"({self.served.get('weights') or 'unknown file'}), expected {expect_hash[:16]}...; restart the server "
                f"on the right checkpoint ({serve_hint(self.port, self.model_name)}) or drop expect_hash")
        self.precision = str(self.served.get("precision", "fp32"))
        self.device = str(self.served.get("device", "server"))
        self.max_batch = int(config.get("max_batch_size"))  # the Recognizer splits larger batches

    # ------------------------------------------------------------------ connection
    def _client(self):
        if self._clients.closed:
            raise EngineError(f"{self.url}: this client engine was closed; load it again")
        return self._clients.get()

    def _check_server(self, client) -> None:
        hint = serve_hint(self.port, self.model_name)
        try:
            live = client.is_server_live()
        except Exception as e:
            raise EngineError(f"no Triton server answers at {self.url} ({_first_line(e)}); start one with {hint} "
                              f"(needs {INSTALL_HINT}), or check the host and port") from None
        try:
            ready = live and client.is_model_ready(self.model_name)
        except Exception as e:
            raise EngineError(f"the Triton server at {self.url} failed while asked about model {self.model_name!r} "
                              f"({_first_line(e)})") from None
        if not ready:
            raise EngineError(f"the Triton server at {self.host}:{self.port} is up but does not serve a ready model "
                              f"{self.model_name!r}; check the model name in the URL or start it with {hint}")

    def _info_document(self, client, config: dict) -> str:
        """The served model's info_json: a config parameter (model repository) or MODEL_info (engines.serve)."""
        param = (config.get("parameters") or {}).get(INFO_PARAMETER)
        if param and param.get("string_value"):
            return param["string_value"]
        info_model = self.model_name + INFO_MODEL_SUFFIX
        if not client.is_model_ready(info_model):
            raise EngineError(f"{self.url}: the model carries no MoExt model information (no {INFO_PARAMETER!r} "
                              f"config parameter, no {info_model!r} model), so its classes and weights are unknown; "
                              "serve it with python -m engines.serve or write its repository with engines.triton_repo")
        request = self._http.InferInput("request", [1], "UINT8")
        request.set_data_from_numpy(np.zeros(1, np.uint8))
        result = client.infer(info_model, [request], outputs=[self._http.InferRequestedOutput("info")])
        value = result.as_numpy("info").reshape(-1)[0]
        return value.decode() if isinstance(value, bytes) else str(value)

    # ------------------------------------------------------------------ inference
    def run(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        client = self._client()
        n = len(onset)
        if self.layout == "nchw_fp32":
            onset, apex, dtype = to_nchw_float(onset), to_nchw_float(apex), "FP32"  # (N, 3, S, S) 0..255
        else:
            dtype = "UINT8"  # (N, S, S, 3): the contract as is, 4x fewer bytes
        inputs = []
        for name, x in zip(INPUT_NAMES, (onset, apex)):
            t = self._http.InferInput(name, list(x.shape), dtype)
            t.set_data_from_numpy(x, binary_data=True)
            inputs.append(t)
        try:
            result = client.infer(self.model_name, inputs,
                                  outputs=[self._http.InferRequestedOutput(OUTPUT_NAME, binary_data=True)])
        except self._http.InferenceServerException as e:
            raise EngineError(f"{self.url}: the server failed on a batch of {n} ({_first_line(e)})") from None
        except Exception as e:  # connection refused or reset, timeout: the server went away
            raise EngineError(f"{self.url}: the server stopped answering ({_first_line(e)}); restart it with "
                              f"{serve_hint(self.port, self.model_name)}") from None
        probs = result.as_numpy(OUTPUT_NAME)
        if probs is None or probs.shape != (n, len(self.model.classes)):
            raise EngineError(f"{self.url}: the server answered a batch of {n} with probabilities shaped "
                              f"{None if probs is None else probs.shape}")
        return np.asarray(probs, dtype=np.float32)

    def describe(self) -> dict:
        return {"url": self.url, "server_engine": self.served.get("engine"), "server_device": self.device,
                "server_max_batch": self.max_batch, "input_layout": self.layout}

    def close(self) -> None:
        self._clients.close()
