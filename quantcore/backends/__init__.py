"""One backend per model runtime, and the only place that knows which runtime a model uses.

``backend_for(model)`` picks it from the registry; ``predictor_for`` and
``tapper_for`` build a model's predictor or tapper once and keep it in one
model-keyed cache (a session costs 5-20 ms to build, a TorchScript graph a few
slow first runs: more than a batch of a small CNN).

Every runner they hand out honours the request's deadline (``quantcore.deadline``):
ONNX runs are cancelled mid-run, torch runs are refused once it has passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quantcore import settings
from quantcore.backends.base import Backend, Capture, Predictor, Tapper, TensorSpec, to_integers, to_numpy
from quantcore.backends.integer_graph import IntegerGraph, IntegerStep, IntTensor
from quantcore.backends.layer import Layer, LayerKind, QuantParams, integer_limits, make_qparams
from quantcore.backends.onnx_integer import INTEGER_KERNELS, kernel_ops, read_integer_graph
from quantcore.backends.onnxrt import OnnxBackend
from quantcore.backends.torch_eager import INPUT_SUFFIX, EagerBackend
from quantcore.backends.torchscript import ScriptBackend
from quantcore.cache import CacheInfo, SingleFlightLRU
from quantcore.deadline import check_deadline

# Order matters: a ScriptModule is also an nn.Module.
BACKENDS: tuple[Backend, ...] = (OnnxBackend(), ScriptBackend(), EagerBackend())
RUNNERS_CAPACITY = 32

# (kind, id(model), taps, threads) -> (model, runner); holding the model keeps its id from being reused.
_RUNNERS: SingleFlightLRU[tuple[Any, Any]] = SingleFlightLRU(RUNNERS_CAPACITY)


def backend_for(model: object) -> Backend:
    """The backend that runs ``model``.

    Raises:
        TypeError: ``model`` is not a loaded model of any runtime.
    """
    for backend in BACKENDS:
        if backend.handles(model):
            return backend
    raise TypeError(f"not a loaded variant: {type(model).__name__}")


def is_model(obj: object) -> bool:
    """Whether ``obj`` is a loaded model some backend runs."""
    return any(backend.handles(obj) for backend in BACKENDS)


def _checked(runner: Any) -> Any:
    """``runner`` refusing to start once the deadline in force has passed."""

    def run(batch: Any) -> Any:
        check_deadline()
        return runner(batch)

    return run


def predictor_for(model: Any, *, threads: int | None = None) -> Predictor:
    """The predictor of a loaded model, built on first use and then reused.

    Raises:
        InvalidModelError: the runtime cannot build one for the model.
        TypeError: ``model`` is not a loaded model.
    """
    threads = settings.current().threads if threads is None else threads
    backend = backend_for(model)
    key = ("predictor", id(model), (), threads)
    entry, _ = _RUNNERS.get(key, None, lambda: (model, _checked(backend.predictor(model, threads=threads))))
    return entry[1]


def tapper_for(model: Any, taps: Sequence[str], *, threads: int | None = None, as_written: bool = False) -> Tapper:
    """The tapper of a loaded model for ``taps``, built on first use and then reused.

    ``as_written``: each step as the graph writes it, no fused integer kernels (see ``Backend.tapper``).

    Raises:
        InvalidModelError: a tap names nothing in the model, or the runtime cannot run it.
        TypeError: ``model`` is not a loaded model.
    """
    threads = settings.current().threads if threads is None else threads
    backend = backend_for(model)
    key = ("tapper", id(model), tuple(taps), threads, as_written)
    entry, _ = _RUNNERS.get(
        key,
        None,
        lambda: (model, _checked(backend.tapper(model, list(taps), threads=threads, as_written=as_written))),
    )
    return entry[1]


def integer_graph_for(model: Any) -> IntegerGraph | None:
    """A model's integer steps (conv/dense layers and what runs between them), or None for a model whose
    integer graph is not read: the steps are read from ONNX graphs, FX GraphModules and TorchScript.

    Raises:
        TypeError: ``model`` is not a loaded model.
    """
    import sys

    backend = backend_for(model)
    if isinstance(backend, OnnxBackend):
        return read_integer_graph(model)
    fx = sys.modules.get("torch.fx")  # a torch model: torch (and torch.fx with it) is imported already
    if isinstance(backend, EagerBackend) and fx is not None and isinstance(model, fx.GraphModule):
        from quantcore.backends.torch_integer_fx import read_fx_integer_graph

        return read_fx_integer_graph(model)
    if isinstance(backend, ScriptBackend):
        from quantcore.backends.torch_integer_script import read_script_integer_graph

        return read_script_integer_graph(model)
    return None


def integer_tapper_for(model: Any, taps: Sequence[str], *, threads: int | None = None) -> Tapper:
    """The tapper of the integer tensors ``taps`` (as ``integer_graph_for`` names them), built once, reused.

    Values come back as the runtime made them: integer arrays from onnxruntime, quantized tensors from torch
    (``to_integers`` reads their integers).

    Raises:
        InvalidModelError: a tap names nothing in the model.
        TypeError: ``model`` is not a loaded model.
    """
    backend = backend_for(model)
    if not isinstance(backend, EagerBackend):  # ONNX tensor names and TorchScript debug names: their own tappers
        return tapper_for(model, taps, threads=threads)
    from quantcore.backends.torch_integer_fx import fx_tapper

    threads = settings.current().threads if threads is None else threads
    key = ("integer_tapper", id(model), tuple(taps), threads)
    entry, _ = _RUNNERS.get(key, None, lambda: (model, _checked(fx_tapper(model, list(taps)))))
    return entry[1]


def forget_models(models: list[Any]) -> int:
    """Drop the cached runners (sessions, tapped graphs) of ``models``: they were let go, so their memory
    must be too (the folder cache calls this when it evicts a folder). Returns how many went."""
    ids = {id(model) for model in models}
    return _RUNNERS.discard_where(lambda entry: id(entry[0]) in ids)


def runners_info() -> CacheInfo:
    """Hits, misses and entries of the predictor/tapper cache."""
    return _RUNNERS.info()


def runners_clear() -> None:
    """Drop every cached predictor and tapper (sessions and module references)."""
    _RUNNERS.clear()


__all__ = [
    "BACKENDS",
    "INPUT_SUFFIX",
    "INTEGER_KERNELS",
    "Backend",
    "Capture",
    "IntTensor",
    "IntegerGraph",
    "IntegerStep",
    "Layer",
    "LayerKind",
    "Predictor",
    "QuantParams",
    "Tapper",
    "TensorSpec",
    "backend_for",
    "integer_graph_for",
    "integer_limits",
    "integer_tapper_for",
    "is_model",
    "kernel_ops",
    "make_qparams",
    "predictor_for",
    "read_integer_graph",
    "runners_clear",
    "runners_info",
    "tapper_for",
    "to_integers",
    "to_numpy",
]
