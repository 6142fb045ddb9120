"""A TorchScript int8 model (a traced FX int8 GraphModule, like the bundled ``resnet8_int8.pt``) as integer steps.

Read from the inlined forward graph: tensors are named by their value's debug
name (what ``script_tapper`` taps), a layer by the module path of its packed
parameters (``stack1.conv1``). ``quantized::conv2d[_relu]`` and
``quantized::linear[_relu]`` read as layers, their output scale and zero point
being the op's constant arguments and their weights the packed parameters
unpacked; ``quantized::add[_relu]``, pools, ReLUs and reshapes on quantized
values read as the steps between; ``dequantize -> flatten -> quantize_per_tensor``
as one requantizing reshape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quantcore.backends.base import PASS_THROUGH
from quantcore.backends.integer_graph import IntegerGraph, IntegerStep, IntTensor
from quantcore.backends.torch_integer import dtype_name, engine_name, float32, layer_step
from quantcore.backends.torchscript import _attr_path, _fetch, _script_value, inlined_graph

if TYPE_CHECKING:
    import torch

LAYERS = {f"quantized::{op}{relu}": kind for op, kind in
          (("conv1d", "conv"), ("conv2d", "conv"), ("conv3d", "conv"), ("linear", "dense"))
          for relu in ("", "_relu")}  # fmt: skip
_GLOBAL_POOLS = ("aten::adaptive_avg_pool1d", "aten::adaptive_avg_pool2d", "aten::adaptive_avg_pool3d")
_ALIASES = ("aten::contiguous", "aten::clone", "aten::detach", "aten::dropout")
_RESHAPES = ("aten::flatten", "aten::reshape", "aten::view")
# What the model's output may pass through after its last integer tensor and still answer the same top-1.
_TO_OUTPUT = frozenset({*PASS_THROUGH, *_ALIASES, *_RESHAPES, "aten::softmax", "aten::log_softmax"})


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _constant(root: Any, value: Any) -> Any:
    """A constant argument: a number, a list of them, or a buffer read through ``prim::GetAttr``."""
    if value.node().kind() == "prim::ListConstruct":
        return [_constant(root, v) for v in value.node().inputs()]
    held = _script_value(root, value)
    return held.item() if hasattr(held, "item") else held


def _layer(root: Any, node: Any, x: IntTensor) -> IntegerStep:
    import torch

    kind = LAYERS[node.kind()]
    source = _attr_path(node.inputsAt(1))
    if source is None:
        raise ValueError("its packed weights are computed, not stored")
    packed = _fetch(root, source)
    parts = source.split(".")
    while parts and parts[-1] == "_packed_params":
        parts.pop()
    name = ".".join(parts) or source
    output = (node.output().debugName(), _constant(root, node.inputsAt(2)), _constant(root, node.inputsAt(3)))
    relu = node.kind().endswith("_relu")
    if kind == "dense":
        weight, bias = torch.ops.quantized.linear_unpack(packed)
        return layer_step(name, node.kind(), kind, x, output, weight, bias, None, relu)
    if packed.transpose():
        raise ValueError("a transposed convolution is not computed here")
    weight, bias = packed.unpack()
    conv = (list(packed.stride()), list(packed.padding()), list(packed.dilation()), int(packed.groups()))
    if node.kind().startswith("quantized::conv1d"):
        # Packed as a 2-D conv over a height of 1: weights (out, in, 1, k), and the 2-D conv's attributes.
        if weight.dim() != 4 or weight.shape[2] != 1:
            raise ValueError(f"a 1-D convolution packed with weights of shape {list(weight.shape)}")
        weight = weight.squeeze(2)
        conv = (*([values[-1]] for values in conv[:3]), conv[3])
    return layer_step(name, node.kind(), kind, x, output, weight, bias, conv, relu)


def _layer_name(node: Any) -> str:
    """A layer's module path (``stack1.conv1``), or its output's debug name when its weights are computed."""
    source = _attr_path(node.inputsAt(1))
    return source.removesuffix("._packed_params") if source else node.output().debugName()


def _reshape_attrs(root: Any, node: Any) -> dict[str, Any] | None:
    kind = node.kind()
    args = [_constant(root, v) for v in list(node.inputs())[1:]]
    if kind == "aten::flatten" and len(args) == 2 and args[1] == -1:
        return {"flatten_axis": int(args[0])}
    if kind in ("aten::reshape", "aten::view") and args and isinstance(args[0], list):
        return {"shape": [int(d) for d in args[0]]}
    return None


class _Reader:
    def __init__(self, module: torch.jit.ScriptModule) -> None:
        self.root = module
        self.graph = inlined_graph(module)
        self.known: dict[str, IntTensor] = {}  # value debug name -> the integer tensor it is
        self.float_views: dict[str, tuple[IntTensor, dict[str, Any]]] = {}
        self.steps: list[IntegerStep] = []
        self.notes: list[str] = []
        inputs = list(self.graph.inputs())
        self.input_name = inputs[1].debugName() if len(inputs) > 1 else None
        self.input_q: IntTensor | None = None

    def read(self, node: Any) -> None:
        kind = node.kind()
        if kind.startswith("prim::") or node.outputsSize() != 1:
            return
        out = node.output().debugName()
        ints = [v.debugName() for v in node.inputs() if v.debugName() in self.known]
        if kind == "aten::quantize_per_tensor":
            self._quantize(node, out)
        elif not ints and kind in LAYERS:
            self.notes.append(f"{_layer_name(node)} ({kind}): not read, its input is made by a step not read "
                              "as integers")  # fmt: skip
        elif not ints:
            self._float_view(node, out)
        elif kind in LAYERS:
            self._add(out, _layer(self.root, node, self.known[ints[0]]))
        elif kind in ("quantized::add", "quantized::add_relu"):
            a, b = (self.known[node.inputsAt(i).debugName()] for i in (0, 1))
            y = IntTensor(out, float32(_constant(self.root, node.inputsAt(2))),
                          int(_constant(self.root, node.inputsAt(3))), a.dtype)  # fmt: skip
            self._add(out, IntegerStep(out, kind, "add", (a, b), y, relu=kind.endswith("_relu")))
        elif kind in _ALIASES:
            self.known[out] = self.known[ints[0]]
        elif kind == "aten::dequantize":
            self.float_views[out] = (self.known[ints[0]], {})
        else:
            self._between(node, out, self.known[ints[0]])

    def _add(self, out: str, step: IntegerStep) -> None:
        self.steps.append(step)
        self.known[out] = step.output

    def _between(self, node: Any, out: str, x: IntTensor) -> None:
        """A pool, ReLU or reshape on an integer tensor: its output keeps the input's scale and zero point."""
        kind = node.kind()
        y = IntTensor(out, x.scale, x.zero_point, x.dtype)
        if kind in _GLOBAL_POOLS and set(_as_list(_constant(self.root, node.inputsAt(1)))) == {1}:
            self._add(out, IntegerStep(out, kind, "global_average_pool", (x,), y))
        elif kind in ("aten::relu", "aten::relu_"):
            self._add(out, IntegerStep(out, kind, "relu", (x,), y))
        elif kind == "aten::max_pool2d":
            self._add(out, IntegerStep(out, kind, "max_pool", (x,), y))
        elif kind in _RESHAPES and (attrs := _reshape_attrs(self.root, node)) is not None:
            self._add(out, IntegerStep(out, kind, "reshape", (x,), y, attrs=attrs))
        else:
            self.notes.append(f"{out} ({kind}): not read as an integer step")

    def _float_view(self, node: Any, out: str) -> None:
        sources = [v.debugName() for v in node.inputs() if v.debugName() in self.float_views]
        if not sources:
            return
        tensor, attrs = self.float_views[sources[0]]
        if node.kind() in _ALIASES:
            self.float_views[out] = (tensor, attrs)
        elif node.kind() in _RESHAPES and not attrs and (reshape := _reshape_attrs(self.root, node)) is not None:
            self.float_views[out] = (tensor, reshape)

    def _quantize(self, node: Any, out: str) -> None:
        source = node.inputsAt(0).debugName()
        dtype = dtype_name(node.inputsAt(3).toIValue())
        if dtype is None:
            self.notes.append(f"{out}: quantized to a type the integer view does not compute")
            return
        scale, zero = (_constant(self.root, node.inputsAt(i)) for i in (1, 2))
        y = IntTensor(out, float32(scale), int(zero), dtype)
        if source == self.input_name and self.input_q is None:
            self.input_q = y
            self.known[out] = y
        elif source in self.float_views:
            x, attrs = self.float_views[source]
            self._add(out, IntegerStep(out, "dequantize→quantize_per_tensor", "reshape", (x,), y, attrs=attrs))
        else:  # its layers can still be checked on it; the whole-network run stops where it is needed
            self.known[out] = y
            self.notes.append(f"{out}: quantizes a value computed in float ({node.inputsAt(0).node().kind()}), "
                              "so a whole-network integer run cannot reach past it")  # fmt: skip

    def output(self) -> IntTensor | None:
        value = self.graph.return_node().inputsAt(0)
        for _ in range(6):
            name = value.debugName()
            if name in self.float_views:
                return self.float_views[name][0]
            if name in self.known:
                return self.known[name]
            node = value.node()
            if node.kind() not in _TO_OUTPUT or node.inputsSize() < 1:
                return None  # the output is computed from the last integer tensor, not just read out of it
            value = node.inputsAt(0)
        return None


def read_script_integer_graph(module: torch.jit.ScriptModule) -> IntegerGraph:
    """The integer steps of a TorchScript int8 model (no steps for a float one)."""
    reader = _Reader(module)
    for node in reader.graph.nodes():
        try:
            reader.read(node)
        except (ValueError, AttributeError, TypeError, IndexError, RuntimeError) as exc:
            name = node.output().debugName() if node.outputsSize() == 1 else node.kind()
            reader.notes.append(f"{name} ({node.kind()}): not read as an integer step ({exc})")
    return IntegerGraph(tuple(reader.steps), reader.input_name, reader.input_q, reader.output(),
                        tuple(reader.notes), engine_name())  # fmt: skip
