"""Read an ONNX graph's weighted layers: float, QDQ and QOperator, with their quantization parameters.

Every ``Conv``/``Gemm``/``MatMul`` with constant weights (stored, or behind a
``DequantizeLinear``) and every ``QLinearConv``/``QGemm``/``QLinearMatMul`` is a
layer. Its output is followed through what quantizers fuse into it (ReLU,
BatchNorm, Q/DQ pairs) to the tensor worth tapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from quantcore.backends.layer import Layer, LayerKind, QuantParams, canonical_dense, make_qparams

if TYPE_CHECKING:
    import onnx

ONNX_WEIGHTED: dict[str, LayerKind] = {
    "Conv": "conv", "Gemm": "dense", "MatMul": "dense",
    "QLinearConv": "conv", "QGemm": "dense", "QLinearMatMul": "dense",
}  # fmt: skip
# Ops that run after a layer on its output alone and are fused into it by quantizers.
ONNX_CHAIN = {"Relu", "Clip", "LeakyRelu", "BatchNormalization", "Identity"}


class OnnxGraph:
    """An ONNX graph indexed for reading layers: constants, producers, consumers."""

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
        return make_qparams(self.consts[scale], zero, None if zero is not None else "uint8", axis)

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
            weight, w_q = canonical_dense(weight, out_first, w_q)
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
