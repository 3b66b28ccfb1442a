"""The load test's measuring parts (``realtime.bench.loadtest``): one ``python -m
engines.serve`` as a child process and its statistics, the pure replay of recorded pairs,
and what else the shared machine was doing while a run lasted.

    with ServerProcess(engine="auto", device="cpu", log_path=out / "serve.log") as server:
        server.url                      # triton://127.0.0.1:PORT/moext, for --engine
        before = server.stats()         # Triton's per-model statistics (tritonclient)
        ...
        batches = batch_histogram(before, server.stats())   # {batch size: executions}
        server.cpu_seconds()            # CPU time of the server and its children so far

    replay(recognizer, onsets, apexes, concurrency=8, seconds=5)   # pairs/s and call latency

The server is started exactly as a user starts it (the command line, loopback, free
ports) and waited for the way tests/test_serve.py's fixture does (``is_model_ready`` on
MODEL and MODEL_info); SIGTERM stops it (engines.serve turns it into Triton's orderly
shutdown), and a server that does not exit within ``stop_timeout`` has its process group
killed (it was started in a session of its own).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from core.stats import percentiles
from engines.serving import DEFAULT_MODEL, INFO_MODEL_SUFFIX, INSTALL_HINT, spec_url

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("core", "train", "engines", "realtime")   # other jobs of these packages are named in the report


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on the loopback now (bound, then released)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def server_available() -> str | None:
    """None when the serve extra is installed, else why not (with the install command)."""
    import importlib.util

    missing = [m for m in ("pytriton", "tritonclient") if importlib.util.find_spec(m) is None]
    return None if not missing else f"{' and '.join(missing)} not installed ({INSTALL_HINT})"


class ServerProcess:
    """``python -m engines.serve`` on loopback ports, started and stopped by this process."""

    def __init__(self, engine: str = "auto", device: str = "cpu", *, max_batch: int = 64,
                 queue_delay_us: int = 2000, instances: int = 1, model: str = DEFAULT_MODEL,
                 log_path: str | os.PathLike | None = None, stub_env: str | os.PathLike | None = None,
                 env: dict | None = None) -> None:
        self.engine, self.device, self.model = str(engine), device, model
        self.max_batch, self.queue_delay_us, self.instances = int(max_batch), int(queue_delay_us), int(instances)
        self.log_path = Path(log_path) if log_path else None
        self.stub_env = stub_env
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.http_port = 0
        self.start_s = 0.0
        self._launched_at = 0.0
        self.stop_s = 0.0
        self.cmd = ""           # the command line it was started with

    @property
    def url(self) -> str:
        return spec_url("127.0.0.1", self.http_port, self.model)

    def command(self) -> list[str]:
        http_port, grpc_port, metrics_port = free_ports(3)
        self.http_port = http_port
        cmd = [sys.executable, "-m", "engines.serve", "--engine", self.engine, "--device", self.device,
               "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
               "--metrics-port", str(metrics_port), "--max-batch", str(self.max_batch),
               "--queue-delay-us", str(self.queue_delay_us), "--instances", str(self.instances),
               "--model-name", self.model]
        if self.stub_env:
            cmd += ["--stub-env", str(self.stub_env)]
        return cmd

    def _log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:] if self.log_path else ""
        except OSError:
            return ""

    def start(self, timeout: float = 240.0) -> "ServerProcess":
        """``launch`` and ``wait_ready``."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> "ServerProcess":
        """Start the server process and return at once (``wait_ready`` waits for it)."""
        why = server_available()
        if why:
            raise RuntimeError(f"the load test's server mode needs the serve extra: {why}")
        cmd = self.command()
        self.cmd = " ".join(["python"] + cmd[1:])
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        t0 = time.perf_counter()
        try:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **(self.env or {})})
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self._launched_at = t0
        return self

    def wait_ready(self, timeout: float = 240.0) -> "ServerProcess":
        """Wait until MODEL and MODEL_info are ready (RuntimeError with the server's log when
        it exits first or is not ready within ``timeout`` s); ``start_s``: launch -> ready."""
        import tritonclient.http as http  # the serve extra

        cmd = self.cmd
        client = http.InferenceServerClient(f"127.0.0.1:{self.http_port}", connection_timeout=2.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited ({self.proc.returncode}) before it was ready: "
                                       f"{cmd}\n{self._log_tail()}")
                try:
                    if client.is_model_ready(self.model) and client.is_model_ready(self.model + INFO_MODEL_SUFFIX):
                        break
                except Exception:  # not listening yet
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the server was not ready within {timeout:g} s: {cmd}\n"
                                       f"{self._log_tail()}")
                time.sleep(0.5)
        finally:
            client.close()
        self.start_s = time.perf_counter() - self._launched_at
        return self

    def exit_code(self) -> int | None:
        """None while the server runs; its exit status once it has ended (a crash: see the log)."""
        return None if self.proc is None else self.proc.poll()

    def stats(self) -> dict:
        """Triton's statistics of MODEL (``get_inference_statistics``: inference_count,
        execution_count, inference_stats, batch_stats)."""
        import tritonclient.http as http  # the serve extra

        client = http.InferenceServerClient(f"127.0.0.1:{self.http_port}")
        try:
            return client.get_inference_statistics(self.model)["model_stats"][0]
        finally:
            client.close()

    def processes(self) -> list[psutil.Process]:
        """The server's process and all its children (tritonserver, the Python stubs)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server and its children."""
        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:  # a child that just ended
                pass
        return total

    def rss_mb(self) -> float:
        total = 0
        for p in self.processes():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def stop(self, stop_timeout: float = 45.0) -> int | None:
        """SIGTERM (Triton's orderly stop), up to ``stop_timeout`` s, then whatever is left of
        its process group killed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        t0 = time.perf_counter()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
        except ProcessLookupError:
            pass
        proc.wait(10)
        self.stop_s = time.perf_counter() - t0
        return proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------
# what the statistics say


def _ns(d: dict | None) -> tuple[int, int]:
    d = d or {}
    return int(d.get("count", 0)), int(d.get("ns", 0))


def batch_histogram(before: dict, after: dict) -> dict[int, int]:
    """Model executions per batch size between two ``ServerProcess.stats()`` snapshots."""
    def table(s: dict) -> dict[int, int]:
        return {int(b["batch_size"]): _ns(b.get("compute_infer"))[0] for b in s.get("batch_stats", [])}

    a, b = table(before), table(after)
    out = {size: b[size] - a.get(size, 0) for size in sorted(b)}
    return {k: v for k, v in out.items() if v > 0}


def stats_delta(before: dict, after: dict) -> dict:
    """Inferences (pairs), executions (model calls), the batch-size histogram, and the mean
    queue / compute time per request between two snapshots."""
    inf = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
    exe = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    out = {"inferences": inf, "executions": exe, "pairs_per_execution": round(inf / exe, 3) if exe else None,
           "batch_sizes": {str(k): v for k, v in batch_histogram(before, after).items()}}
    ia, ib = before.get("inference_stats", {}), after.get("inference_stats", {})
    for name in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        c0, n0 = _ns(ia.get(name))
        c1, n1 = _ns(ib.get(name))
        out[f"{name}_ms_mean"] = round((n1 - n0) / (c1 - c0) / 1e6, 3) if c1 > c0 else None
    return out


# ---------------------------------------------------------------------------------------
# replay: recorded pairs at the highest rate, nothing else running


def replay(recognizer, onsets: np.ndarray, apexes: np.ndarray, concurrency: int, seconds: float,
           pairs_per_call: int = 1) -> dict:
    """``concurrency`` threads call ``recognizer.predict`` back to back for ``seconds`` s, each
    with its own recorded pair(s) in turn (the server's client engine keeps one HTTP client
    per thread, so they are concurrent requests). Returns pairs/s and the call latency."""
    n = len(onsets)
    if n == 0:
        raise ValueError("replay needs at least one recorded pair")
    stop = threading.Event()
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    barrier = threading.Barrier(concurrency + 1)

    def client(k: int) -> None:
        i = k * pairs_per_call
        barrier.wait()
        while not stop.is_set():
            sel = [(i + j) % n for j in range(pairs_per_call)]
            t0 = time.perf_counter()
            try:
                recognizer.predict(onsets[sel], apexes[sel])
            except Exception as e:  # counted; the others go on
                errors.append(f"{type(e).__name__}: {e}")
                stop.wait(0.05)
                continue
            lat[k].append((time.perf_counter() - t0) * 1e3)
            i += pairs_per_call * concurrency

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    calls = [x for per in lat for x in per]
    pct = percentiles(calls)
    return {"concurrency": concurrency, "pairs_per_call": pairs_per_call, "seconds": round(wall, 3),
            "calls": len(calls), "pairs": len(calls) * pairs_per_call,
            "pairs_per_s": round(len(calls) * pairs_per_call / wall, 2) if wall > 0 else 0.0,
            "latency_ms": {k: round(v, 2) for k, v in pct.items()}, "client_cpu_s": round(cpu, 2),
            "client_cpu_ms_per_pair": round(1e3 * cpu / (len(calls) * pairs_per_call), 3) if calls else None,
            "errors": len(errors), "first_error": errors[0] if errors else None}


# ---------------------------------------------------------------------------------------
# the shared machine while a run lasts


class LoadSampler:
    """The machine's load while a run lasts: 1-min load average and CPU busy share, each second."""

    def __init__(self) -> None:
        self.load: list[float] = []
        self.busy: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        psutil.cpu_percent(None)
        while not self._stop.wait(1.0):
            self.load.append(os.getloadavg()[0])
            self.busy.append(psutil.cpu_percent(None))

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict:
        return {"loadavg_1min_mean": round(float(np.mean(self.load)), 2) if self.load else None,
                "loadavg_1min_max": round(float(np.max(self.load)), 2) if self.load else None,
                "cpu_busy_percent_mean": round(float(np.mean(self.busy)), 1) if self.busy else None}


def other_jobs() -> list[str]:
    """Command lines of other project jobs running now (``python -m ...`` not started by this
    run; the machine is shared), so that the report says what else was using it."""
    me = psutil.Process()
    mine = {me.pid} | {c.pid for c in me.children(recursive=True)}
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if p.info["pid"] not in mine and len(cmd) > 2 and cmd[1] == "-m" and cmd[2].split(".")[0] in PROJECT:
            found.append(" ".join(cmd)[:160])
    return sorted(set(found))


__all__ = ["LoadSampler", "ServerProcess", "batch_histogram", "free_ports", "other_jobs", "replay", "server_available",
           "stats_delta"]
