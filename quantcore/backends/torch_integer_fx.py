"""An FX int8 GraphModule (torch.ao ``convert_fx``) as the integer steps a chip would run.

Tensors are named by their FX node (``stack1_conv1``); a layer by its module
path (``stack1.conv1``). Quantized conv and linear modules read as layers, with
their output scale and zero point from the module and the input's from the
quantized value feeding it; ``quantized.add``/``add_relu``, pools, ReLUs and
reshapes on quantized values read as the steps between; a
``dequantize -> flatten -> quantize_per_tensor`` run reads as one requantizing
reshape. Tapping a node's value re-builds the graph to return it as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from quantcore.backends.base import Capture, Tapper, missing_tap, to_numpy
from quantcore.backends.integer_graph import IntegerGraph, IntegerStep, IntTensor
from quantcore.backends.torch_integer import dtype_name, engine_name, float32, layer_step
from quantcore.errors import InvalidModelError

if TYPE_CHECKING:
    import torch.fx

# Steps that only move values (same scale and zero point): passed through by name.
_ALIASES = ("Identity", "Dropout", "contiguous", "clone", "detach")
_RESHAPES = ("Flatten", "flatten", "reshape", "view", "squeeze")
# What the model's output may pass through after its last integer tensor and still answer the same top-1.
_TO_OUTPUT = frozenset({*_ALIASES, *_RESHAPES, "dequantize", "Softmax", "softmax", "LogSoftmax", "log_softmax"})


def _attr(root: Any, target: str) -> Any:
    value = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _number(root: Any, arg: Any) -> Any:
    """A scale or zero point argument: a number, or a ``get_attr`` node holding a 0-d tensor."""
    value = _attr(root, arg.target) if getattr(arg, "op", None) == "get_attr" else arg
    return value.item() if hasattr(value, "item") else value


def _what(node: Any, modules: dict[str, Any]) -> str:
    """A name for what a node does: the module class, or the function or method name."""
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op in ("call_function", "call_method"):
        return getattr(node.target, "__name__", str(node.target)).split(".")[-1]
    return node.op


def _layer(node: Any, module: Any, x: IntTensor) -> IntegerStep | None:
    from torch.ao.nn import intrinsic
    from torch.ao.nn import quantized as nnq

    relu_types = (intrinsic.quantized.ConvReLU1d, intrinsic.quantized.ConvReLU2d, intrinsic.quantized.ConvReLU3d,
                  intrinsic.quantized.LinearReLU)  # fmt: skip
    relu = isinstance(module, relu_types)
    suffix = "_relu" if relu else ""
    output = (node.name, getattr(module, "scale", None), getattr(module, "zero_point", None))
    if isinstance(module, (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d)):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError(f"padding {module.padding!r} ({module.padding_mode}) is not computed here")
        conv = (list(module.stride), list(module.padding), list(module.dilation), module.groups)
        op = f"quantized::conv{len(conv[0])}d{suffix}"  # the op the module calls, as TorchScript names it
        return layer_step(str(node.target), op, "conv", x, output, module.weight(), module.bias(), conv, relu)
    if isinstance(module, nnq.Linear) and not isinstance(module, nnq.dynamic.Linear):
        op = f"quantized::linear{suffix}"
        return layer_step(str(node.target), op, "dense", x, output, module.weight(), module.bias(), None, relu)
    return None


def _reshape_attrs(node: Any, modules: dict[str, Any], what: str) -> dict[str, Any] | None:
    """The reshape a node does on values, as the integer network takes it (None: not one it computes)."""
    if what == "Flatten":
        module = modules[node.target]
        return {"flatten_axis": module.start_dim} if module.end_dim == -1 else None
    if what == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return {"flatten_axis": int(start)} if end == -1 and isinstance(start, int) else None
    if what in ("reshape", "view") and all(isinstance(a, int) for a in node.args[1:]) and len(node.args) > 1:
        return {"shape": [int(a) for a in node.args[1:]]}
    return None


class _Reader:
    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.known: dict[Any, IntTensor] = {}  # node -> the integer tensor it is (or passes through)
        self.float_views: dict[Any, tuple[IntTensor, dict[str, Any]]] = {}  # dequantized, maybe reshaped
        self.steps: list[IntegerStep] = []
        self.notes: list[str] = []
        self.input_name: str | None = None
        self.input_q: IntTensor | None = None

    def read(self, node: Any) -> None:
        what = _what(node, self.modules)
        ints = [a for a in node.all_input_nodes if a in self.known]
        if node.op == "placeholder":
            self.input_name = self.input_name or node.name
        elif what == "quantize_per_tensor":
            self._quantize(node)
        elif not ints:
            self._float_view(node, what)
        elif node.op == "call_module" and (step := _layer(node, self.modules[node.target], self.known[ints[0]])):
            self._add(node, step)
        elif what in ("add", "add_relu") and len(node.args) >= 4 and all(a in self.known for a in node.args[:2]):
            y = IntTensor(node.name, float32(_number(self.gm, node.args[2])), int(_number(self.gm, node.args[3])),
                          self.known[node.args[0]].dtype)  # fmt: skip
            inputs = (self.known[node.args[0]], self.known[node.args[1]])
            self._add(node, IntegerStep(node.name, f"quantized::{what}", "add", inputs, y, relu=what == "add_relu"))
        elif what in _ALIASES:
            self.known[node] = self.known[ints[0]]
        elif what == "dequantize":
            self.float_views[node] = (self.known[ints[0]], {})
        else:
            self._between(node, what, self.known[ints[0]])

    def _add(self, node: Any, step: IntegerStep) -> None:
        self.steps.append(step)
        self.known[node] = step.output

    def _between(self, node: Any, what: str, x: IntTensor) -> None:
        """A pool, ReLU or reshape on an integer tensor: its output keeps the input's scale and zero point."""
        y = IntTensor(node.name, x.scale, x.zero_point, x.dtype)
        module = self.modules.get(node.target) if node.op == "call_module" else None
        size = getattr(module, "output_size", node.args[1] if len(node.args) > 1 else None)
        if what in ("AdaptiveAvgPool2d", "adaptive_avg_pool2d") and size in (1, (1, 1), [1, 1]):
            self._add(node, IntegerStep(node.name, what, "global_average_pool", (x,), y))
        elif what in ("ReLU", "relu", "relu_"):
            self._add(node, IntegerStep(node.name, what, "relu", (x,), y))
        elif what in ("MaxPool2d", "max_pool2d"):
            self._add(node, IntegerStep(node.name, what, "max_pool", (x,), y))
        elif what in _RESHAPES and (attrs := _reshape_attrs(node, self.modules, what)) is not None:
            self._add(node, IntegerStep(node.name, what, "reshape", (x,), y, attrs=attrs))
        else:
            self.notes.append(f"{node.name} ({what}): not read as an integer step")

    def _float_view(self, node: Any, what: str) -> None:
        """Follow a dequantized value through one reshape, so that quantizing it again reads as one step."""
        sources = [a for a in node.all_input_nodes if a in self.float_views]
        if not sources or what not in (*_ALIASES, *_RESHAPES):
            return
        tensor, attrs = self.float_views[sources[0]]
        if what in _ALIASES:
            self.float_views[node] = (tensor, attrs)
        elif not attrs and (reshape := _reshape_attrs(node, self.modules, what)) is not None:
            self.float_views[node] = (tensor, reshape)

    def _quantize(self, node: Any) -> None:
        source = node.args[0]
        dtype = dtype_name(node.args[3] if len(node.args) > 3 else node.kwargs.get("dtype"))
        if dtype is None:
            self.notes.append(f"{node.name}: quantized to a type the integer view does not compute")
            return
        y = IntTensor(node.name, float32(_number(self.gm, node.args[1])), int(_number(self.gm, node.args[2])), dtype)
        if getattr(source, "op", None) == "placeholder" and self.input_q is None:
            self.input_q = y
            self.known[node] = y
        elif source in self.float_views:
            x, attrs = self.float_views[source]
            self._add(node, IntegerStep(node.name, "dequantize→quantize_per_tensor", "reshape", (x,), y, attrs=attrs))
        else:
            self.notes.append(f"{node.name}: quantizes a value computed in float; what feeds it is not integers")

    def output(self) -> IntTensor | None:
        """The integer tensor whose dequantized value (through reshapes or a softmax) is the model's output."""
        node = next(n for n in reversed(self.gm.graph.nodes) if n.op == "output").args[0]
        for _ in range(6):
            if node in self.float_views:
                return self.float_views[node][0]
            if node in self.known:
                return self.known[node]
            inputs = getattr(node, "all_input_nodes", [])
            if len(inputs) != 1 or _what(node, self.modules) not in _TO_OUTPUT:
                return None  # the output is computed from the last integer tensor, not just read out of it
            node = inputs[0]
        return None


def read_fx_integer_graph(gm: torch.fx.GraphModule) -> IntegerGraph:
    """The integer steps of an FX int8 GraphModule (no steps for a float one)."""
    reader = _Reader(gm)
    for node in gm.graph.nodes:
        try:
            reader.read(node)
        except (ValueError, AttributeError, TypeError, IndexError, RuntimeError) as exc:
            reader.notes.append(f"{node.name}: not read as an integer step ({exc})")
    return IntegerGraph(tuple(reader.steps), reader.input_name, reader.input_q, reader.output(),
                        tuple(reader.notes), engine_name())  # fmt: skip


def fx_tapper(gm: torch.fx.GraphModule, taps: Sequence[str]) -> Tapper:
    """A function running one float32 batch and capturing the values of the FX nodes named ``taps``.

    The graph is copied to also return those values; the copy shares the model's modules and buffers.

    Raises:
        InvalidModelError: a tap names no node of the graph.
    """
    import torch
    import torch.fx

    nodes = {node.name: node for node in gm.graph.nodes}
    missing = missing_tap(taps, nodes)
    if missing is not None:
        raise InvalidModelError(f"the FX graph has no node named {missing!r}")
    graph = torch.fx.Graph()
    remap: dict[Any, Any] = {}
    output = graph.graph_copy(gm.graph, remap)
    graph.output((output, *(remap[nodes[t]] for t in taps)))
    tapped = torch.fx.GraphModule(gm, graph)

    def run(batch: np.ndarray) -> Capture:
        with torch.no_grad():
            output, *captured = tapped(torch.from_numpy(batch))
        return Capture(to_numpy(output).astype(np.float32, copy=False), dict(zip(taps, captured, strict=True)))

    return run
