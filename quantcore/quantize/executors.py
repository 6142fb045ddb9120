"""Where a sweep's jobs run: this process, a local process pool, or a Ray cluster — the same plain function.

Work is ``fn(shared, job)`` (``sweep_job.run_job``); an executor only chooses
where it runs. The local pool keeps one worker per core (spawned, so no
thread state of a server is forked) for the life of the process: a worker
takes a second or two to start and import onnxruntime, longer than a small
model's whole sweep. Each sweep's shared data is written once to a private
file that every worker reads once. Ray gets the shared data once with
``ray.put`` and runs ``fn`` as a task of one CPU. Ray is optional: without it
installed, asking for it is a clear refusal.

Both keep the request's deadline (in a request's scope): when it passes, the
jobs not started are dropped and the sweep raises ``RunTimeoutError``; a
running job ends by its own run limit.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import pickle
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

from quantcore import settings
from quantcore.deadline import Deadline, scope_deadline
from quantcore.errors import MissingDependencyError, QuantcoreError

logger = logging.getLogger(__name__)

Job = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


class Executor(Protocol):
    """Runs ``fn(shared, job)`` for every job; results in the jobs' order."""

    description: str

    def run(self, fn: Job, shared: dict[str, Any], jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]: ...


class InProcess:
    """Every job here, one after another (tests, and a machine where processes cannot be started)."""

    description = "this process"

    def run(self, fn: Job, shared: dict[str, Any], jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [fn(shared, job) for job in jobs]


_WORKER_SHARED: dict[str, Any] = {}  # in a worker: the shared data of the sweep it last served


def _call(fn: Job, shared_file: str, job: dict[str, Any]) -> dict[str, Any]:
    if _WORKER_SHARED.get("__file__") != shared_file:
        with open(shared_file, "rb") as handle:  # written by this worker's own parent, in its private temp dir
            shared = pickle.load(handle)
        _WORKER_SHARED.clear()
        _WORKER_SHARED.update(shared, __file__=shared_file)
    return fn(_WORKER_SHARED, job)


def default_workers() -> int:
    """One worker per core (``QP_SWEEP_WORKERS`` overrides)."""
    return settings.current().sweep_workers or os.cpu_count() or 1


_POOL_LOCK = threading.Lock()
_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """The process's pool of ``workers`` spawned workers, started on first use and kept until exit."""
    with _POOL_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        return _POOLS[workers]


def _drop_pool(workers: int) -> None:
    with _POOL_LOCK:
        pool = _POOLS.pop(workers, None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def shutdown_pools() -> None:
    """Stop every kept worker process (at exit, or to free their memory)."""
    with _POOL_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_pools)


class LocalPool:
    """Kept worker processes, one ORT thread each (the jobs make their sessions with one thread)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or default_workers())
        self.description = f"a local pool of {self.workers} worker process{'es' if self.workers > 1 else ''}"

    def run(self, fn: Job, shared: dict[str, Any], jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        from quantcore.quantize.calibration import cache_dir

        deadline = scope_deadline()
        with tempfile.TemporaryDirectory(dir=cache_dir()) as folder:
            shared_file = str(Path(folder) / f"shared-{uuid.uuid4().hex}.pickle")
            with open(shared_file, "wb") as handle:
                pickle.dump(shared, handle, protocol=pickle.HIGHEST_PROTOCOL)
            pool = _pool(self.workers)
            try:
                futures = [pool.submit(_call, fn, shared_file, job) for job in jobs]
            except BrokenProcessPool:  # a worker died since the last sweep: start afresh once
                _drop_pool(self.workers)
                pool = _pool(self.workers)
                futures = [pool.submit(_call, fn, shared_file, job) for job in jobs]
            return _gather(futures, deadline, lambda: _drop_pool(self.workers))


def _gather(futures: list[Future[Any]], deadline: Deadline | None, on_broken: Callable[[], None]) -> list[Any]:
    """The futures' results in order; the first failure raised, or ``RunTimeoutError`` when the deadline passes
    (the jobs not started are cancelled either way)."""
    timeout = None if deadline is None else max(0.0, deadline.remaining())
    _, pending = wait(futures, timeout=timeout, return_when=FIRST_EXCEPTION)
    failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception() is not None), None)
    for future in pending:
        future.cancel()
    if failed is None and pending:
        wait(pending)  # the running ones end by their own run limit; their workers are then free again
        raise deadline.error() if deadline is not None else RuntimeError("unfinished jobs")
    if failed is not None:
        error = failed.exception()
        if isinstance(error, BrokenProcessPool):
            on_broken()
            raise QuantcoreError("a sweep worker process died (out of memory?); the sweep was stopped") from None
        raise error  # type: ignore[misc]
    return [f.result() for f in futures]


_RAY_LOCK = threading.Lock()


class RayCluster:
    """Tasks on the Ray cluster at ``address`` (``ray://`` client or a head's ``host:port``)."""

    def __init__(self, address: str) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "Ray is not installed: pip install -r requirements-ray.txt (or unset QP_RAY_ADDRESS / --ray)"
            ) from None
        self.address = address
        self.description = f"the Ray cluster at {address}"

    def _connect(self) -> Any:
        import ray

        with _RAY_LOCK:
            if ray.is_initialized():
                return ray
            package = str(Path(__file__).resolve().parent.parent)  # quantcore itself, shipped to the workers
            try:
                ray.init(address=self.address, runtime_env={"py_modules": [package]}, logging_level=logging.WARNING,
                         log_to_driver=False)  # fmt: skip
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError... for a cluster it cannot reach
                raise QuantcoreError(f"cannot reach the Ray cluster at {self.address}: {exc}") from exc
            return ray

    def run(self, fn: Job, shared: dict[str, Any], jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        ray = self._connect()
        deadline = scope_deadline()
        remote = ray.remote(num_cpus=1)(fn)
        shared_ref = ray.put(shared)
        refs = [remote.remote(shared_ref, job) for job in jobs]
        try:
            return list(ray.get(refs, timeout=None if deadline is None else max(0.0, deadline.remaining())))
        except ray.exceptions.GetTimeoutError:
            for ref in refs:
                ray.cancel(ref)
            raise deadline.error() from None  # type: ignore[union-attr]


def disconnect_ray() -> None:
    """Leave the Ray cluster this process joined (if any)."""
    try:
        import ray
    except ImportError:
        return
    with _RAY_LOCK:
        if ray.is_initialized():
            ray.shutdown()


def default_executor(ray_address: str | None = None) -> Executor:
    """Ray when an address is given (or ``QP_RAY_ADDRESS`` / ``--ray``), else the local pool."""
    address = ray_address or settings.current().ray_address
    return RayCluster(address) if address else LocalPool()
