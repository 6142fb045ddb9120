"""The onnxruntime backend: ONNX graphs read with ``onnx``, run with onnxruntime on the CPU.

Taps are tensor names, captured by adding them as graph outputs of one session.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from quantcore.backends.base import PASS_THROUGH, SOFTMAX_KINDS, Capture, Predictor, Tapper, TensorSpec, missing_tap
from quantcore.backends.layer import Layer, QuantParams
from quantcore.backends.onnx_graph import OnnxGraph
from quantcore.backends.ort import make_session, run_session
from quantcore.errors import InvalidModelError

if TYPE_CHECKING:
    import onnx

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


def _specs(values: Any, skip: set[str]) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        if value.name in skip:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
        specs.append(TensorSpec(value.name, dims, _dtype_name(tensor.elem_type)))
    return tuple(specs)


class OnnxBackend:
    """``onnx.ModelProto`` models, run by onnxruntime."""

    name: ClassVar[str] = "onnx"

    def handles(self, model: object) -> bool:
        import onnx

        return isinstance(model, onnx.ModelProto)

    def layers(self, model: onnx.ModelProto, *, probe: np.ndarray | None = None) -> tuple[list[Layer], list[str]]:
        return OnnxGraph(model).layers(), []

    def inputs(self, model: onnx.ModelProto) -> tuple[TensorSpec, ...]:
        return _specs(model.graph.input, {t.name for t in model.graph.initializer})

    def outputs(self, model: onnx.ModelProto) -> tuple[TensorSpec, ...]:
        return _specs(model.graph.output, set())

    def describe(self, model: onnx.ModelProto) -> dict[str, Any]:
        return describe_onnx(model)

    def predictor(self, model: onnx.ModelProto, *, threads: int) -> Predictor:
        session = make_session(model, threads)
        input_name = session.get_inputs()[0].name

        def predict(batch: np.ndarray) -> np.ndarray:
            return run_session(session, None, {input_name: batch})[0]

        return predict

    def tapper(self, model: onnx.ModelProto, taps: Sequence[str], *, threads: int, as_written: bool = False) -> Tapper:
        import onnx

        augmented = onnx.ModelProto()
        augmented.CopyFrom(model)
        outputs = [o.name for o in augmented.graph.output]
        produced = {name for node in augmented.graph.node for name in node.output}
        produced |= {i.name for i in augmented.graph.input}
        missing = missing_tap(taps, produced)
        if missing is not None:
            raise InvalidModelError(f"the graph has no tensor named {missing!r}")
        extra = [t for t in dict.fromkeys(taps) if t not in outputs]
        # An output without a type is fine for onnxruntime: it infers it.
        augmented.graph.output.extend(onnx.ValueInfoProto(name=t) for t in extra)
        # Idle ORT threads spin for a while after each run; here torch may run next and need those cores.
        # As written: no fusing of Q/DQ steps into integer kernels. A float graph has none; it stays optimized.
        quantized = any(node.op_type in QDQ_OPS | QOPERATOR_OPS for node in model.graph.node)
        session = make_session(augmented, threads, spinning=False, optimize=not (as_written and quantized))
        input_name = session.get_inputs()[0].name
        names = [o.name for o in session.get_outputs()]

        def run(batch: np.ndarray) -> Capture:
            results = dict(zip(names, run_session(session, None, {input_name: batch}), strict=True))
            return Capture(np.asarray(results[names[0]], dtype=np.float32), {t: results[t] for t in taps})

        return run

    def output_kind(self, model: onnx.ModelProto) -> str | None:
        producer = {out: node for node in model.graph.node for out in node.output}
        node = producer.get(model.graph.output[0].name) if model.graph.output else None
        while node is not None and node.op_type in PASS_THROUGH:
            node = producer.get(node.input[0])
        return SOFTMAX_KINDS.get(node.op_type) if node is not None else None

    def input_quantization(self, model: onnx.ModelProto) -> QuantParams | None:
        inputs = self.inputs(model)
        if not inputs:
            return None
        graph = OnnxGraph(model)
        tensor = inputs[0].name
        for _ in range(4):  # through a Transpose or Identity the input may pass first
            users = graph.consumers.get(tensor, [])
            quantize = next((n for n in users if n.op_type == "QuantizeLinear"), None)
            if quantize is not None:
                return graph.dq_params(quantize)
            if len(users) != 1 or users[0].op_type not in ("Transpose", "Identity", "Cast"):
                return None
            tensor = users[0].output[0]
        return None
