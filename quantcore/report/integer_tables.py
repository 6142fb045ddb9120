"""The integer view as rows and JSON: one row per quantized layer, per channel on request, and the network runs.

Per-channel quantities (weight scales, ``M``, ``M0``/shift) show as one value
when every channel shares it and as ``min … max (C channels)`` otherwise; the
per-channel table and the export give every value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quantcore.integer.layers import LayerInteger, Mismatch
from quantcore.integer.network import NetworkRun
from quantcore.integer.view import IntegerReport, VariantInteger
from quantcore.report.tables import NOT_THERE, number, percent

# The accumulator widths integer kernels come in: DSP MACs (16), some NPUs (24), CPUs and CMSIS-NN (32).
ACCUMULATOR_WIDTHS = (16, 24, 32)
_SHORT_TYPES = {"int8": "s8", "uint8": "u8", "int16": "s16", "uint16": "u16", "int4": "s4", "uint4": "u4"}


def _short(dtype: str | None) -> str:
    return _SHORT_TYPES.get(dtype or "", dtype or NOT_THERE)


def _spread(values: np.ndarray, digits: int = 6) -> str:
    """One value when all channels share it, else ``min … max (C channels)``."""
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        return NOT_THERE
    low, high = flat.min(), flat.max()
    show = (lambda v: f"{int(v)}") if flat.dtype.kind in "iu" else (lambda v: f"{float(v):.{digits}g}")
    return show(low) if low == high else f"{show(low)} … {show(high)} ({flat.size} channels)"


def fits_in(bits: int) -> str:
    """The narrowest accumulator width of ``ACCUMULATOR_WIDTHS`` holding a signed ``bits``-bit value."""
    return next((f"int{w}" for w in ACCUMULATOR_WIDTHS if bits <= w), f"needs {bits} bits")


def _mismatch_text(m: Mismatch) -> str:
    if not m.count:
        return f"0 of {m.values:,}"
    return f"{m.count:,} of {m.values:,} ({m.fraction:.4%}), up to {m.max_lsb} LSB"


def layer_row(result: VariantInteger, layer: LayerInteger) -> dict[str, Any]:
    """One layer as the Integer tab's table shows it."""
    step = layer.step
    assert step.weight_scale is not None and step.weight_zero_point is not None
    kernel = result.kernel(layer)
    return {
        "variant": str(result.variant),
        "layer": step.name,
        "op": step.op,
        "checked against": result.runtime,
        "runs as": kernel or NOT_THERE,
        "types (in·w→out)": f"{_short(layer.input.dtype)}·{_short(step.weight_dtype)}→{_short(layer.output.dtype)}",
        "input scale": f"{layer.input.scale:.6g}",
        "input zp": layer.input.zero_point,
        "weight scale": _spread(step.weight_scale),
        "weight zp": _spread(step.weight_zero_point),
        "output scale": f"{layer.output.scale:.6g}",
        "output zp": layer.output.zero_point,
        "M": _spread(layer.requant.multiplier),
        "M0": _spread(layer.requant.m0),
        "shift": _spread(layer.requant.shift),
        "M0 rel. error (max)": f"{float(layer.requant.relative_error.max(initial=0)):.2e}",
        "int32 bias": {None: NOT_THERE, True: "fits", False: "overflows"}[layer.bias_fits_int32],
        "acc. bound (bits)": layer.bound_bits,
        "acc. seen (bits)": layer.observed_bits,
        "acc. seen (max)": layer.observed_max,
        "bound fits": fits_in(layer.bound_bits),
        "seen fits": fits_in(layer.observed_bits),
        "saturated (%)": percent(layer.saturation, 3),
        "float requant. vs runtime": _mismatch_text(layer.float_mismatch),
        "fixed-point vs runtime": _mismatch_text(layer.fixed_mismatch),
    }


def layer_rows(report: IntegerReport) -> list[dict[str, Any]]:
    """Every quantized layer of every variant, variant by variant in graph order."""
    return [layer_row(result, layer) for result in report.variants for layer in result.layers]


def channel_rows(layer: LayerInteger) -> list[dict[str, Any]]:
    """One layer channel by channel: its weight quantization, requantization, accumulator and saturation."""
    step = layer.step
    assert step.weight_scale is not None and step.weight_zero_point is not None
    channels = step.channels
    scales = np.broadcast_to(step.weight_scale.reshape(-1), (channels,))
    zeros = np.broadcast_to(step.weight_zero_point.reshape(-1), (channels,))
    per = max(layer.outputs_per_channel, 1)
    return [
        {
            "channel": c,
            "weight scale": f"{float(scales[c]):.6g}",
            "weight zp": int(zeros[c]),
            "M": f"{float(layer.requant.multiplier[c]):.8g}",
            "M0": int(layer.requant.m0[c]),
            "shift": int(layer.requant.shift[c]),
            "M0 rel. error": f"{float(layer.requant.relative_error[c]):.2e}",
            "bias": NOT_THERE if step.bias is None else int(step.bias[c]),
            "acc. bound": int(layer.bound[c]),
            "acc. seen": int(layer.observed[c]),
            "at min (%)": percent(float(layer.at_min[c]) / per, 3),
            "at max (%)": percent(float(layer.at_max[c]) / per, 3),
        }
        for c in range(channels)
    ]


def network_text(run: NetworkRun | None, runtime: str = "onnxruntime") -> str:
    """One whole-network integer run in words (``runtime``: what it is compared with)."""
    if run is None:
        return "not run"
    if run.stopped is not None:
        return f"stopped: {run.stopped}"
    agreement = run.agreement
    shown = f"{run.top1_agree}/{run.images} top-1 agree with {runtime}"
    shown += f" ({agreement:.1%})" if agreement is not None else ""
    first = run.first_mismatch
    return shown + (f"; values first differ at {first}" if first else "; every step bit-exact")


def _mismatch_json(m: Mismatch) -> dict[str, Any]:
    return {"mismatches": m.count, "values": m.values, "fraction": number(m.fraction, 8), "max_lsb": m.max_lsb}


def _network_json(run: NetworkRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "images": run.images,
        "top1_agree": run.top1_agree,
        "agreement": run.agreement,
        "stopped": run.stopped,
        "first_mismatch": run.first_mismatch,
        "steps": [
            {"name": s.name, "kind": s.kind, "mismatches": s.mismatches, "values": s.values, "max_lsb": s.max_lsb}
            for s in run.steps
        ],
    }


def _layer_json(result: VariantInteger, layer: LayerInteger) -> dict[str, Any]:
    step = layer.step
    return {
        "layer": step.name,
        "op": step.op,
        "checked_against": result.runtime,
        "runs_as": result.kernel(layer),
        "input": {"scale": layer.input.scale, "zero_point": layer.input.zero_point, "dtype": layer.input.dtype},
        "output": {"scale": layer.output.scale, "zero_point": layer.output.zero_point, "dtype": layer.output.dtype},
        "weight_dtype": step.weight_dtype,
        "weight_scale": [float(s) for s in np.asarray(step.weight_scale).reshape(-1)],
        "weight_zero_point": [int(z) for z in np.asarray(step.weight_zero_point).reshape(-1)],
        "multiplier": [float(m) for m in layer.requant.multiplier],
        "m0": [int(m) for m in layer.requant.m0],
        "shift": [int(s) for s in layer.requant.shift],
        "multiplier_relative_error_max": float(layer.requant.relative_error.max(initial=0)),
        "bias_fits_int32": layer.bias_fits_int32,
        "accumulator_bound": [int(b) for b in layer.bound],
        "accumulator_observed": [int(o) for o in layer.observed],
        "accumulator_bound_bits": layer.bound_bits,
        "accumulator_observed_bits": layer.observed_bits,
        "saturation": layer.saturation,
        "saturation_min": layer.saturation_min,
        "saturation_max": layer.saturation_max,
        "float_requantization": _mismatch_json(layer.float_mismatch),
        "fixed_point": _mismatch_json(layer.fixed_mismatch),
    }


def integer_json(report: IntegerReport) -> dict[str, Any]:
    """The whole integer view, JSON-ready (the /integer endpoint's answer)."""
    return {
        "images": report.images,
        "source": report.source,
        "seconds": round(report.seconds, 3),
        "notes": list(report.notes),
        "variants": {
            str(result.variant): {
                "runtime": result.runtime,
                "network_fixed_point": _network_json(result.network_fixed),
                "network_float_requantization": _network_json(result.network_float),
                "layers": [_layer_json(result, layer) for layer in result.layers],
            }
            for result in report.variants
        },
    }
