"""The one place onnxruntime sessions are made and run: CPU provider, thread counts, spinning, deadlines.

Every ``session.run`` goes through ``run_session``, which cancels it when the
request's deadline (``quantcore.deadline``) passes: one watchdog thread sets
the run's ``RunOptions.terminate``, which onnxruntime checks between kernels
and inside its loops, so even an endless ``Loop`` returns at once.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from quantcore.deadline import current_deadline
from quantcore.errors import InvalidModelError

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort


def session_options(threads: int, *, spinning: bool = True, optimize: bool = True) -> ort.SessionOptions:
    """Options for one CPU session with ``threads`` intra-op threads and one inter-op thread.

    ``spinning=False``: idle threads sleep at once after a run instead of
    spinning, for sessions that take turns with torch, which needs those cores.
    ``optimize=False``: no graph optimization, so QDQ nodes are not fused into
    integer kernels and each step runs as the graph writes it.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def make_session(
    model: onnx.ModelProto | bytes, threads: int, *, spinning: bool = True, optimize: bool = True
) -> ort.InferenceSession:
    """A CPU ``InferenceSession`` for ``model`` (a ModelProto or its serialized bytes).

    Raises:
        InvalidModelError: onnxruntime cannot build a session for it (its own message says why).
    """
    import onnxruntime as ort

    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, session_options(threads, spinning=spinning, optimize=optimize),
                                    providers=["CPUExecutionProvider"])  # fmt: skip
    except Exception as exc:  # ORT raises its own untyped errors for bad graphs
        raise InvalidModelError(f"onnxruntime cannot run this model: {exc}") from exc


class _Watchdog:
    """One daemon thread that sets ``terminate`` on each watched run whose time is up."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, Any]] = []
        self._live: set[int] = set()
        self._numbers = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, at: float, options: Any) -> int:
        with self._wake:
            number = next(self._numbers)
            heapq.heappush(self._heap, (at, number, options))
            self._live.add(number)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="quantcore-run-watchdog", daemon=True)
                self._thread.start()
            # Wake the thread only when this run ends first: it already sleeps until the earliest end, and
            # waking it for every run (many short ones per request) costs more than the runs.
            if self._heap[0][1] == number:
                self._wake.notify()
            return number

    def unwatch(self, number: int) -> None:
        with self._wake:
            self._live.discard(number)

    def _serve(self) -> None:
        with self._wake:
            while True:
                # Finished runs are dropped lazily, when they reach the top.
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                at, number, options = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(number)
                options.terminate = True


_WATCHDOG = _Watchdog()


def run_session(session: ort.InferenceSession, outputs: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[Any]:
    """``session.run(outputs, feeds)``, cancelled when the deadline in force passes.

    Raises:
        RunTimeoutError: the deadline passed before or during the run.
    """
    import onnxruntime as ort

    deadline = current_deadline()
    deadline.check()
    options = ort.RunOptions()
    number = _WATCHDOG.watch(deadline.at, options)
    try:
        return session.run(outputs, dict(feeds), options)
    except Exception:
        if options.terminate:  # ORT says only "Exiting due to terminate flag": say why it was set
            raise deadline.error() from None
        raise
    finally:
        _WATCHDOG.unwatch(number)


def optimized_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph onnxruntime runs after its fusions (QDQ groups into integer kernels), at the extended level.

    The extended level holds the QDQ fusions but no hardware-specific layout changes, so the saved graph
    names which layers run as integer kernels and which stay float on this CPU.

    Raises:
        InvalidModelError: onnxruntime cannot build a session for it.
    """
    import tempfile
    from pathlib import Path

    import onnx
    import onnxruntime as ort

    options = session_options(1, spinning=False)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory(prefix="qp-optimized-") as folder:
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped errors for bad graphs
            raise InvalidModelError(f"onnxruntime cannot run this model: {exc}") from exc
        return onnx.load(options.optimized_model_filepath, load_external_data=False)
