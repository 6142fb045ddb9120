"""Read an ONNX graph's weighted layers: float, QDQ and QOperator, with their quantization parameters.

Every ``Conv``/``Gemm``/``MatMul`` with constant weights (stored, behind a
``DequantizeLinear``, or made of constants by ``Transpose``/``Reshape`` and
kin) and every ``QLinearConv``/``QGemm``/``QLinearMatMul`` is a layer. Its
output is followed through what quantizers fuse into it (ReLU, BatchNorm,
``Mul``/``Add`` by per-channel constants as Keras exports keep BatchNorm, Q/DQ
pairs) to the tensor worth tapping; the per-channel scales met on the way are
folded into a copy of the weights, which is what a quantized graph that folded
them holds. A layer whose weights cannot be read is still a layer, with the reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from quantcore.backends.layer import (
    Layer,
    LayerKind,
    QuantParams,
    bn_factor,
    canonical_dense,
    fold_factor,
    make_qparams,
)

if TYPE_CHECKING:
    import onnx

ONNX_WEIGHTED: dict[str, LayerKind] = {
    "Conv": "conv", "Gemm": "dense", "MatMul": "dense",
    "QLinearConv": "conv", "QGemm": "dense", "QLinearMatMul": "dense",
}  # fmt: skip
# Ops that run after a layer on its output alone and are fused into it by quantizers.
ONNX_CHAIN = {"Relu", "Clip", "LeakyRelu", "BatchNormalization", "Identity"}
# Ops that, with a per-channel constant as the other operand, are an affine step of the layer (BN as Mul/Add).
ONNX_AFFINE = {"Mul", "Add", "Sub", "Div"}
# Ops that only rearrange a constant: weights stored transposed or flat pass through them.
CONST_SHAPING = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast"}
Static = tuple[np.ndarray, np.ndarray | None, QuantParams | None]  # (floats, stored integers, their parameters)


class UnreadableWeightError(ValueError):
    """A layer's weights are constant but come through something this reader does not evaluate."""


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
        # Tensors computed from the graph's inputs: a MatMul of two of them has no weights.
        self.dynamic = {i.name for i in graph.input if i.name not in self.consts}
        for node in graph.node:
            if any(name in self.dynamic for name in node.input):
                self.dynamic.update(node.output)

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

    def static(self, name: str | None, depth: int = 0) -> Static | None:
        """A constant tensor's value: stored, dequantized, or made of constants by shaping ops.

        Returns None for a tensor computed from the graph's inputs (or absent).

        Raises:
            UnreadableWeightError: the tensor is constant but made by an op not evaluated here.
        """
        if name is None or name in self.dynamic:
            return None
        if name in self.consts:
            value = self.consts[name]
            return (value.astype(np.float32) if value.dtype.kind == "f" else value), None, None
        node = self.producer.get(name)
        if node is None:
            return None
        if depth > 8 or (node.op_type not in CONST_SHAPING and node.op_type != "DequantizeLinear"):
            raise UnreadableWeightError(f"its weights are made by a {node.op_type} node ({node.name or name})")
        if node.op_type == "DequantizeLinear":
            found = self.static(node.input[0], depth + 1)
            q = self.dq_params(node)
            if found is None or q is None:
                raise UnreadableWeightError(
                    f"its weights' DequantizeLinear ({node.name or name}) has no constant scale"
                )
            integers = found[1] if found[1] is not None else found[0]
            if q.per_channel:
                q = replace(q, axis=(q.axis or 0) % integers.ndim)
            return q.dequantize(integers), integers, q
        found = self.static(node.input[0], depth + 1)
        if found is None:
            return None
        return self._shaped(node, *found)

    def _shaped(self, node: Any, values: np.ndarray, integers: np.ndarray | None, q: QuantParams | None) -> Static:
        """``values`` (and the integers they came from) through one shaping op; a per-channel axis follows."""
        op = node.op_type
        axis = q.axis if q is not None and q.per_channel else None
        if op == "Transpose":
            perm = list(self.attr(node, "perm", list(range(values.ndim))[::-1]))
            moved = perm.index(axis) if axis is not None else None
            return self._with(values.transpose(perm), integers, q, moved, lambda a: a.transpose(perm))
        if op in ("Identity", "Cast"):
            return (values.astype(np.float32) if op == "Cast" and integers is None else values), integers, q
        if op == "Reshape":
            shape = self.static(self.input(node, 1))
            if shape is None:
                raise UnreadableWeightError(f"its weights are reshaped by a computed shape ({node.name})")
            target = [int(d) for d in np.asarray(shape[0]).reshape(-1)]
            if not self.attr(node, "allowzero", 0):
                target = [values.shape[i] if d == 0 else d for i, d in enumerate(target)]
            new_shape = np.empty(values.shape).reshape(target).shape if values.size else tuple(target)
        elif op == "Flatten":
            cut = self.attr(node, "axis", 1) % max(values.ndim, 1)
            new_shape = (int(np.prod(values.shape[:cut])), int(np.prod(values.shape[cut:])))
        else:  # Squeeze / Unsqueeze: axes as an attribute (opset < 13) or a constant input
            axes_value = self.static(self.input(node, 1)) if self.input(node, 1) else None
            axes = self.attr(node, "axes", None) if axes_value is None else np.asarray(axes_value[0]).reshape(-1)
            if op == "Squeeze":
                new_shape = tuple(np.squeeze(values, axis=None if axes is None else tuple(int(a) for a in axes)).shape)
            else:
                expanded = values
                for a in sorted(int(a) % (values.ndim + len(axes)) for a in axes):
                    expanded = np.expand_dims(expanded, a)
                new_shape = expanded.shape
        moved = _axis_after_reshape(values.shape, tuple(new_shape), axis) if axis is not None else None
        return self._with(values.reshape(new_shape), integers, q, moved, lambda a: a.reshape(new_shape))

    @staticmethod
    def _with(values: np.ndarray, integers: np.ndarray | None, q: QuantParams | None, axis: int | None,
              apply: Any) -> Static:  # fmt: skip
        if q is not None and q.per_channel:
            if axis is None:
                raise UnreadableWeightError("its per-channel weights are reshaped across their channel axis")
            q = replace(q, axis=axis)
        return values, apply(integers) if integers is not None else None, q

    def activation_in(self, name: str) -> QuantParams | None:
        node = self.producer.get(name)
        return self.dq_params(node) if node is not None and node.op_type == "DequantizeLinear" else None

    def channel_vector(self, name: str, channels: int, trailing: int) -> np.ndarray | None:
        """A constant that scales or shifts each output channel alone, as one value per channel (else None).

        ``trailing``: axes after the channel axis in the layer's output (spatial axes of a conv; 0 for dense).
        """
        try:
            found = self.static(name)
        except UnreadableWeightError:
            return None
        if found is None:
            return None
        value = np.asarray(found[0], dtype=np.float64)
        if value.size == 1:
            return np.full(channels, float(value.reshape(-1)[0]))
        shape = value.shape
        if len(shape) < trailing + 1 or any(d != 1 for d in shape[len(shape) - trailing :]):
            return None
        lead = shape[: len(shape) - trailing - 1]
        if any(d != 1 for d in lead) or shape[len(shape) - trailing - 1] != channels:
            return None
        return value.reshape(-1)

    def walk(
        self, tensor: str, tensor_q: QuantParams | None, channels: int = 0, trailing: int = 0
    ) -> tuple[str, tuple[str, ...], QuantParams | None, QuantParams | None, np.ndarray | None]:
        """Follow a layer's output through what is fused into it, and through Q/DQ pairs.

        Returns the tensor to tap, the fused ops, the last output quantization seen,
        the parameters to dequantize the tapped tensor with (None if it is float), and
        the per-channel factor of the BatchNorm/Mul/Div steps met (None when there were none).
        """
        fused: list[str] = []
        out_q = tensor_q
        factor: np.ndarray | None = None
        while tensor not in self.outputs:
            users = self.consumers.get(tensor, [])
            if len(users) != 1:
                break
            user = users[0]
            op = user.op_type
            if tensor_q is None and op in ONNX_CHAIN and user.input[0] == tensor:
                if op == "BatchNormalization" and channels:
                    scale, var = self.channel_vector(user.input[1], channels, 0), self.channel_vector(
                        user.input[4], channels, 0)  # fmt: skip
                    if scale is None or var is None:
                        break
                    step = bn_factor(scale, var, float(self.attr(user, "epsilon", 1e-5)))
                    factor = step if factor is None else factor * step
                fused.append(op)
            elif tensor_q is None and op in ONNX_AFFINE and channels and tensor in user.input[:2]:
                other = user.input[1] if user.input[0] == tensor else user.input[0]
                if op in ("Sub", "Div") and user.input[0] != tensor:
                    break  # c - x and c / x are not affine steps of x
                vector = self.channel_vector(other, channels, trailing)
                if vector is None:
                    break
                if op in ("Mul", "Div"):
                    step = vector if op == "Mul" else 1.0 / vector
                    factor = step if factor is None else factor * step
                fused.append(op)
            elif op == "QuantizeLinear" and tensor_q is None and user.input[0] == tensor:
                tensor_q = out_q = self.dq_params(user)
                # Tap the integer tensor, not the DequantizeLinear after it: a DQ output made a graph output
                # stops onnxruntime fusing the next layer into an integer kernel (slower, and not what runs).
                tensor = user.output[0]
                break
            else:
                break
            tensor = user.output[0]
        return tensor, tuple(fused), out_q, tensor_q, factor

    def _weights(self, node: Any) -> tuple[Static | None, Static | None, QuantParams | None, QuantParams | None, bool]:
        """(weights, bias, input quantization, output quantization, weights stored output-first) of a node."""
        op = node.op_type
        if op in ("Conv", "Gemm", "MatMul"):
            found = self.static(self.input(node, 1))
            bias = self.static(self.input(node, 2)) if op != "MatMul" else None
            out_first = op == "Conv" or (op == "Gemm" and bool(self.attr(node, "transB", 0)))
            return found, bias, self.activation_in(node.input[0]), None, out_first
        # QOperator: (x, x_scale, x_zp, w, w_scale, w_zp, ...) — QGemm puts its bias before y_scale.
        out_first = op == "QLinearConv" or (op == "QGemm" and bool(self.attr(node, "transB", 0)))
        # A per-channel scale runs along the stored weights' output axis: 0 for (out, in...), 1 for (in, out).
        w_q = self.qparams(self.input(node, 4), self.input(node, 5), axis=0 if out_first else 1)
        w_name = self.input(node, 3)
        found = None
        if w_name in self.consts and w_q is not None:
            integers = self.consts[w_name]
            found = (w_q.dequantize(integers), integers, w_q)
        elif w_name is not None and w_name not in self.dynamic:
            raise UnreadableWeightError(f"its integer weights are not a stored constant ({w_name})")
        input_q = self.qparams(self.input(node, 1), self.input(node, 2))
        y_scale, y_zp, bias_at = {"QLinearConv": (6, 7, 8), "QGemm": (7, 8, 6), "QLinearMatMul": (6, 7, None)}[op]
        output_q = self.qparams(self.input(node, y_scale), self.input(node, y_zp))
        bias_name = self.input(node, bias_at) if bias_at is not None else None
        bias = (self.consts[bias_name], None, None) if bias_name in self.consts else None
        return found, bias, input_q, output_q, out_first

    def layer(self, node: Any, depth: int, order: int) -> Layer | None:
        """The layer ``node`` is, or None when it has no weights (a MatMul of two activations).

        A layer whose weights cannot be read comes back with ``problem`` saying why.
        """
        kind = ONNX_WEIGHTED[node.op_type]
        op = node.op_type
        name = node.name or node.output[0]
        try:
            found, bias, input_q, output_q, out_first = self._weights(node)
        except (UnreadableWeightError, ValueError) as exc:
            tap, fused, walked_q, tap_q, _ = self.walk(node.output[0], None)
            return Layer(name=name, op=op, kind=kind, weight_shape=(), parameters=0, depth=depth, order=order,
                         tap=tap, input_tap=node.input[0], fused=fused, problem=str(exc))  # fmt: skip
        if found is None:
            return None  # e.g. a MatMul of two activations: no weights, not a layer
        weight, integers, w_q = found
        if kind == "dense" and weight.ndim == 2:
            weight, w_q = canonical_dense(weight, out_first, w_q)
            integers = integers if integers is None or out_first else integers.T
        channels = int(weight.shape[0]) if weight.ndim else 0
        trailing = weight.ndim - 2 if kind == "conv" else 0
        tap, fused, walked_q, tap_q, factor = self.walk(node.output[0], output_q, channels, trailing)
        parameters = int(weight.size + (bias[0].size if bias is not None else 0))
        return Layer(
            name=name, op=op, kind=kind, weight_shape=tuple(weight.shape),
            parameters=parameters, depth=depth, order=order, tap=tap, input_tap=node.input[0], fused=fused,
            weight=weight, weight_int=integers, weight_q=w_q, input_q=input_q, output_q=walked_q, tap_q=tap_q,
            folded_weight=fold_factor(weight, factor) if factor is not None else None, fold_factor=factor,
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


def _axis_after_reshape(old: tuple[int, ...], new: tuple[int, ...], axis: int) -> int | None:
    """Where a per-channel axis lands after a reshape that keeps it whole, else None."""
    before = int(np.prod(old[:axis]))
    running = 1
    for i, d in enumerate(new):
        if running == before and d == old[axis]:
            return i
        running *= d
    return None
