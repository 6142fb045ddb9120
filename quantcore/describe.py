"""Facts about one loaded model, as plain JSON-ready dicts.

Computed once when a folder loads (and cached with it), so showing a summary
again costs nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx
    from torch import nn

INT32 = 6  # onnx.TensorProto.INT32, without importing onnx at module import
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
QOPERATOR_OPS = {
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat",
    "ConvInteger", "MatMulInteger", "QGemm", "QAttention", "DynamicQuantizeLinear",
}  # fmt: skip


def _dtype_name(elem_type: int) -> str:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type else "unknown"


def _value_info(value: Any) -> dict[str, Any]:
    tensor = value.type.tensor_type
    shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in tensor.shape.dim]
    return {"name": value.name, "shape": shape, "dtype": _dtype_name(tensor.elem_type)}


def onnx_quantization(model: onnx.ModelProto) -> dict[str, Any]:
    """The quantization scheme of a graph: format, activation/weight types, granularity."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    ops = {n.op_type for n in graph.node}
    if ops & QOPERATOR_OPS:
        fmt = "QOperator"
    elif ops & QDQ_OPS:
        fmt = "QDQ"
    else:
        return {"format": None, "activation_type": None, "weight_type": None, "granularity": None}

    activation_types: Counter[str] = Counter()
    weight_types: Counter[str] = Counter()
    per_channel = False
    for node in graph.node:
        if node.op_type not in {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger"}:
            continue
        if node.op_type in {"QuantizeLinear", "DequantizeLinear"}:
            zero_point = initializers.get(node.input[2]) if len(node.input) > 2 else None
            scale = initializers.get(node.input[1])
            dtype = _dtype_name(zero_point.data_type) if zero_point is not None else "uint8"
            is_weight = node.op_type == "DequantizeLinear" and node.input[0] in initializers
            # int32 initializers are quantized biases, not weights.
            if is_weight and initializers[node.input[0]].data_type != INT32:
                weight_types[_dtype_name(initializers[node.input[0]].data_type)] += 1
                per_channel |= scale is not None and len(scale.dims) > 0 and scale.dims[0] > 1
            elif node.op_type == "QuantizeLinear":
                activation_types[dtype] += 1
        else:  # QOperator: (x, x_scale, x_zp, w, w_scale, w_zp, ...)
            x_zp = initializers.get(node.input[2]) if len(node.input) > 2 else None
            w = initializers.get(node.input[3]) if len(node.input) > 3 else None
            w_scale = initializers.get(node.input[4]) if len(node.input) > 4 else None
            if x_zp is not None:
                activation_types[_dtype_name(x_zp.data_type)] += 1
            if w is not None:
                weight_types[_dtype_name(w.data_type)] += 1
            per_channel |= w_scale is not None and len(w_scale.dims) > 0 and w_scale.dims[0] > 1

    def most_common(counter: Counter[str]) -> str | None:
        return counter.most_common(1)[0][0] if counter else None

    return {
        "format": fmt,
        "activation_type": most_common(activation_types),
        "weight_type": most_common(weight_types),
        "granularity": ("per-channel" if per_channel else "per-tensor") if weight_types else None,
    }


def describe_onnx(model: onnx.ModelProto) -> dict[str, Any]:
    """Opset, inputs/outputs, op counts, parameter count and quantization scheme of an ONNX graph."""
    import numpy as np

    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    # Scales and zero points are quantization bookkeeping, not parameters.
    bookkeeping = {name for n in graph.node if n.op_type in QDQ_OPS for name in n.input[1:]} | {
        name for n in graph.node if n.op_type in QOPERATOR_OPS for i, name in enumerate(n.input) if i % 3 in (1, 2)
    }
    parameters = sum(int(np.prod(t.dims)) for t in graph.initializer if t.name not in bookkeeping)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    quantization = onnx_quantization(model)
    metadata = {p.key: p.value for p in model.metadata_props}
    return {
        "opset": opset,
        "inputs": [_value_info(v) for v in graph.input if v.name not in initializer_names],
        "outputs": [_value_info(v) for v in graph.output],
        "op_counts": dict(sorted(Counter(n.op_type for n in graph.node).items())),
        "parameters": parameters,
        "precision": quantization["activation_type"] or "float32",
        "quantization": quantization,
        "metadata": metadata,
    }


def _is_quantized(module: nn.Module) -> bool:
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return ".quantized." in module._c._type().qualified_name()
    return ".quantized" in type(module).__module__


def _packed_weights(module: nn.Module) -> dict[int, int]:
    """Element counts of packed (quantized) weights and biases, keyed by storage address."""
    import torch

    packed: dict[int, int] = {}  # keyed by address: a tensor shared by two modules counts once
    for m in module.modules():
        weight_bias = getattr(m, "_weight_bias", None)
        # An eager quantized Linear and its packed-params child report the same weights.
        if not callable(weight_bias) or any(_is_packed_params(c) for c in m.children()):
            continue
        try:
            tensors = weight_bias()
        except (RuntimeError, TypeError):
            continue
        for t in tensors if isinstance(tensors, (tuple, list)) else (tensors,):
            if isinstance(t, torch.Tensor):
                packed[t.data_ptr()] = t.numel()
    return packed


def describe_torch(module: nn.Module) -> dict[str, Any]:
    """Parameter count, quantized-module count and precision of a PyTorch module."""
    quantized = [m for m in module.modules() if _is_quantized(m)]
    # Quantized modules keep weights packed, outside parameters().
    parameters = sum(p.numel() for p in module.parameters()) + sum(_packed_weights(module).values())
    return {
        "module_class": getattr(module, "original_name", None) or type(module).__name__,
        "parameters": parameters,
        "quantized_modules": len([m for m in quantized if not _is_packed_params(m)]),
        "precision": "int8" if quantized else "float32",
    }


def _is_packed_params(module: nn.Module) -> bool:
    name = getattr(module, "original_name", None) or type(module).__name__
    return name.endswith("PackedParams")
