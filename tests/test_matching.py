"""Layer matching on real exports: every model class of the zoo has every weighted layer matched in every
variant, each quantized layer's weights are its float counterpart's (>= 30 dB), and what cannot be read is
shown with its reason. Each check is against an independent reading of the files (numpy over the ONNX
initializers, torch's own BN fusion, the eager modules)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantcore.inspect.layer_table import LayerTable, build_layer_table, in_row_order
from quantcore.inspect.weights import compare_weights
from quantcore.load import VariantKey
from quantcore.report import tables
from tests import zoo

ZooBuild = Callable[..., zoo.ZooModel]
CLASSES = [(name, False) for name in sorted(zoo.BUILDERS)] + [
    ("qoperator", True), ("keras_nhwc", True), ("batchnorm_float", True), ("conv1d", True),
]  # fmt: skip


def _table(model: zoo.ZooModel) -> LayerTable:
    return build_layer_table(zoo.load(model))


def _consts(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize(("name", "per_channel"), CLASSES, ids=[f"{n}-{'pc' if p else 'pt'}" for n, p in CLASSES])
def test_every_layer_is_matched_in_every_variant_and_quantized_weights_follow_the_float(
    zoo_build: ZooBuild, name: str, per_channel: bool
) -> None:
    model = zoo_build(name, per_channel=per_channel)
    table = _table(model)

    assert {str(k) for k in table.variants} == set(model.files), table.notes
    assert not table.unreadable and not [n for n in table.notes if "matched no other" in n], table.notes
    for row in table.rows:
        assert {str(k) for k in row.layers} == set(model.files), row.label
        # One layer per row: every variant's reading of it carries the same name once normalised.
        assert len({layer.match_key for layer in row.layers.values()}) == 1, [x.name for x in row.layers.values()]
        comparison = compare_weights(table, row.index)
        for series in comparison.series:
            if series.layer.quantized:
                assert series.stats["sqnr_db"] is not None, (row.label, series.variant, comparison.notes)
                assert series.stats["sqnr_db"] == "inf" or series.stats["sqnr_db"] >= 30, (row.label, series.variant)
    assert table.matched() == {str(k): {"layers": len(table.rows), "matched": len(table.rows)} for k in table.variants}


def test_keras_batchnorm_as_mul_add_is_part_of_the_layer_and_folded_as_the_quantizer_folds_it(
    zoo_build: ZooBuild,
) -> None:
    model = zoo_build("keras_nhwc")
    table = _table(model)
    consts = _consts(model.files["onnx_float"])
    conv1 = table.rows[0].layers[VariantKey.ONNX_FLOAT]

    assert conv1.fused == ("Mul", "Add", "Relu") and conv1.tap == "model/relu1_out"
    expected = consts["model/conv1/kernel"] * consts["model/bn1/scale"].reshape(8, 1, 1, 1)
    np.testing.assert_allclose(conv1.comparable_weight, expected, rtol=1e-6)
    np.testing.assert_allclose(conv1.fold_factor, consts["model/bn1/scale"].reshape(-1), rtol=1e-6)
    # The quantized conv holds the folded weights: against them it is ~40 dB, against the unfolded ~10 dB.
    stats = {s.variant: s.stats for s in compare_weights(table, 0).series}
    assert stats[VariantKey.ONNX_INT8]["sqnr_db"] > 30 and stats[VariantKey.ONNX_INT8]["fraction_clipped"] < 0.01


def test_classifier_weights_through_a_transpose_and_a_reshape_are_read(zoo_build: ZooBuild) -> None:
    model = zoo_build("keras_nhwc")
    table = _table(model)
    consts = _consts(model.files["onnx_float"])
    dense = [row.layers[VariantKey.ONNX_FLOAT] for row in table.rows if row.primary.kind == "dense"]

    assert [d.name for d in dense] == ["model/dense1/matmul", "model/dense2/matmul"]
    # dense1 is stored (out, in) and transposed in the graph; dense2 is stored flat and reshaped to (in, out).
    np.testing.assert_array_equal(dense[0].weight, consts["model/dense1/kernel_t"])
    np.testing.assert_array_equal(dense[1].weight, consts["model/dense2/kernel_flat"].reshape(16, 10).T)
    assert dense[0].fused == ("Add", "Relu") and dense[1].fused == ("Add",)


def test_a_float_graph_keeping_batchnormalization_is_folded_as_torch_fuses_it(zoo_build: ZooBuild) -> None:
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    model = zoo_build("batchnorm_float")
    table = _table(model)
    module = model.modules["pytorch_float"]

    for row in table.rows:
        layer = row.layers[VariantKey.ONNX_FLOAT]
        name = row.layers[VariantKey.PYTORCH_FLOAT].name
        bn = getattr(module, "bn" + name.removeprefix("conv"), None) if name.startswith("conv") else None
        if row.primary.kind != "conv" or bn is None:
            assert layer.folded_weight is None, row.label
            continue
        conv = getattr(module, name)
        fused, _ = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight,
                                        bn.bias)  # fmt: skip
        assert layer.fused[0] == "BatchNormalization"
        np.testing.assert_allclose(layer.comparable_weight, fused.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_same_depth_siblings_stay_aligned_when_the_quantizer_reorders_them(zoo_build: ZooBuild) -> None:
    model = zoo_build("batchnorm_float")
    table = _table(model)
    order = {key: [n.name for n in onnx.load(str(model.files[key])).graph.node if n.op_type == "Conv"]
             for key in ("onnx_float", "onnx_int8")}  # fmt: skip

    # The quantizer's pre-processing writes the shortcut before conv2; the rows keep them apart and paired.
    assert order["onnx_float"].index("/shortcut/Conv") > order["onnx_float"].index("/conv2/Conv")
    assert order["onnx_int8"].index("/shortcut/Conv") < order["onnx_int8"].index("/conv2/Conv")
    names = [{str(k): layer.name for k, layer in row.layers.items()} for row in table.rows]
    assert [n["pytorch_float"] for n in names] == ["conv1", "conv2", "shortcut", "conv3", "fc"]
    assert [n["onnx_int8"] for n in names] == [
        "/conv1/Conv",
        "/conv2/Conv",
        "/shortcut/Conv",
        "/conv3/Conv",
        "/fc/Gemm",
    ]


def test_same_shaped_siblings_with_unrelated_names_are_paired_by_their_weights(tmp_path: Path) -> None:
    """Two branches of one shape, written in the other order under other names: only the weights can tell."""
    from quantcore.inspect.layer_table import extract_layers

    rng = np.random.default_rng(0)
    weights = {"left": rng.normal(size=(4, 3, 3, 3)), "right": rng.normal(size=(4, 3, 3, 3))}

    def graph(order: tuple[str, str], names: dict[str, str]) -> onnx.ModelProto:
        nodes, inits = [], []
        for branch in order:
            nodes.append(helper.make_node("Conv", ["input", f"{branch}.w"], [f"{branch}.y"], name=names[branch],
                                          pads=[1] * 4))  # fmt: skip
            inits.append(numpy_helper.from_array(weights[branch].astype(np.float32), f"{branch}.w"))
        nodes.append(helper.make_node("Add", ["left.y", "right.y"], ["output"]))
        inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])]
        outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])]
        g = helper.make_graph(nodes, "g", inputs, outputs, inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    rows, _ = extract_layers(graph(("left", "right"), {"left": "a", "right": "b"}))
    other, _ = extract_layers(graph(("right", "left"), {"left": "Conv_7", "right": "Conv_3"}))

    assert [layer.name for layer in other] == ["Conv_3", "Conv_7"]
    assert [layer.name for layer in in_row_order(rows, other)] == ["Conv_7", "Conv_3"]


def test_per_channel_qoperator_qgemm_qlinearmatmul_and_qlinearconv_dequantize_as_numpy_does(
    zoo_build: ZooBuild,
) -> None:
    model = zoo_build("qoperator", per_channel=True)
    table = _table(model)
    graph = onnx.load(str(model.files["onnx_int8"])).graph
    consts = _consts(model.files["onnx_int8"])

    for row in table.rows:
        layer = row.layers[VariantKey.ONNX_INT8]
        node = next(n for n in graph.node if (n.name or n.output[0]) == layer.name)
        w, scale, zero = (consts[node.input[i]] for i in (3, 4, 5))
        if node.op_type == "QLinearConv":
            expected = (w.astype(np.float64) - zero.reshape(-1, 1, 1, 1)) * scale.reshape(-1, 1, 1, 1)
        else:  # (in, out), one scale per output column; the layer holds it as (out, in)
            expected = ((w.astype(np.float64) - zero.reshape(1, -1)) * scale.reshape(1, -1)).T
        np.testing.assert_allclose(layer.weight, expected, rtol=1e-6, atol=1e-9)
        assert layer.weight_q.axis == 0 and (node.op_type == "QLinearMatMul" or layer.weight_q.per_channel)


def test_torchscript_int8_conv1d_weights_are_three_dimensional(zoo_build: ZooBuild) -> None:
    model = zoo_build("conv1d")
    table = _table(model)
    eager = model.modules["pytorch_int8"]
    scripted = table.rows[0].layers[VariantKey.PYTORCH_INT8]

    assert scripted.weight_shape == (8, 4, 5) and scripted.weight_int.shape == (8, 4, 5)
    np.testing.assert_array_equal(scripted.weight, eager.conv1.weight().dequantize().numpy())
    np.testing.assert_array_equal(scripted.weight_int, eager.conv1.weight().int_repr().numpy())


def test_a_conv_wrapped_with_its_pad_is_read_inside_the_wrapper_and_tapped_at_it(zoo_build: ZooBuild) -> None:
    model = zoo_build("pad_wrapped")
    table = _table(model)
    wrapped = table.rows[0].layers[VariantKey.PYTORCH_FLOAT]
    module = model.modules["pytorch_float"]

    assert wrapped.name == "Conv_0.1" and wrapped.op == "Conv2d"
    assert wrapped.input_tap == "Conv_0#input" and wrapped.tap == "Relu_0"
    np.testing.assert_array_equal(wrapped.weight, module.get_submodule("Conv_0.1").weight.detach().numpy())
    assert table.rows[1].layers[VariantKey.PYTORCH_FLOAT].tap == "Identity_0"  # through Relu_1 and the Identity


def _unreadable_graph(path: Path) -> None:
    """conv1's weights are a Mul of two constants (nothing folds it); conv2 is plain."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("w1a", (4, 3, 3, 3)), ("w1b", (4, 3, 3, 3)), ("w2", (4, 4, 3, 3)))]  # fmt: skip
    nodes = [
        helper.make_node("Mul", ["w1a", "w1b"], ["w1"], name="make_w1"),
        helper.make_node("Conv", ["input", "w1"], ["y1"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["y1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["output"], name="conv2", pads=[1] * 4),
    ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 8, 8])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 4, 8, 8])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_a_layer_whose_weights_cannot_be_read_is_shown_with_the_reason(models_root: Path) -> None:
    import quantcore
    from quantcore.inspect.drift import layer_drift

    folder = models_root / "odd"
    folder.mkdir()
    _unreadable_graph(folder / "odd.onnx")
    _unreadable_graph(folder / "odd_int8.onnx")
    variants = quantcore.load_model_variants(folder)
    table = build_layer_table(variants)

    first = table.rows[0].layers[VariantKey.ONNX_FLOAT]
    assert len(table.rows) == 2 and set(table.rows[0].layers) == {VariantKey.ONNX_FLOAT, VariantKey.ONNX_INT8}
    assert first.problem == "its weights are made by a Mul node (make_w1)" and first.tap == "r1"
    assert "onnx_float: conv1's weights cannot be read — its weights are made by a Mul node (make_w1)" in table.notes
    record = next(r for r in tables.layer_rows(table) if r["#"] == 1 and r["variant"] == "onnx_float")
    assert record["dtype"] == "weights unreadable: its weights are made by a Mul node (make_w1)"
    assert table.detail(0)["variants"]["onnx_int8"]["problem"] == first.problem
    assert any("weights cannot be read" in n for n in compare_weights(table, 0).notes)
    # Its activations are still there to compare: the same graph twice reads infinite SQNR at both layers.
    report = layer_drift(variants, table=table, images=2, include_float=False)
    assert report.variants and report.variants[0].sqnr_db == (float("inf"), float("inf"))


def test_a_variant_whose_layers_cannot_be_read_is_listed_with_the_reason_on_every_row(zoo_build: ZooBuild) -> None:
    table = _table(zoo_build("mlp"))
    reason = "its layers could not be read: bad graph"
    readable = tuple(k for k in table.variants if k is not VariantKey.PYTORCH_INT8)
    broken = LayerTable(table.skeleton, readable, table.rows, table.notes, {VariantKey.PYTORCH_INT8: reason})

    records = [r for r in tables.layer_rows(broken) if r["variant"] == "pytorch_int8"]
    assert [r["counterpart"] for r in records] == [f"not read: {reason}"] * len(table.rows)
    assert broken.matched()["pytorch_int8"] == {"layers": 0, "matched": 0, "unreadable": reason}
    assert broken.detail(0)["variants"]["pytorch_int8"] == {"matched": False, "unreadable": reason}
