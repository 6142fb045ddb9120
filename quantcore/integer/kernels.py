"""Integer-only layer arithmetic in numpy: ``Σ (x - z_x)(w - z_w) + bias`` as an int64 accumulator.

The sums run in floating point, which is exact for integers as long as every
partial sum stays below the format's integer limit: float32 holds every
integer up to 2**24, float64 up to 2**53. The worst-case accumulator bound
(from the weights and the input type's range) picks the narrowest exact format
per layer, so no sum is ever rounded, whatever order the sums are added in.

Two engines compute those sums: numpy (im2col, then one BLAS matmul per group)
and onnxruntime's float ``Conv`` on the zero-point-shifted values, several
times faster here. Both are exact under the same bound, so they give the same
integers (``tests/test_integer.py`` checks it); onnxruntime's is used for
float32 convolutions, numpy for the rest.
"""

from __future__ import annotations

import weakref
from typing import Any, Literal

import numpy as np

from quantcore.backends.integer_graph import IntegerStep
from quantcore.backends.layer import integer_limits
from quantcore.errors import RunTimeoutError

EXACT_FLOAT32 = 2**24
Engine = Literal["auto", "numpy", "onnxruntime"]
# One float Conv session per integer layer, built on first use and dropped with the layer.
_CONV_SESSIONS: weakref.WeakKeyDictionary[IntegerStep, Any] = weakref.WeakKeyDictionary()


def shifted_weight(step: IntegerStep) -> np.ndarray:
    """``w - z_w`` per output channel, as int64, output channels first."""
    assert step.weight is not None and step.weight_zero_point is not None
    weight = step.weight.astype(np.int64)
    zero = step.weight_zero_point.reshape(-1, *([1] * (weight.ndim - 1)))
    return weight - zero


def accumulator_bound(step: IntegerStep) -> np.ndarray:
    """The largest |accumulator| any input of the input type can give, per output channel (int64).

    Every input value lies in ``[q_min - z_x, q_max - z_x]`` (padding adds zeros, inside it), so the
    sum's extremes take each weight's extreme product: ``Σ max(w'·lo, w'·hi) + b`` and ``Σ min(...) + b``.
    """
    x = step.inputs[0]
    low, high = integer_limits(x.dtype)
    lo, hi = low - x.zero_point, high - x.zero_point
    w = shifted_weight(step).reshape(step.channels, -1)
    bias = step.bias if step.bias is not None else np.zeros(step.channels, np.int64)
    top = np.maximum(w * lo, w * hi).sum(axis=1) + bias
    bottom = np.minimum(w * lo, w * hi).sum(axis=1) + bias
    return np.maximum(np.abs(top), np.abs(bottom))


def exact_sum_bound(step: IntegerStep) -> int:
    """A bound on every partial sum of the accumulator, whatever order BLAS adds in: ``Σ|w'|·max|x'|``."""
    x = step.inputs[0]
    low, high = integer_limits(x.dtype)
    widest = max(abs(low - x.zero_point), abs(high - x.zero_point))
    return int(np.abs(shifted_weight(step)).reshape(step.channels, -1).sum(axis=1).max(initial=0)) * widest


def _exact_dtype(bound: int) -> type[np.floating]:
    return np.float32 if bound < EXACT_FLOAT32 else np.float64


def conv_pads(step: IntegerStep, spatial_in: tuple[int, ...]) -> list[int]:
    """Begin/end pads of a conv, with ``auto_pad`` SAME_UPPER / SAME_LOWER resolved as ONNX defines them."""
    attrs = step.attrs
    auto = attrs.get("auto_pad", "NOTSET")
    kernel = step.weight.shape[2:] if step.weight is not None else ()
    if auto in ("NOTSET", "VALID"):
        return list(attrs["pads"]) if auto == "NOTSET" else [0] * (2 * len(kernel))
    begins, ends = [], []
    for size, k, s, d in zip(spatial_in, kernel, attrs["strides"], attrs["dilations"], strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begins.append(big if auto == "SAME_LOWER" else small)
        ends.append(small if auto == "SAME_LOWER" else big)
    return begins + ends


def accumulate(step: IntegerStep, x: np.ndarray, bound: int | None = None, *, engine: Engine = "auto") -> np.ndarray:
    """The int64 accumulator of one layer for integer input ``x`` (NC[H[W]] for conv, (N, in) for dense).

    ``bound``: ``exact_sum_bound(step)`` when the caller has it (it picks float32 or float64).
    ``engine``: what adds the products up ("auto": onnxruntime for float32 convolutions, else numpy).

    Raises:
        ValueError: the input's shape does not fit the layer.
    """
    return np.rint(accumulate_exact(step, x, bound, engine=engine)).astype(np.int64)


def accumulate_exact(
    step: IntegerStep, x: np.ndarray, bound: int | None = None, *, engine: Engine = "auto"
) -> np.ndarray:
    """``accumulate`` as the float32/float64 array the sums were made in: every value an exact integer, bias
    included.

    Raises:
        ValueError: the input's shape does not fit the layer.
    """
    if bound is None:
        bound = exact_sum_bound(step)
    bias = step.bias if step.bias is not None else np.zeros(step.channels, np.int64)
    exact = _exact_dtype(bound + int(np.abs(bias).max(initial=0)))
    shifted = x.astype(exact)
    shifted -= exact(step.inputs[0].zero_point)
    w = shifted_weight(step).astype(exact)
    if step.kind == "dense":
        flat = shifted.reshape(len(shifted), -1)
        if flat.shape[1] != w.shape[1]:
            raise ValueError(f"{step.name}: input of {flat.shape[1]} features for weights of {w.shape[1]}")
        acc = flat @ w.T
        acc += bias.astype(exact)
        return acc
    if engine == "onnxruntime" or (engine == "auto" and exact is np.float32):
        return _conv_onnxruntime(step, shifted, w, bias)
    acc = _conv(step, shifted, w)
    acc += bias.astype(exact).reshape(1, -1, *([1] * (acc.ndim - 2)))
    return acc


def _conv_onnxruntime(step: IntegerStep, x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The convolution (bias added) by onnxruntime's float32 ``Conv``: exact under the float32 bound.

    Raises:
        ValueError: the values need float64 (onnxruntime's CPU Conv is float32 only), or do not fit the layer.
    """
    from quantcore.backends.ort import run_session

    if x.dtype != np.float32:
        raise ValueError(f"{step.name}: onnxruntime's Conv sums float32 exactly only; these need float64")
    if x.ndim != w.ndim or x.shape[1] != w.shape[1] * step.attrs["group"]:
        raise ValueError(f"{step.name}: a {x.ndim}-D input of {x.shape[1]} channels for weights {w.shape}")
    session = _CONV_SESSIONS.get(step)
    if session is None:
        session = _CONV_SESSIONS[step] = _conv_session(step, w.astype(np.float32), bias.astype(np.float32))
    try:
        return run_session(session, None, {"x": np.ascontiguousarray(x)})[0]
    except RunTimeoutError:
        raise
    except Exception as exc:  # onnxruntime's own errors are untyped; the shape is what a caller can fix
        raise ValueError(f"{step.name}: onnxruntime's Conv refused the input {x.shape}: {exc}") from exc


def _conv_session(step: IntegerStep, w: np.ndarray, bias: np.ndarray) -> Any:
    """A one-node float graph: ``Conv(x, w - z_w, bias)`` with the layer's attributes."""
    from onnx import TensorProto, helper, numpy_helper

    from quantcore import settings
    from quantcore.backends.ort import make_session

    attrs = {k: step.attrs[k] for k in ("strides", "dilations", "group")}
    auto = step.attrs.get("auto_pad", "NOTSET")
    attrs["auto_pad"] = auto
    if auto == "NOTSET":
        attrs["pads"] = list(step.attrs["pads"])
    node = helper.make_node("Conv", ["x", "w", "b"], ["acc"], kernel_shape=list(w.shape[2:]), **attrs)
    shape = [None, int(w.shape[1] * attrs["group"]), *([None] * (w.ndim - 2))]
    graph = helper.make_graph(
        [node], "accumulator", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("acc", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return make_session(model, settings.current().threads)


def _conv(step: IntegerStep, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Grouped, strided, dilated, padded convolution of zero-point-shifted values (padding is zero here).

    The windows are copied into contiguous columns (channels last, one kernel offset at a time: block copies),
    then one matmul per group.
    """
    spatial = x.ndim - 2
    if spatial < 1 or w.ndim != x.ndim:
        raise ValueError(f"{step.name}: a {x.ndim}-D input for a {w.ndim}-D kernel")
    attrs = step.attrs
    pads = conv_pads(step, tuple(x.shape[2:]))
    strides, dilations, group = attrs["strides"], attrs["dilations"], attrs["group"]
    n, c = x.shape[:2]
    if c != w.shape[1] * group:
        raise ValueError(f"{step.name}: {c} input channels for weights of {w.shape[1]} x {group} groups")
    kernel = w.shape[2:]
    padded_shape = [x.shape[2 + i] + pads[i] + pads[i + spatial] for i in range(spatial)]
    last = np.zeros((n, *padded_shape, c), x.dtype)  # channels last, zero padded
    inner = tuple(slice(pads[i], pads[i] + x.shape[2 + i]) for i in range(spatial))
    last[(slice(None), *inner, slice(None))] = np.moveaxis(x, 1, -1)
    out_sizes = [(padded_shape[i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(spatial)]
    if min(out_sizes) < 1:
        raise ValueError(f"{step.name}: the kernel is larger than the padded input")
    cols = np.empty((n, *out_sizes, *kernel, c), x.dtype)
    for offset in np.ndindex(*kernel):
        window = tuple(
            slice(offset[i] * dilations[i], offset[i] * dilations[i] + (out_sizes[i] - 1) * strides[i] + 1, strides[i])
            for i in range(spatial)
        )
        cols[(slice(None), *[slice(None)] * spatial, *offset, slice(None))] = last[(slice(None), *window, slice(None))]
    rows = int(n * np.prod(out_sizes))
    cols = cols.reshape(rows, int(np.prod(kernel)), c)
    per_in, per_out = c // group, w.shape[0] // group
    # weights as (out, *kernel, in) to line up with the columns
    w_last = np.moveaxis(w, 1, -1).reshape(w.shape[0], int(np.prod(kernel)), per_in)
    if group == 1:
        acc = cols.reshape(rows, -1) @ w_last.reshape(w.shape[0], -1).T
    else:
        acc = np.empty((rows, w.shape[0]), x.dtype)
        for gi in range(group):
            part = cols[:, :, gi * per_in : (gi + 1) * per_in].reshape(rows, -1)
            kernels = w_last[gi * per_out : (gi + 1) * per_out].reshape(per_out, -1)
            acc[:, gi * per_out : (gi + 1) * per_out] = part @ kernels.T
    return np.moveaxis(acc.reshape(n, *out_sizes, w.shape[0]), -1, 1)
