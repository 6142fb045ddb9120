"""Capture intermediate activations of one loaded variant, a batch at a time.

A *tap* names one intermediate value of a model, in that model's own terms:

| model                         | a tap is                     | captured by                         |
|-------------------------------|------------------------------|-------------------------------------|
| ``onnx.ModelProto``           | a tensor name                | extra graph outputs (one session)   |
| ``nn.Module`` (incl. FX)      | ``path`` / ``path#input``    | forward hooks on the named modules  |
| TorchScript ``ScriptModule``  | a value's debug name in the  | the inlined forward graph, re-built |
|                               | inlined forward graph        | to also return the tapped values    |

TorchScript needs its own way: a scripted parent calls its children's compiled
``forward`` directly, so Python hooks on them never fire.

Captured values come back as produced — numpy arrays from onnxruntime, torch
tensors (possibly quantized) from PyTorch — so a caller can read their
quantization parameters before turning them into floats.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from quantcore.errors import InvalidModelError

if TYPE_CHECKING:
    import onnx
    import torch

logger = logging.getLogger(__name__)

INPUT_SUFFIX = "#input"  # nn.Module taps: "stack1.conv1#input" is what that module receives
DEFAULT_THREADS = 2


@dataclass(frozen=True)
class Capture:
    """One batch through a model: its first output as floats, and every tapped value as produced."""

    output: np.ndarray
    values: dict[str, Any]


Tapper = Callable[[np.ndarray], Capture]


def to_numpy(value: Any) -> np.ndarray:
    """A captured value as a numpy array (torch tensors dequantized, detached)."""
    if isinstance(value, np.ndarray):
        return value
    import torch

    if isinstance(value, torch.Tensor):
        if value.is_quantized and value.qscheme() == torch.per_tensor_affine:
            # numpy dequantizes a per-tensor int8 tensor several times faster than torch does.
            integers = value.int_repr().numpy()
            return (integers.astype(np.float32) - np.float32(value.q_zero_point())) * np.float32(value.q_scale())
        tensor = value.dequantize() if value.is_quantized else value
        return tensor.detach().cpu().numpy()
    return np.asarray(value)


# ------------------------------------------------------------------------ ONNX


def _onnx_tapper(model: onnx.ModelProto, taps: Sequence[str], threads: int) -> Tapper:
    import onnx
    import onnxruntime as ort

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    outputs = [o.name for o in augmented.graph.output]
    produced = {name for node in augmented.graph.node for name in node.output}
    produced |= {i.name for i in augmented.graph.input}
    missing = [t for t in taps if t not in produced]
    if missing:
        raise InvalidModelError(f"the graph has no tensor named {missing[0]!r}")
    extra = [t for t in dict.fromkeys(taps) if t not in outputs]
    # An output without a type is fine for onnxruntime: it infers it.
    augmented.graph.output.extend(onnx.ValueInfoProto(name=t) for t in extra)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle ORT threads spin for a while after each run; here torch runs next and needs those cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped errors for bad graphs
        raise InvalidModelError(f"onnxruntime cannot run this model: {exc}") from exc
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]

    def run(batch: np.ndarray) -> Capture:
        results = dict(zip(names, session.run(None, {input_name: batch}), strict=True))
        return Capture(np.asarray(results[names[0]], dtype=np.float32), {t: results[t] for t in taps})

    return run


# --------------------------------------------------------------------- nn.Module


def _module_tapper(module: torch.nn.Module, taps: Sequence[str]) -> Tapper:
    import torch

    modules = dict(module.named_modules())
    wanted: dict[str, tuple[bool, bool]] = {}  # path -> (capture input, capture output)
    for tap in taps:
        path, is_input = (tap[: -len(INPUT_SUFFIX)], True) if tap.endswith(INPUT_SUFFIX) else (tap, False)
        if path not in modules:
            raise InvalidModelError(f"the model has no module named {path!r}")
        has_in, has_out = wanted.get(path, (False, False))
        wanted[path] = (has_in or is_input, has_out or not is_input)

    def run(batch: np.ndarray) -> Capture:
        values: dict[str, Any] = {}
        owner = threading.get_ident()

        def hook_for(path: str, want_in: bool, want_out: bool) -> Callable[..., None]:
            def hook(_: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
                # The model is shared: another thread's forward must not write into this capture.
                if threading.get_ident() != owner:
                    return
                if want_in and args:
                    values[path + INPUT_SUFFIX] = args[0]
                if want_out:
                    values[path] = output

            return hook

        # Hooks live only for this call, so the shared (cached) model is left as it was.
        handles = [modules[p].register_forward_hook(hook_for(p, *flags)) for p, flags in wanted.items()]
        try:
            with torch.no_grad():
                output = module(torch.from_numpy(batch))
        finally:
            for handle in handles:
                handle.remove()
        return Capture(to_numpy(output).astype(np.float32, copy=False), {t: values[t] for t in taps})

    return run


# ------------------------------------------------------------------- TorchScript


def inlined_graph(module: torch.jit.ScriptModule) -> torch.Graph:
    """A copy of ``module``'s forward graph with every submodule call inlined."""
    import torch

    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    return graph


def _script_tapper(module: torch.jit.ScriptModule, taps: Sequence[str]) -> Tapper:
    import torch

    graph = inlined_graph(module)
    by_name = {v.debugName(): v for node in graph.nodes() for v in node.outputs()}
    by_name.update({v.debugName(): v for v in graph.inputs()})
    missing = [t for t in taps if t not in by_name]
    if missing:
        raise InvalidModelError(f"the scripted graph has no value named {missing[0]!r}")
    ret = graph.return_node()
    values = [ret.inputsAt(0), *(by_name[t] for t in taps)]
    # A method returns one value: pack the original output and the taps into a tuple.
    pack = graph.create("prim::TupleConstruct", values)
    pack.insertBefore(ret)
    pack.output().setType(torch._C.TupleType([v.type() for v in values]))
    ret.replaceInput(0, pack.output())
    graph.lint()
    function = torch._C._create_function_from_graph("quantcore_taps", graph)

    def run(batch: np.ndarray) -> Capture:
        with torch.no_grad():
            output, *captured = function(module._c, torch.from_numpy(batch))
        return Capture(to_numpy(output).astype(np.float32, copy=False), dict(zip(taps, captured, strict=True)))

    return run


_TAPPERS: OrderedDict[tuple[int, tuple[str, ...], int], tuple[Any, Tapper]] = OrderedDict()
_TAPPERS_LOCK = threading.Lock()
TAPPER_CACHE_SIZE = 16


def make_tapper(model: Any, taps: Sequence[str], *, threads: int = DEFAULT_THREADS) -> Tapper:
    """A function running one float32 batch through ``model`` and returning the tapped values.

    Args:
        model: a loaded variant (``onnx.ModelProto``, ``nn.Module`` or TorchScript module).
        taps: values to capture, named as the module docstring says.
        threads: onnxruntime intra-op threads (torch keeps its process-wide setting).

    Returns:
        A callable from a float32 batch to a ``Capture``.

    Raises:
        InvalidModelError: a tap names nothing in the model, or onnxruntime cannot run it.
        TypeError: ``model`` is not a loaded variant.
    """
    import onnx
    import torch

    # Building one costs a session (ONNX) or a few slow first runs (TorchScript): keep the last few.
    key = (id(model), tuple(taps), threads)
    with _TAPPERS_LOCK:
        cached = _TAPPERS.get(key)
        if cached is not None and cached[0] is model:
            _TAPPERS.move_to_end(key)
            return cached[1]
    if isinstance(model, onnx.ModelProto):
        tapper = _onnx_tapper(model, taps, threads)
    elif isinstance(model, torch.jit.ScriptModule):
        tapper = _script_tapper(model, taps)
    elif isinstance(model, torch.nn.Module):
        tapper = _module_tapper(model, taps)
    else:
        raise TypeError(f"not a loaded variant: {type(model).__name__}")
    with _TAPPERS_LOCK:
        _TAPPERS[key] = (model, tapper)  # holding the model keeps its id from being reused
        while len(_TAPPERS) > TAPPER_CACHE_SIZE:
            _TAPPERS.popitem(last=False)
    return tapper
