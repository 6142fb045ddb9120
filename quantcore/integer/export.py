"""What firmware needs of each integer layer: weights, int32 biases, per-channel M0 and shifts, zero points.

Written as JSON and as a C header of ``const`` arrays to paste next to an
integer kernel call. Conv weights are laid out OHWI (output channel, kernel
rows, kernel columns, input channel), as TFLite and CMSIS-NN's
``arm_convolve_s8`` take them; dense weights (out, in). Shifts follow TFLite
and CMSIS-NN: a left shift, negative for a right shift, applied as
``MultiplyByQuantizedMultiplier`` / ``arm_nn_requantize`` apply it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from quantcore.backends.integer_graph import IntTensor
from quantcore.integer.layers import LayerInteger
from quantcore.integer.view import VariantInteger

C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "uint16": "uint16_t", "int32": "int32_t"}
VALUES_PER_LINE = 16


def firmware_weights(layer: LayerInteger) -> np.ndarray:
    """The layer's stored integer weights in the exported layout: OHWI for conv, (out, in) for dense."""
    weight = layer.step.weight
    assert weight is not None
    return np.moveaxis(weight, 1, -1) if layer.step.kind == "conv" else weight


def _tensor(q: IntTensor) -> dict[str, Any]:
    return {"tensor": q.name, "scale": q.scale, "zero_point": q.zero_point, "dtype": q.dtype}


def layer_export(layer: LayerInteger) -> dict[str, Any]:
    """One layer's firmware parameters and the checks made on it, JSON-ready."""
    step = layer.step
    weight = firmware_weights(layer)
    assert step.weight_scale is not None and step.weight_zero_point is not None
    return {
        "name": step.name,
        "identifier": c_identifier(step.name),
        "op": step.op,
        "kind": step.kind,
        "input": _tensor(layer.input),
        "output": _tensor(layer.output),
        "relu": step.relu,
        "attributes": step.attrs,
        "weights": {
            "dtype": step.weight_dtype,
            "layout": "OHWI" if step.kind == "conv" else "OI",
            "shape": list(weight.shape),
            "scale": [float(s) for s in step.weight_scale],
            "zero_point": [int(z) for z in step.weight_zero_point],
            "values": [int(v) for v in weight.reshape(-1)],
        },
        "bias": None if step.bias is None else [int(b) for b in step.bias],
        "bias_fits_int32": layer.bias_fits_int32,
        "bias_note": step.bias_note,
        "multiplier": [float(m) for m in layer.requant.multiplier],
        "m0": [int(m) for m in layer.requant.m0],
        "shift": [int(s) for s in layer.requant.shift],
        "checks": {
            "multiplier_relative_error_max": float(layer.requant.relative_error.max(initial=0)),
            "accumulator_bound_bits": layer.bound_bits,
            "accumulator_observed_bits": layer.observed_bits,
            "accumulator_observed_max": layer.observed_max,
            "saturation": layer.saturation,
            "float_requantization_mismatches": layer.float_mismatch.count,
            "fixed_point_mismatches": layer.fixed_mismatch.count,
            "fixed_point_max_lsb": layer.fixed_mismatch.max_lsb,
            "values_compared": layer.fixed_mismatch.values,
            "images": layer.images,
        },
    }


def variant_export(result: VariantInteger) -> dict[str, Any]:
    """Every integer layer of one variant, and how its float input and output meet the integers."""
    graph = result.graph
    return {
        "variant": str(result.variant),
        "conventions": {
            "requantize": "out = clamp(MultiplyByQuantizedMultiplier(acc, m0, shift) + output zero point)",
            "accumulator": "acc = sum((x - input zero point) * (w - weight zero point)) + bias, int32",
            "shift": "left shift; negative means a rounding right shift by -shift (TFLite, CMSIS-NN)",
            "conv_weight_layout": "OHWI",
        },
        "input": _tensor(graph.input_q) if graph.input_q else None,
        "output": _tensor(graph.output_q) if graph.output_q else None,
        "layers": [layer_export(layer) for layer in result.layers],
    }


def export_json(result: VariantInteger) -> str:
    """``variant_export`` as JSON text."""
    return json.dumps(variant_export(result), indent=1)


def spatial_axes(count: int) -> tuple[str, ...]:
    """Names of a kernel's spatial axes in the header, innermost last: W; H, W; D, H, W (D0, D1, ... beyond)."""
    return {0: (), 1: ("W",), 2: ("H", "W"), 3: ("D", "H", "W")}.get(count) or tuple(f"D{i}" for i in range(count))


def c_identifier(name: str) -> str:
    """A layer name as a C identifier: ``/stack1/conv1/Conv`` -> ``stack1_conv1_conv``."""
    text = re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower() or "layer"
    return f"l_{text}" if text[0].isdigit() else text


def _array(c_type: str, name: str, values: np.ndarray) -> str:
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(flat[i : i + VALUES_PER_LINE]) for i in range(0, len(flat), VALUES_PER_LINE)]
    body = ",\n    ".join(lines)
    return f"const {c_type} {name}[{len(flat)}] = {{\n    {body}\n}};\n"


def _int32_literal(value: int) -> str:
    # INT32_MIN has no literal of its own in C
    return "(-2147483647 - 1)" if value == -(2**31) else str(value)


def export_header(result: VariantInteger) -> str:
    """A C header with each layer's weights, int32 biases, M0 and shifts, and zero points.

    Names are ``<prefix>_<layer>_<what>``, the prefix being the variant's key.
    """
    prefix = c_identifier(str(result.variant))
    guard = f"{prefix.upper()}_INTEGER_H"
    out = [
        f"/* {result.variant}: integer parameters of each quantized conv/dense layer. */",
        "/* acc = sum((x - INPUT_ZERO_POINT) * (w - weight_zero_point[c])) + bias[c]  (int32) */",
        "/* out = clamp(MultiplyByQuantizedMultiplier(acc, m0[c], shift[c]) + OUTPUT_ZERO_POINT) */",
        "/* shift: left shift, negative = rounding right shift (TFLite / CMSIS-NN). Conv weights OHWI. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stdint.h>",
        "",
    ]
    seen: set[str] = set()
    for layer in result.layers:
        step = layer.step
        base = name = f"{prefix}_{c_identifier(step.name)}"
        count = 2
        while name in seen:  # two layers whose names read the same as identifiers
            name, count = f"{base}_{count}", count + 1
        seen.add(name)
        upper = name.upper()
        weight = firmware_weights(layer)
        out.append(f"/* {step.name} ({step.op}) */")
        out.append(f"#define {upper}_INPUT_ZERO_POINT {layer.input.zero_point}")
        out.append(f"#define {upper}_OUTPUT_ZERO_POINT {layer.output.zero_point}")
        out.append(f"#define {upper}_OUT_CHANNELS {weight.shape[0]}")
        axes = spatial_axes(weight.ndim - 2)
        for axis, size in zip(axes, weight.shape[1:-1], strict=True):
            out.append(f"#define {upper}_KERNEL_{axis} {size}")
        out.append(f"#define {upper}_IN_CHANNELS {weight.shape[-1]}")
        if step.kind == "conv":
            attrs = step.attrs
            pads, spatial = attrs["pads"], len(attrs["strides"])
            for i, axis in enumerate(spatial_axes(spatial)):
                out.append(f"#define {upper}_STRIDE_{axis} {attrs['strides'][i]}")
                out.append(f"#define {upper}_DILATION_{axis} {attrs['dilations'][i]}")
                out.append(f"#define {upper}_PAD_{axis}_BEGIN {pads[i]}")
                out.append(f"#define {upper}_PAD_{axis}_END {pads[i + spatial]}")
            out.append(f"#define {upper}_GROUPS {attrs['group']}")
        out.append(f"#define {upper}_RELU {int(step.relu)}")
        out.append(_array(C_TYPES.get(step.weight_dtype or "", "int32_t"), f"{name}_weights", weight))
        if step.bias is not None and layer.bias_fits_int32:
            out.append(_array("int32_t", f"{name}_bias", step.bias).replace(
                str(-(2**31)), _int32_literal(-(2**31))))  # fmt: skip
        elif step.bias is not None:  # said, not wrapped: an int32 kernel cannot take this bias as it is
            out.append(f"/* {step.name}: its bias does not fit int32; int64 here */")
            out.append(_array("int64_t", f"{name}_bias", step.bias))
        assert step.weight_zero_point is not None
        out.append(_array("int32_t", f"{name}_weight_zero_point", step.weight_zero_point))
        out.append(_array("int32_t", f"{name}_m0", layer.requant.m0))
        out.append(_array("int32_t", f"{name}_shift", layer.requant.shift))
    out += [f"#endif /* {guard} */", ""]
    return "\n".join(out)


def write_exports(results: Iterable[VariantInteger], directory: str | os.PathLike[str]) -> list[Path]:
    """Each variant's ``<variant>.json`` and ``<variant>.h`` written into ``directory`` (made if missing)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for result in results:
        for suffix, text in ((".json", export_json(result)), (".h", export_header(result))):
            path = out / f"{result.variant}{suffix}"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
    return paths
