"""The weighted layers of every variant, matched across formats, with their quantization parameters.

Each loaded variant is read in its own terms — ONNX float, QDQ and QOperator
graphs, PyTorch modules (FX int8 ones included) and TorchScript archives —
into a list of ``Layer``: every conv and dense layer with its weights, their
scale and zero point, the scale and zero point of the activation going in and
coming out, and where its activation can be tapped.

Layers are then matched across variants by topology and order, not by name:
each list is put in a canonical order (depth in weighted layers from the
input, then position in the graph) and aligned to the table's rows by a
sequence alignment that only pairs layers of the same kind and weight shape,
using name likeness to break ties. What cannot be paired gets a row of its
own, so it is shown, never dropped. docs/INSPECT.md tells the whole story.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from quantcore.taps import INPUT_SUFFIX, inlined_graph, make_tapper
from quantcore.variants import ModelVariants, Status, VariantKey

if TYPE_CHECKING:
    import onnx
    import torch

logger = logging.getLogger(__name__)

LayerKind = Literal["conv", "dense"]
# ResNet8 / MLPerf Tiny images: the probe size when no ONNX variant states its input.
DEFAULT_IMAGE_SIZE = 32
FLOAT_KEYS = (VariantKey.PYTORCH_FLOAT, VariantKey.ONNX_FLOAT)
FOLDING_NOTE = (
    "BatchNorm after a conv is folded into the conv by the ONNX export and by PyTorch FX int8: "
    "weights are compared with it folded, and activations after it."
)


# ------------------------------------------------------------------ parameters


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Scale and zero point of one tensor: one value each (per tensor) or one per channel.

    ``axis`` is the channel axis of a per-channel weight in the canonical
    (output-channels-first) layout.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int | None = None

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def limits(self) -> tuple[int, int]:
        """The integer range of ``dtype``."""
        info = np.iinfo(np.dtype(self.dtype))
        return int(info.min), int(info.max)

    def _broadcast(self, values: np.ndarray, ndim: int) -> np.ndarray:
        if not self.per_channel:
            return values.reshape(())
        shape = [1] * ndim
        shape[self.axis or 0] = values.size
        return values.reshape(shape)

    def dequantize(self, integers: np.ndarray) -> np.ndarray:
        """``(q - zero_point) * scale`` in float32, per channel along ``axis`` if per-channel."""
        zero = self._broadcast(self.zero_point.astype(np.float64), integers.ndim)
        scale = self._broadcast(self.scale, integers.ndim)
        return ((integers.astype(np.float64) - zero) * scale).astype(np.float32)

    def quantize_unclipped(self, values: np.ndarray) -> np.ndarray:
        """``round(x / scale) + zero_point`` without clipping: where ``x`` would land on the grid."""
        zero = self._broadcast(self.zero_point.astype(np.float64), values.ndim)
        scale = self._broadcast(self.scale, values.ndim)
        return np.rint(values.astype(np.float64) / scale) + zero

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the value (per tensor) or min/median/max over channels (per channel)."""
        if not self.per_channel:
            return {"scale": float(self.scale.reshape(-1)[0]), "zero_point": int(self.zero_point.reshape(-1)[0]),
                    "dtype": self.dtype}  # fmt: skip
        return {
            "scale": _spread(self.scale),
            "zero_point": _spread(self.zero_point),
            "channels": int(self.scale.size),
            "axis": self.axis,
            "dtype": self.dtype,
        }

    def full(self) -> dict[str, Any]:
        """JSON-ready, with every channel's scale and zero point."""
        return {
            "dtype": self.dtype,
            "axis": self.axis if self.per_channel else None,
            "scale": [float(s) for s in self.scale.reshape(-1)],
            "zero_point": [int(z) for z in self.zero_point.reshape(-1)],
        }


def _spread(values: np.ndarray) -> dict[str, float]:
    flat = values.reshape(-1).astype(np.float64)
    return {"min": float(flat.min()), "median": float(np.median(flat)), "max": float(flat.max())}


def _qparams(scale: Any, zero_point: Any, dtype: str | None = None, axis: int | None = None) -> QuantParams:
    scale_arr = np.asarray(scale, dtype=np.float64).reshape(-1)
    if zero_point is None:
        zero_arr = np.zeros(scale_arr.shape, dtype=np.int64)
    else:
        raw = np.asarray(zero_point)
        dtype = dtype or raw.dtype.name
        zero_arr = raw.astype(np.int64).reshape(-1)
        if zero_arr.size == 1 and scale_arr.size > 1:
            zero_arr = np.full(scale_arr.shape, zero_arr[0])
    return QuantParams(scale_arr, zero_arr, dtype or "uint8", axis if scale_arr.size > 1 else None)


# ---------------------------------------------------------------------- layers


@dataclass(frozen=True, eq=False)
class Layer:
    """One conv or dense layer of one variant.

    Weights are in the canonical layout: output channels (or features) first.
    ``weight`` is float — the stored floats, or the dequantized integers.
    """

    name: str
    op: str
    kind: LayerKind
    weight_shape: tuple[int, ...]
    parameters: int
    depth: int
    order: int
    tap: str  # the activation after this layer and what is fused into it (see quantcore.taps)
    input_tap: str
    fused: tuple[str, ...] = ()
    weight: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32), repr=False)
    weight_int: np.ndarray | None = field(default=None, repr=False)
    weight_q: QuantParams | None = None
    folded_weight: np.ndarray | None = field(default=None, repr=False)
    input_q: QuantParams | None = None
    output_q: QuantParams | None = None
    tap_q: QuantParams | None = None  # a tapped integer tensor is dequantized with these

    @property
    def quantized(self) -> bool:
        return self.weight_q is not None

    @property
    def comparable_weight(self) -> np.ndarray:
        """The weights a folded-and-quantized counterpart should be compared with."""
        return self.folded_weight if self.folded_weight is not None else self.weight

    @property
    def match_key(self) -> str:
        return _name_key(self.name)


_OP_TAILS = {"conv", "gemm", "matmul", "qlinearconv", "qgemm", "qlinearmatmul"}


def _name_key(name: str) -> str:
    """``/stack1/conv1/Conv_quant`` and ``stack1.conv1`` both -> ``stack1.conv1``."""
    text = re.sub(r"_quant$", "", name.strip("/"))
    parts = [p for p in re.split(r"[/.]", text) if p]
    if len(parts) > 1 and parts[-1].lower() in _OP_TAILS:
        parts = parts[:-1]
    return ".".join(parts).lower()


def _canonical_dense(
    weight: np.ndarray, out_first: bool, q: QuantParams | None
) -> tuple[np.ndarray, QuantParams | None]:
    """A 2-D dense weight as (out, in); a per-channel axis follows the transpose."""
    if out_first:
        return weight, q
    if q is not None and q.per_channel:
        q = replace(q, axis=1 - (q.axis if q.axis is not None else 1))
    return weight.T, q


# ------------------------------------------------------------------------ ONNX

ONNX_WEIGHTED: dict[str, LayerKind] = {
    "Conv": "conv", "Gemm": "dense", "MatMul": "dense",
    "QLinearConv": "conv", "QGemm": "dense", "QLinearMatMul": "dense",
}  # fmt: skip
# Ops that run after a layer on its output alone and are fused into it by quantizers.
ONNX_CHAIN = {"Relu", "Clip", "LeakyRelu", "BatchNormalization", "Identity"}


class _OnnxGraph:
    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx import numpy_helper

        graph = model.graph
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.consts[node.output[0]] = numpy_helper.to_array(attr.t)
        self.nodes = list(graph.node)
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in dict.fromkeys(node.input):
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    @staticmethod
    def attr(node: Any, name: str, default: Any) -> Any:
        import onnx

        for attribute in node.attribute:
            if attribute.name == name:
                return onnx.helper.get_attribute_value(attribute)
        return default

    def input(self, node: Any, index: int) -> str | None:
        return node.input[index] if len(node.input) > index and node.input[index] else None

    def qparams(self, scale: str | None, zero_point: str | None, axis: int | None = None) -> QuantParams | None:
        if scale is None or scale not in self.consts:
            return None
        zero = self.consts.get(zero_point) if zero_point else None
        return _qparams(self.consts[scale], zero, None if zero is not None else "uint8", axis)

    def dq_params(self, node: Any) -> QuantParams | None:
        """Scale and zero point of a QuantizeLinear/DequantizeLinear node."""
        return self.qparams(self.input(node, 1), self.input(node, 2), self.attr(node, "axis", 1))

    def weight(self, name: str | None) -> tuple[np.ndarray, np.ndarray | None, QuantParams | None] | None:
        """(float weights, stored integers, their parameters) of a constant, or of a DequantizeLinear of one."""
        if name is None:
            return None
        if name in self.consts:
            return self.consts[name].astype(np.float32), None, None
        node = self.producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in self.consts:
            integers = self.consts[node.input[0]]
            q = self.dq_params(node)
            if q is None:
                return None
            return q.dequantize(integers), integers, q
        return None

    def activation_in(self, name: str) -> QuantParams | None:
        node = self.producer.get(name)
        return self.dq_params(node) if node is not None and node.op_type == "DequantizeLinear" else None

    def walk(
        self, tensor: str, tensor_q: QuantParams | None
    ) -> tuple[str, tuple[str, ...], QuantParams | None, QuantParams | None]:
        """Follow a layer's output through what is fused into it, and through Q/DQ pairs.

        Returns the tensor to tap, the fused ops, the last output quantization seen,
        and the parameters to dequantize the tapped tensor with (None if it is float).
        """
        fused: list[str] = []
        out_q = tensor_q
        while tensor not in self.outputs:
            users = self.consumers.get(tensor, [])
            if len(users) != 1 or users[0].input[0] != tensor:
                break
            user = users[0]
            if user.op_type in ONNX_CHAIN and tensor_q is None:
                fused.append(user.op_type)
            elif user.op_type == "QuantizeLinear" and tensor_q is None:
                tensor_q = out_q = self.dq_params(user)
            elif user.op_type == "DequantizeLinear" and tensor_q is not None:
                tensor_q = None
            else:
                break
            tensor = user.output[0]
        return tensor, tuple(fused), out_q, tensor_q

    def layer(self, node: Any, depth: int, order: int) -> Layer | None:
        kind = ONNX_WEIGHTED[node.op_type]
        op = node.op_type
        input_q = output_q = None
        if op in ("Conv", "Gemm", "MatMul"):
            found = self.weight(self.input(node, 1))
            bias = self.weight(self.input(node, 2)) if op != "MatMul" else None
            input_q = self.activation_in(node.input[0])
            out_first = op == "Conv" or (op == "Gemm" and bool(self.attr(node, "transB", 0)))
        else:
            # QOperator: (x, x_scale, x_zp, w, w_scale, w_zp, ...) — QGemm puts its bias before y_scale.
            w_name = self.input(node, 3)
            w_q = self.qparams(self.input(node, 4), self.input(node, 5), axis=0 if op != "QLinearMatMul" else 1)
            found = None
            if w_name in self.consts and w_q is not None:
                integers = self.consts[w_name]
                found = (w_q.dequantize(integers), integers, w_q)
            input_q = self.qparams(self.input(node, 1), self.input(node, 2))
            y_scale, y_zp, bias_at = {"QLinearConv": (6, 7, 8), "QGemm": (7, 8, 6), "QLinearMatMul": (6, 7, None)}[op]
            output_q = self.qparams(self.input(node, y_scale), self.input(node, y_zp))
            bias_name = self.input(node, bias_at) if bias_at is not None else None
            bias = (self.consts[bias_name], None, None) if bias_name in self.consts else None
            out_first = op == "QLinearConv" or (op == "QGemm" and bool(self.attr(node, "transB", 0)))
        if found is None:
            return None  # e.g. a MatMul of two activations: no weights, not a layer
        weight, integers, w_q = found
        if kind == "dense" and weight.ndim == 2:
            weight, w_q = _canonical_dense(weight, out_first, w_q)
            integers = integers if integers is None or out_first else integers.T
        tap, fused, walked_q, tap_q = self.walk(node.output[0], output_q)
        parameters = int(weight.size + (bias[0].size if bias is not None else 0))
        return Layer(
            name=node.name or node.output[0], op=op, kind=kind, weight_shape=tuple(weight.shape),
            parameters=parameters, depth=depth, order=order, tap=tap, input_tap=node.input[0], fused=fused,
            weight=weight, weight_int=integers, weight_q=w_q, input_q=input_q, output_q=walked_q, tap_q=tap_q,
        )  # fmt: skip

    def layers(self) -> list[Layer]:
        depth: dict[str, int] = {}
        found: list[Layer] = []
        for order, node in enumerate(self.nodes):
            here = max((depth.get(name, 0) for name in node.input), default=0)
            layer = self.layer(node, here + 1, order) if node.op_type in ONNX_WEIGHTED else None
            if layer is not None:
                here += 1
                found.append(layer)
            for name in node.output:
                depth[name] = here
        return found


# ----------------------------------------------------------------------- torch

_TORCH_QDTYPES = {"quint8": "uint8", "qint8": "int8", "qint32": "int32", "quint4x2": "uint4"}


def _torch_qparams(tensor: Any) -> QuantParams | None:
    import torch

    if not isinstance(tensor, torch.Tensor) or not tensor.is_quantized:
        return None
    dtype = _TORCH_QDTYPES.get(str(tensor.dtype).removeprefix("torch."), str(tensor.dtype))
    if tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return _qparams(
            tensor.q_per_channel_scales().numpy(), tensor.q_per_channel_zero_points().numpy(), dtype,
            tensor.q_per_channel_axis(),
        )  # fmt: skip
    return _qparams(tensor.q_scale(), tensor.q_zero_point(), dtype)


def _torch_weight(weight: Any) -> tuple[np.ndarray, np.ndarray | None, QuantParams | None]:
    q = _torch_qparams(weight)
    if q is None:
        return weight.detach().float().numpy(), None, None
    return weight.dequantize().numpy(), weight.int_repr().numpy(), q


def _fold_bn(weight: np.ndarray, gamma: Any, var: Any, eps: float) -> np.ndarray:
    """Weights with a following BatchNorm folded in: ``w * gamma / sqrt(var + eps)`` per output channel."""
    factor = np.asarray(gamma, dtype=np.float64) / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
    return (weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)


def _numel(tensor: Any) -> int:
    return int(tensor.numel()) if tensor is not None else 0


def _torch_kind(module: torch.nn.Module) -> LayerKind | None:
    from torch import nn
    from torch.ao.nn import quantized as nnq

    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nnq.Conv1d, nnq.Conv2d, nnq.Conv3d)):
        return "conv"
    if isinstance(module, (nn.Linear, nnq.Linear)):
        return "dense"
    return None


def _torch_chain_type(module: torch.nn.Module) -> bool:
    from torch import nn

    chain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU,
             nn.Identity, nn.Dropout)  # fmt: skip
    return isinstance(module, chain)


def _module_layer(path: str, module: torch.nn.Module, depth: int, order: int, chain: list[tuple[str, Any]]) -> Layer:
    from torch import nn

    kind = _torch_kind(module)
    assert kind is not None
    raw_weight = module.weight() if callable(module.weight) else module.weight
    raw_bias = module.bias() if callable(module.bias) else module.bias
    weight, integers, w_q = _torch_weight(raw_weight)
    folded = None
    first = chain[0][1] if chain else None
    if (
        w_q is None
        and isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
        and first.track_running_stats
    ):
        gamma = first.weight.detach().numpy() if first.weight is not None else np.ones(weight.shape[0])
        folded = _fold_bn(weight, gamma, first.running_var.numpy(), first.eps)
    tap = chain[-1][0] if chain else path
    return Layer(
        name=path, op=module._get_name(), kind=kind, weight_shape=tuple(weight.shape),
        parameters=int(weight.size) + _numel(raw_bias), depth=depth, order=order, tap=tap,
        input_tap=path + INPUT_SUFFIX, fused=tuple(f"{type(m).__name__} {p}" for p, m in chain),
        weight=weight, weight_int=integers, weight_q=w_q, folded_weight=folded,
    )  # fmt: skip


def _module_layers(module: torch.nn.Module, notes: list[str]) -> list[Layer]:
    import torch.fx

    modules = dict(module.named_modules())
    graph = module.graph if isinstance(module, torch.fx.GraphModule) else None
    if graph is None:
        try:
            graph = torch.fx.symbolic_trace(module).graph
        except Exception as exc:  # models with data-dependent control flow do not trace
            notes.append(f"its graph could not be traced ({type(exc).__name__}): modules taken in definition order")
    if graph is None:
        return [
            _module_layer(path, m, order + 1, order, [])
            for order, (path, m) in enumerate((p, m) for p, m in modules.items() if _torch_kind(m))
        ]
    layers: list[Layer] = []
    depth: dict[Any, int] = {}
    for order, node in enumerate(graph.nodes):
        here = max((depth.get(a, 0) for a in node.all_input_nodes), default=0)
        target = modules.get(node.target) if node.op == "call_module" else None
        if target is not None and _torch_kind(target):
            here += 1
            chain: list[tuple[str, Any]] = []
            end = node
            # Follow the output through modules that only transform it (BN, ReLU): quantizers fuse them.
            while len(end.users) == 1:
                user = next(iter(end.users))
                nxt = modules.get(user.target) if user.op == "call_module" else None
                if nxt is None or not _torch_chain_type(nxt) or user.all_input_nodes != [end]:
                    break
                chain.append((str(user.target), nxt))
                end = user
            layers.append(_module_layer(str(node.target), target, here, order, chain))
        depth[node] = here
    return layers


# ------------------------------------------------------------------ TorchScript

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
        output_q = _qparams(node.inputsAt(2).toIValue(), node.inputsAt(3).toIValue())
    else:
        raw_weight, raw_bias = held, _script_value(root, node.inputsAt(2))
        output_q = None
    # A module's path: drop the attribute names (weight, _packed_params) from the end.
    parts = source.split(".")
    while parts and parts[-1] in ("weight", "_packed_params"):
        parts.pop()
    path = ".".join(parts)
    owner = _fetch(root, path) if path else root
    weight, integers, w_q = _torch_weight(raw_weight)
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
            folded = _fold_bn(weight, gamma, var, float(user.inputsAt(7).toIValue()))
        fused.append(user.kind().removeprefix("aten::"))
        end = user.output()
    return Layer(
        name=path or source, op=getattr(owner, "original_name", node.kind()), kind=kind,
        weight_shape=tuple(weight.shape), parameters=int(weight.size) + _numel(raw_bias), depth=depth, order=order,
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


def _probe_torch(model: Any, layers: list[Layer], shape: tuple[int, ...] | None, notes: list[str]) -> list[Layer]:
    """Read activation scales and zero points off one zero batch: static quantization fixes them."""
    if not layers or shape is None or not any(layer.quantized for layer in layers):
        return layers
    taps = [t for layer in layers for t in (layer.input_tap, layer.tap)]
    try:
        values = make_tapper(model, taps)(np.zeros(shape, dtype=np.float32)).values
    except Exception as exc:  # a model that cannot run still has a layer table
        logger.warning("activation probe failed: %s", exc)
        notes.append(f"activation scales unavailable: a probe run failed ({type(exc).__name__})")
        return layers
    return [
        replace(layer, input_q=_torch_qparams(values[layer.input_tap]), output_q=_torch_qparams(values[layer.tap]))
        for layer in layers
    ]


# ------------------------------------------------------------------ extraction


def input_shape(
    variants: ModelVariants, layers: Mapping[VariantKey, list[Layer]] | None = None
) -> tuple[int, ...] | None:
    """The shape of one input (batch 1): from an ONNX variant's declared input, else from the first layer.

    A first conv with C input channels gives (1, C, 32, 32): the ResNet8 / MLPerf Tiny image size.
    """
    import onnx

    for key in VariantKey:
        model = variants[key]
        if isinstance(model, onnx.ModelProto):
            initializers = {t.name for t in model.graph.initializer}
            for value in model.graph.input:
                if value.name in initializers:
                    continue
                dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
                # The batch axis may be symbolic; any other unknown axis leaves the shape to the layers.
                if len(dims) > 1 and all(d > 0 for d in dims[1:]):
                    return (1, *dims[1:])
                break
    for found in (layers or {}).values():
        if found:
            first = min(found, key=lambda layer: (layer.depth, layer.order))
            if first.kind == "conv":
                return (1, first.weight_shape[1]) + (DEFAULT_IMAGE_SIZE,) * (len(first.weight_shape) - 2)
            return (1, first.weight_shape[1])
    return None


def extract_layers(model: Any, *, probe_shape: tuple[int, ...] | None = None) -> tuple[list[Layer], list[str]]:
    """The conv and dense layers of one loaded variant, in canonical order (depth, then position).

    Args:
        model: an ``onnx.ModelProto``, ``nn.Module`` or TorchScript module.
        probe_shape: input shape for one zero batch that reads a PyTorch int8
            model's activation scales (None: leave them unknown).

    Returns:
        The layers and notes on anything that could not be read.

    Raises:
        TypeError: ``model`` is not a loaded variant.
    """
    import onnx
    import torch

    notes: list[str] = []
    if isinstance(model, onnx.ModelProto):
        layers = _OnnxGraph(model).layers()
    elif isinstance(model, torch.jit.ScriptModule):
        layers = _probe_torch(model, _script_layers(model), probe_shape, notes)
    elif isinstance(model, torch.nn.Module):
        layers = _probe_torch(model, _module_layers(model, notes), probe_shape, notes)
    else:
        raise TypeError(f"not a loaded variant: {type(model).__name__}")
    return sorted(layers, key=lambda layer: (layer.depth, layer.order)), notes


# -------------------------------------------------------------------- matching


def _match_score(a: Layer, b: Layer) -> int:
    """0 when two layers cannot be the same one; higher the more alike they are."""
    if a.kind != b.kind or a.weight_shape != b.weight_shape:
        return 0
    return 4 + 2 * (a.match_key == b.match_key) + (a.depth == b.depth)


def align(rows: list[Layer], layers: list[Layer]) -> list[tuple[int | None, int | None]]:
    """An order-keeping alignment of ``layers`` to ``rows`` that maximises the summed match scores.

    Returns:
        Pairs ``(row index, layer index)`` in order; ``None`` on one side marks a layer with no partner.
    """
    n, m = len(rows), len(layers)
    best = np.zeros((n + 1, m + 1), dtype=np.int64)
    for i in range(n):
        for j in range(m):
            score = _match_score(rows[i], layers[j])
            diagonal = best[i, j] + score if score else -1
            best[i + 1, j + 1] = max(best[i, j + 1], best[i + 1, j], diagonal)
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i or j:
        if i and j and (score := _match_score(rows[i - 1], layers[j - 1])) and best[i, j] == best[i - 1, j - 1] + score:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and best[i, j] == best[i - 1, j]:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


@dataclass(frozen=True)
class LayerRow:
    """One layer as every variant that has it sees it."""

    index: int
    layers: dict[VariantKey, Layer]

    @property
    def primary(self) -> Layer:
        """The layer that names the row: the table's skeleton variant's, when it has one."""
        return next(iter(self.layers.values()))

    @property
    def label(self) -> str:
        return f"{self.index + 1}. {self.primary.name}"


def reference_key(key: VariantKey, available: Iterable[VariantKey]) -> VariantKey | None:
    """The float variant that ``key`` is compared against.

    Quantized variants: the float variant of the same format, else the other
    float. ``onnx_float`` is checked against ``pytorch_float`` (export
    fidelity); ``pytorch_float`` is the reference itself.
    """
    present = set(available)
    if key is VariantKey.PYTORCH_FLOAT:
        return None
    if key is VariantKey.ONNX_FLOAT:
        return VariantKey.PYTORCH_FLOAT if VariantKey.PYTORCH_FLOAT in present else None
    same, other = (
        (VariantKey.ONNX_FLOAT, VariantKey.PYTORCH_FLOAT)
        if key.format.value == "onnx"
        else (VariantKey.PYTORCH_FLOAT, VariantKey.ONNX_FLOAT)
    )
    return same if same in present else other if other in present else None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _describe_q(q: QuantParams | None) -> tuple[str, str]:
    """(scale, zero point) as table text: the value, or min / median / max over channels."""
    if q is None:
        return "—", "—"
    if not q.per_channel:
        return _fmt(float(q.scale[0])), str(int(q.zero_point[0]))
    scale = _spread(q.scale)
    zero = _spread(q.zero_point)
    scale_text = f"{_fmt(scale['min'])} / {_fmt(scale['median'])} / {_fmt(scale['max'])} ({q.scale.size} ch)"
    zero_text = (
        str(int(zero["min"]))
        if zero["min"] == zero["max"]
        else f"{zero['min']:g} / {zero['median']:g} / {zero['max']:g}"
    )
    return scale_text, zero_text


@dataclass(frozen=True)
class LayerTable:
    """Every variant's layers, matched row by row.

    ``skeleton`` is the variant whose layers name the rows (``pytorch_float``,
    else ``onnx_float``, else the first loaded one). Rows hold a layer for each
    variant that has it; a layer no other variant has gets a row of its own.
    """

    skeleton: VariantKey | None
    variants: tuple[VariantKey, ...]
    rows: tuple[LayerRow, ...]
    notes: tuple[str, ...] = ()

    def row(self, index: int) -> LayerRow:
        """Row ``index`` (0-based).

        Raises:
            IndexError: no such row.
        """
        if not 0 <= index < len(self.rows):
            raise IndexError(f"layer {index + 1} does not exist (the table has {len(self.rows)})")
        return self.rows[index]

    def reference(self, key: VariantKey) -> VariantKey | None:
        """The float variant ``key``'s layers are compared against (see ``reference_key``)."""
        return reference_key(key, self.variants)

    def choices(self) -> list[tuple[str, int]]:
        """(label, row index) for every row: a layer picker's options."""
        return [(row.label, row.index) for row in self.rows]

    def matched(self) -> dict[str, dict[str, int]]:
        """Per variant: how many of its layers found a row shared with the skeleton."""
        counts: dict[str, dict[str, int]] = {}
        for key in self.variants:
            own = [r for r in self.rows if key in r.layers]
            shared = [r for r in own if key is self.skeleton or (self.skeleton in r.layers and len(r.layers) > 1)]
            counts[str(key)] = {"layers": len(own), "matched": len(shared)}
        return counts

    def records(self) -> list[dict[str, Any]]:
        """The table as display rows: per layer, one row for each variant (its counterpart or 'not matched')."""
        records = []
        for row in self.rows:
            primary = row.primary
            for key in self.variants:
                layer = row.layers.get(key)
                record: dict[str, Any] = {
                    "#": row.index + 1, "layer": primary.name, "type": primary.op,
                    "weight shape": "×".join(map(str, primary.weight_shape)), "params": primary.parameters,
                    "variant": str(key),
                }  # fmt: skip
                if layer is None:
                    record.update({"counterpart": "not matched", "fused": "", "dtype": ""})
                    record.update(dict.fromkeys(_Q_COLUMNS, "—"))
                else:
                    w_scale, w_zero = _describe_q(layer.weight_q)
                    in_scale, in_zero = _describe_q(layer.input_q)
                    out_scale, out_zero = _describe_q(layer.output_q)
                    act = layer.output_q or layer.input_q
                    dtype = (
                        f"w {layer.weight_q.dtype} · act {act.dtype if act else '?'}" if layer.weight_q else "float32"
                    )
                    record.update({
                        "counterpart": layer.name,
                        "fused": " + ".join(layer.fused), "dtype": dtype,
                        "weight scale": w_scale, "weight zero point": w_zero,
                        "input scale": in_scale, "input zero point": in_zero,
                        "output scale": out_scale, "output zero point": out_zero,
                    })  # fmt: skip
                records.append(record)
        return records

    def detail(self, index: int) -> dict[str, Any]:
        """One layer across variants with every channel's scale and zero point (JSON-ready).

        Raises:
            IndexError: no such row.
        """
        row = self.row(index)
        variants: dict[str, Any] = {}
        for key in self.variants:
            layer = row.layers.get(key)
            if layer is None:
                variants[str(key)] = {"matched": False}
                continue
            variants[str(key)] = {
                "matched": True, "name": layer.name, "type": layer.op,
                "weight_shape": list(layer.weight_shape), "parameters": layer.parameters,
                "fused": list(layer.fused), "bn_folded_for_comparison": layer.folded_weight is not None,
                "weight": layer.weight_q.full() if layer.weight_q else {"dtype": "float32"},
                "input": layer.input_q.full() if layer.input_q else None,
                "output": layer.output_q.full() if layer.output_q else None,
            }  # fmt: skip
        return {"layer": row.primary.name, "index": row.index, "variants": variants}


_Q_COLUMNS = (
    "weight scale",
    "weight zero point",
    "input scale",
    "input zero point",
    "output scale",
    "output zero point",
)


def build_layer_table(variants: ModelVariants) -> LayerTable:
    """Read every loaded variant's layers and match them into one table.

    A variant that is missing, failed to load, or cannot be read is skipped
    with a note; this never raises for a variant's sake.

    Args:
        variants: a folder's variants from ``load_model_variants``.

    Returns:
        The matched ``LayerTable``.
    """
    notes: list[str] = []
    raw: dict[VariantKey, list[Layer]] = {}
    for key, record in variants.records.items():
        if record.status is not Status.LOADED:
            if record.status is not Status.MISSING:
                notes.append(f"{key}: skipped — {record.status}: {record.error or 'not loaded'}")
            continue
        try:
            raw[key], own = extract_layers(record.model)
        except Exception as exc:  # one unreadable variant must not take the table down
            logger.exception("reading the layers of %s failed", key)
            notes.append(f"{key}: skipped — its layers could not be read ({type(exc).__name__})")
            continue
        notes.extend(f"{key}: {n}" for n in own)
    shape = input_shape(variants, raw)
    for key, layers in raw.items():
        if key.format.value == "pytorch" and any(layer.quantized for layer in layers):
            probe_notes: list[str] = []
            raw[key] = _probe_torch(variants[key], layers, shape, probe_notes)
            notes.extend(f"{key}: {n}" for n in probe_notes)
    keys = [k for k in VariantKey if raw.get(k)]
    for key in VariantKey:
        if key in raw and not raw[key]:
            notes.append(f"{key}: no conv or dense layers found")
    if not keys:
        return LayerTable(None, (), (), tuple(notes))
    skeleton = next((k for k in FLOAT_KEYS if k in keys), keys[0])
    rows: list[dict[VariantKey, Layer]] = [{skeleton: layer} for layer in raw[skeleton]]
    order = [k for k in FLOAT_KEYS if k in keys and k is not skeleton] + [k for k in keys if k.is_quantized]
    for key in (k for k in order if k is not skeleton):
        pairs = align([next(iter(r.values())) for r in rows], raw[key])
        merged: list[dict[VariantKey, Layer]] = []
        for i, j in pairs:
            row = rows[i] if i is not None else {}
            if j is not None:
                row[key] = raw[key][j]
            merged.append(row)
        unmatched = sum(1 for i, j in pairs if i is None and j is not None)
        if unmatched:
            notes.append(f"{key}: {unmatched} layer(s) matched no other variant's; shown on rows of their own")
        rows = merged
    ordered = [dict(sorted(r.items(), key=lambda kv: (kv[0] is not skeleton, list(VariantKey).index(kv[0]))))
               for r in rows]  # fmt: skip
    if any(key.is_quantized for key in keys) and VariantKey.PYTORCH_FLOAT in keys:
        notes.append(FOLDING_NOTE)
    return LayerTable(
        skeleton, tuple(keys), tuple(LayerRow(i, r) for i, r in enumerate(ordered)), tuple(dict.fromkeys(notes))
    )
