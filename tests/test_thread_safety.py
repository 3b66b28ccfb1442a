"""Shared engines under many threads: each caller gets the result of its own input.

A web-demo session calls the shared recogniser from its own worker thread, so every
engine is hammered from 8 threads with a different input per thread and each result is
compared with the same input run alone. CUDA and TensorRT run where a GPU is (marked,
skipped with the reason); the Triton client engine is hammered in tests/test_serve.py.
The mechanisms themselves (engines/runners/exclusive.py's lock, the Triton runner's
client per thread) are tested on doubles that give mixed results without them.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from engines.recognizer import Recognizer
from engines.runners import ModelInfo, Runner
from engines.runners.cuda_runner import CudaRunner
from engines.runners.exclusive import is_serialized, one_call_at_a_time
from engines.runners.tensorrt_runner import TensorRTRunner
from engines.runners.triton_runner import ClientPerThread
from train.checkpoint import save_checkpoint
from train.moext import MoExtClassifier, MoExtConfig

THREADS = 8
ROUNDS = 4


def _calls(onset: np.ndarray, apex: np.ndarray, threads: int, rounds: int) -> dict:
    """{(thread k, round r): the batch thread k sends}: pair k alone, then twice (batches of 1 and 2)."""
    return {(k, r): (np.repeat(onset[k:k + 1], 1 + r % 2, 0), np.repeat(apex[k:k + 1], 1 + r % 2, 0))
            for k in range(threads) for r in range(rounds)}


def alone(predict, onset: np.ndarray, apex: np.ndarray, threads: int = THREADS, rounds: int = ROUNDS) -> dict:
    """The answers of ``hammer``'s calls made one after the other (what each caller must get);
    each distinct batch is run once."""
    once: dict = {}
    for (k, r), batch in _calls(onset, apex, threads, rounds).items():
        once.setdefault((k, len(batch[0])), batch)
    answers = {key: predict(*batch) for key, batch in once.items()}
    return {(k, r): answers[(k, 1 + r % 2)] for k in range(threads) for r in range(rounds)}


def hammer(predict, onset: np.ndarray, apex: np.ndarray, threads: int = THREADS, rounds: int = ROUNDS) -> dict:
    """The same calls from ``threads`` threads at once (released together by a barrier).
    Returns {(k, r): answer}; a worker's error is re-raised here."""
    calls = _calls(onset, apex, threads, rounds)
    results, errors = {}, []
    start = threading.Barrier(threads)

    def worker(k: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                results[(k, r)] = predict(*calls[(k, r)])
        except Exception as e:  # surfaced in the main thread
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    assert len(results) == threads * rounds, "a worker hung"
    return results


def mixups(results: dict, expected: dict, tol: float) -> int:
    """How many calls got an answer other than their own."""
    return sum(not (p.shape == expected[key].shape and np.abs(p - expected[key]).max() <= tol)
               for key, p in results.items())


def assert_own_results(results: dict, expected: dict, tol: float) -> None:
    bad = mixups(results, expected, tol)
    assert bad == 0, f"{bad} of {len(results)} concurrent calls got another caller's answer (tolerance {tol})"


def distinct_answers(expected: dict, tol: float) -> int:
    """How many of the threads' pairs have clearly different answers (a mix-up shows only between those)."""
    rows: list[np.ndarray] = []
    for (k, r), p in expected.items():
        if r == 0 and all(np.abs(p[0] - q).max() > 10 * tol for q in rows):
            rows.append(p[0])
    return len(rows)


# engine caches in the session's folder, never the user's (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("cache_dir")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A narrow random-init checkpoint (width 0.25) with a sharpened classifier, so different
    crops give clearly different probabilities."""
    torch.manual_seed(1)
    cfg = MoExtConfig(width=0.25, num_classes=3, class_names=("negative", "positive", "surprise"))
    clf = MoExtClassifier(cfg).eval()
    with torch.no_grad():
        clf.fc.weight.mul_(20)
    return save_checkpoint(tmp_path_factory.mktemp("ts") / "moext.safetensors", clf, cfg, meta={"purpose": "threads"})


@pytest.fixture(scope="module")
def pairs():
    """One onset/apex pair per thread, far apart: textured crops around a brightness that
    rises with k for the onset and falls for the apex, so even int8 answers differ."""
    rng = np.random.default_rng(7)
    level = np.linspace(30, 225, THREADS)[:, None, None, None]
    noise = rng.normal(0, 25, (2, THREADS, 224, 224, 3))
    onset = np.clip(level + noise[0], 0, 255).astype(np.uint8)
    apex = np.clip(level[::-1] + noise[1], 0, 255).astype(np.uint8)
    return onset, apex


ENGINES = [
    pytest.param("torch", "cpu", 1e-5, id="torch"),
    pytest.param("onnx", "cpu", 1e-5, id="onnx"),
    pytest.param("onnx-int8", "cpu", 1e-5, id="onnx-int8"),
    pytest.param("cuda", "cuda", 1e-4, id="cuda", marks=pytest.mark.gpu),  # a graph replays the same kernels
]


@pytest.mark.parametrize("engine, device, tol", ENGINES)
def test_shared_recognizer_gives_each_thread_its_own_result(ckpt, pairs, engine, device, tol):
    with Recognizer.load(ckpt, device=device, engine=engine) as rec:
        assert rec.name == {"torch": "torch", "onnx": "onnxruntime", "onnx-int8": "onnxruntime", "cuda": "cuda"}[engine]
        expected = alone(rec.predict, *pairs)
        assert distinct_answers(expected, tol) >= THREADS // 2, "most pairs must differ for a mix-up to show"
        assert_own_results(hammer(rec.predict, *pairs), expected, tol)


@pytest.mark.tensorrt
def test_shared_tensorrt_recognizer_gives_each_thread_its_own_result(ckpt, pairs, tmp_path):
    from engines.tensorrt_build import build_plan

    plan = build_plan(ckpt, tmp_path / "moext.plan", precision="fp32", max_batch=4)
    with Recognizer.load(plan) as rec:
        expected = alone(rec.predict, *pairs)
        assert distinct_answers(expected, 1e-4) >= THREADS // 2
        assert_own_results(hammer(rec.predict, *pairs), expected, 1e-4)


# ------------------------------------------------------------------ the mechanisms
class NonReentrant(Runner):
    """A runner double with the CUDA-graph runner's hazard: one shared static buffer,
    written, then (after a pause that lets other threads in) read back as the answer."""

    name = "non-reentrant"

    def __init__(self) -> None:
        self.model = ModelInfo(classes=("a",), width=1.0, checkpoint_hash="0" * 64)
        self.static = np.zeros((2, 1), np.float32)

    def run(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        n = len(onset)
        self.static[:n, 0] = onset[:, 0, 0, 0]  # copy in
        time.sleep(0.002)  # "replay": the GIL is released, other callers run
        return self.static[:n].copy()  # copy out


class Serialized(NonReentrant):
    run = one_call_at_a_time(NonReentrant.run)


def _tagged_pairs() -> tuple[np.ndarray, np.ndarray]:
    onset = np.zeros((THREADS, 224, 224, 3), np.uint8)
    onset[:, 0, 0, 0] = np.arange(THREADS) * 10 + 5  # pair k carries its tag in one pixel
    return onset, onset.copy()


def test_the_double_mixes_results_without_the_lock():
    """Guards the next test: without one_call_at_a_time the double does give callers each other's answers."""
    onset, apex = _tagged_pairs()
    expected = alone(NonReentrant().run, onset, apex, rounds=6)
    assert distinct_answers(expected, 0.1) == THREADS
    assert mixups(hammer(NonReentrant().run, onset, apex, rounds=6), expected, 0.0) > 0, \
        "the double never mixed results: it cannot show that the lock works"


def test_one_call_at_a_time_gives_each_caller_its_own_result():
    onset, apex = _tagged_pairs()
    expected = alone(NonReentrant().run, onset, apex, rounds=6)
    assert_own_results(hammer(Serialized().run, onset, apex, rounds=6), expected, 0.0)
    assert is_serialized(Serialized.run) and not is_serialized(NonReentrant.run)


def test_gpu_runners_with_shared_state_are_serialized():
    """The CUDA-graph runner (static buffers, graphs) and the TensorRT runner (one execution
    context) take the lock in run() and close(); checked without a GPU."""
    for cls in (CudaRunner, TensorRTRunner):
        assert is_serialized(cls.run) and is_serialized(cls.close), cls.__name__


def test_triton_client_engine_keeps_one_client_per_thread():
    """tritonclient's HTTP client is not thread-safe: each thread must get its own, and keep it."""

    class FakeClient:
        def __init__(self):
            self.owner = threading.get_ident()
            self.closed = False

        def close(self):
            self.closed = True

    clients = ClientPerThread(FakeClient)
    used: dict[int, list] = {}

    def use(k: int) -> None:
        used[k] = [(threading.get_ident(), clients.get()) for _ in range(3)]

    pool = [threading.Thread(target=use, args=(k,)) for k in range(THREADS)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for calls in used.values():
        assert all(c is calls[0][1] for _, c in calls), "a thread's client is made once and reused"
        assert all(c.owner == ident for ident, c in calls), "a thread used a client made by another thread"
    assert len({id(calls[0][1]) for calls in used.values()}) == THREADS, "two threads shared a client"
    mine = clients.get()
    clients.close()
    assert mine.closed and clients.closed
