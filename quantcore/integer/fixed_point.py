"""Requantization as integer kernels do it, and as onnxruntime does it.

onnxruntime's integer kernels (MLAS) requantize an int32 accumulator in float:
``clamp(round_half_even(float32(acc) * M) + zero_point)`` with the multiplier
``M = s_in * s_w / s_out`` computed in float32. Microcontroller kernels
(gemmlowp, TFLite, CMSIS-NN's ``arm_nn_requantize``) have no float unit to
spare and use a fixed-point form instead: ``M = M0 * 2**(shift - 31)`` with an
int32 ``M0`` in [2**30, 2**31), applied as a rounding doubling high multiply
and a rounding right shift. Both are written here, vectorised, bit for bit as
those libraries define them, so a user sees what a fixed-point kernel will
differ by.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(multiplier: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``multiplier ~= m0 * 2**(shift - 31)``.

    ``shift`` is a left shift (negative: a right shift by ``-shift``), as TFLite
    and CMSIS-NN store it. ``frexp`` gives ``q`` in [0.5, 1); ``m0 = round(q * 2**31)``
    rounding half away from zero; ``q`` rounding up to 1 halves ``m0`` and bumps the shift;
    a shift below -31 would shift every bit out, so the multiplier is 0.

    Raises:
        ValueError: ``multiplier`` is negative or not finite.
    """
    if not math.isfinite(multiplier) or multiplier < 0:
        raise ValueError(f"a requantization multiplier must be finite and non-negative, got {multiplier}")
    if multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(multiplier)
    fixed = math.floor(q * (1 << 31) + 0.5)  # std::round on a positive value: half away from zero
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if fixed > INT32_MAX:  # cannot happen after the halving above; kept as TFLite's own check
        raise ValueError(f"multiplier {multiplier} does not fit an int32 fixed-point form")
    return int(fixed), int(shift)


def quantize_multipliers(multipliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_multiplier`` per channel: (int32 ``m0``, int32 ``shift``) arrays."""
    pairs = [quantize_multiplier(float(m)) for m in np.asarray(multipliers, np.float64).reshape(-1)]
    return (np.array([p[0] for p in pairs], dtype=np.int64).astype(np.int32),
            np.array([p[1] for p in pairs], dtype=np.int32))  # fmt: skip


def fixed_point_value(m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The multiplier a (``m0``, ``shift``) pair stands for, in float64 (exact)."""
    return np.asarray(m0, np.float64) * np.exp2(np.asarray(shift, np.float64) - 31)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` on int32 values (held in int64)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    product = a * b
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    total = product + nudge
    # C's integer division truncates toward zero.
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` rounding half away from zero."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier``: ``acc * M`` in integers, as int64.

    ``m0`` and ``shift`` broadcast against ``acc`` (one per output channel along
    the axis the caller lines them up with).
    """
    shift = np.asarray(shift, np.int64)
    m0 = np.asarray(m0, np.int64)
    if np.all(shift <= 0) and np.all(m0 >= 0):
        return _multiply_right_shift(np.array(acc, dtype=np.int64), m0, -shift)
    acc = np.asarray(acc, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    # TFLite shifts in int32 and may wrap on an overflowing left shift; saturating is what a careful kernel does.
    shifted = np.clip(acc * (np.int64(1) << left), INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m0), right)


def _multiply_right_shift(acc: np.ndarray, m0: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The same for multipliers below 1 (no left shift), in place on ``acc`` and on magnitudes.

    With ``m0 >= 0`` the doubling high multiply of a negative ``a`` is ``-((|a|·m0 + 2^30 - 1) >> 31)`` and of
    a non-negative one ``(a·m0 + 2^30) >> 31``; the rounding right shift rounds half away from zero, which on
    magnitudes is ``(|h| + 2^(r-1)) >> r``. Five passes over int64 instead of fifteen.
    """
    np.clip(acc, INT32_MIN, INT32_MAX, out=acc)  # an int32 accumulator; INT32_MIN·m0 never saturates (m0 < 2^31)
    negative = acc < 0
    np.abs(acc, out=acc)
    acc *= m0
    acc += np.int64(1 << 30)
    acc -= negative
    acc >>= 31
    acc += (np.int64(1) << right) >> 1
    acc >>= right
    np.negative(acc, out=acc, where=negative)
    return acc


def requantize_fixed(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray, zero_point: int,
                     limits: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Fixed-point requantization: (saturated output, unsaturated output) as int64."""
    raw = multiply_by_quantized_multiplier(acc, m0, shift)
    raw += int(zero_point)
    return np.clip(raw, *limits), raw


# Where a float32 product may differ from the exact one: float32 rounding of acc·M (2^-24 relative), of M itself
# (two roundings), and the fixed-point form's own error (2^-31), for |acc·M| up to SMALL_OUTPUT.
SMALL_OUTPUT = 600.0  # beyond it an 8-bit output saturates whatever the rounding (|zero point| <= 255)
FLOAT_MARGIN = 2.0**-10  # > SMALL_OUTPUT · 2^-20


def fixed_from_float(acc: np.ndarray, scaled: np.ndarray, rounded: np.ndarray, m0: np.ndarray,
                     shift: np.ndarray) -> np.ndarray:  # fmt: skip
    """The fixed-point ``acc·M`` of an 8-bit layer, made from the float one where they must agree.

    ``scaled`` is ``float32(acc)·M`` and ``rounded`` its rounding. Both forms round ``acc·M`` to the nearest
    integer; they can differ only where it lies near a half: within the fixed-point form's double rounding
    (``2^-r`` for a right shift ``r``) plus the float errors (``FLOAT_MARGIN``). Only those few values are
    computed in integers; values beyond ``SMALL_OUTPUT`` saturate an 8-bit output either way.

    Returns:
        A float32 array like ``rounded``, holding the fixed-point results.
    """
    shift = np.asarray(shift, np.int64)
    if np.any(shift > 0):  # a multiplier >= 1 shifts left first: no shortcut
        return multiply_by_quantized_multiplier(np.rint(acc), m0, shift).astype(np.float32)
    margin = (np.exp2(shift.astype(np.float64)) + FLOAT_MARGIN).astype(np.float32)
    distance = scaled - rounded
    np.abs(distance, out=distance)
    # Flat indices: a 1-D nonzero is an order of magnitude faster than one index array per axis.
    risky = np.flatnonzero(distance >= np.float32(0.5) - margin)
    out = rounded.copy()
    if risky.size:
        acc = np.asarray(acc)
        exact_acc = np.rint(acc.reshape(-1)[risky]).astype(np.int64)
        out.reshape(-1)[risky] = multiply_by_quantized_multiplier(
            exact_acc, _per_value(m0, acc.shape, risky), _per_value(shift, acc.shape, risky)
        )
    return out


def _per_value(per_channel: np.ndarray, shape: tuple[int, ...], flat: np.ndarray) -> np.ndarray:
    """One value per output channel (axis 1 of ``shape``, or one for all) at the flat indices ``flat``."""
    values = np.asarray(per_channel).reshape(-1)
    if values.size == 1:
        return np.broadcast_to(values, flat.shape)
    if len(shape) < 2 or values.size != shape[1]:
        raise ValueError(f"{values.size} per-channel values for an accumulator of shape {shape}")
    return values[(flat // int(np.prod(shape[2:], dtype=np.int64))) % shape[1]]


def float_multiplier(input_scale: float, weight_scale: np.ndarray, output_scale: float) -> np.ndarray:
    """``s_in * s_w / s_out`` per channel as onnxruntime computes it: in float32, in that order."""
    product = np.float32(input_scale) * np.asarray(weight_scale, np.float32)
    return (product / np.float32(output_scale)).astype(np.float32)


def requantize_float(acc: np.ndarray, multiplier: np.ndarray, zero_point: int,
                     limits: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """onnxruntime's float requantization: (saturated output, unsaturated output) as int64.

    ``float32(acc) * M`` rounded half to even, plus the zero point. MLAS clamps
    the float before rounding; clamping after gives the same result.
    """
    scaled = np.asarray(acc).astype(np.float32) * np.asarray(multiplier, np.float32)
    raw = np.rint(scaled).astype(np.int64) + int(zero_point)
    return np.clip(raw, *limits), raw


def signed_bits(magnitude: int) -> int:
    """Bits of a two's-complement integer holding every value in [-magnitude, magnitude]."""
    return int(magnitude).bit_length() + 1
