"""The integer view on every model class of the zoo, each figure against an independent computation.

For each zoo class (per-tensor and per-channel) and each quantized variant it makes (ONNX S8S8 and U8S8, QDQ
or QOperator, and the FX int8 TorchScript variant where there is one):

- the view answers for it: the variant is in the report, or a note names it; every conv/dense layer the file
  holds (counted from the ONNX nodes or the TorchScript submodules, not by the app's readers) is a row, or a
  note names it;
- per layer, the runtime's own quantized input and output are tapped here (``session.run`` with the tensors
  as graph outputs; torch's outputs checked against the layer's own submodule), the accumulator is computed
  here in float64 by torch (exact for these sizes) or in int64 by numpy, and by onnxruntime's
  ``ConvInteger``/``MatMulInteger`` for U8S8: ``observed`` equals its |max| per channel, ``bound`` covers it,
  and the float-requantization mismatch count is recounted from it. Where onnxruntime runs a fused integer
  kernel there is no mismatch; elsewhere at most 1 LSB (a float layer's rounding; torch's float bias, see
  docs/INTEGER.md);
- the whole-network run reaches the output or stops with a reason the graph bears out (an op it does not
  compute is there); where it runs, the integer tensor it reads the answer from gives the model's own top-1,
  and where every layer is an integer kernel its agreement is 1.0;
- the firmware export: the C header compiles (``cc``) and equals the JSON, the JSON's weights and biases are
  the file's own, and the header's dimensions describe every weight.

A defect found is written as a test of the right behaviour, marked ``xfail(strict=True)`` through ``DEFECTS``
(none open).

The onnx model-zoo topologies take 12-30 s each for the integer view of 6 images at 224x224 on a 2-core
machine; only SqueezeNet runs here, per-tensor, on 2 images (ShuffleNet and Inception are left out for time).
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantcore
from quantcore.data import datasets
from quantcore.data.datasets import LabelledImages
from quantcore.integer import IntegerReport, integer_view
from quantcore.integer.export import write_exports
from quantcore.load import VariantKey
from tests import zoo
from tests.integer_models import compiled_header

ZooBuild = Callable[..., zoo.ZooModel]
IMAGES = 6
LIGHT_IMAGES = 2
KEYS = ("onnx_int8", "onnx_uint8", "pytorch_int8")
CLASSES = [f"{name}-{pc}" for name in sorted(zoo.BUILDERS) for pc in ("pt", "pc")] + ["light_squeezenet-pt"]
# Classes the zoo builds no PyTorch int8 variant for (an ONNX-only export or topology): not parametrized with it.
NO_TORCH = {"keras_nhwc", "qoperator", "light_squeezenet"}
TORCH_LAYERS = {"Conv1d", "Conv2d", "Conv3d", "ConvReLU1d", "ConvReLU2d", "ConvReLU3d", "Linear", "LinearReLU"}

# Defects found wrong by (class, variant), each a test of the right behaviour expected to fail: none open.
DEFECTS: dict[str, dict[tuple[str, str], str]] = {}


def _params(test: str) -> list[Any]:
    out = []
    for case in CLASSES:
        name = case.rsplit("-", 1)[0]
        for key in KEYS:
            if key == "pytorch_int8" and name in NO_TORCH:
                continue
            reason = DEFECTS.get(test, {}).get((name, key))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(case, key, marks=marks, id=f"{case}-{key}"))
    return out


@dataclass
class Case:
    model: zoo.ZooModel
    variants: Any
    report: IntegerReport
    x: np.ndarray  # the model input, made here from the stored samples (range and layout from the zoo's record)
    images: int


_CASES: dict[str, Case] = {}


def _make_case(case: str, zoo_build: ZooBuild, root: Path) -> Case:
    name, pc = case.rsplit("-", 1)
    options = {} if name.startswith("light_") else {"per_channel": pc == "pc"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = zoo_build(name, **options)
    folder = Path(shutil.copytree(built.folder, root / case))
    model = zoo.ZooModel(built.name, folder, {k: folder / p.name for k, p in built.files.items()}, built.expect,
                         built.schemes, {}, built.input_name)  # fmt: skip
    images = LIGHT_IMAGES if name.startswith("light_") else IMAGES
    expect = model.expect
    if expect.channels is None:  # features, signals, volumes: stored as float, fed as they are
        stored = model.inputs(images, seed=7)
        x = stored
    else:
        c, (h, w) = expect.channels, expect.size
        stored = np.random.default_rng(7).integers(0, 256, (images, c, h, w), dtype=np.uint8)
        x = stored.astype(np.float32) / 255 * (expect.high - expect.low) + expect.low
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if expect.layout == "NHWC" else x, dtype=np.float32)
    datasets.save_samples(folder / "samples.npz", LabelledImages(stored, np.zeros(images, np.int64), ("c0",)))
    variants = quantcore.load_model_variants(folder, trusted=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = integer_view(variants, images=images, batch_size=4, float_network=True)
    return Case(model, variants, report, x, images)


@pytest.fixture
def case(request: pytest.FixtureRequest, zoo_build: ZooBuild, tmp_path_factory: pytest.TempPathFactory) -> Case:
    name = request.param
    if name not in _CASES:
        _CASES[name] = _make_case(name, zoo_build, tmp_path_factory.mktemp("zoo_integer"))
    return _CASES[name]


def _quantized_keys(case: Case) -> list[str]:
    return [k for k in KEYS if k in case.model.files]


def _result(case: Case, key: str):
    assert key in case.model.files, f"{case.model.name} has no {key}: add it to NO_TORCH"
    result = case.report.variant(key)
    if result is None:
        pytest.skip(f"{key} is not in the report (test_every_variant_answers checks its note)")
    return result


# ------------------------------------------------------------------ direct runs, independent of the app


def _batches(case: Case) -> list[np.ndarray]:
    size = case.model.expect.fixed_batch or len(case.x)
    return [case.x[i : i + size] for i in range(0, len(case.x), size)]


def _onnx_run(case: Case, key: str, tensors: list[str]) -> dict[str, np.ndarray]:
    """The file through onnxruntime with ``tensors`` asked for as graph outputs (as a tapper would), batch by
    batch; ``"__output__"`` is the graph's first output."""
    model = onnx.load(str(case.model.files[key]))
    present = [o.name for o in model.graph.output]
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in dict.fromkeys(tensors) if t not in present)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [present[0], *[t for t in dict.fromkeys(tensors) if t != present[0]]]
    runs = [session.run(names, {case.model.input_name: x}) for x in _batches(case)]
    values = {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}
    values["__output__"] = values[present[0]]
    return values


def _torch_model(case: Case):
    return case.variants.model(VariantKey.PYTORCH_INT8)


def _torch_output(case: Case) -> np.ndarray:
    import torch

    model = _torch_model(case)
    with torch.no_grad():
        out = [model(torch.from_numpy(x)) for x in _batches(case)]
    return np.concatenate([(o.dequantize() if o.is_quantized else o).numpy() for o in out])


def _torch_taps(case: Case, tensors: list[str]) -> dict[str, np.ndarray]:
    """torch's own quantized tensors by their TorchScript names (read through the app's tapper: each layer's
    output is then checked against its own submodule called on the tapped input)."""
    from quantcore.backends import integer_tapper_for, to_integers

    tapper = integer_tapper_for(_torch_model(case), sorted(set(tensors)))
    runs = [{t: to_integers(v) for t, v in tapper(x).values.items()} for x in _batches(case)]
    return {t: np.concatenate([r[t] for r in runs]) for t in runs[0]}


def _submodule(case: Case, name: str):
    module = _torch_model(case)
    for part in name.split("."):
        module = getattr(module, part)
    return module


def _taps(case: Case, key: str, tensors: list[str]) -> dict[str, np.ndarray]:
    return _onnx_run(case, key, tensors) if key.startswith("onnx") else _torch_taps(case, tensors)


def _accumulator(layer, x: np.ndarray) -> np.ndarray:
    """Σ (x - z_x)(w - z_w) + b as int64: torch's float64 convolution (every partial sum far below 2^53),
    numpy's int64 matmul for dense layers."""
    import torch
    import torch.nn.functional as F

    step = layer.step
    shifted = x.astype(np.int64) - layer.input.zero_point
    w = step.weight.astype(np.int64) - step.weight_zero_point.reshape(-1, *([1] * (step.weight.ndim - 1)))
    bias = step.bias if step.bias is not None else np.zeros(step.channels, np.int64)
    if step.kind == "dense":
        return shifted.reshape(len(shifted), -1) @ w.T + bias
    spatial = w.ndim - 2
    attrs = step.attrs
    assert attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"), attrs
    pads = list(attrs["pads"]) if attrs.get("auto_pad", "NOTSET") == "NOTSET" else [0] * (2 * spatial)
    padded = np.pad(shifted, [(0, 0), (0, 0), *[(pads[i], pads[i + spatial]) for i in range(spatial)]])
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    acc = conv(torch.from_numpy(padded.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
               torch.from_numpy(bias.astype(np.float64)), stride=attrs["strides"], dilation=attrs["dilations"],
               groups=attrs["group"]).numpy()  # fmt: skip
    assert np.abs(acc).max(initial=0) < 2**52
    return np.rint(acc).astype(np.int64)


def _ort_integer_accumulator(layer, x: np.ndarray) -> np.ndarray:
    """onnxruntime's own int32 kernels, ConvInteger / MatMulInteger, on the same uint8 input, bias added."""
    step = layer.step
    inits = [
        numpy_helper.from_array(np.asarray(layer.input.zero_point, np.uint8), "xz"),
        numpy_helper.from_array(step.weight.astype(np.int8), "w"),
        numpy_helper.from_array(step.weight_zero_point.astype(np.int8)[:1], "wz"),
    ]
    if step.kind == "conv":
        attrs = {k: step.attrs[k] for k in ("strides", "pads", "dilations", "group")}
        node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["acc"], **attrs)
        feed = x
    else:
        inits[1] = numpy_helper.from_array(np.ascontiguousarray(step.weight.T.astype(np.int8)), "w")
        node = helper.make_node("MatMulInteger", ["x", "w", "xz", "wz"], ["acc"])
        feed = x.reshape(len(x), -1)
    graph = helper.make_graph([node], "acc", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("acc", TensorProto.INT32, None)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    acc = session.run(None, {"x": feed})[0].astype(np.int64)
    bias = step.bias if step.bias is not None else np.zeros(step.channels, np.int64)
    return acc + bias.reshape(1, -1, *([1] * (acc.ndim - 2)))


def _expected_layers(case: Case, key: str) -> list[str]:
    """The file's quantized conv/dense layers, read here: ONNX nodes, or TorchScript quantized submodules."""
    if key.startswith("onnx"):
        model = onnx.load(str(case.model.files[key]))
        consts = {t.name for t in model.graph.initializer}
        producer = {o: n for n in model.graph.node for o in n.output}
        names = []
        for node in model.graph.node:
            name = node.name or node.output[0]
            if node.op_type in ("QLinearConv", "QGemm", "QLinearMatMul"):
                names.append(name)
            elif node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1:
                dq_w, dq_x = producer.get(node.input[1]), producer.get(node.input[0])
                if (dq_w is not None and dq_w.op_type == "DequantizeLinear" and dq_w.input[0] in consts
                        and dq_x is not None and dq_x.op_type == "DequantizeLinear"):  # fmt: skip
                    names.append(name)
        return names
    return [n for n, m in _torch_model(case).named_modules() if getattr(m, "original_name", "") in TORCH_LAYERS]


# ------------------------------------------------------------------ 1. the view answers for every variant


@pytest.mark.parametrize("case", CLASSES, indirect=True)
def test_every_variant_answers(case: Case) -> None:
    """Each quantized file is in the report or named in a note; nothing else is in the report."""
    keys = _quantized_keys(case)
    assert keys, case.model.files
    assert {str(v.variant) for v in case.report.variants} <= set(keys)
    for key in keys:
        if case.report.variant(key) is None:
            assert any(n.startswith(f"{key}: ") for n in case.report.notes), (key, case.report.notes)
        else:
            assert case.report.variant(key).layers[0].images == case.images


@pytest.mark.parametrize(("case", "key"), _params("layers"), indirect=["case"])
def test_every_layer_of_the_file_is_a_row_or_a_note(case: Case, key: str) -> None:
    result = _result(case, key)
    rows = [la.step.name for la in result.layers]
    assert len(rows) == len(set(rows))
    notes = [n for n in case.report.notes if n.startswith(f"{key}: ")]
    for name in _expected_layers(case, key):
        assert name in rows or any(name in n for n in notes), (name, rows, notes)
    assert set(rows) <= set(_expected_layers(case, key))


@pytest.mark.parametrize(("case", "key"), _params("notes"), indirect=["case"])
def test_a_note_that_a_variant_has_no_layer_is_true(case: Case, key: str) -> None:
    """A variant left out as having no quantized conv/dense layer holds none."""
    assert key in case.model.files, f"{case.model.name} has no {key}: add it to NO_TORCH"
    if any(n == f"{key}: no quantized conv or dense layer with integer weights" for n in case.report.notes):
        assert _expected_layers(case, key) == []
    else:
        assert case.report.variant(key) is not None


# ------------------------------------------------------------------ 2-3. per-layer figures


def _pairs_clip_here(case: Case, key: str, layer: str) -> bool:
    """The variant's note says this CPU's fbgemm clips int16 pairs, and names this layer among those it can."""
    return any(n.startswith(f"{key}: uint8 inputs of") and f" {layer} " in n
               and ("this CPU has no VNNI" in n or "whether this CPU's kernels do is not known" in n)
               for n in case.report.notes)  # fmt: skip


@pytest.mark.parametrize(("case", "key"), _params("figures"), indirect=["case"])
def test_layer_figures_against_the_runtime_and_an_independent_accumulator(case: Case, key: str) -> None:
    result = _result(case, key)
    tensors = [t.name for la in result.layers for t in (la.input, la.output)]
    taps = _taps(case, key, tensors)
    for layer in result.layers:
        step = layer.step
        x, y = taps[layer.input.name], taps[layer.output.name].astype(np.int64)
        assert len(x) == case.images
        if key == "pytorch_int8":  # the tapped output is what the layer's own module makes of the tapped input
            import torch

            q_in = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), layer.input.scale,
                                                           layer.input.zero_point)  # fmt: skip
            theirs = _submodule(case, step.name)(q_in if step.kind == "conv" else q_in.reshape(len(x), -1))
            assert np.array_equal(theirs.int_repr().numpy().reshape(y.shape), y), step.name
            assert theirs.q_scale() == pytest.approx(layer.output.scale, rel=1e-6)
        acc = _accumulator(layer, x)
        assert acc.shape == y.shape, step.name
        axes = tuple(a for a in range(acc.ndim) if a != 1)
        assert np.array_equal(np.abs(acc).max(axis=axes), layer.observed), step.name
        assert np.all(layer.bound >= layer.observed), step.name
        # the bound, from the input type's range: Σ max(w'·lo, w'·hi) + b (and the min side), per channel
        lo, hi = (0, 255) if layer.input.dtype == "uint8" else (-128, 127)
        lo, hi = lo - layer.input.zero_point, hi - layer.input.zero_point
        w = step.weight.astype(np.int64) - step.weight_zero_point.reshape(-1, *([1] * (step.weight.ndim - 1)))
        w = w.reshape(step.channels, -1)
        b = step.bias if step.bias is not None else 0
        top, bottom = np.maximum(w * lo, w * hi).sum(1) + b, np.minimum(w * lo, w * hi).sum(1) + b
        assert np.array_equal(layer.bound, np.maximum(np.abs(top), np.abs(bottom))), step.name
        if key == "onnx_uint8" and np.all(step.weight_zero_point == 0):
            assert np.array_equal(_ort_integer_accumulator(layer, x), acc), step.name
        # the float requantization's mismatches, recounted from this accumulator
        m = (np.float32(layer.input.scale) * step.weight_scale.astype(np.float32)) / np.float32(layer.output.scale)
        low, high = (0, 255) if layer.output.dtype == "uint8" else (-128, 127)
        zero = layer.output.zero_point
        ours = np.rint(acc.astype(np.float32) * m.astype(np.float32).reshape(1, -1, *([1] * (acc.ndim - 2))))
        ours = np.clip(ours.astype(np.int64) + zero, max(low, zero) if step.relu else low, high)
        diff = np.abs(ours - y)
        assert layer.float_mismatch.count == int(np.count_nonzero(diff)), step.name
        assert layer.float_mismatch.max_lsb == int(diff.max(initial=0)), step.name
        assert layer.float_mismatch.values == y.size
        assert np.array_equal(layer.at_max, (y == high).sum(axis=axes)), step.name
        assert np.array_equal(layer.at_min, (y == low).sum(axis=axes)), step.name
        assert layer.outputs_per_channel == y.size // step.channels
        if not result.runs_float(layer) and result.runtime == "onnxruntime":
            assert layer.float_mismatch.count == 0, (step.name, result.kernel(layer))
        elif not _pairs_clip_here(case, key, step.name):
            # a float layer's rounding, or torch's float bias (docs/INTEGER.md): at most 1 LSB
            assert layer.float_mismatch.max_lsb <= 1, (step.name, result.kernel(layer))
        assert layer.fixed_mismatch.max_lsb <= 2, step.name


def test_int16_pair_clipping_is_said_where_it_can_happen(zoo_build: ZooBuild, tmp_path_factory) -> None:
    """On this CPU, either fbgemm sums in int32 (AVX512-VNNI) and torch layers differ by the float bias only
    (checked above: at most 1 LSB), or the variant's note says the pairs clip."""
    case = _CASES.get("grey-pt") or _make_case("grey-pt", zoo_build, tmp_path_factory.mktemp("zoo_integer"))
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    notes = [n for n in case.report.notes if n.startswith("pytorch_int8: uint8 inputs of")]
    result = case.report.variant("pytorch_int8")
    worst = max(la.float_mismatch.max_lsb for la in result.layers)
    assert len(notes) == 1 and notes[0].endswith(f"the largest mismatch of these layers on the samples is {worst} LSB")
    if "avx512_vnni" in flags:
        assert "this CPU has AVX512-VNNI" in notes[0] and worst <= 1
    elif "avx_vnni" in flags:
        assert "whether this CPU's kernels do is not known" in notes[0]
    elif "avx2" in flags:
        assert "this CPU has no VNNI" in notes[0]


# ------------------------------------------------------------------ 4. the whole network


def _stop_is_borne_out(case: Case, key: str, reason: str) -> bool:
    """The graph has what the reason says the network cannot compute."""
    if key.startswith("onnx"):
        model = onnx.load(str(case.model.files[key]))
        ops = {n.op_type for n in model.graph.node}
        first = [n for n in model.graph.node if case.model.input_name in n.input]
        float_input = not all(n.op_type == "QuantizeLinear" for n in first)
        return bool(ops & {"MaxPool", "Softmax", "Concat", "AveragePool"}) or float_input
    return bool(reason)


@pytest.mark.parametrize(("case", "key"), _params("network"), indirect=["case"])
def test_whole_network_reaches_the_models_answer(case: Case, key: str) -> None:
    result = _result(case, key)
    graph = result.graph
    for run in (result.network_fixed, result.network_float):
        if run.stopped is not None:
            assert run.images == 0 and run.agreement is None
            assert _stop_is_borne_out(case, key, run.stopped), run.stopped
            continue
        assert run.images == case.images
        assert 0 <= run.top1_agree <= case.images
    run = result.network_float
    if run.stopped is not None:
        return
    # the integer tensor the network answers from gives the model's own top-1 (a direct run)
    direct = _onnx_run(case, key, [graph.output_q.name]) if key.startswith("onnx") else None
    output = direct["__output__"] if direct is not None else _torch_output(case)
    ints = direct[graph.output_q.name] if direct is not None else _torch_taps(case, [graph.output_q.name])[
        graph.output_q.name]  # fmt: skip
    assert ints.reshape(len(ints), -1).shape == output.reshape(len(output), -1).shape, graph.output_q.name
    theirs_top1 = output.reshape(len(output), -1).argmax(1)
    assert np.array_equal(ints.reshape(len(ints), -1).argmax(1), theirs_top1)
    # the first step, from the input quantized here (as QuantizeLinear defines it), against the runtime's
    first = graph.steps[0]
    if first.is_layer and key.startswith("onnx"):
        q = graph.input_q
        low, high = (0, 255) if q.dtype == "uint8" else (-128, 127)
        quantized = np.clip(np.rint(case.x / np.float32(q.scale)).astype(np.int64) + q.zero_point, low, high)
        taps = _onnx_run(case, key, [first.inputs[0].name, first.output.name])
        assert np.array_equal(quantized, taps[first.inputs[0].name])
        layer = next(la for la in result.layers if la.step is first)
        assert run.steps[0].mismatches == layer.float_mismatch.count  # recounted in the test above
        assert run.steps[0].values == taps[first.output.name].size
    if run.first_mismatch is None:  # every step equal to the runtime's: the answers are the runtime's
        assert run.top1_agree == case.images
    if all(not result.runs_float(la) for la in result.layers):
        assert run.agreement == 1.0, (run.first_mismatch, run.steps)


# ------------------------------------------------------------------ 5. the firmware export


def _tflite_shift(m: float) -> tuple[int, int]:
    q, shift = math.frexp(m)
    fixed = math.floor(q * 2**31 + 0.5)
    if fixed == 2**31:
        fixed, shift = fixed // 2, shift + 1
    return (0, 0) if shift < -31 else (fixed, shift)


def _stored_weights(case: Case, key: str, name: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(weights in the canonical layout, integer bias, kind) as the file stores them."""
    if key.startswith("onnx"):
        model = onnx.load(str(case.model.files[key]))
        consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        producer = {o: n for n in model.graph.node for o in n.output}
        node = next(n for n in model.graph.node if (n.name or n.output[0]) == name)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type.startswith("Q"):  # QOperator: integers are the node's own inputs
            w = consts[node.input[3]]
            b_at = {"QLinearConv": 8, "QGemm": 6}.get(node.op_type)
            b = consts[node.input[b_at]] if b_at is not None and len(node.input) > b_at and node.input[b_at] else None
        else:
            w = consts[producer[node.input[1]].input[0]]
            b_node = producer.get(node.input[2]) if len(node.input) > 2 else None
            b = consts[b_node.input[0]] if b_node is not None else None
        conv = "Conv" in node.op_type
        if not conv and not attrs.get("transB", 0):
            w = w.T
        return w, None if b is None else b.astype(np.int64).reshape(-1), "conv" if conv else "dense"
    import torch

    module = _submodule(case, name)
    if module.original_name.startswith("Linear"):
        weight, bias = torch.ops.quantized.linear_unpack(module._packed_params._packed_params)
        kind = "dense"
    else:
        weight, bias = module._packed_params.unpack()
        kind = "conv"
    # torch holds a float bias: an int32 kernel takes round(bias / (s_in * s_w))
    x_scale = np.float32(next(la.input.scale for la in case.report.variant(key).layers if la.step.name == name))
    product = x_scale * weight.q_per_channel_scales().numpy().astype(np.float32)
    integer_bias = None if bias is None else np.rint(bias.detach().numpy() / product).astype(np.int64)
    integers = weight.int_repr().numpy()
    if module.original_name.endswith("1d"):  # torch packs a 1-D conv as a 2-D one over a height of 1
        assert integers.ndim == 4 and integers.shape[2] == 1, integers.shape
        integers = integers[:, :, 0]
    return integers, integer_bias, kind


@pytest.mark.parametrize(("case", "key"), _params("export"), indirect=["case"])
def test_export_header_compiles_and_equals_json_and_the_file(case: Case, key: str, tmp_path: Path) -> None:
    result = _result(case, key)
    write_exports([result], tmp_path)
    header, data = tmp_path / f"{key}.h", json.loads((tmp_path / f"{key}.json").read_text())
    arrays, defines = compiled_header(header, tmp_path)
    assert [la["name"] for la in data["layers"]] == [la.step.name for la in result.layers]
    for layer in data["layers"]:
        base = f"{key}_{layer['identifier']}"
        upper = base.upper()
        c_type, count, weights = arrays[f"{base}_weights"]
        assert c_type == f"{layer['weights']['dtype']}_t" and count == len(weights)
        assert weights == layer["weights"]["values"]
        assert arrays.get(f"{base}_bias", (None, None, None))[2] == layer["bias"]
        assert arrays[f"{base}_m0"][2] == layer["m0"] and arrays[f"{base}_shift"][2] == layer["shift"]
        assert arrays[f"{base}_weight_zero_point"][2] == layer["weights"]["zero_point"]
        assert defines[f"{upper}_INPUT_ZERO_POINT"] == layer["input"]["zero_point"]
        assert defines[f"{upper}_OUTPUT_ZERO_POINT"] == layer["output"]["zero_point"]
        # the file's own integers, in the exported layout (channels last for conv, (out, in) for dense)
        stored, bias, kind = _stored_weights(case, key, layer["name"])
        assert layer["kind"] == kind
        laid_out = np.moveaxis(stored, 1, -1) if kind == "conv" else stored
        assert layer["weights"]["shape"] == list(laid_out.shape)
        assert layer["weights"]["values"] == laid_out.reshape(-1).astype(int).tolist(), layer["name"]
        if bias is not None:
            assert layer["bias"] == bias.tolist(), layer["name"]
        scales = layer["weights"]["scale"]
        expected = [_tflite_shift(float(np.float32(layer["input"]["scale"])) * float(np.float32(s))
                                  / float(np.float32(layer["output"]["scale"]))) for s in scales]  # fmt: skip
        assert list(zip(layer["m0"], layer["shift"], strict=True)) == expected, layer["name"]
        # the header's dimensions describe every weight: out x kernel... x in
        dims = [v for k, v in defines.items() if k.startswith(f"{upper}_KERNEL_")]
        assert defines[f"{upper}_OUT_CHANNELS"] * defines[f"{upper}_IN_CHANNELS"] * int(np.prod(dims)) == count
        if kind == "conv":
            spatial = stored.ndim - 2
            assert len(dims) == spatial, (layer["name"], sorted(k for k in defines if k.startswith(upper)))
            strides = [v for k, v in defines.items() if k.startswith(f"{upper}_STRIDE_")]
            assert strides == layer["attributes"]["strides"]
