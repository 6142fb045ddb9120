"""The integer view of the bundled ResNet8, checked against onnxruntime run directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from quantcore import load_model_variants
from quantcore.backends import read_integer_graph
from quantcore.evaluate.batches import sample_inputs
from quantcore.evaluate.inputs import input_spec, to_model_input, variant_spec
from quantcore.integer import IntegerReport, integer_view, run_step
from quantcore.load import VariantKey

BUNDLED = Path(__file__).resolve().parent.parent / "models" / "resnet8"
IMAGES = 16


@pytest.fixture(scope="module")
def variants():
    return load_model_variants(BUNDLED)


@pytest.fixture(scope="module")
def report(variants) -> IntegerReport:
    return integer_view(variants, images=IMAGES, batch_size=8, float_network=True)


def _session(model: onnx.ModelProto, outputs: list[str], *, optimize: bool = True) -> ort.InferenceSession:
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    tapped.graph.output.extend(onnx.ValueInfoProto(name=t) for t in outputs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(tapped.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _inputs(variants, key: VariantKey) -> np.ndarray:
    batches, _ = sample_inputs(variants, input_spec(variants), images=IMAGES)
    pixels, _ = batches.take(0, IMAGES)
    return to_model_input(pixels, variant_spec(variants, key))


def _direct(variants, key: VariantKey, tensors: list[str], *, optimize: bool = True) -> dict[str, np.ndarray]:
    model = variants.model(key)
    session = _session(model, tensors, optimize=optimize)
    values = session.run(tensors, {session.get_inputs()[0].name: _inputs(variants, key)})
    return dict(zip(tensors, values, strict=True))


def test_every_quantized_variant_is_read(report: IntegerReport) -> None:
    assert [str(v.variant) for v in report.variants] == ["onnx_int8", "onnx_uint8", "pytorch_int8"]
    # the TorchScript variant's interior uint8 inputs pass 127: said once, with what was measured
    assert len(report.notes) == 1 and report.notes[0].startswith("pytorch_int8: uint8 inputs of")
    assert report.notes[0].endswith("the largest mismatch of these layers on the samples is 1 LSB")
    for result in report.variants:
        assert len(result.layers) == 10  # nine convs and the dense layer
        assert result.layers[0].images == IMAGES


@pytest.mark.parametrize("key", [VariantKey.ONNX_INT8, VariantKey.ONNX_UINT8])
def test_bound_covers_observed_and_saturation_is_onnxruntimes(report: IntegerReport, variants, key) -> None:
    result = report.variant(key)
    outputs = [layer.output.name for layer in result.layers]
    direct = _direct(variants, key, outputs)
    for layer in result.layers:
        assert np.all(layer.observed <= layer.bound)
        assert layer.observed_bits <= layer.bound_bits
        y = direct[layer.output.name]
        info = np.iinfo(y.dtype)
        assert layer.saturation_max == pytest.approx(float(np.mean(y == info.max)))
        assert layer.saturation_min == pytest.approx(float(np.mean(y == info.min)))


def test_observed_accumulator_equals_onnxruntime_conv_integer(report: IntegerReport, variants) -> None:
    """ConvInteger / MatMulInteger (onnxruntime's own int32 kernels) on the same inputs give the same |acc| max."""
    result = report.variant(VariantKey.ONNX_UINT8)
    direct = _direct(variants, VariantKey.ONNX_UINT8, [layer.input.name for layer in result.layers])
    for layer in result.layers:
        step = layer.step
        x = direct[layer.input.name]
        inits = [
            onnx.numpy_helper.from_array(np.asarray(layer.input.zero_point, np.uint8), "xz"),
            onnx.numpy_helper.from_array(step.weight.astype(np.int8), "w"),
            onnx.numpy_helper.from_array(step.weight_zero_point.astype(np.int8)[:1], "wz"),
        ]
        if step.kind == "conv":
            attrs = {k: step.attrs[k] for k in ("strides", "pads", "dilations", "group")}
            node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["acc"], **attrs)
        else:
            inits[1] = onnx.numpy_helper.from_array(np.ascontiguousarray(step.weight.T.astype(np.int8)), "w")
            node = helper.make_node("MatMulInteger", ["x", "w", "xz", "wz"], ["acc"])
        assert np.all(step.weight_zero_point == 0)
        graph = helper.make_graph([node], "acc", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                                  [helper.make_tensor_value_info("acc", TensorProto.INT32, None)], inits)  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        acc = _session(model, []).run(None, {"x": x.reshape(len(x), -1) if step.kind == "dense" else x})[0]
        acc = acc.astype(np.int64) + step.bias.reshape(1, -1, *([1] * (acc.ndim - 2)))
        axes = tuple(a for a in range(acc.ndim) if a != 1)
        assert np.array_equal(np.abs(acc).max(axis=axes), layer.observed), step.name


@pytest.mark.parametrize("key", [VariantKey.ONNX_INT8, VariantKey.ONNX_UINT8])
def test_reference_computes_what_the_graph_specifies(variants, key) -> None:
    """Fed the unfused graph's own tensors (each QDQ step in float, as written), the reference differs by at most
    float rounding: 1 LSB, on a small share of values."""
    graph = read_integer_graph(variants.model(key))
    names = sorted({t.name for s in graph.layers for t in (*s.inputs, s.output)})
    direct = _direct(variants, key, names, optimize=False)
    for step in graph.layers:
        ours = run_step(step, [direct[step.inputs[0].name]], fixed=False)
        diff = np.abs(ours.astype(np.int64) - direct[step.output.name].astype(np.int64))
        assert diff.max() <= 1, step.name
        assert np.mean(diff) < 1e-3, step.name


def test_whole_network_agrees_or_says_where_it_diverges(report: IntegerReport, variants) -> None:
    for result in report.variants:
        for run in (result.network_fixed, result.network_float):
            assert run.stopped is None and run.images == IMAGES
            assert run.agreement == pytest.approx(run.top1_agree / IMAGES)
            if run.agreement < 1:
                assert run.first_mismatch is not None
    # int8 activations: the integer network answers as onnxruntime does on every sample
    assert report.variant(VariantKey.ONNX_INT8).network_fixed.agreement == 1.0
    # the first step's mismatches against onnxruntime's tensor, counted independently
    result = report.variant(VariantKey.ONNX_INT8)
    first = result.graph.steps[0]
    direct = _direct(variants, VariantKey.ONNX_INT8, [first.inputs[0].name, first.output.name])
    ours = run_step(first, [direct[first.inputs[0].name]], fixed=True)
    expected = int(np.count_nonzero(ours.astype(np.int64) != direct[first.output.name]))
    assert result.network_fixed.steps[0].mismatches == expected


def _torch_quantized(values: np.ndarray, tensor) -> torch.Tensor:
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(values), tensor.scale, tensor.zero_point)


def test_torchscript_layers_against_its_own_submodules(report: IntegerReport, variants) -> None:
    """The bundled TorchScript int8 model: every layer's figures from torch's integers, recomputed by calling
    the layer's own submodule on the quantized input and by numpy."""
    model = variants.model(VariantKey.PYTORCH_INT8)
    result = report.variant(VariantKey.PYTORCH_INT8)
    assert result.runtime.startswith("torch") and len(result.layers) == 10
    x = _inputs(variants, VariantKey.PYTORCH_INT8)
    first = result.layers[0].input
    quantized_input = torch.quantize_per_tensor(torch.from_numpy(x), first.scale, first.zero_point, torch.quint8)
    assert first.scale == pytest.approx(float(model.conv1_input_scale_0), rel=1e-7)
    taps = sorted({t.name for layer in result.layers for t in (layer.input, layer.output)})
    from quantcore.backends import integer_tapper_for, to_integers

    values = {t: to_integers(v) for t, v in integer_tapper_for(model, taps)(x).values.items()}
    assert np.array_equal(values[first.name], quantized_input.int_repr().numpy())
    for layer in result.layers:
        module = model
        for part in layer.step.name.split("."):
            module = getattr(module, part)
        q_in = _torch_quantized(values[layer.input.name], layer.input)
        theirs = module(q_in if layer.step.kind == "conv" else q_in.reshape(len(q_in), -1))
        assert (theirs.q_scale(), theirs.q_zero_point()) == pytest.approx((layer.output.scale, layer.output.zero_point))
        theirs = theirs.int_repr().numpy()
        assert np.array_equal(values[layer.output.name], theirs), layer.step.name
        ours = run_step(layer.step, [values[layer.input.name]], fixed=False)
        diff = np.abs(ours.astype(np.int64) - theirs)
        assert layer.float_mismatch.count == np.count_nonzero(diff), layer.step.name
        assert layer.float_mismatch.max_lsb == int(diff.max(initial=0)) <= 1
        assert layer.saturation_max == pytest.approx(float(np.mean(theirs == 255)))
        assert np.all(layer.observed <= layer.bound)


def test_torchscript_whole_network_against_torchs_answers(report: IntegerReport, variants) -> None:
    result = report.variant(VariantKey.PYTORCH_INT8)
    run = result.network_fixed
    assert run.stopped is None and run.images == IMAGES
    assert [s.kind for s in run.steps][-3:] == ["global_average_pool", "reshape", "dense"]
    model = variants.model(VariantKey.PYTORCH_INT8)
    x = _inputs(variants, VariantKey.PYTORCH_INT8)
    with torch.no_grad():
        torch_top1 = model(torch.from_numpy(x)).numpy().argmax(1)
    # the network's own output integers, step by step from the quantized input, in fixed point
    from quantcore.integer.network import quantize_input

    env = {result.graph.input_q.name: quantize_input(x, result.graph.input_q)}
    for step in result.graph.steps:
        env[step.output.name] = run_step(step, [env[t.name] for t in step.inputs], fixed=True)
    ours_top1 = env[result.graph.output_q.name].reshape(IMAGES, -1).argmax(1)
    assert run.top1_agree == int(np.sum(ours_top1 == torch_top1))


def _figures(result) -> list[tuple]:
    """Everything a variant's integer view measured on the samples, layer by layer and step by step."""
    layers = [
        (la.step.name, la.observed.tolist(), la.at_min.tolist(), la.at_max.tolist(), la.outputs_per_channel,
         la.float_mismatch, la.fixed_mismatch, la.images, la.input_seen)
        for la in result.layers
    ]  # fmt: skip
    runs = [(r.images, r.top1_agree, r.steps, r.stopped) for r in (result.network_fixed, result.network_float)]
    return layers + runs


def test_batches_shrink_to_the_activation_budget_and_nothing_measured_changes(report: IntegerReport, variants) -> None:
    from quantcore import settings

    before = settings.current()
    try:
        settings.configure(max_activation_bytes=3 * 2**20)  # ResNet8 takes about 3.6 MB an image here
        tight = integer_view(variants, images=IMAGES, batch_size=8, float_network=True)
    finally:
        settings.configure(**before.__dict__)
    assert {v.batch_size for v in report.variants} == {8}
    assert {v.batch_size for v in tight.variants} == {1}
    assert any("QP_MAX_ACTIVATION_MB" in n and "batches of 1 (not 8)" in n for n in tight.notes)
    for roomy, small in zip(report.variants, tight.variants, strict=True):
        assert _figures(roomy) == _figures(small)


def test_a_graph_that_fixes_its_batch_runs_in_whole_batches(report: IntegerReport, models_root: Path) -> None:
    import shutil

    folder = models_root / "resnet8"
    shutil.copytree(BUNDLED, folder)
    path = folder / "resnet8_int8.onnx"
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 3  # 16 images: five runs of 3, then 1 of 3
    onnx.save(model, str(path))
    fixed = integer_view(load_model_variants(folder), images=IMAGES, batch_size=8, float_network=True)
    result = fixed.variant(VariantKey.ONNX_INT8)
    assert result is not None and result.batch_size == 6  # the 8 asked for, in whole runs of 3
    assert _figures(result) == _figures(report.variant(VariantKey.ONNX_INT8))


@pytest.mark.parametrize(
    ("requested", "per_image", "budget", "multiple", "size", "note"),
    [
        (64, 1.0, 1000, 1, 64, None),  # room for all
        (64, 10.0, 100, 1, 10, "batches of 10 (not 64)"),
        (64, 10.0, 5, 1, 1, "one image alone is over it"),
        (64, 1.0, 1000, 3, 63, None),  # whole runs of 3: not the budget's doing, so no note
        (64, 10.0, 100, 3, 9, "batches of 9 (not 64)"),
        (64, 10.0, 20, 8, 8, "the 8 images the graph fixes as its batch alone is over it"),
    ],
)
def test_a_batch_fits_the_budget_in_whole_runs_and_its_note_says_the_size_used(
    requested: int, per_image: float, budget: int, multiple: int, size: int, note: str | None
) -> None:
    from quantcore.evaluate.batches import fitting_batch

    notes: list[str] = []
    assert fitting_batch(requested, per_image, budget, notes, multiple=multiple) == size
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and note in notes[0] and notes[0].startswith(f"batches of {size} ")
