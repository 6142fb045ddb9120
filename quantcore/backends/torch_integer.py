"""What the two PyTorch int8 readers share: a quantized conv/linear as an integer step, and torch's integers.

A torch quantized layer keeps its weights as a quantized tensor (per channel or
per tensor), its bias in float32 and its output scale and zero point as plain
numbers; the input's come from whatever quantized tensor feeds it. fbgemm (the
x86 engine's kernel) adds the float bias as ``bias / (s_in·s_w)`` without
rounding it; an integer kernel needs the int32 form ``round(bias / (s_in·s_w))``,
which is what the step holds (and the note says so).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from quantcore.backends.integer_graph import IntegerStep, IntTensor

# torch's quantized dtypes, as torch.dtype names and as the ScalarType numbers TorchScript constants hold.
QUANTIZED_DTYPES = {"quint8": "uint8", "qint8": "int8", "qint32": "int32", 13: "uint8", 12: "int8", 14: "int32"}
FLOAT_BIAS_NOTE = (
    "float bias: torch adds bias/(s_in·s_w) unrounded; an integer kernel takes round(bias/(s_in·s_w)) (shown)"
)


def dtype_name(dtype: Any) -> str | None:
    """``"uint8"``/``"int8"`` for torch's quint8/qint8 (a ``torch.dtype`` or a TorchScript ScalarType number)."""
    key = dtype if isinstance(dtype, int) else str(dtype).removeprefix("torch.")
    return QUANTIZED_DTYPES.get(key)


def engine_name() -> str:
    """The runtime the view checks torch layers against: torch and its quantized engine in force."""
    import torch

    return f"torch ({torch.backends.quantized.engine} engine)"


def float32(value: Any) -> float:
    """A scale as the kernels use it: torch holds scales in double, fbgemm computes with float32."""
    return float(np.float32(float(value)))


def weight_parameters(weight: Any, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(integers, float32 scale per channel, zero point per channel, dtype) of a quantized weight tensor.

    Raises:
        ValueError: the weight is not quantized, or quantized along another axis than the output channels.
    """
    import torch

    if not isinstance(weight, torch.Tensor) or not weight.is_quantized:
        raise ValueError("its weight is not a quantized tensor")
    integers = weight.int_repr().numpy()
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if weight.q_per_channel_axis() != 0:
            raise ValueError(f"weights quantized along axis {weight.q_per_channel_axis()}, not the output channels")
        scale = weight.q_per_channel_scales().numpy().astype(np.float32)
        zero = weight.q_per_channel_zero_points().numpy().astype(np.int64)
    else:
        scale = np.full(channels, weight.q_scale(), np.float32)
        zero = np.full(channels, weight.q_zero_point(), np.int64)
    dtype = dtype_name(weight.dtype)
    if dtype is None:
        raise ValueError(f"weights of type {weight.dtype}")
    return integers, scale, zero, dtype


def int32_bias(bias: Any, x: IntTensor, weight_scale: np.ndarray) -> np.ndarray | None:
    """``round(bias / (s_in·s_w))`` per channel, the product in float32 as fbgemm forms it (None without bias)."""
    if bias is None:
        return None
    values = bias.detach().numpy().astype(np.float32).reshape(-1)
    scale = np.float32(x.scale) * weight_scale.astype(np.float32)
    return np.rint(values / scale).astype(np.int64)


def layer_step(
    name: str,
    op: str,
    kind: str,
    x: IntTensor,
    output: tuple[str, float, int],
    weight: Any,
    bias: Any,
    conv: tuple[list[int], list[int], list[int], int] | None,
    relu: bool,
) -> IntegerStep:
    """One quantized conv (``conv``: strides, padding, dilations, groups) or linear layer as an integer step.

    ``output``: (tensor name, scale, zero point); the output has the input's integer type, as torch's
    quantized kernels keep it.

    Raises:
        ValueError: the weights are not quantized per output channel or per tensor.
    """
    channels = int(weight.shape[0])
    integers, scale, zero, dtype = weight_parameters(weight, channels)
    attrs: dict[str, Any] = {}
    if conv is not None:
        strides, padding, dilations, groups = conv
        attrs = {"strides": list(strides), "pads": [*padding, *padding], "dilations": list(dilations),
                 "group": int(groups), "auto_pad": "NOTSET"}  # fmt: skip
    out_name, out_scale, out_zero = output
    y = IntTensor(out_name, float32(out_scale), int(out_zero), x.dtype)
    bias_int = int32_bias(bias, x, scale)
    note = FLOAT_BIAS_NOTE if bias_int is not None else None
    return IntegerStep(name, op, kind, (x,), y, np.ascontiguousarray(integers), scale, zero, dtype, bias_int, note,
                       attrs, relu)  # fmt: skip


INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1


def overflowing_pairs(weight: np.ndarray, input_seen: tuple[int, int]) -> tuple[int, int]:
    """(weight pairs whose int16 sum can pass int16 for inputs in ``input_seen``, all pairs) of one layer.

    fbgemm's AVX2 u8·s8 kernels (``vpmaddubsw``) multiply the stored uint8 inputs by the stored int8 weights
    and add the products two at a time in int16, saturating, along the reduction axis in (kernel row, kernel
    column, channel) order; the zero points are corrected afterwards in int32.
    """
    low, high = input_seen
    flat = (np.moveaxis(weight, 1, -1) if weight.ndim > 2 else weight).reshape(len(weight), -1).astype(np.int64)
    if flat.shape[1] % 2:
        flat = np.concatenate([flat, np.zeros((len(flat), 1), np.int64)], axis=1)
    a, b = flat[:, 0::2], flat[:, 1::2]
    top = np.maximum(a * low, a * high) + np.maximum(b * low, b * high)
    bottom = np.minimum(a * low, a * high) + np.minimum(b * low, b * high)
    return int(np.count_nonzero((top > INT16_MAX) | (bottom < INT16_MIN))), int(a.size)


@functools.cache
def _cpu_flags() -> str | None:
    """The ``flags`` line of ``/proc/cpuinfo``, read once (None where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            return next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return None


def fbgemm_pairs_saturate(cpu_flags: str | None = None) -> bool | None:
    """Whether this machine's fbgemm adds u8·s8 product pairs in saturating int16, if known.

    fbgemm picks its kernels by CPU: with AVX512-VNNI (``vpdpbusd``) the products are summed in int32; on
    x86 without VNNI (AVX2, AVX512) by ``vpmaddubsw``, two at a time in int16. ``cpu_flags``: the ``flags``
    of ``/proc/cpuinfo`` (read when not given); None where they cannot be read or the CPU is neither.
    """
    if cpu_flags is None:
        cpu_flags = _cpu_flags()
        if cpu_flags is None:
            return None
    flags = set(cpu_flags.split())
    if "avx512_vnni" in flags:
        return False
    if "avx_vnni" in flags:  # 256-bit VNNI: which kernels fbgemm takes there is not known here
        return None
    return True if "avx2" in flags else None


def pair_overflow_note(layers: list[tuple[str, tuple[int, int], np.ndarray]], engine: str, *,
                       saturates: bool | None) -> str | None:  # fmt: skip
    """Where torch's x86 kernels may give another result than any int32 kernel, if anywhere.

    ``layers``: (name, stored input range seen, stored weights) of each uint8-input layer. torch's x86 qconfig
    calibrates activations to 0..127 (``reduce_range``) so that no pair of u8·s8 products can pass int16 in
    fbgemm's kernels for CPUs without VNNI (``overflowing_pairs``); inputs above 127 can make one: fbgemm clips
    it there, and torch's output is not the exact sum's. ``saturates``: whether this CPU's kernels do
    (``fbgemm_pairs_saturate``; None: not known).
    """
    if engine not in ("x86", "fbgemm"):
        return None
    risky = [(name, seen[1], *overflowing_pairs(weight, seen)) for name, seen, weight in layers]
    risky = [r for r in risky if r[2]]
    if not risky:
        return None
    which = ", ".join(f"{name} {count} of {pairs}" for name, _, count, pairs in risky)
    this_cpu = {
        True: "this CPU has no VNNI, so torch's outputs here can differ so",
        False: "this CPU has AVX512-VNNI, whose kernels sum in int32: torch's outputs here are an int32 kernel's, "
               "on a CPU without VNNI they can differ",
        None: "whether this CPU's kernels do is not known",
    }[saturates]  # fmt: skip
    return (f"uint8 inputs of {len(risky)} layer(s) pass 127, the range torch's x86 qconfig calibrates to (up to "
            f"{max(r[1] for r in risky)}); on x86 CPUs without VNNI, fbgemm adds u8·s8 products in pairs in int16 "
            f"and clips them, and these weight pairs can then pass int16: {which}; where one does, torch's output "
            f"is not an int32 kernel's ({this_cpu})")  # fmt: skip
