"""The integer view: what an integer kernel computes for each quantized layer, checked bit for bit.

Per quantized conv/dense layer: scales and zero points, the requantization
multiplier and its fixed-point form, the int32 bias, the accumulator's range
and the outputs' saturation, and an integer-only numpy reference compared with
onnxruntime's own quantized outputs; then whole networks run in integers.
"""

from quantcore.integer.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multipliers,
    signed_bits,
)
from quantcore.integer.kernels import accumulate, accumulator_bound
from quantcore.integer.layers import LayerInteger, LayerStats, Mismatch, Requantization, requantize_step
from quantcore.integer.network import NetworkRun, NetworkRunner, StepAgreement, run_step
from quantcore.integer.view import IntegerReport, VariantInteger, cached_integer_view, integer_view

__all__ = [
    "IntegerReport",
    "LayerInteger",
    "LayerStats",
    "Mismatch",
    "NetworkRun",
    "NetworkRunner",
    "Requantization",
    "StepAgreement",
    "VariantInteger",
    "accumulate",
    "accumulator_bound",
    "cached_integer_view",
    "integer_view",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "quantize_multipliers",
    "requantize_step",
    "run_step",
    "signed_bits",
]
