"""The test zoo builds what it says: every model class loads, declares the input it claims, is quantized as named."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from quantcore.backends import backend_for
from quantcore.inspect.sqnr import sqnr_db
from quantcore.load import Status, VariantKey
from tests import zoo

ZooBuild = Callable[..., zoo.ZooModel]


def _ops(path: Any) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _run(path: Any, model: zoo.ZooModel, count: int = 4) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, feed)[0] for feed in model.feeds(count, seed=3)])


@pytest.mark.parametrize("name", sorted(zoo.BUILDERS))
def test_every_class_loads_declares_its_input_and_its_quantized_outputs_follow_the_float(
    zoo_build: ZooBuild, name: str
) -> None:
    model = zoo_build(name)
    variants = zoo.load(model)

    for key, path in model.files.items():
        record = variants.records[VariantKey(key)]
        assert record.status is Status.LOADED, (key, record.error)
        assert record.file == path.name
    onnx_model = variants[VariantKey.ONNX_FLOAT]
    declared = backend_for(onnx_model).inputs(onnx_model)[0]
    assert declared.name == model.input_name
    assert declared.dims == model.expect.shape
    reference = _run(model.files["onnx_float"], model)
    for key in ("onnx_int8", "onnx_uint8"):
        quantization = variants.records[VariantKey(key)].details["quantization"]
        fmt, acts, granularity = model.schemes[key].split()
        assert quantization["format"] == fmt
        assert quantization["activation_type"] == ("int8" if acts == "S8S8" else "uint8")
        assert quantization["granularity"] == granularity
        # A real quantization of the float model: its outputs follow the float's.
        assert sqnr_db(reference, _run(model.files[key], model)) > 10, key


def test_keras_export_keeps_batchnorm_as_mul_add_and_the_quantizer_folds_it(zoo_build: ZooBuild) -> None:
    model = zoo_build("keras_nhwc")
    float_ops, int8_ops = _ops(model.files["onnx_float"]), _ops(model.files["onnx_int8"])

    assert model.expect.layout == "NHWC" and model.expect.shape == (None, 32, 32, 3)
    assert float_ops["Mul"] == 4 and float_ops["Conv"] == 4 and float_ops["MatMul"] == 2
    assert float_ops["Transpose"] == 2 and float_ops["Reshape"] == 2  # the input, and the dense weights
    assert int8_ops["Mul"] == 0 and int8_ops["Conv"] == 4 and int8_ops["Gemm"] == 2  # folded and fused


def test_batchnorm_float_graph_keeps_its_batchnorm_nodes(zoo_build: ZooBuild) -> None:
    model = zoo_build("batchnorm_float")

    assert _ops(model.files["onnx_float"])["BatchNormalization"] == 3
    assert _ops(model.files["onnx_int8"])["BatchNormalization"] == 0


def test_fixed_batch_and_grey_inputs(zoo_build: ZooBuild) -> None:
    fixed, grey = zoo_build("fixed_batch"), zoo_build("grey")
    session = ort.InferenceSession(str(fixed.files["onnx_int8"]), providers=["CPUExecutionProvider"])

    assert session.get_inputs()[0].shape == [1, 3, 224, 224]
    assert [len(feed["input"]) for feed in fixed.feeds(3)] == [1, 1, 1]
    with pytest.raises(Exception, match=r"(?i)invalid|dimension"):
        session.run(None, {"input": fixed.inputs(2)})
    assert grey.expect.channels == 1 and grey.expect.size == (28, 28)


def test_softmax_classifier_outputs_probabilities(zoo_build: ZooBuild) -> None:
    model = zoo_build("softmax")

    for key in ("onnx_float", "onnx_int8"):
        assert onnx.load(str(model.files[key])).graph.node[-1].op_type in ("Softmax", "DequantizeLinear")
    np.testing.assert_allclose(_run(model.files["onnx_float"], model).sum(axis=1), 1.0, rtol=1e-5)
    assert model.expect.output == "probabilities"


def test_pixels_255_model_is_calibrated_for_0_to_255(zoo_build: ZooBuild) -> None:
    model = zoo_build("pixels_255")
    graph = onnx.load(str(model.files["onnx_uint8"])).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    first_q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    scripted = zoo.load(model)[VariantKey.PYTORCH_INT8]

    assert float(consts[first_q.input[1]]) * 255 == pytest.approx(255, rel=0.02)  # not 1/255
    quantize = next(n for n in scripted.inlined_graph.nodes() if n.kind() == "aten::quantize_per_tensor")
    scale = quantize.inputsAt(1)
    assert scale.node().kind() == "prim::GetAttr" or float(scale.toIValue()) > 1.0
    assert (model.expect.low, model.expect.high) == (0.0, 255.0)
    assert model.inputs(64).max() > 200


def test_qoperator_variants_use_qlinearconv_qgemm_and_qlinearmatmul(zoo_build: ZooBuild) -> None:
    for per_channel in (False, True):
        model = zoo_build("qoperator", per_channel=per_channel)
        graph = onnx.load(str(model.files["onnx_int8"])).graph
        consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        ops: dict[str, Any] = {}
        for node in graph.node:
            ops.setdefault(node.op_type, node)  # the first of each

        assert {"QLinearConv", "QGemm", "QLinearMatMul"} <= set(ops)
        assert consts[ops["QGemm"].input[4]].size == (10 if per_channel else 1)
        assert consts[ops["QLinearConv"].input[4]].size == (16 if per_channel else 1)
        assert consts[ops["QGemm"].input[3]].shape == (64, 10)  # stored (in, out): transB=0


def test_pad_wrapped_float_is_a_pickled_graph_module_calling_each_wrapper_as_one_module(
    zoo_build: ZooBuild,
) -> None:
    import torch

    model = zoo_build("pad_wrapped")
    variants = zoo.load(model)
    module = variants[VariantKey.PYTORCH_FLOAT]

    assert variants.records[VariantKey.PYTORCH_FLOAT].storage == "pickle"
    assert isinstance(module, torch.fx.GraphModule)
    called = [n.target for n in module.graph.nodes if n.op == "call_module"]
    assert called[0] == "Conv_0" and isinstance(module.get_submodule("Conv_0"), torch.nn.Sequential)
    x = torch.from_numpy(model.inputs(2))
    np.testing.assert_allclose(module(x).detach().numpy(), model.modules["pytorch_float"](x).detach().numpy())
    in_memory = zoo.with_modules(variants, {"pytorch_int8": model.modules["pytorch_int8"]})
    assert in_memory[VariantKey.PYTORCH_INT8] is model.modules["pytorch_int8"]


def test_conv1d_and_conv3d_int8_torchscript_hold_1d_and_3d_quantized_convs(zoo_build: ZooBuild) -> None:
    for name, op in (("conv1d", "quantized::conv1d"), ("conv3d", "quantized::conv3d")):
        scripted = zoo.load(zoo_build(name))[VariantKey.PYTORCH_INT8]
        kinds = {n.kind() for n in scripted.inlined_graph.nodes()}
        assert op in kinds or f"{op}_relu" in kinds, (name, sorted(k for k in kinds if "quantized" in k))


@pytest.mark.zoo
def test_a_model_zoo_topology_gets_seeded_weights_and_quantizes(zoo_build: ZooBuild) -> None:
    model = zoo_build("light_squeezenet")
    graph = onnx.load(str(model.files["onnx_float"])).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_w_0")]
    probabilities = _run(model.files["onnx_float"], model, count=2)

    assert not any(n.op_type == "ConstantOfShape" for n in graph.node)
    assert len(weights) == 26 and all(np.std(w) > 0 for w in weights)
    assert model.expect.shape == (1, 3, 224, 224) and model.expect.output == "probabilities"
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    assert _ops(model.files["onnx_int8"])["QuantizeLinear"] > 20
