"""Integer-only layer arithmetic in numpy: ``Σ (x - z_x)(w - z_w) + bias`` as an int64 accumulator.

The sums run through BLAS in floating point, which is exact for integers as
long as every partial sum stays below the format's integer limit: float32
holds every integer up to 2**24, float64 up to 2**53. The worst-case
accumulator bound (from the weights and the input type's range) picks the
narrowest exact format per layer, so no sum is ever rounded.
"""

from __future__ import annotations

import numpy as np

from quantcore.backends.layer import integer_limits
from quantcore.backends.onnx_integer import IntegerStep

EXACT_FLOAT32 = 2**24


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


def accumulate(step: IntegerStep, x: np.ndarray, bound: int | None = None) -> np.ndarray:
    """The int64 accumulator of one layer for integer input ``x`` (NC[H[W]] for conv, (N, in) for dense).

    Raises:
        ValueError: the input's shape does not fit the layer.
    """
    if bound is None:
        bound = int(accumulator_bound(step).max(initial=0))
    exact = _exact_dtype(bound)
    shifted = x.astype(exact) - exact(step.inputs[0].zero_point)
    w = shifted_weight(step).astype(exact)
    if step.kind == "dense":
        flat = shifted.reshape(len(shifted), -1)
        if flat.shape[1] != w.shape[1]:
            raise ValueError(f"{step.name}: input of {flat.shape[1]} features for weights of {w.shape[1]}")
        acc = flat @ w.T
    else:
        acc = _conv(step, shifted, w)
    result = np.rint(acc).astype(np.int64)
    if step.bias is not None:
        result += step.bias.reshape(1, -1, *([1] * (result.ndim - 2)))
    return result


def _conv(step: IntegerStep, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Grouped, strided, dilated, padded convolution of zero-point-shifted values (padding is zero here)."""
    spatial = x.ndim - 2
    if spatial < 1 or w.ndim != x.ndim:
        raise ValueError(f"{step.name}: a {x.ndim}-D input for a {w.ndim}-D kernel")
    attrs = step.attrs
    pads = conv_pads(step, tuple(x.shape[2:]))
    x = np.pad(x, [(0, 0), (0, 0), *[(pads[i], pads[i + spatial]) for i in range(spatial)]])
    kernel = w.shape[2:]
    strides, dilations, group = attrs["strides"], attrs["dilations"], attrs["group"]
    n, c = x.shape[:2]
    if c != w.shape[1] * group:
        raise ValueError(f"{step.name}: {c} input channels for weights of {w.shape[1]} x {group} groups")
    out_sizes = [(x.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(spatial)]
    # Windows as a strided view: (N, C, *out, *kernel), then one matmul per group.
    st = x.strides
    view = np.lib.stride_tricks.as_strided(
        x,
        shape=(n, c, *out_sizes, *kernel),
        strides=(
            st[0],
            st[1],
            *[st[2 + i] * strides[i] for i in range(spatial)],
            *[st[2 + i] * dilations[i] for i in range(spatial)],
        ),
        writeable=False,
    )
    per_in, per_out = c // group, w.shape[0] // group
    outputs = []
    axes_out = list(range(2, 2 + spatial))
    for gi in range(group):
        part = view[:, gi * per_in : (gi + 1) * per_in]
        # (N, *out, C_g, *kernel) flattened to rows of one window each
        moved = np.moveaxis(part, 1, 1 + spatial).reshape(n * int(np.prod(out_sizes)), -1)
        kernels = w[gi * per_out : (gi + 1) * per_out].reshape(per_out, -1)
        outputs.append((moved @ kernels.T).reshape(n, *out_sizes, per_out))
    joined = np.concatenate(outputs, axis=-1) if group > 1 else outputs[0]
    return np.moveaxis(joined, -1, 1) if axes_out else joined
