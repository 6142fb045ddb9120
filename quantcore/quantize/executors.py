"""Where a sweep's jobs run: this process, a local process pool, or a Ray cluster — the same plain function.

Work is ``fn(shared, job)`` (``sweep_job.run_job``); an executor only chooses
where it runs. The local pool starts one worker per core (spawned, so no
thread state of a server is forked) and hands each worker the shared data
once; Ray gets the shared data once with ``ray.put`` and runs ``fn`` as a
task of one CPU. Ray is optional: without it installed, asking for it is a
clear refusal.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from quantcore import settings
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


_WORKER_SHARED: dict[str, Any] = {}


def _keep_shared(shared: dict[str, Any]) -> None:
    _WORKER_SHARED.clear()
    _WORKER_SHARED.update(shared)


def _call(fn: Job, job: dict[str, Any]) -> dict[str, Any]:
    return fn(_WORKER_SHARED, job)


def default_workers() -> int:
    """One worker per core (``QP_SWEEP_WORKERS`` overrides)."""
    return settings.current().sweep_workers or os.cpu_count() or 1


class LocalPool:
    """A pool of worker processes, one ORT thread each (the jobs make their sessions with one thread)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or default_workers())
        self.description = f"a local pool of {self.workers} worker process{'es' if self.workers > 1 else ''}"

    def run(self, fn: Job, shared: dict[str, Any], jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_keep_shared,
                                 initargs=(shared,)) as pool:  # fmt: skip
            return list(pool.map(_call, [fn] * len(jobs), jobs))


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
        remote = ray.remote(num_cpus=1)(fn)
        shared_ref = ray.put(shared)
        return list(ray.get([remote.remote(shared_ref, job) for job in jobs]))


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
