"""An ONNX graph as the integer steps a chip would run: QDQ and QOperator read into one form.

Each step names the integer tensors it reads and writes (the tensors
onnxruntime's fused kernels produce, so they can be tapped), their scales and
zero points, and for a conv or dense layer its stored integer weights, int32
bias and attributes. ``QLinearConv``/``QGemm``/``QLinearMatMul`` read directly;
a QDQ ``DequantizeLinear -> Conv/Gemm/MatMul -> [Relu] -> QuantizeLinear`` group
reads as the same step (onnxruntime fuses it into the same kernel). Other steps
(Add, global average pool, reshapes, ReLU, max pool) are read so that a whole
network can run in integers; what cannot be read is a note, not an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from quantcore.backends.integer_graph import IntegerGraph, IntegerStep, IntTensor
from quantcore.backends.onnx_graph import OnnxGraph

if TYPE_CHECKING:
    import onnx

RESHAPES = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Transpose"}


class _Reader:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = OnnxGraph(model)
        self.notes: list[str] = []

    def tensor_of(self, scale: str | None, zero: str | None, name: str) -> IntTensor | None:
        g = self.graph
        if scale is None or scale not in g.consts:
            return None
        scale_v = np.asarray(g.consts[scale]).reshape(-1)
        if scale_v.size != 1:
            return None  # per-channel activations: not a per-tensor integer tensor
        zero_v = np.asarray(g.consts[zero]) if zero and zero in g.consts else np.zeros((), np.uint8)
        return IntTensor(name, float(np.float32(scale_v[0])), int(zero_v.reshape(-1)[0]), zero_v.dtype.name)

    def dq_input(self, name: str) -> IntTensor | None:
        """The integer tensor behind a DequantizeLinear output (an activation, not a constant)."""
        node = self.graph.producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] in self.graph.consts:
            return None
        return self.tensor_of(self.graph.input(node, 1), self.graph.input(node, 2), node.input[0])

    def q_output(self, name: str) -> tuple[IntTensor | None, bool, str]:
        """Follow a float output through an optional Relu to its one QuantizeLinear: (tensor, relu, ops)."""
        g = self.graph
        relu = False
        ops = ""
        users = g.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == "Relu" and name not in g.outputs:
            relu, ops, name = True, "+Relu", users[0].output[0]
            users = g.consumers.get(name, [])
        if name in g.outputs or len(users) != 1 or users[0].op_type != "QuantizeLinear":
            return None, relu, ops
        q = users[0]
        return self.tensor_of(g.input(q, 1), g.input(q, 2), q.output[0]), relu, ops

    def weight_of(self, name: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, int | None] | None:
        """(integers, scale, zero point, dtype, axis) of a DequantizeLinear of stored integer weights."""
        g = self.graph
        node = g.producer.get(name) if name else None
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in g.consts:
            return None
        integers = g.consts[node.input[0]]
        scale = np.asarray(g.consts.get(node.input[1]), np.float32).reshape(-1)
        zero_name = g.input(node, 2)
        zero = np.asarray(g.consts[zero_name]) if zero_name else np.zeros(1, integers.dtype)
        axis = int(g.attr(node, "axis", 1)) % max(integers.ndim, 1) if scale.size > 1 else None
        return integers, scale, zero.astype(np.int64).reshape(-1), integers.dtype.name, axis

    def bias_of(self, name: str | None, x: IntTensor, w_scale: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        g = self.graph
        if name is None:
            return None, None
        node = g.producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in g.consts:
            return np.asarray(g.consts[node.input[0]]).astype(np.int64).reshape(-1), None
        if name in g.consts and np.issubdtype(g.consts[name].dtype, np.integer):
            return np.asarray(g.consts[name]).astype(np.int64).reshape(-1), None
        if name in g.consts:  # a float bias: quantized here with scale s_in * s_w, as onnxruntime's fusion does
            scale = np.float32(x.scale) * w_scale.astype(np.float32)
            return np.rint(np.asarray(g.consts[name], np.float32).reshape(-1) / scale).astype(np.int64), (
                "float bias, quantized here with scale s_in·s_w")  # fmt: skip
        return None, "bias is computed, not stored"


def _conv_attrs(graph: OnnxGraph, node: Any, spatial: int) -> dict[str, Any]:
    pads = list(graph.attr(node, "pads", [0] * (2 * spatial)))
    auto = graph.attr(node, "auto_pad", b"NOTSET")
    return {
        "strides": [int(s) for s in graph.attr(node, "strides", [1] * spatial)],
        "pads": [int(p) for p in pads],
        "dilations": [int(d) for d in graph.attr(node, "dilations", [1] * spatial)],
        "group": int(graph.attr(node, "group", 1)),
        "auto_pad": auto.decode() if isinstance(auto, bytes) else str(auto),
    }


def _per_channel(values: np.ndarray, channels: int) -> np.ndarray:
    flat = np.asarray(values).reshape(-1)
    return np.full(channels, flat[0], dtype=flat.dtype) if flat.size == 1 else flat


def read_integer_graph(model: onnx.ModelProto) -> IntegerGraph:
    """The integer steps of a QDQ or QOperator ONNX graph (an empty tuple for a float graph)."""
    reader = _Reader(model)
    g = reader.graph
    steps: list[IntegerStep] = []
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    input_name = inputs[0] if inputs else None
    input_q = None
    for node in g.nodes:
        op = node.op_type
        name = node.name or node.output[0]
        try:
            step = _read_step(reader, node, op, name)
        except (KeyError, ValueError, IndexError) as exc:
            reader.notes.append(f"{name} ({op}): not read as an integer step ({exc})")
            continue
        if step is not None:
            steps.append(step)
        if op == "QuantizeLinear" and node.input[0] == input_name:
            input_q = reader.tensor_of(g.input(node, 1), g.input(node, 2), node.output[0])
    if input_q is None and input_name is not None:
        first = [f"{n.op_type} ({n.name or n.output[0]})" for n in g.nodes if input_name in n.input]
        if first and not any(op.startswith("QuantizeLinear") for op in first):
            reader.notes.append(f"the input {input_name} goes into {', '.join(first)} in float before it is "
                                "quantized")  # fmt: skip
    return IntegerGraph(tuple(steps), input_name, input_q, _output_tensor(reader, model), tuple(reader.notes))


def kernel_ops(model: onnx.ModelProto, tensors: list[str]) -> dict[str, str]:
    """Which onnxruntime kernel makes each of ``tensors`` after its fusions: "QLinearConv", "QGemm"... for an
    integer kernel, "QuantizeLinear" where the layer stays float and its result is quantized after."""
    import onnx

    from quantcore.backends.ort import optimized_graph

    # Asked for as graph outputs, as the tapper asks for them: that is the graph whose fusions run.
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    present = {o.name for o in tapped.graph.output}
    tapped.graph.output.extend(onnx.ValueInfoProto(name=t) for t in dict.fromkeys(tensors) if t not in present)
    producer = {out: node.op_type for node in optimized_graph(tapped).graph.node for out in node.output}
    return {t: producer[t] for t in tensors if t in producer}


INTEGER_KERNELS = frozenset(
    {
        "QLinearConv",
        "QGemm",
        "QLinearMatMul",
        "MatMulIntegerToFloat",
        "ConvInteger",
        "MatMulInteger",
        "NhwcQLinearConv",
        "QLinearAdd",
        "QLinearGlobalAveragePool",
    }
)


def _output_tensor(reader: _Reader, model: onnx.ModelProto) -> IntTensor | None:
    """The integer tensor the first graph output is read from, through DequantizeLinear and monotonic ops."""
    g = reader.graph
    if not model.graph.output:
        return None
    name = model.graph.output[0].name
    for _ in range(6):
        node = g.producer.get(name)
        if node is None:
            return None
        if node.op_type == "DequantizeLinear":
            return reader.tensor_of(g.input(node, 1), g.input(node, 2), node.input[0])
        if node.op_type not in ("Softmax", "Identity", "Flatten", "Reshape", "Squeeze"):
            return None
        name = node.input[0]
    return None


def _read_step(reader: _Reader, node: Any, op: str, name: str) -> IntegerStep | None:
    g = reader.graph
    if op in ("QLinearConv", "QLinearMatMul", "QGemm"):
        return _qoperator_layer(reader, node, op, name)
    if op in ("Conv", "Gemm", "MatMul"):
        return _qdq_layer(reader, node, op, name)
    if op == "QLinearAdd":
        a = reader.tensor_of(g.input(node, 1), g.input(node, 2), node.input[0])
        b = reader.tensor_of(g.input(node, 4), g.input(node, 5), node.input[3])
        y = reader.tensor_of(g.input(node, 6), g.input(node, 7), node.output[0])
        return IntegerStep(name, op, "add", (a, b), y) if a and b and y else None
    if op == "QLinearGlobalAveragePool":
        x = reader.tensor_of(g.input(node, 1), g.input(node, 2), node.input[0])
        y = reader.tensor_of(g.input(node, 3), g.input(node, 4), node.output[0])
        channels_last = bool(g.attr(node, "channels_last", 0))
        return IntegerStep(name, op, "global_average_pool", (x,), y, attrs={"channels_last": channels_last}) if (
            x and y) else None  # fmt: skip
    if op in ("Add", "Concat", "GlobalAveragePool", "MaxPool", *RESHAPES, "Relu"):
        return _qdq_other(reader, node, op, name)
    return None


def _qoperator_layer(reader: _Reader, node: Any, op: str, name: str) -> IntegerStep | None:
    g = reader.graph
    x = reader.tensor_of(g.input(node, 1), g.input(node, 2), node.input[0])
    y_at = {"QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QGemm": (7, 8)}[op]
    y = reader.tensor_of(g.input(node, y_at[0]), g.input(node, y_at[1]), node.output[0])
    w_name = g.input(node, 3)
    if x is None or y is None or w_name not in g.consts:
        reader.notes.append(f"{name} ({op}): float output or computed weights; not an integer layer here")
        return None
    integers = g.consts[w_name]
    w_scale = np.asarray(g.consts[g.input(node, 4)], np.float32).reshape(-1)
    zero_name = g.input(node, 5)
    w_zero = np.asarray(g.consts[zero_name]).astype(np.int64).reshape(-1) if zero_name else np.zeros(1, np.int64)
    if op == "QLinearConv":
        weight = integers
        attrs = _conv_attrs(g, node, integers.ndim - 2)
        bias, note = reader.bias_of(g.input(node, 8), x, w_scale)
        kind = "conv"
    else:
        trans_b = op == "QGemm" and bool(g.attr(node, "transB", 0))
        if op == "QGemm" and (g.attr(node, "transA", 0) or float(g.attr(node, "alpha", 1.0)) != 1.0):
            reader.notes.append(f"{name} (QGemm): transA or alpha != 1 is not computed here")
            return None
        weight = integers if trans_b else integers.T
        attrs = {}
        bias, note = reader.bias_of(g.input(node, 6), x, w_scale) if op == "QGemm" else (None, None)
        kind = "dense"
    channels = int(weight.shape[0])
    return IntegerStep(name, op, kind, (x,), y, np.ascontiguousarray(weight), _per_channel(w_scale, channels),
                       _per_channel(w_zero, channels), integers.dtype.name, bias, note, attrs)  # fmt: skip


def _qdq_layer(reader: _Reader, node: Any, op: str, name: str) -> IntegerStep | None:
    g = reader.graph
    x = reader.dq_input(node.input[0])
    w = reader.weight_of(g.input(node, 1))
    if x is None or w is None:
        return None  # a float layer (or a MatMul of two activations)
    y, relu, fused = reader.q_output(node.output[0])
    if y is None:
        reader.notes.append(f"{name} ({op}): its output is not quantized by one QuantizeLinear; not an integer layer")
        return None
    integers, w_scale, w_zero, dtype, _axis = w
    if op == "Conv":
        weight, kind, attrs = integers, "conv", _conv_attrs(g, node, integers.ndim - 2)
    else:
        trans_b = op == "Gemm" and bool(g.attr(node, "transB", 0))
        if op == "Gemm" and (g.attr(node, "transA", 0) or float(g.attr(node, "alpha", 1.0)) != 1.0
                             or float(g.attr(node, "beta", 1.0)) != 1.0):  # fmt: skip
            reader.notes.append(f"{name} (Gemm): transA, alpha or beta != 1 is not computed here")
            return None
        weight, kind, attrs = (integers if trans_b else integers.T), "dense", {}
    channels = int(weight.shape[0])
    bias, note = reader.bias_of(g.input(node, 2), x, w_scale) if op != "MatMul" else (None, None)
    return IntegerStep(name, f"QDQ {op}{fused}", kind, (x,), y, np.ascontiguousarray(weight),
                       _per_channel(w_scale, channels), _per_channel(w_zero, channels), dtype, bias, note, attrs,
                       relu)  # fmt: skip


def _qdq_other(reader: _Reader, node: Any, op: str, name: str) -> IntegerStep | None:
    g = reader.graph
    if (
        op in RESHAPES
        and reader.graph.producer.get(node.input[0]) is not None
        and (g.producer[node.input[0]].op_type != "DequantizeLinear")
    ):
        # QOperator graphs reshape integer tensors directly.
        source = _known_integer(reader, node.input[0])
        if source is None:
            return None
        out = IntTensor(node.output[0], source.scale, source.zero_point, source.dtype)
        return IntegerStep(name, op, "reshape", (source,), out, attrs=_reshape_attrs(g, node))
    sources = [reader.dq_input(n) for n in (node.input if op == "Concat" else node.input[: 2 if op == "Add" else 1])]
    if any(s is None for s in sources):
        return None
    y, relu, fused = reader.q_output(node.output[0])
    if y is None:
        return None
    kind = {"Add": "add", "Concat": "concat", "GlobalAveragePool": "global_average_pool", "MaxPool": "max_pool",
            "Relu": "relu"}.get(op, "reshape")  # fmt: skip
    attrs = _reshape_attrs(g, node) if kind == "reshape" else {}
    if op == "Concat":
        attrs = {"axis": int(g.attr(node, "axis", 1))}
    if op == "MaxPool":
        kernel = [int(k) for k in g.attr(node, "kernel_shape", [])]
        attrs = {"kernel_shape": kernel, **_conv_attrs(g, node, len(kernel)),
                 "ceil_mode": int(g.attr(node, "ceil_mode", 0))}  # fmt: skip
    return IntegerStep(name, f"QDQ {op}{fused}", kind, tuple(sources), y, attrs=attrs, relu=relu)  # type: ignore[arg-type]


def _known_integer(reader: _Reader, name: str) -> IntTensor | None:
    """Scale and zero point of an integer tensor made by a QOperator node or a QuantizeLinear."""
    g = reader.graph
    node = g.producer.get(name)
    if node is None:
        return None
    at = {"QuantizeLinear": (1, 2), "QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QGemm": (7, 8),
          "QLinearAdd": (6, 7), "QLinearGlobalAveragePool": (3, 4)}.get(node.op_type)  # fmt: skip
    if at is not None:
        return reader.tensor_of(g.input(node, at[0]), g.input(node, at[1]), name)
    if node.op_type in RESHAPES:
        return _known_integer(reader, node.input[0])
    return None


def _reshape_attrs(graph: OnnxGraph, node: Any) -> dict[str, Any]:
    op = node.op_type
    if op == "Flatten":
        return {"flatten_axis": int(graph.attr(node, "axis", 1))}
    if op == "Reshape":
        shape = graph.static(graph.input(node, 1))
        return {"shape": [int(d) for d in np.asarray(shape[0]).reshape(-1)]} if shape is not None else {}
    if op == "Transpose":
        return {"perm": [int(p) for p in graph.attr(node, "perm", [])]}
    if op in ("Squeeze", "Unsqueeze"):
        return {"op": op}
    return {}
