"""Run a loaded variant on images and measure it: logits, accuracy, agreement, speed.

A variant is what quantcore loads: an ``onnx.ModelProto`` or a ``torch.nn.Module``
(TorchScript modules included). ``make_predictor`` turns either into one
callable from a float32 batch to logits, so each measurement is written once.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch

from quantcore.errors import InvalidModelError

Variant = onnx.ModelProto | torch.nn.Module
Predictor = Callable[[np.ndarray], np.ndarray]

DEFAULT_THREADS = 2
# One batch size for every accuracy figure, so a re-run reproduces it bit for bit.
EVAL_BATCH_SIZE = 250


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    # torch's thread count is process-wide: restore it so a measurement leaves no trace.
    previous = torch.get_num_threads()
    if previous != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if previous != threads:
            torch.set_num_threads(previous)


def _onnx_predictor(model: onnx.ModelProto, threads: int) -> Predictor:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped errors for bad graphs
        raise InvalidModelError(f"onnxruntime cannot run this model: {exc}") from exc
    input_name = session.get_inputs()[0].name

    def predict(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return predict


def _torch_predictor(module: torch.nn.Module, threads: int) -> Predictor:
    module.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with _torch_threads(threads), torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    return predict


def make_predictor(variant: Variant, *, threads: int = DEFAULT_THREADS) -> Predictor:
    """A function from a float32 input batch to a logits array, running ``variant``.

    ONNX models get one onnxruntime CPU session (built here, once); torch modules
    run in eval mode without autograd. Both use ``threads`` intra-op threads.

    Raises:
        InvalidModelError: onnxruntime cannot build a session for the model.
        TypeError: ``variant`` is neither an ONNX model nor a torch module.
    """
    if isinstance(variant, onnx.ModelProto):
        return _onnx_predictor(variant, threads)
    if isinstance(variant, torch.nn.Module):
        return _torch_predictor(variant, threads)
    raise TypeError(f"not a loaded variant: {type(variant).__name__}")


def predict_logits(model: Variant | Predictor, inputs: np.ndarray, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Logits (N, classes) for float32 ``inputs`` (N, ...), run ``batch_size`` at a time.

    ``model`` is a loaded variant or a predictor from ``make_predictor`` (reuse
    one to avoid building a new session per call).
    """
    predict = make_predictor(model) if isinstance(model, Variant) else model
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    batches = [predict(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return np.concatenate(batches) if batches else np.empty((0, 0), dtype=np.float32)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose highest logit is at the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels)) if len(labels) else 0.0


def agreement(logits: np.ndarray, reference_logits: np.ndarray) -> float:
    """Fraction of rows where two models pick the same top-1 class."""
    if logits.shape[0] != reference_logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows against {reference_logits.shape[0]}")
    same = np.argmax(logits, axis=1) == np.argmax(reference_logits, axis=1)
    return float(np.mean(same)) if len(same) else 0.0


@dataclass(frozen=True)
class Throughput:
    """Speed of one predictor at one batch size, from ``runs`` timed calls.

    ``best`` is the fastest run: on a machine shared with other work it is the
    closest estimate of what the model itself costs (slower runs are mostly
    interference, as ``timeit`` reasons). ``median`` is the typical run.
    """

    batch_size: int
    runs: int
    warmup_runs: int
    median_seconds: float
    best_seconds: float

    @property
    def images_per_second(self) -> float:
        """Images per second of the median run."""
        return self.batch_size / self.median_seconds

    @property
    def best_images_per_second(self) -> float:
        """Images per second of the fastest run."""
        return self.batch_size / self.best_seconds


def _batch_of(inputs: np.ndarray, batch_size: int) -> np.ndarray:
    if batch_size < 1 or len(inputs) == 0:
        raise ValueError("need at least one image and a positive batch size")
    return np.ascontiguousarray(np.resize(inputs, (batch_size, *inputs.shape[1:])), dtype=np.float32)


def _timed_runs(predictor: Predictor, batch: np.ndarray, runs: int, warmup_runs: int) -> list[float]:
    for _ in range(warmup_runs):
        predictor(batch)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        predictor(batch)
        timings.append(time.perf_counter() - start)
    return timings


def measure_throughput(
    predictor: Predictor, inputs: np.ndarray, *, batch_size: int, runs: int, warmup_runs: int = 5
) -> Throughput:
    """Time ``runs`` calls of ``predictor`` on one batch of ``batch_size`` inputs, after ``warmup_runs``.

    The first ``batch_size`` inputs form the batch (repeated if there are fewer).
    """
    if runs < 1:
        raise ValueError("need at least one run")
    timings = _timed_runs(predictor, _batch_of(inputs, batch_size), runs, warmup_runs)
    return Throughput(batch_size, runs, warmup_runs, statistics.median(timings), min(timings))


def compare_throughput(
    predictors: Mapping[str, Predictor],
    inputs: np.ndarray,
    *,
    batch_size: int,
    runs: int,
    rounds: int = 5,
    warmup_runs: int = 2,
) -> dict[str, Throughput]:
    """``measure_throughput`` for several predictors that take turns, so they can be ranked.

    Each predictor's ``runs`` are split into ``rounds`` blocks and the blocks
    alternate between predictors: a burst of load from elsewhere on a shared
    machine then falls on all of them alike. Every block starts with
    ``warmup_runs`` untimed calls, since switching runtimes wakes other threads.
    """
    if runs < rounds or rounds < 1:
        raise ValueError("need at least one run per round")
    batch = _batch_of(inputs, batch_size)
    timings: dict[str, list[float]] = {name: [] for name in predictors}
    for round_index in range(rounds):
        block = runs // rounds + (1 if round_index < runs % rounds else 0)
        for name, predictor in predictors.items():
            timings[name] += _timed_runs(predictor, batch, block, warmup_runs)
    return {
        name: Throughput(batch_size, runs, warmup_runs * rounds, statistics.median(t), min(t))
        for name, t in timings.items()
    }
