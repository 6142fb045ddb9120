"""The TorchScript backend: ``torch.jit`` archives, traced FX int8 models among them.

A scripted parent calls its children's compiled ``forward`` directly, so
Python hooks never fire: layers are read from the inlined forward graph, and a
tap is a value's debug name in that graph, captured by re-building it to also
return the tapped values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from quantcore.backends.base import (
    PASS_THROUGH,
    SOFTMAX_KINDS,
    Capture,
    Tapper,
    missing_tap,
    to_numpy,
)
from quantcore.backends.layer import Layer, LayerKind, QuantParams, fold_bn, make_qparams
from quantcore.backends.torch_common import (
    TorchBackend,
    numel,
    torch_weight,
)
from quantcore.errors import InvalidModelError

if TYPE_CHECKING:
    import torch


SCRIPT_WEIGHTED: dict[str, LayerKind] = {
    "aten::_convolution": "conv", "aten::conv1d": "conv", "aten::conv2d": "conv", "aten::conv3d": "conv",
    "aten::linear": "dense",
    "quantized::conv1d": "conv", "quantized::conv2d": "conv", "quantized::conv3d": "conv",
    "quantized::conv1d_relu": "conv", "quantized::conv2d_relu": "conv", "quantized::conv3d_relu": "conv",
    "quantized::linear": "dense", "quantized::linear_relu": "dense",
}  # fmt: skip
SCRIPT_CHAIN = {"aten::batch_norm", "aten::relu", "aten::relu_", "aten::relu6", "aten::hardtanh",
                "aten::hardtanh_", "aten::leaky_relu", "aten::dropout"}  # fmt: skip


def _attr_path(value: Any) -> str | None:
    """``stack1.conv2._packed_params`` for a value read through a chain of prim::GetAttr, else None."""
    parts = []
    node = value.node()
    while node.kind() == "prim::GetAttr":
        parts.append(node.s("name"))
        node = node.input().node()
    return ".".join(reversed(parts)) if parts and node.kind() == "prim::Param" else None


def _fetch(root: Any, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _script_value(root: Any, value: Any) -> Any:
    path = _attr_path(value)
    return _fetch(root, path) if path is not None else value.toIValue()


def _script_layer(root: Any, node: Any, kind: LayerKind, depth: int, order: int) -> Layer | None:
    import torch

    source = _attr_path(node.inputsAt(1))
    if source is None:
        return None
    held = _fetch(root, source)
    if node.kind().startswith("quantized::"):
        raw_weight, raw_bias = held.unpack() if kind == "conv" else torch.ops.quantized.linear_unpack(held)
        output_q = make_qparams(node.inputsAt(2).toIValue(), node.inputsAt(3).toIValue())
    else:
        raw_weight, raw_bias = held, _script_value(root, node.inputsAt(2))
        output_q = None
    # A module's path: drop the attribute names (weight, _packed_params) from the end.
    parts = source.split(".")
    while parts and parts[-1] in ("weight", "_packed_params"):
        parts.pop()
    path = ".".join(parts)
    owner = _fetch(root, path) if path else root
    weight, integers, w_q = torch_weight(raw_weight)
    if node.kind().startswith("quantized::conv1d") and weight.ndim == 4:
        # Packed int8 Conv1d weights are stored as a 2-D conv's, (out, in, 1, k): the layer's are (out, in, k).
        weight = weight[:, :, 0]
        integers = integers[:, :, 0] if integers is not None else None
    end = node.output()
    fused: list[str] = []
    folded = None
    while len(end.uses()) == 1:
        user = end.uses()[0].user
        if user.kind() not in SCRIPT_CHAIN or user.inputsAt(0) is not end:
            break
        if user.kind() == "aten::batch_norm" and w_q is None and folded is None:
            gamma = _script_value(root, user.inputsAt(1))
            gamma = gamma.detach().numpy() if gamma is not None else np.ones(weight.shape[0])
            var = _script_value(root, user.inputsAt(4)).detach().numpy()
            folded = fold_bn(weight, gamma, var, float(user.inputsAt(7).toIValue()))
        fused.append(user.kind().removeprefix("aten::"))
        end = user.output()
    return Layer(
        name=path or source, op=getattr(owner, "original_name", node.kind()), kind=kind,
        weight_shape=tuple(weight.shape), parameters=int(weight.size) + numel(raw_bias), depth=depth, order=order,
        tap=end.debugName(), input_tap=node.inputsAt(0).debugName(), fused=tuple(fused), weight=weight,
        weight_int=integers, weight_q=w_q, folded_weight=folded, output_q=output_q if not fused else None,
    )  # fmt: skip


def _script_layers(module: torch.jit.ScriptModule) -> list[Layer]:
    graph = inlined_graph(module)
    depth: dict[str, int] = {}
    layers: list[Layer] = []
    for order, node in enumerate(graph.nodes()):
        here = max((depth.get(v.debugName(), 0) for v in node.inputs()), default=0)
        kind = SCRIPT_WEIGHTED.get(node.kind())
        layer = _script_layer(module, node, kind, here + 1, order) if kind else None
        if layer is not None:
            here += 1
            layers.append(layer)
        for value in node.outputs():
            depth[value.debugName()] = here
    return layers


def inlined_graph(module: torch.jit.ScriptModule) -> torch.Graph:
    """A copy of ``module``'s forward graph with every submodule call inlined."""
    import torch

    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    return graph


def script_tapper(module: torch.jit.ScriptModule, taps: Sequence[str]) -> Tapper:
    import torch

    graph = inlined_graph(module)
    by_name = {v.debugName(): v for node in graph.nodes() for v in node.outputs()}
    by_name.update({v.debugName(): v for v in graph.inputs()})
    missing = missing_tap(taps, by_name)
    if missing is not None:
        raise InvalidModelError(f"the scripted graph has no value named {missing!r}")
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


class ScriptBackend(TorchBackend):
    """``torch.jit.ScriptModule`` models."""

    name: ClassVar[str] = "torchscript"

    def handles(self, model: object) -> bool:
        import torch

        return isinstance(model, torch.jit.ScriptModule)

    def read_layers(self, model: torch.jit.ScriptModule, notes: list[str]) -> list[Layer]:
        return _script_layers(model)

    def make_tapper(self, model: torch.jit.ScriptModule, taps: Sequence[str]) -> Tapper:
        return script_tapper(model, taps)

    def output_kind(self, model: torch.jit.ScriptModule) -> str | None:
        graph = inlined_graph(model)
        value = graph.return_node().inputsAt(0)
        node = value.node()
        while node.kind() in PASS_THROUGH:
            node = node.inputsAt(0).node()
        return SOFTMAX_KINDS.get(node.kind())

    def input_quantization(self, model: torch.jit.ScriptModule) -> QuantParams | None:
        graph = inlined_graph(model)
        inputs = list(graph.inputs())
        if len(inputs) < 2:
            return None
        for use in inputs[1].uses():
            node = use.user
            if node.kind() == "aten::quantize_per_tensor":
                scale, zero = (_script_value(model, node.inputsAt(i)) for i in (1, 2))
                dtype = node.inputsAt(3).toIValue()
                name = {13: "uint8", 12: "int8"}.get(dtype, "uint8") if isinstance(dtype, int) else "uint8"
                return make_qparams(float(scale), int(zero), name)
        return None
