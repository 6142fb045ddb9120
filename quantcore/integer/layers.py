"""What each quantized conv/dense layer asks of an integer kernel: multipliers, bias, accumulator, saturation.

For one layer, ``LayerStats`` gathers over the samples (a batch at a time, so
memory stays flat) the largest |accumulator| per channel, how many outputs sit
at the type's min and max, and how the integer reference — fed the quantized
input onnxruntime itself produced — differs from onnxruntime's own quantized
output, once with onnxruntime's float requantization and once with the
fixed-point ``M0``/shift form. ``LayerInteger`` is the finished row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from quantcore.backends.integer_graph import IntegerStep, IntTensor
from quantcore.backends.layer import integer_limits
from quantcore.integer.fixed_point import (
    INT32_MAX,
    INT32_MIN,
    fixed_from_float,
    fixed_point_value,
    float_multiplier,
    quantize_multipliers,
    requantize_fixed,
    requantize_float,
    signed_bits,
)
from quantcore.integer.kernels import accumulate_exact, accumulator_bound, exact_sum_bound


@dataclass(frozen=True)
class Mismatch:
    """How the reference's outputs differ from onnxruntime's on the samples."""

    count: int
    values: int
    max_lsb: int

    @property
    def fraction(self) -> float:
        return self.count / self.values if self.values else 0.0


@dataclass(frozen=True)
class Requantization:
    """``M = s_in·s_w/s_out`` per output channel and its fixed-point form ``M0·2^(shift-31)``."""

    multiplier: np.ndarray  # float64, exact from the float32 scales
    multiplier_f32: np.ndarray  # as onnxruntime computes it
    m0: np.ndarray  # int32
    shift: np.ndarray  # int32, TFLite's convention: left shift, negative = right shift by -shift
    relative_error: np.ndarray  # |M0·2^(shift-31) - M| / M (0 where M is 0)

    @classmethod
    def of(cls, step: IntegerStep) -> Requantization:
        assert step.weight_scale is not None
        x, y = step.inputs[0], step.output
        exact = np.float64(x.scale) * step.weight_scale.astype(np.float64) / np.float64(y.scale)
        m0, shift = quantize_multipliers(exact)
        value = fixed_point_value(m0, shift)
        error = np.divide(np.abs(value - exact), exact, out=np.zeros_like(exact), where=exact > 0)
        return cls(exact, float_multiplier(x.scale, step.weight_scale, y.scale), m0, shift, error)


@dataclass(frozen=True, eq=False)
class LayerInteger:
    """One quantized conv or dense layer as an integer kernel sees it, measured on the samples."""

    step: IntegerStep
    requant: Requantization
    bias_fits_int32: bool | None  # None without bias
    bound: np.ndarray = field(repr=False)  # worst-case |accumulator| per output channel
    observed: np.ndarray = field(repr=False)  # largest |accumulator| seen per output channel
    at_min: np.ndarray = field(repr=False)  # outputs at the type's min, per channel (count)
    at_max: np.ndarray = field(repr=False)
    outputs_per_channel: int
    float_mismatch: Mismatch
    fixed_mismatch: Mismatch
    images: int
    input_seen: tuple[int, int] = (0, 0)  # the smallest and largest stored input integer on the samples

    @property
    def input(self) -> IntTensor:
        return self.step.inputs[0]

    @property
    def output(self) -> IntTensor:
        return self.step.output

    @property
    def bound_bits(self) -> int:
        return signed_bits(int(self.bound.max(initial=0)))

    @property
    def observed_max(self) -> int:
        return int(self.observed.max(initial=0))

    @property
    def observed_bits(self) -> int:
        return signed_bits(self.observed_max)

    @property
    def min_is_zero_point(self) -> bool:
        """The output's zero point is its type's min (a fused ReLU's zeros sit there, not saturated values)."""
        return self.output.zero_point == integer_limits(self.output.dtype)[0]

    @property
    def saturation_min(self) -> float:
        total = self.outputs_per_channel * self.at_min.size
        return float(self.at_min.sum() / total) if total else 0.0

    @property
    def saturation_max(self) -> float:
        total = self.outputs_per_channel * self.at_max.size
        return float(self.at_max.sum() / total) if total else 0.0

    @property
    def saturation(self) -> float:
        """Outputs at the type's min or max; the min counts only when it is not the zero point (a ReLU's 0)."""
        return self.saturation_max + (0.0 if self.min_is_zero_point else self.saturation_min)


class LayerStats:
    """Running figures of one layer over batches of onnxruntime's own quantized input and output."""

    def __init__(self, step: IntegerStep) -> None:
        self.step = step
        self.requant = Requantization.of(step)
        self.bound = accumulator_bound(step)
        self.sum_bound = exact_sum_bound(step)
        self.limits = integer_limits(step.output.dtype)
        channels = step.channels
        self.observed = np.zeros(channels, np.int64)
        self.at_min = np.zeros(channels, np.int64)
        self.at_max = np.zeros(channels, np.int64)
        self.per_channel = 0
        self.images = 0
        self.input_seen: tuple[int, int] | None = None
        self.mismatch = {"float": [0, 0, 0], "fixed": [0, 0, 0]}

    def update(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add one batch: ``x`` the layer's integer input, ``y`` onnxruntime's integer output.

        Returns:
            The reference's outputs for ``x``: with float requantization, and with the fixed-point form.
        """
        step = self.step
        acc = accumulate_exact(step, x, self.sum_bound)
        if acc.shape != y.shape:
            raise ValueError(f"{step.name}: reference output {acc.shape} against onnxruntime's {y.shape}")
        channel_axes = (0, *range(2, acc.ndim))
        self.observed = np.maximum(self.observed, np.abs(acc).max(axis=channel_axes).astype(np.int64))
        low, high = self.limits
        self.at_min += (y == low).sum(axis=channel_axes)
        self.at_max += (y == high).sum(axis=channel_axes)
        self.per_channel += int(y.size // max(step.channels, 1))
        self.images += len(y)
        if x.size:
            low_x, high_x = int(x.min()), int(x.max())
            seen = self.input_seen or (low_x, high_x)
            self.input_seen = (min(seen[0], low_x), max(seen[1], high_x))
        by_float, by_fixed = requantize_both(step, acc, self.requant)
        theirs = y.astype(np.int16)
        for mode, ours in (("float", by_float), ("fixed", by_fixed)):
            diff = np.abs(ours - theirs)
            tally = self.mismatch[mode]
            tally[0] += int(np.count_nonzero(diff))
            tally[1] += int(diff.size)
            tally[2] = max(tally[2], int(diff.max(initial=0)))
        return by_float, by_fixed

    def result(self) -> LayerInteger:
        step = self.step
        fits = None if step.bias is None else bool(np.all((step.bias >= INT32_MIN) & (step.bias <= INT32_MAX)))
        return LayerInteger(
            step, self.requant, fits, self.bound, self.observed, self.at_min, self.at_max, self.per_channel,
            Mismatch(*self.mismatch["float"]), Mismatch(*self.mismatch["fixed"]), self.images,
            self.input_seen or (0, 0),
        )  # fmt: skip


def requantize_step(step: IntegerStep, acc: np.ndarray, requant: Requantization, *, fixed: bool) -> np.ndarray:
    """A layer's integer output from its accumulator: requantized, zero point added, ReLU and saturation applied.

    ``acc`` may be int64 or the exact float array BLAS made. The output is int16 for 8-bit types.
    """
    return requantize_both(step, acc, requant)[1 if fixed else 0]


def requantize_both(step: IntegerStep, acc: np.ndarray, requant: Requantization) -> tuple[np.ndarray, np.ndarray]:
    """(float requantization, fixed-point requantization) of one accumulator, as ``requantize_step`` makes each.

    For 8-bit outputs the fixed-point one is made from the float one, computing in integers only the values
    near a rounding half (``fixed_point.fixed_from_float``): the same results, at a fraction of the cost.
    """
    low, high = integer_limits(step.output.dtype)
    shape = (1, -1, *([1] * (acc.ndim - 2)))
    zero = step.output.zero_point
    floor = max(low, zero) if step.relu else low
    m0, shift = requant.m0.reshape(shape).astype(np.int64), requant.shift.reshape(shape)
    if high > 255 or low < -128:  # wider than 8 bits: the fixed-point form computed in full
        integers = acc if acc.dtype.kind == "i" else np.rint(acc).astype(np.int64)
        by_fixed, _ = requantize_fixed(integers, m0, shift, zero, (floor, high))
        by_float, _ = requantize_float(integers, requant.multiplier_f32.reshape(shape), zero, (floor, high))
        return by_float, by_fixed
    # float32(acc) * M in float32, rounded half to even, as onnxruntime's kernels do
    scaled = acc.astype(np.float32) * requant.multiplier_f32.reshape(shape)
    rounded = np.rint(scaled)
    fixed = fixed_from_float(acc, scaled, rounded, m0, shift)
    outputs = []
    for values in (rounded, fixed):
        values += np.float32(zero)
        np.clip(values, floor, high, out=values)
        outputs.append(values.astype(np.int16))
    return outputs[0], outputs[1]
