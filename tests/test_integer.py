"""The integer reference against onnxruntime's own integer kernels, and the fixed-point multiplier."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

from quantcore.backends import INTEGER_KERNELS, IntegerStep, IntTensor, kernel_ops, read_integer_graph
from quantcore.integer import accumulate, accumulator_bound, quantize_multiplier, run_step
from quantcore.integer.fixed_point import multiply_by_quantized_multiplier, signed_bits
from tests.integer_models import LayerCase, build_case


def _ort(model, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


CASES = (
    [
        LayerCase(form, act, "int8", per_channel, bias, stride, pad, weight_limit=limit)
        for form in ("QLinearConv", "QDQ Conv")
        for act, limit in (("uint8", 63), ("int8", 127))
        for per_channel in (False, True)
        for bias in (False, True)
        for stride, pad in ((1, 0), (2, 1))
    ]
    + [
        LayerCase(form, act, "int8", per_channel, bias, weight_limit=limit)
        for form in ("QGemm", "QDQ Gemm")
        for act, limit in (("uint8", 63), ("int8", 127))
        for per_channel in (False, True)
        for bias in (False, True)
    ]
    + [
        LayerCase("QLinearMatMul", "uint8", "int8", False, False, weight_limit=63),
        LayerCase("QLinearMatMul", "int8", "int8", False, False),
        LayerCase("QLinearConv", "uint8", "uint8", False, True, weight_limit=63),
    ]
)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reference_equals_onnxruntime(case: LayerCase) -> None:
    model, x = build_case(case)
    graph = read_integer_graph(model)
    assert len(graph.layers) == 1, graph.notes
    step = graph.layers[0]
    assert (step.bias is not None) == case.bias
    ours = run_step(step, [x], fixed=False)
    kernel = kernel_ops(model, ["y"])["y"]
    if kernel not in INTEGER_KERNELS:
        # onnxruntime keeps this QDQ group in float on this CPU (S8S8 Conv on x86): float rounding may move an
        # output by 1 LSB. The integer kernel it stands for is the QOperator form of the same numbers.
        assert case.form.startswith("QDQ") and kernel == "QuantizeLinear"
        as_float = _ort(model, x)
        assert np.abs(ours - as_float.astype(np.int64)).max() <= 1
        model, _ = build_case(LayerCase({"QDQ Conv": "QLinearConv", "QDQ Gemm": "QGemm"}[case.form], *[
            getattr(case, f) for f in ("activation", "weight", "per_channel", "bias", "stride", "pad",
                                       "weight_limit")]))  # fmt: skip
        assert kernel_ops(model, ["y"])["y"] in INTEGER_KERNELS
    theirs = _ort(model, x)
    assert ours.shape == theirs.shape
    mismatches = int(np.count_nonzero(ours != theirs.astype(np.int64)))
    assert mismatches == 0, f"{mismatches} of {ours.size} differ, max {np.abs(ours - theirs).max()} LSB"
    # The outputs must not be trivially saturated: the case exercises requantization, not clipping.
    info = np.iinfo(theirs.dtype)
    assert np.mean((theirs == info.min) | (theirs == info.max)) < 0.5


def _direct_accumulator(model_case: LayerCase, step, x: np.ndarray) -> np.ndarray:
    """Σ (x - zx)(w - zw) + b by explicit loops over the output positions (independent of the kernel)."""
    zx = step.inputs[0].zero_point
    w = step.weight.astype(np.int64) - step.weight_zero_point.reshape(-1, *([1] * (step.weight.ndim - 1)))
    xs = x.astype(np.int64) - zx
    bias = step.bias if step.bias is not None else np.zeros(step.channels, np.int64)
    if step.kind == "dense":
        return np.einsum("ni,oi->no", xs, w) + bias
    s, p = model_case.stride, model_case.pad
    xp = np.pad(xs, [(0, 0), (0, 0), (p, p), (p, p)])
    k = w.shape[2]
    ho = (xp.shape[2] - k) // s + 1
    wo = (xp.shape[3] - k) // s + 1
    out = np.zeros((len(x), step.channels, ho, wo), np.int64)
    for i in range(ho):
        for j in range(wo):
            window = xp[:, :, i * s : i * s + k, j * s : j * s + k]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", window, w)
    return out + bias.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("case", [CASES[7], CASES[15], CASES[-4]], ids=lambda c: c.id)
def test_accumulator_and_bound(case: LayerCase) -> None:
    model, x = build_case(case, seed=3)
    step = read_integer_graph(model).layers[0]
    acc = accumulate(step, x)
    assert np.array_equal(acc, _direct_accumulator(case, step, x))
    bound = accumulator_bound(step)
    assert np.all(np.abs(acc).max(axis=tuple(a for a in range(acc.ndim) if a != 1)) <= bound)
    # The bound is reached by the input that takes each weight's extreme: it is tight, not just safe.
    lo, hi = (np.iinfo(np.dtype(step.inputs[0].dtype)).min, np.iinfo(np.dtype(step.inputs[0].dtype)).max)
    w = step.weight.astype(np.int64)[0] - step.weight_zero_point[0]
    worst = np.where(w >= 0, hi, lo) if step.kind == "dense" else None
    if worst is not None:
        top = int((w * (worst - step.inputs[0].zero_point)).sum() + (step.bias[0] if step.bias is not None else 0))
        assert top <= bound[0]
        other = np.where(w >= 0, lo, hi)
        bottom = int((w * (other - step.inputs[0].zero_point)).sum() + (step.bias[0] if step.bias is not None else 0))
        assert max(abs(top), abs(bottom)) == bound[0]


CONV_CASES = [c for c in CASES if "Conv" in c.form]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c.id for c in CONV_CASES])
def test_both_engines_sum_exactly(case: LayerCase) -> None:
    """onnxruntime's float Conv and numpy's im2col give the very integers explicit loops give."""
    model, x = build_case(case, seed=5)
    step = read_integer_graph(model).layers[0]
    direct = _direct_accumulator(case, step, x)
    assert np.array_equal(accumulate(step, x, engine="numpy"), direct)
    assert np.array_equal(accumulate(step, x, engine="onnxruntime"), direct)


@pytest.mark.parametrize(
    ("group", "dilation", "auto_pad", "spatial"),
    [(4, 1, "NOTSET", 2), (1, 2, "NOTSET", 2), (1, 1, "SAME_UPPER", 2), (1, 1, "SAME_LOWER", 2),
     (2, 1, "NOTSET", 1), (1, 1, "VALID", 1)],
)  # fmt: skip
def test_engines_agree_on_grouped_dilated_and_auto_padded_convs(group, dilation, auto_pad, spatial) -> None:
    rng = np.random.default_rng(11)
    kernel = (3,) * spatial
    weight = rng.integers(-127, 128, (8, 8 // group, *kernel)).astype(np.int8)
    step = IntegerStep(
        "conv", "QLinearConv", "conv", (IntTensor("x", 0.1, 3, "uint8"),), IntTensor("y", 0.2, 0, "uint8"),
        weight=weight, weight_scale=np.full(8, 0.01, np.float32), weight_zero_point=np.zeros(8, np.int8),
        weight_dtype="int8", bias=rng.integers(-5000, 5000, 8).astype(np.int32),
        attrs={"strides": [2] * spatial, "dilations": [dilation] * spatial, "group": group, "auto_pad": auto_pad,
               "pads": [1] * (2 * spatial)},
    )  # fmt: skip
    x = rng.integers(0, 256, (3, 8, *([11] * spatial))).astype(np.uint8)
    numpy_acc = accumulate(step, x, engine="numpy")
    assert np.array_equal(accumulate(step, x, engine="onnxruntime"), numpy_acc)
    assert np.abs(numpy_acc).max() > 2**14  # large sums: an inexact engine would round some of them


def _tflite_quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier, transcribed line by line (std::frexp, TfLiteRound = round half away)."""
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = int(math.copysign(math.floor(abs(q * 2**31) + 0.5), q))
    assert q_fixed <= 2**31
    if q_fixed == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift = 0
        q_fixed = 0
    return q_fixed, shift


EDGE_MULTIPLIERS = [
    1 - 2**-40,  # just below 1: q rounds up to 1, M0 halves and the shift goes up
    1 - 2**-20,
    math.nextafter(1.0, 0.0),
    0.5, 0.25, 2.0**-20, 1.0,  # powers of two: M0 = 2**30 exactly
    1e-3, 3.2e-5, 2.0**-31, 2.0**-32, 1e-12,  # very small: at and beyond the shift limit
    0.7071067811865476, 0.123456789, 1.5, 0.0,
]  # fmt: skip


@pytest.mark.parametrize("m", EDGE_MULTIPLIERS)
def test_quantize_multiplier_matches_tflite(m: float) -> None:
    m0, shift = quantize_multiplier(m)
    assert (m0, shift) == _tflite_quantize_multiplier(m)
    assert 0 <= m0 <= 2**31 - 1
    if m0:
        assert m0 >= 2**30
        assert abs(m0 * 2.0 ** (shift - 31) - m) <= m * 2**-31


def test_quantize_multiplier_known_values() -> None:
    assert quantize_multiplier(0.5) == (2**30, 0)
    assert quantize_multiplier(0.25) == (2**30, -1)
    assert quantize_multiplier(1 - 2**-40) == (2**30, 1)
    assert quantize_multiplier(2.0**-32) == (2**30, -31)
    assert quantize_multiplier(2.0**-33) == (0, 0)
    with pytest.raises(ValueError):
        quantize_multiplier(-0.1)


def _tflite_multiply(x: int, m0: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier with gemmlowp's helpers, scalar and in Python integers."""
    left, right = max(shift, 0), max(-shift, 0)
    a = x * (1 << left)
    if a == m0 == -(2**31):
        high = 2**31 - 1
    else:
        ab = a * m0
        nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
        high = int((ab + nudge) / 2**31) if abs(ab + nudge) < 2**52 else (ab + nudge) // 2**31 if ab + nudge >= 0 \
            else -((-(ab + nudge)) // 2**31)  # fmt: skip
    mask = (1 << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if remainder > threshold else 0)


def test_fixed_point_multiply_matches_scalar_transcription() -> None:
    rng = np.random.default_rng(0)
    for m in (0.0123, 0.5, 1 - 2**-30, 3.2e-5, 1.7, 2.0**-31):
        m0, shift = quantize_multiplier(m)
        xs = np.concatenate([rng.integers(-(2**24), 2**24, 300), [0, 1, -1, 2**31 - 1, -(2**31), 12345, -12345]])
        if shift > 0:
            xs = np.clip(xs, -(2**30), 2**30 - 1)
        ours = multiply_by_quantized_multiplier(xs, np.int64(m0), np.int64(shift))
        theirs = np.array([_tflite_multiply(int(v), m0, shift) for v in xs])
        assert np.array_equal(ours, theirs), m
        # and it is the rounded product within one LSB
        assert np.all(np.abs(ours - np.round(xs * (m0 * 2.0 ** (shift - 31)))) <= 1)


def test_signed_bits() -> None:
    for magnitude in (0, 1, 127, 128, 32767, 32768, 2**23 - 1, 2**23, 2**31 - 1):
        bits = signed_bits(magnitude)
        assert -(2 ** (bits - 1)) <= -magnitude and magnitude <= 2 ** (bits - 1) - 1
        assert bits == 1 or not (magnitude <= 2 ** (bits - 2) - 1)


@pytest.mark.parametrize("m", [0.0123, 0.002, 0.3, 0.49999, 3.1e-4, 0.8, 2.0**-7])
def test_fixed_from_float_equals_full_fixed_point(m: float) -> None:
    """The shortcut (integers only near a rounding half) gives exactly the full fixed-point results."""
    from quantcore.integer.fixed_point import fixed_from_float, float_multiplier

    rng = np.random.default_rng(1)
    m32 = float_multiplier(1.0, np.array([m], np.float32), 1.0)[0]
    m0, shift = quantize_multiplier(float(m32))
    # accumulators spread over the output range, plus ones landing exactly on and next to rounding halves
    spread = rng.integers(-int(700 / m), int(700 / m), 20000)
    halves = np.round((np.arange(-300, 300) + 0.5) / m).astype(np.int64)
    acc = np.concatenate([spread, halves, halves - 1, halves + 1, [0, 1, -1, 2**24 - 1, -(2**24) + 1]])
    scaled = acc.astype(np.float32) * m32
    rounded = np.rint(scaled)
    fast = fixed_from_float(acc.astype(np.float32), scaled, rounded, np.int64(m0), np.int64(shift))
    full = multiply_by_quantized_multiplier(acc, np.int64(m0), np.int64(shift))
    small = np.abs(full) <= 600  # beyond, an 8-bit output saturates either way
    assert np.array_equal(fast[small].astype(np.int64), full[small])
    assert np.all(np.sign(fast[~small]) == np.sign(full[~small]))


def test_fixed_from_float_takes_each_values_own_channel() -> None:
    """Per-channel multipliers along axis 1 of an (N, C, H, W) accumulator: each value near a half is made
    with its own channel's M0 and shift, as the full fixed-point form makes it."""
    from quantcore.integer.fixed_point import fixed_from_float, quantize_multipliers

    rng = np.random.default_rng(3)
    multipliers = np.array([0.0123, 0.3, 0.49999, 3.1e-4, 2.0**-7], np.float32)
    m0, shift = quantize_multipliers(multipliers)
    channel = (1, -1, 1, 1)
    acc = rng.integers(-2000, 2000, (4, 5, 6, 7))
    # Half the values land next to a rounding half of their channel's multiplier.
    halves = np.round((rng.integers(-200, 200, acc.shape) + 0.5) / multipliers.reshape(channel)).astype(np.int64)
    acc = np.where(rng.random(acc.shape) < 0.5, halves + rng.integers(-1, 2, acc.shape), acc)
    scaled = acc.astype(np.float32) * multipliers.reshape(channel)
    rounded = np.rint(scaled)
    fast = fixed_from_float(acc.astype(np.float32), scaled, rounded, m0.reshape(channel).astype(np.int64),
                            shift.reshape(channel))  # fmt: skip
    full = multiply_by_quantized_multiplier(acc, m0.reshape(channel).astype(np.int64), shift.reshape(channel))
    small = np.abs(full) <= 600
    assert small.mean() > 0.5 and not np.array_equal(rounded[small], full[small]), "the shortcut is exercised"
    assert np.array_equal(fast[small].astype(np.int64), full[small])


@pytest.mark.parametrize("dtypes", [("uint8", "uint8", "uint8"), ("int8", "int8", "int8"), ("uint8", "int8", "int8")])
@pytest.mark.parametrize("relu", [False, True])
def test_an_add_looked_up_equals_its_arithmetic(dtypes: tuple[str, str, str], relu: bool) -> None:
    from quantcore.integer.network import _add

    a_type, b_type, out_type = dtypes
    rng = np.random.default_rng(7)
    zero = {"uint8": 131, "int8": -3}
    step = IntegerStep(
        "add", "QLinearAdd", "add",
        (IntTensor("a", 0.0213, zero[a_type], a_type), IntTensor("b", 0.0478, zero[b_type], b_type)),
        IntTensor("y", 0.0561, zero[out_type], out_type), relu=relu,
    )  # fmt: skip
    low_a, high_a = (0, 255) if a_type == "uint8" else (-128, 127)
    low_b, high_b = (0, 255) if b_type == "uint8" else (-128, 127)
    # every pair once, then a broadcast against one row, in the types the steps before hand over
    a = np.repeat(np.arange(low_a, high_a + 1), high_b - low_b + 1).reshape(2, 128, 1, -1).astype(np.int16)
    b = np.tile(np.arange(low_b, high_b + 1), high_a - low_a + 1).reshape(a.shape).astype(np.int64)
    row_b = rng.integers(low_b, high_b + 1, size=(1, 1, 1, a.shape[-1]))
    row_a = rng.integers(low_a, high_a + 1, size=(1, 128, 1, 1)).astype(np.int16)
    for fixed in (False, True):
        for x, y in ((a, b), (a, row_b), (row_a, b)):
            ours = run_step(step, [x, y], fixed=fixed)
            direct = _add(step, x.astype(np.int64), np.asarray(y, np.int64), fixed)
            assert ours.shape == direct.shape and np.array_equal(ours, direct)
            assert ours.dtype.kind == "i" and ours.dtype.itemsize >= 2  # 8-bit values with room for their sums


def test_an_add_into_a_wide_type_is_computed_not_looked_up() -> None:
    step = IntegerStep(
        "add", "QLinearAdd", "add", (IntTensor("a", 0.01, 0, "uint8"), IntTensor("b", 0.01, 0, "uint8")),
        IntTensor("y", 0.00005, 0, "uint16"),
    )  # fmt: skip
    a = np.array([[255, 0, 128]], np.int16)
    for fixed in (False, True):
        out = run_step(step, [a, a], fixed=fixed)
        assert out.tolist() == [[65535, 0, 51200]]  # 2·255·200 saturates at uint16's max, not wrapped to -1


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize(
    ("kernel", "strides", "pads", "dilations"),
    [([3, 3], [2, 2], [1, 1, 1, 1], [1, 1]), ([2, 2], [2, 2], [0, 0, 0, 0], [1, 1]), ([3, 2], [1, 2], [0, 1, 2, 0],
     [2, 1]), ([3], [2], [1, 0], [1])],
)  # fmt: skip
def test_a_max_pool_on_integers_equals_onnxruntimes(dtype: str, kernel, strides, pads, dilations) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    low, high = (0, 255) if dtype == "uint8" else (-128, 127)
    x = rng.integers(low, high + 1, size=(2, 3, *([9, 8][: len(kernel)]))).astype(dtype)
    onnx_type = TensorProto.UINT8 if dtype == "uint8" else TensorProto.INT8
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=kernel, strides=strides, pads=pads,
                            dilations=dilations)  # fmt: skip
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", onnx_type, None)],
                              [helper.make_tensor_value_info("y", onnx_type, None)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations, "auto_pad": "NOTSET"}
    same = IntTensor("x", 0.05, 7, dtype)
    step = IntegerStep("pool", "QDQ MaxPool", "max_pool", (same,), IntTensor("y", 0.05, 7, dtype), attrs=attrs)
    for fixed in (False, True):
        assert np.array_equal(run_step(step, [x.astype(np.int16)], fixed=fixed), theirs)
    # to another scale, as a graph written DequantizeLinear -> MaxPool -> QuantizeLinear computes it
    moved = IntegerStep("pool", "QDQ MaxPool", "max_pool", (same,), IntTensor("y", 0.1, 3, dtype), attrs=attrs)
    zero = numpy_helper.from_array(np.array(7, dtype), "zx"), numpy_helper.from_array(np.array(3, dtype), "zy")
    scales = numpy_helper.from_array(np.float32(0.05), "sx"), numpy_helper.from_array(np.float32(0.1), "sy")
    nodes = [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["fx"]),
             helper.make_node("MaxPool", ["fx"], ["fy"], kernel_shape=kernel, strides=strides, pads=pads,
                              dilations=dilations),
             helper.make_node("QuantizeLinear", ["fy", "sy", "zy"], ["y"])]  # fmt: skip
    qdq = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", onnx_type, None)],
                            [helper.make_tensor_value_info("y", onnx_type, None)], [*zero, *scales])  # fmt: skip
    qdq_model = helper.make_model(qdq, opset_imports=[helper.make_opsetid("", 13)])
    qdq_model.ir_version = 8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # each step as written
    written = ort.InferenceSession(qdq_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert np.array_equal(run_step(moved, [x.astype(np.int16)], fixed=False), written.run(None, {"x": x})[0])


def test_a_concat_on_integers_equals_onnxruntimes_qdq_concat() -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (2, 3, 4, 4)).astype(np.uint8)
    b = rng.integers(0, 256, (2, 5, 4, 4)).astype(np.uint8)
    qa, qb = IntTensor("a", 0.02, 120, "uint8"), IntTensor("b", 0.035, 90, "uint8")

    def onnxruntime(y: IntTensor, optimize: bool) -> np.ndarray:
        inits = [numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in (
            ("sa", qa.scale, np.float32), ("za", qa.zero_point, np.uint8), ("sb", qb.scale, np.float32),
            ("zb", qb.zero_point, np.uint8), ("sy", y.scale, np.float32), ("zy", y.zero_point, np.uint8))]  # fmt: skip
        nodes = [helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["fa"]),
                 helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"]),
                 helper.make_node("Concat", ["fa", "fb"], ["f"], axis=1),
                 helper.make_node("QuantizeLinear", ["f", "sy", "zy"], ["y"])]  # fmt: skip
        graph = helper.make_graph(nodes, "concat", [helper.make_tensor_value_info(n, TensorProto.UINT8, None)
                                                    for n in ("a", "b")],
                                  [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        options = ort.SessionOptions()
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, {"a": a, "b": b})[0].astype(np.int64)

    # one output scale equal to the first input's (a copy there), one to neither
    for y in (IntTensor("y", 0.02, 120, "uint8"), IntTensor("y", 0.05, 100, "uint8")):
        step = IntegerStep("cat", "QDQ Concat", "concat", (qa, qb), y, attrs={"axis": 1})
        for fixed in (False, True):
            ours = run_step(step, [a.astype(np.int16), b.astype(np.int16)], fixed=fixed)
            for optimize in (False, True):  # as written (float ops), and fused (QLinearConcat)
                diff = np.abs(ours - onnxruntime(y, optimize))
                if fixed:  # halves (0.7·k for k = 5, 15, ...) round away from zero here, to even in float
                    assert diff.max() == 1, optimize
                else:
                    assert diff.max() == 0, optimize
            assert np.array_equal(ours[:, :3], a) == (y.scale == qa.scale)  # the same scale: copied exactly
