"""What every backend reads out of a model: its weighted layers and their quantization parameters.

A ``Layer`` is one conv or dense layer of one variant, in a canonical layout
(output channels first) whichever runtime it came from, so the views above
compare layers without knowing which runtime a model uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

LayerKind = Literal["conv", "dense"]


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
        return integer_limits(self.dtype)

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
            "scale": spread(self.scale),
            "zero_point": spread(self.zero_point),
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


_SUB_BYTE = {"int4": (-8, 7), "uint4": (0, 15)}


def integer_limits(dtype: str) -> tuple[int, int]:
    """(min, max) of an integer type named like numpy's (``int8``, ``uint8``, ``int4``...)."""
    if dtype in _SUB_BYTE:
        return _SUB_BYTE[dtype]
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def spread(values: np.ndarray) -> dict[str, float]:
    """min / median / max of ``values`` (per-channel parameters, shown compactly)."""
    flat = values.reshape(-1).astype(np.float64)
    return {"min": float(flat.min()), "median": float(np.median(flat)), "max": float(flat.max())}


def make_qparams(scale: Any, zero_point: Any, dtype: str | None = None, axis: int | None = None) -> QuantParams:
    """QuantParams from raw scale / zero point values; a scalar zero point is repeated per channel."""
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
    tap: str  # the activation after this layer and what is fused into it (see the backend's tapper)
    input_tap: str
    fused: tuple[str, ...] = ()
    weight: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32), repr=False)
    weight_int: np.ndarray | None = field(default=None, repr=False)
    weight_q: QuantParams | None = None
    folded_weight: np.ndarray | None = field(default=None, repr=False)
    input_q: QuantParams | None = None
    output_q: QuantParams | None = None
    tap_q: QuantParams | None = None  # a tapped integer tensor is dequantized with these
    # Per-output-channel factor of the affine ops that follow the layer (BatchNorm, Mul/Div by constants),
    # already multiplied into ``folded_weight``: kept to undo it where the stored weights are needed.
    fold_factor: np.ndarray | None = field(default=None, repr=False)
    problem: str | None = None  # why the layer's weights could not be read (the layer is still shown)

    @property
    def quantized(self) -> bool:
        return self.weight_q is not None

    @property
    def comparable_weight(self) -> np.ndarray:
        """The weights a folded-and-quantized counterpart should be compared with."""
        return self.folded_weight if self.folded_weight is not None else self.weight

    @property
    def match_key(self) -> str:
        return name_key(self.name)


_OP_TAILS = {"conv", "gemm", "matmul", "qlinearconv", "qgemm", "qlinearmatmul", "matmuladdfusion", "fusedgemm"}


def name_key(name: str) -> str:
    """``/stack1/conv1/Conv_quant`` and ``stack1.conv1`` both -> ``stack1.conv1``; ``/a/a.0/Conv`` -> ``a.0``."""
    text = re.sub(r"_quant$", "", name.strip("/"))
    # torch's exporter writes nested scopes whole ("/Conv_0/Conv_0.1/Conv"): keep the innermost of each run.
    segments = text.split("/")
    text = "/".join(s for s, after in zip(segments, [*segments[1:], ""], strict=True) if not after.startswith(s + "."))
    parts = [p for p in re.split(r"[/.]", text) if p]
    while len(parts) > 1 and parts[-1].lower() in _OP_TAILS:  # "dense1/matmul/MatMulAddFusion" -> "dense1"
        parts = parts[:-1]
    return ".".join(parts).lower()


def canonical_dense(
    weight: np.ndarray, out_first: bool, q: QuantParams | None
) -> tuple[np.ndarray, QuantParams | None]:
    """A 2-D dense weight as (out, in); a per-channel axis follows the transpose."""
    if out_first:
        return weight, q
    if q is not None and q.per_channel:
        q = replace(q, axis=1 - (q.axis if q.axis is not None else 1))
    return weight.T, q


def bn_factor(gamma: Any, var: Any, eps: float) -> np.ndarray:
    """The per-channel factor a BatchNorm multiplies its input by: ``gamma / sqrt(var + eps)``."""
    return np.asarray(gamma, dtype=np.float64).reshape(-1) / np.sqrt(
        np.asarray(var, dtype=np.float64).reshape(-1) + eps
    )


def fold_factor(weight: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Weights (output channels first) times a per-output-channel ``factor``."""
    return (weight * np.asarray(factor, np.float64).reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)


def fold_bn(weight: np.ndarray, gamma: Any, var: Any, eps: float) -> np.ndarray:
    """Weights with a following BatchNorm folded in: ``w * gamma / sqrt(var + eps)`` per output channel."""
    return fold_factor(weight, bn_factor(gamma, var, eps))
