"""The layer table: every variant's layers read, matched across formats, with their scales and zero points."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import quantcore
from quantcore.inspect.layer_table import LayerTable, align, build_layer_table, extract_layers
from quantcore.inspect.sqnr import sqnr_db
from quantcore.load import VariantKey
from quantcore.report import tables

BUNDLED = Path(__file__).resolve().parent.parent / "models" / "resnet8"
QUANTIZED = [VariantKey.ONNX_INT8, VariantKey.ONNX_UINT8, VariantKey.PYTORCH_INT8]
RESNET8_LAYERS = [
    "conv1", "stack1.conv1", "stack1.conv2", "stack2.conv1", "stack2.shortcut", "stack2.conv2",
    "stack3.conv1", "stack3.shortcut", "stack3.conv2", "fc",
]  # fmt: skip


def _table(folder: Path) -> LayerTable:
    return build_layer_table(quantcore.load_model_variants(folder))


def _quantize_qoperator(source: Path, target: Path, *, per_channel: bool = True) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    quantize_static(
        str(source), str(target), Reader(), quant_format=QuantFormat.QOperator,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
    )  # fmt: skip


def _assert_weights_follow_reference(table: LayerTable, keys: list[VariantKey]) -> None:
    """Each matched quantized layer's weights are its reference's, quantized: a wrong match would be ~0 dB."""
    for row in table.rows:
        for key in keys:
            layer = row.layers[key]
            reference = row.layers[table.reference(key)]
            assert sqnr_db(reference.comparable_weight, layer.weight) > 30, (row.primary.name, key)


# ------------------------------------------------------------------------- tiny


def test_every_layer_of_the_tiny_variants_is_matched_in_order(variant_folder: Path) -> None:
    table = _table(variant_folder)

    assert table.skeleton is VariantKey.PYTORCH_FLOAT
    assert [row.primary.name for row in table.rows] == RESNET8_LAYERS
    assert all(set(row.layers) == set(VariantKey) for row in table.rows)
    assert [row.primary.kind for row in table.rows].count("conv") == 9
    assert table.rows[-1].primary.kind == "dense"
    # Names differ across formats; matching is by topology and shape, and lands on the same module.
    assert [row.layers[VariantKey.ONNX_INT8].name for row in table.rows][:2] == ["/conv1/Conv", "/stack1/conv1/Conv"]
    assert table.matched()["onnx_uint8"] == {"layers": 10, "matched": 10}
    _assert_weights_follow_reference(table, QUANTIZED)


def test_float_pytorch_batchnorm_is_folded_to_the_exported_onnx_weights(variant_folder: Path) -> None:
    table = _table(variant_folder)

    for row in table.rows:
        torch_layer, onnx_layer = row.layers[VariantKey.PYTORCH_FLOAT], row.layers[VariantKey.ONNX_FLOAT]
        if row.primary.kind == "conv" and "shortcut" not in row.primary.name:
            assert torch_layer.folded_weight is not None
            assert torch_layer.fused[0].startswith("BatchNorm2d")
        np.testing.assert_allclose(onnx_layer.weight, torch_layer.comparable_weight, rtol=1e-4, atol=1e-6)
    assert any("folded" in note for note in table.notes)


def test_qdq_weights_dequantize_as_onnxruntime_matches_them(variant_folder: Path) -> None:
    """onnxruntime's own name-based weight matching agrees with our topology-based one."""
    from onnxruntime.quantization.qdq_loss_debug import create_weight_matching

    table = _table(variant_folder)
    ort_matches = create_weight_matching(str(variant_folder / "tiny.onnx"), str(variant_folder / "tiny_int8.onnx"))
    ort_weights = [m for m in ort_matches.values() if m["float"].ndim > 1]
    assert len(ort_weights) == len(table.rows)
    for row in table.rows:
        ours = row.layers[VariantKey.ONNX_INT8]
        reference = row.layers[VariantKey.ONNX_FLOAT].weight
        hits = [m for m in ort_weights if m["dequantized"].shape == ours.weight.shape
                and np.allclose(m["dequantized"], ours.weight) and np.allclose(m["float"], reference)]  # fmt: skip
        assert len(hits) == 1, row.primary.name


def test_qdq_activation_scales_come_from_the_graph(variant_folder: Path) -> None:
    table = _table(variant_folder)
    model = onnx.load(str(variant_folder / "tiny_uint8.onnx"))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    first = table.rows[0].layers[VariantKey.ONNX_UINT8]

    assert first.input_q is not None and first.output_q is not None
    assert first.input_q.scale[0] == pytest.approx(float(consts["input_scale"]))
    assert first.input_q.dtype == "uint8" and first.weight_q is not None and first.weight_q.dtype == "int8"
    # ORT drops the ReLU after conv1: its output quantizer sits on the ReLU's output name.
    assert first.output_q.scale[0] == pytest.approx(float(consts["/relu/Relu_output_0_scale"]))
    assert table.rows[1].layers[VariantKey.ONNX_UINT8].input_q.scale[0] == pytest.approx(first.output_q.scale[0])


def test_torchscript_int8_scales_match_the_scripted_modules(variant_folder: Path) -> None:
    table = _table(variant_folder)
    scripted = torch.jit.load(str(variant_folder / "tiny_int8.pt"))
    conv1 = table.rows[0].layers[VariantKey.PYTORCH_INT8]
    conv2 = table.rows[2].layers[VariantKey.PYTORCH_INT8]

    assert conv1.op == "ConvReLU2d" and conv1.weight_q is not None and conv1.weight_q.per_channel
    assert conv1.weight_q.scale.size == 16 and conv1.weight_q.axis == 0
    assert conv1.input_q.scale[0] == pytest.approx(float(scripted.conv1_input_scale_0))
    assert conv1.output_q.scale[0] == pytest.approx(scripted.conv1.scale)
    assert conv2.output_q.zero_point[0] == scripted.stack1.conv2.zero_point
    assert conv2.input_q.scale[0] == pytest.approx(table.rows[1].layers[VariantKey.PYTORCH_INT8].output_q.scale[0])


def test_an_fx_int8_state_dict_is_read_through_its_graph_module(variant_folder: Path) -> None:
    from quantcore.models.registry import quantize_fx

    float_model = quantcore.load_pytorch_model(variant_folder / "tiny.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = quantize_fx(float_model, torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    (variant_folder / "tiny_int8.pt").unlink()
    torch.save({"arch": "resnet8", "state_dict": quantized.state_dict()}, variant_folder / "tiny_int8.pt")
    table = _table(variant_folder)

    assert quantcore.load_model_variants(variant_folder).records[VariantKey.PYTORCH_INT8].storage == "state_dict"
    int8 = [row.layers[VariantKey.PYTORCH_INT8] for row in table.rows]
    assert [layer.name for layer in int8] == RESNET8_LAYERS
    assert int8[0].op == "QuantizedConvReLU2d" and all(layer.input_q is not None for layer in int8)
    assert int8[0].input_q.scale[0] == pytest.approx(float(quantized.conv1_input_scale_0))
    _assert_weights_follow_reference(table, [VariantKey.PYTORCH_INT8])


def test_qoperator_graphs_are_matched_and_dequantized(variant_folder: Path) -> None:
    _quantize_qoperator(variant_folder / "tiny.onnx", variant_folder / "tiny_uint8.onnx")
    table = _table(variant_folder)
    qop = [row.layers.get(VariantKey.ONNX_UINT8) for row in table.rows]

    assert all(layer is not None for layer in qop)
    assert [layer.op for layer in qop] == ["QLinearConv"] * 9 + ["QGemm"]
    assert qop[0].weight_q.per_channel and qop[0].weight_q.scale.size == 16
    assert qop[0].tap_q is not None  # its output is uint8: drift dequantizes what it taps
    np.testing.assert_array_equal(qop[0].weight, qop[0].weight_q.dequantize(qop[0].weight_int))
    _assert_weights_follow_reference(table, [VariantKey.ONNX_UINT8])


def test_records_and_detail_show_every_variant_and_the_per_channel_vectors(variant_folder: Path) -> None:
    _quantize_qoperator(variant_folder / "tiny.onnx", variant_folder / "tiny_uint8.onnx")
    table = _table(variant_folder)
    records = tables.layer_rows(table)

    assert len(records) == len(table.rows) * 5
    conv1 = {r["variant"]: r for r in records if r["#"] == 1}
    assert conv1["onnx_uint8"]["weight scale"].endswith("(16 ch)")
    assert conv1["onnx_int8"]["dtype"] == "w int8 · act int8"
    assert conv1["pytorch_float"]["fused"] == "BatchNorm2d bn1 + ReLU relu"
    detail = table.detail(0)["variants"]
    assert len(detail["onnx_uint8"]["weight"]["scale"]) == 16
    assert detail["onnx_uint8"]["weight"]["scale"] == pytest.approx(
        table.rows[0].layers[VariantKey.ONNX_UINT8].weight_q.scale.tolist()
    )
    with pytest.raises(IndexError):
        table.detail(len(table.rows))


# ----------------------------------------------------------------- unmatched


def _conv(name: str, x: str, y: str, c_in: int, c_out: int, k: int, seed: int) -> tuple[object, object]:
    weight = np.random.default_rng(seed).normal(size=(c_out, c_in, k, k)).astype(np.float32)
    node = helper.make_node("Conv", [x, f"{name}.w"], [y], name=name, pads=[k // 2] * 4)
    return node, numpy_helper.from_array(weight, f"{name}.w")


def _write_graph(path: Path, convs: list[tuple[str, int, int, int]]) -> None:
    """A chain of convs (name, in, out, kernel) -> global pool -> flatten -> Gemm(4)."""
    nodes, inits, x = [], [], "input"
    for seed, (name, c_in, c_out, k) in enumerate(convs):
        node, init = _conv(name, x, f"{name}.out", c_in, c_out, k, seed)
        nodes.append(node)
        inits.append(init)
        x = f"{name}.out"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc.w"], ["logits"], name="fc", transB=1)]  # fmt: skip
    inits.append(numpy_helper.from_array(np.ones((4, convs[-1][2]), np.float32), "fc.w"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])], inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_a_layer_no_other_variant_has_is_shown_on_its_own_row(models_root: Path) -> None:
    folder = models_root / "odd"
    folder.mkdir()
    _write_graph(folder / "odd.onnx", [("a", 3, 8, 3), ("b", 8, 8, 3)])
    _write_graph(folder / "odd_int8.onnx", [("a", 3, 8, 3), ("extra", 8, 8, 1), ("b", 8, 8, 3)])
    table = _table(folder)

    assert [sorted(map(str, row.layers)) for row in table.rows] == [
        ["onnx_float", "onnx_int8"], ["onnx_int8"], ["onnx_float", "onnx_int8"], ["onnx_float", "onnx_int8"],
    ]  # fmt: skip
    assert table.rows[1].primary.name == "extra"
    unmatched = [r for r in tables.layer_rows(table) if r["#"] == 2 and r["variant"] == "onnx_float"]
    assert unmatched[0]["counterpart"] == "not matched"
    assert any("1 layer(s) matched no other" in note for note in table.notes)


def test_alignment_pairs_only_same_kind_and_shape_in_order() -> None:
    layers, _ = extract_layers(_graph_model([("a", 3, 8, 3), ("b", 8, 16, 3), ("c", 16, 16, 1)]))
    others, _ = extract_layers(_graph_model([("x", 3, 8, 3), ("y", 8, 16, 3)]))

    # Names differ (a/x, b/y): shapes and order pair them; c has no partner and stays, unpaired.
    assert align(layers, others) == [(0, 0), (1, 1), (2, None), (3, 2)]
    assert align(others, layers) == [(0, 0), (1, 1), (None, 2), (2, 3)]


def _graph_model(convs: list[tuple[str, int, int, int]]) -> onnx.ModelProto:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        _write_graph(path, convs)
        return onnx.load(str(path))


def test_missing_and_unreadable_variants_are_skipped_with_a_note(variant_folder: Path) -> None:
    (variant_folder / "tiny_uint8.onnx").write_bytes(b"not an onnx file")
    (variant_folder / "tiny.pt").unlink()
    table = _table(variant_folder)

    assert VariantKey.ONNX_UINT8 not in table.variants and VariantKey.PYTORCH_FLOAT not in table.variants
    assert table.skeleton is VariantKey.ONNX_FLOAT
    assert any(note.startswith("onnx_uint8: skipped") for note in table.notes)
    # With no float PyTorch model, the scripted int8 one is compared with the float ONNX one.
    assert table.reference(VariantKey.PYTORCH_INT8) is VariantKey.ONNX_FLOAT
    assert all(VariantKey.PYTORCH_INT8 in row.layers for row in table.rows)


def test_an_empty_folder_gives_an_empty_table(models_root: Path) -> None:
    (models_root / "empty").mkdir()
    table = _table(models_root / "empty")

    assert table.rows == () and table.skeleton is None and tables.layer_rows(table) == []


# --------------------------------------------------------------------- bundled


@pytest.fixture(scope="module")
def bundled_table() -> LayerTable:
    assert (BUNDLED / "resnet8.onnx").is_file(), "the bundled models/resnet8 folder is missing its variants"
    return build_layer_table(quantcore.load_model_variants(BUNDLED))


def test_bundled_model_every_conv_and_the_dense_layer_matched_in_all_four_quantized_variants(
    bundled_table: LayerTable,
) -> None:
    assert set(bundled_table.variants) == set(VariantKey)
    kinds = [row.primary.kind for row in bundled_table.rows]
    assert kinds.count("conv") == 9 and kinds.count("dense") == 1 and len(kinds) == 10
    for row in bundled_table.rows:
        # Matched in all four variants beside the float PyTorch reference: the three quantized ones and
        # the float ONNX export (BN folded, as in the quantized ones).
        assert set(row.layers) == set(VariantKey), row.primary.name
    assert [row.primary.name for row in bundled_table.rows] == RESNET8_LAYERS
    _assert_weights_follow_reference(bundled_table, QUANTIZED)


def test_bundled_copy_in_a_temp_root_reads_the_same(bundled_table: LayerTable, models_root: Path) -> None:
    copy = Path(shutil.copytree(BUNDLED, models_root / "resnet8"))
    table = _table(copy)

    assert [r.primary.name for r in table.rows] == [r.primary.name for r in bundled_table.rows]
