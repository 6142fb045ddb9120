"""A whole quantized network run in integers only, step by step, against onnxruntime's own tensors.

The float input is quantized once (the edge a camera pipeline or a sensor
driver would own); from there every step is integer arithmetic: conv and dense
layers as in ``kernels``, adds and average pools rescaled by their own
multipliers, reshapes and ReLUs on integers. Each step's output is compared
with the tensor onnxruntime produced at the same place, so the first step
that differs is where a mismatch starts; the top-1 answers are compared at
the end. With ``fixed=True`` every rescale is the fixed-point ``M0``/shift
form (what a microcontroller kernel computes); with ``fixed=False`` it is
onnxruntime's float requantization, which should agree exactly.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from quantcore.backends.integer_graph import IntegerGraph, IntegerStep, IntTensor
from quantcore.backends.layer import integer_limits
from quantcore.integer.fixed_point import quantize_multiplier, requantize_fixed, requantize_float
from quantcore.integer.kernels import accumulate_exact, exact_sum_bound
from quantcore.integer.layers import Requantization, requantize_step

# Left shift applied to both addends before rescaling, as TFLite's int8 Add does (room for the rounding).
ADD_LEFT_SHIFT = 20
# Each 8-bit add's output for every pair of inputs, per arithmetic (fixed point or not); dropped with the step.
_ADD_TABLES: weakref.WeakKeyDictionary[IntegerStep, dict[bool, np.ndarray]] = weakref.WeakKeyDictionary()


class UnsupportedStepError(ValueError):
    """A step of the graph has no integer implementation here."""


@dataclass(frozen=True)
class StepAgreement:
    """One step's integer output against onnxruntime's tensor of the same name."""

    name: str
    kind: str
    mismatches: int
    values: int
    max_lsb: int


@dataclass(frozen=True)
class NetworkRun:
    """A whole-network integer run over the samples."""

    fixed: bool
    images: int
    top1_agree: int
    steps: tuple[StepAgreement, ...]
    stopped: str | None  # why the run could not reach the output (an unsupported step), if it could not

    @property
    def agreement(self) -> float | None:
        return self.top1_agree / self.images if self.images and self.stopped is None else None

    @property
    def first_mismatch(self) -> str | None:
        """The first step (in graph order) whose output differs from onnxruntime's."""
        return next((s.name for s in self.steps if s.mismatches), None)


def quantize_input(x: np.ndarray, q: IntTensor) -> np.ndarray:
    """QuantizeLinear as onnxruntime computes it: ``x / scale`` in float32, rounded half to even, saturated."""
    scaled = np.rint(np.asarray(x, np.float32) / np.float32(q.scale)).astype(np.int64) + q.zero_point
    return np.clip(scaled, *integer_limits(q.dtype))


def _rescale(values: np.ndarray, multiplier: float, zero: int, limits: tuple[int, int], fixed: bool) -> np.ndarray:
    if fixed:
        m0, shift = quantize_multiplier(multiplier)
        return requantize_fixed(values, np.int64(m0), np.int64(shift), zero, limits)[0]
    return requantize_float(values, np.float32(multiplier), zero, limits)[0]


def _add(step: IntegerStep, a: np.ndarray, b: np.ndarray, fixed: bool) -> np.ndarray:
    qa, qb = step.inputs
    y = step.output
    limits = integer_limits(y.dtype)
    if fixed:  # TFLite's int8 Add: both sides shifted left, rescaled to a common scale, summed, rescaled out
        twice = 2 * max(qa.scale, qb.scale)
        left = np.int64(1) << ADD_LEFT_SHIFT
        sa = _rescale((a - qa.zero_point) * left, qa.scale / twice, 0, (-(2**62), 2**62), True)
        sb = _rescale((b - qb.zero_point) * left, qb.scale / twice, 0, (-(2**62), 2**62), True)
        out = _rescale(sa + sb, twice / (y.scale * float(left)), y.zero_point, limits, True)
    else:  # onnxruntime's QLinearAdd: each side by its scale ratio in float32, rounded once
        value = (a - qa.zero_point).astype(np.float32) * np.float32(np.float32(qa.scale) / np.float32(y.scale)) + (
            b - qb.zero_point).astype(np.float32) * np.float32(np.float32(qb.scale) / np.float32(y.scale))  # fmt: skip
        out = np.clip(np.rint(value).astype(np.int64) + y.zero_point, *limits)
    return np.maximum(out, y.zero_point) if step.relu else out


def _add_by_table(step: IntegerStep, a: np.ndarray, b: np.ndarray, fixed: bool) -> np.ndarray:
    """``_add`` looked up: with 8-bit inputs the output of every input pair is tabled once (256×256, computed by
    ``_add`` itself), so each batch costs an index and a gather instead of some thirty passes over int64."""
    (low_a, high_a), (low_b, high_b) = (integer_limits(q.dtype) for q in step.inputs)
    low_y, high_y = integer_limits(step.output.dtype)
    if high_a - low_a > 255 or high_b - low_b > 255 or low_y < -(2**15) or high_y >= 2**15:
        return _add(step, a, b, fixed)  # a table of 16-bit inputs, or outputs past int16, is not worth it
    tables = _ADD_TABLES.setdefault(step, {})
    if fixed not in tables:
        every_a = np.arange(low_a, high_a + 1, dtype=np.int64)[:, None]
        every_b = np.arange(low_b, high_b + 1, dtype=np.int64)[None, :]
        tables[fixed] = _add(step, every_a, every_b, fixed).astype(np.int16).reshape(-1)
    a, b = np.broadcast_arrays(a, b)
    index = a.astype(np.int32)
    index -= low_a
    index *= high_b - low_b + 1
    np.add(index, b, out=index, casting="unsafe")  # b is an 8-bit value held in a wider type
    index -= low_b
    return tables[fixed].take(index)


def _average_pool(step: IntegerStep, x: np.ndarray, fixed: bool) -> np.ndarray:
    q, y = step.inputs[0], step.output
    axes = tuple(range(1, x.ndim - 1)) if step.attrs.get("channels_last") else tuple(range(2, x.ndim))
    count = int(np.prod([x.shape[a] for a in axes]))
    total = (x - q.zero_point).sum(axis=axes, keepdims=True)
    limits = integer_limits(y.dtype)
    if fixed:
        out = _rescale(total, q.scale / (y.scale * count), y.zero_point, limits, True)
    else:  # the graph's own arithmetic: the mean of the dequantized values, quantized again
        mean = (total.astype(np.float32) * np.float32(q.scale)) / np.float32(count)
        out = np.clip(np.rint(mean / np.float32(y.scale)).astype(np.int64) + y.zero_point, *limits)
    return out


def _max_pool(step: IntegerStep, x: np.ndarray, fixed: bool) -> np.ndarray:
    """MaxPool on integers: the largest stored value of each window (dequantizing is increasing, so the max
    commutes with it; padding takes the type's minimum, which never wins), then moved to the output's scale."""
    attrs = step.attrs
    kernel = attrs.get("kernel_shape") or []
    if not kernel or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or attrs.get("ceil_mode", 0):
        raise UnsupportedStepError(f"{step.name}: {step.op} is computed here only with its kernel and explicit "
                                   "pads given, and ceil_mode off")  # fmt: skip
    spatial = len(kernel)
    if x.ndim != spatial + 2:
        raise UnsupportedStepError(f"{step.name}: a {x.ndim}-D input for a {spatial}-D MaxPool")
    strides, dilations = attrs.get("strides") or [1] * spatial, attrs.get("dilations") or [1] * spatial
    pads = attrs.get("pads") if attrs.get("auto_pad", "NOTSET") == "NOTSET" else None
    pads = pads or [0] * (2 * spatial)
    low = integer_limits(step.inputs[0].dtype)[0]
    bounds = [(0, 0), (0, 0), *((pads[i], pads[i + spatial]) for i in range(spatial))]
    padded = np.pad(x.astype(np.int32, copy=False), bounds, constant_values=low)  # no unsigned wrap below
    sizes = [(padded.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(spatial)]
    if min(sizes) < 1:
        raise UnsupportedStepError(f"{step.name}: the pool's window is larger than its padded input")
    largest: np.ndarray | None = None
    for offset in np.ndindex(*kernel):
        window = tuple(slice(offset[i] * dilations[i], offset[i] * dilations[i] + (sizes[i] - 1) * strides[i] + 1,
                             strides[i]) for i in range(spatial))  # fmt: skip
        part = padded[(slice(None), slice(None), *window)]
        largest = part.copy() if largest is None else np.maximum(largest, part, out=largest)
    assert largest is not None
    out = _requantized(step, largest, fixed)
    return np.maximum(out, step.output.zero_point) if step.relu else out


def _requantized(step: IntegerStep, x: np.ndarray, fixed: bool) -> np.ndarray:
    """An integer tensor moved to the step's output scale and zero point (the identity when they agree)."""
    return _moved(step.inputs[0], step.output, x, fixed)


def _moved(q: IntTensor, y: IntTensor, x: np.ndarray, fixed: bool) -> np.ndarray:
    """``x``, stored as ``q``, moved to ``y``'s scale and zero point (the identity when they agree).

    In fixed point by one multiplier; otherwise as the graph does it, DequantizeLinear then QuantizeLinear in
    float32 (onnxruntime's QLinearConcat tables the same arithmetic).
    """
    if (q.scale, q.zero_point, q.dtype) == (y.scale, y.zero_point, y.dtype):
        return x
    shifted = np.asarray(x, np.int64) - q.zero_point
    limits = integer_limits(y.dtype)
    if fixed:
        return _rescale(shifted, q.scale / y.scale, y.zero_point, limits, True)
    value = shifted.astype(np.float32) * np.float32(q.scale)
    return np.clip(np.rint(value / np.float32(y.scale)).astype(np.int64) + y.zero_point, *limits)


def _concat(step: IntegerStep, values: list[np.ndarray], fixed: bool) -> np.ndarray:
    """Concat on integers: each input moved to the output's scale (as DequantizeLinear → Concat →
    QuantizeLinear does), then joined."""
    parts = [_moved(q, step.output, v, fixed).astype(np.int64, copy=False) for q, v in zip(step.inputs, values,
                                                                                           strict=True)]  # fmt: skip
    out = np.concatenate(parts, axis=step.attrs.get("axis", 1))
    return np.maximum(out, step.output.zero_point) if step.relu else out


def _reshape(step: IntegerStep, x: np.ndarray) -> np.ndarray:
    attrs = step.attrs
    if "flatten_axis" in attrs:
        axis = attrs["flatten_axis"] % max(x.ndim, 1)
        return x.reshape(int(np.prod(x.shape[:axis])), -1)
    if "shape" in attrs:
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(attrs["shape"])]
        return x.reshape(target)
    if "perm" in attrs:
        return x.transpose(attrs["perm"] or None)
    if step.op.endswith("Identity"):
        return x
    raise UnsupportedStepError(f"{step.name}: {step.op} on integers is not computed here")


def run_step(step: IntegerStep, values: list[np.ndarray], *, fixed: bool, bound: int | None = None) -> np.ndarray:
    """One integer step's output from its integer inputs.

    Raises:
        UnsupportedStepError: the step has no integer implementation here.
    """
    if step.is_layer:
        acc = accumulate_exact(step, values[0], bound)
        return requantize_step(step, acc, Requantization.of(step), fixed=fixed)
    if step.kind == "add":
        return _add_by_table(step, values[0], values[1], fixed)
    if step.kind == "global_average_pool":
        return _average_pool(step, values[0], fixed)
    if step.kind == "relu":
        return np.maximum(_requantized(step, values[0], fixed), step.output.zero_point)
    if step.kind == "max_pool":
        return _max_pool(step, values[0], fixed)
    if step.kind == "concat":
        return _concat(step, values, fixed)
    if step.kind == "reshape":
        return _requantized(step, _reshape(step, values[0]), fixed)
    raise UnsupportedStepError(f"{step.name}: {step.op} has no integer implementation here")


class NetworkRunner:
    """Runs an ``IntegerGraph`` in integers batch by batch, tallying agreement with onnxruntime's tensors."""

    def __init__(self, graph: IntegerGraph, *, fixed: bool) -> None:
        self.graph = graph
        self.fixed = fixed
        self.bounds = {s.name: exact_sum_bound(s) for s in graph.layers}
        self.tally = {s.output.name: [0, 0, 0] for s in graph.steps}
        self.images = 0
        self.agree = 0
        self.stopped: str | None = None
        if graph.input_q is None:
            self.stopped = ("the model's input is not quantized before its first step (it goes through float "
                            "ops first, see the notes): the integer run starts from a quantized input")  # fmt: skip
        elif graph.output_q is None:
            self.stopped = ("the model's output is computed in float, not only dequantized (or reshaped, or "
                            "softmaxed) from one integer tensor: no integer tensor holds its answer")  # fmt: skip

    @property
    def taps(self) -> list[str]:
        """The integer tensors onnxruntime should hand back for the comparison."""
        return list(dict.fromkeys(s.output.name for s in self.graph.steps))

    def update(
        self,
        x: np.ndarray,
        ort_values: dict[str, np.ndarray],
        ort_output: np.ndarray,
        known: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Add one batch: ``x`` the float model input, onnxruntime's tapped tensors and its output.

        ``known``: a layer's output (in this run's arithmetic) already computed from onnxruntime's own input
        to it, by step name: used as it is wherever this run's input to the layer is that same tensor.
        """
        known = known or {}
        if self.stopped is not None:
            return
        graph = self.graph
        assert graph.input_q is not None and graph.output_q is not None
        env = {graph.input_q.name: quantize_input(x, graph.input_q)}
        for step in graph.steps:
            missing = [t.name for t in step.inputs if t.name not in env]
            if missing:
                self.stopped = f"{step.name}: its input {missing[0]} is made by a step not computed in integers"
                return
            ours_in = [env[t.name] for t in step.inputs]
            theirs_in = ort_values.get(step.inputs[0].name)
            try:
                if step.name in known and theirs_in is not None and np.array_equal(ours_in[0], theirs_in):
                    out = known[step.name]
                else:
                    out = run_step(step, ours_in, fixed=self.fixed, bound=self.bounds.get(step.name))
            except UnsupportedStepError as exc:
                self.stopped = str(exc)
                return
            env[step.output.name] = out
            theirs = ort_values.get(step.output.name)
            if theirs is not None and theirs.shape == out.shape:
                diff = np.abs(out.astype(np.int32) - theirs.astype(np.int32))
                tally = self.tally[step.output.name]
                tally[0] += int(np.count_nonzero(diff))
                tally[1] += int(diff.size)
                tally[2] = max(tally[2], int(diff.max(initial=0)))
        final = env.get(graph.output_q.name)
        if final is None:
            self.stopped = f"the output's integer tensor {graph.output_q.name} is not computed by any integer step"
            return
        ours = np.argmax(final.reshape(len(final), -1), axis=1)
        theirs = np.argmax(np.asarray(ort_output).reshape(len(ort_output), -1), axis=1)
        self.agree += int(np.sum(ours == theirs))
        self.images += len(x)

    def result(self) -> NetworkRun:
        steps = tuple(StepAgreement(s.name, s.kind, *self.tally[s.output.name]) for s in self.graph.steps)
        return NetworkRun(self.fixed, self.images, self.agree, steps, self.stopped)
