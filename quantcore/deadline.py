"""A time limit on running models, per request: a model that loops or crawls is cut off, not waited for.

The app opens one scope per request (``run_deadline()``); every model run in
it shares the scope's deadline. ONNX runs are cancelled mid-run when it
passes (``backends.ort`` sets onnxruntime's ``RunOptions.terminate`` from a
watchdog thread); torch runs, whose architectures the app builds itself,
are checked before each batch. A run outside any scope (a script, a load's
layout probe) gets a limit of its own, so no run is ever unbounded.

The scope lives in a ``ContextVar``: work handed to another thread must carry
the context along (``contextvars.copy_context().run``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from quantcore import settings
from quantcore.errors import RunTimeoutError


@dataclass(frozen=True)
class Deadline:
    """When the runs of one request must stop (``time.monotonic()``), and the limit it was set from."""

    at: float
    seconds: float

    def remaining(self) -> float:
        """Seconds left; zero or less once it has passed."""
        return self.at - time.monotonic()

    def error(self) -> RunTimeoutError:
        """The error a cancelled run raises: what stopped, and the setting that decides it."""
        return RunTimeoutError(
            f"stopped after {format_seconds(self.seconds)}: running the models took longer than the limit per "
            f"request (QP_RUN_TIMEOUT_S), so the run was cancelled and the server freed for other requests"
        )

    def check(self) -> None:
        """Raise ``RunTimeoutError`` if the deadline has passed."""
        if self.remaining() <= 0:
            raise self.error()


_SCOPE: ContextVar[Deadline | None] = ContextVar("quantcore_run_deadline", default=None)


def format_seconds(seconds: float) -> str:
    """60 s as "60 s", half a second as "0.5 s"."""
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


@contextmanager
def run_deadline(seconds: float | None = None) -> Iterator[Deadline]:
    """A scope whose model runs must all end within ``seconds`` (default: ``QP_RUN_TIMEOUT_S``) from now.

    Nested scopes keep the earlier deadline: a request's limit cannot be
    extended by the code it calls.
    """
    limit = settings.current().run_timeout_s if seconds is None else seconds
    new = Deadline(time.monotonic() + limit, limit)
    outer = _SCOPE.get()
    if outer is not None and outer.at <= new.at:
        yield outer
        return
    token = _SCOPE.set(new)
    try:
        yield new
    finally:
        _SCOPE.reset(token)


def current_deadline() -> Deadline:
    """The deadline of the scope in force, or a fresh one (``QP_RUN_TIMEOUT_S`` from now) outside any scope."""
    scope = _SCOPE.get()
    if scope is not None:
        return scope
    limit = settings.current().run_timeout_s
    return Deadline(time.monotonic() + limit, limit)


def scope_deadline() -> Deadline | None:
    """The deadline of the request in force, or None outside any scope (a script's own work)."""
    return _SCOPE.get()


def check_deadline() -> None:
    """Raise ``RunTimeoutError`` if the scope in force has run out of time (no-op outside a scope).

    Raises:
        RunTimeoutError: the scope's deadline has passed.
    """
    scope = _SCOPE.get()
    if scope is not None:
        scope.check()
