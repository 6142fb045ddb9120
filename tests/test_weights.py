"""Weight histograms and statistics of one layer across variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import quantcore
from quantcore.backends import QuantParams
from quantcore.inspect.layer_table import LayerTable, build_layer_table
from quantcore.inspect.weights import (
    MAX_BINS,
    compare_weights,
    histogram,
    weight_stats,
)
from quantcore.load import VariantKey
from quantcore.report import figures, tables


@pytest.fixture
def table(variant_folder: Path) -> LayerTable:
    return build_layer_table(quantcore.load_model_variants(variant_folder))


def _dequantized_from_file(path: Path, node_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(integers, (q - zero_point) * scale) of a QDQ Conv's weight, read straight from the ONNX file."""
    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    conv = next(n for n in model.graph.node if n.name == node_name)
    dq = producers[conv.input[1]]
    integers = consts[dq.input[0]]
    scale, zero = consts[dq.input[1]], consts[dq.input[2]]
    return integers, (integers.astype(np.float64) - zero.astype(np.float64)) * scale.astype(np.float64)


def test_histogram_values_are_the_dequantized_weights(table: LayerTable, variant_folder: Path) -> None:
    comparison = compare_weights(table, 3)
    series = {s.variant: s for s in comparison.series}
    int8 = series[VariantKey.ONNX_INT8]
    integers, expected = _dequantized_from_file(variant_folder / "tiny_int8.onnx", int8.layer.name)

    np.testing.assert_allclose(int8.values, expected, rtol=1e-6)
    np.testing.assert_array_equal(int8.integers, integers)
    hist = histogram(comparison, bins=25)
    assert len(hist.edges) == 26
    np.testing.assert_array_equal(hist.counts[int8.label], np.histogram(expected.astype(np.float32), hist.edges)[0])
    assert hist.counts[int8.label].sum() == integers.size
    figure = figures.weight_histogram_figure(comparison, bins=25)
    bars = {trace.name: trace for trace in figure.data}
    np.testing.assert_array_equal(np.asarray(bars[int8.label].y), hist.counts[int8.label])
    np.testing.assert_allclose(np.asarray(bars[int8.label].x), (hist.edges[:-1] + hist.edges[1:]) / 2)


def test_raw_integer_histogram_counts_the_stored_integers(table: LayerTable, variant_folder: Path) -> None:
    comparison = compare_weights(table, 0)
    hist = histogram(comparison, bins=MAX_BINS, raw_integers=True)
    int8 = next(s for s in comparison.series if s.variant is VariantKey.ONNX_INT8)
    integers, _ = _dequantized_from_file(variant_folder / "tiny_int8.onnx", int8.layer.name)

    # Float variants have no integers; with room for it, every integer level gets its own bin.
    assert set(hist.counts) == {"onnx_int8", "onnx_uint8", "pytorch_int8"}
    assert np.all(np.diff(hist.edges) <= 1.0 + 1e-9)
    np.testing.assert_array_equal(hist.counts["onnx_int8"], np.histogram(integers, hist.edges)[0])
    figure = figures.weight_histogram_figure(comparison, raw_integers=True, side_by_side=True)
    assert [t.name for t in figure.data] == ["onnx_int8", "onnx_uint8", "pytorch_int8"]
    assert {t.xaxis for t in figure.data} == {"x", "x2", "x3"}  # one panel per variant


def test_float_series_are_bn_folded_and_quantized_ones_measured_against_them(table: LayerTable) -> None:
    comparison = compare_weights(table, 0)
    series = {s.variant: s for s in comparison.series}
    float_pt = series[VariantKey.PYTORCH_FLOAT]

    assert float_pt.label == "pytorch_float (BN folded)"
    np.testing.assert_array_equal(float_pt.values, float_pt.layer.folded_weight)
    assert series[VariantKey.PYTORCH_INT8].reference is VariantKey.PYTORCH_FLOAT
    assert series[VariantKey.ONNX_UINT8].reference is VariantKey.ONNX_FLOAT
    for key in (VariantKey.ONNX_INT8, VariantKey.ONNX_UINT8, VariantKey.PYTORCH_INT8):
        stats = series[key].stats
        assert 30 < stats["sqnr_db"] < 70
        assert stats["count"] == 16 * 3 * 3 * 3 and stats["shape"] == [16, 3, 3, 3]
        assert stats["scale"] is not None and stats["fraction_clipped"] is not None
    rows = tables.weight_stat_rows(comparison)
    assert [r["variant"] for r in rows][3] == "pytorch_float (BN folded)"
    assert isinstance(rows[4]["scale"], str) and rows[4]["scale"].count("/") == 2  # per-channel min / median / max


def test_weight_stats_on_a_hand_computed_case() -> None:
    q = QuantParams(np.array([0.1]), np.array([0]), "int8")
    reference = np.array([0.0, 0.1, 12.7, -20.0], dtype=np.float32)
    integers = np.array([0, 1, 127, -128], dtype=np.int8)
    values = q.dequantize(integers)
    stats = weight_stats(values, integers=integers, qparams=q, reference=reference)

    np.testing.assert_allclose(values, [0.0, 0.1, 12.7, -12.8], rtol=1e-6)
    assert stats["min"] == pytest.approx(-12.8) and stats["max"] == pytest.approx(12.7)
    assert stats["mean"] == pytest.approx(0.0, abs=1e-6)
    assert stats["count"] == 4 and stats["shape"] == [4]
    assert stats["scale"] == pytest.approx(0.1) and stats["zero_point"] == 0
    # -20.0 would need q = -200: off the int8 grid. 127 and -128 sit on its ends.
    assert stats["fraction_clipped"] == 0.25
    assert stats["fraction_saturated"] == 0.5
    signal = 0.01 + 12.7**2 + 20.0**2
    assert stats["sqnr_db"] == pytest.approx(10 * np.log10(signal / 7.2**2), rel=1e-5)


def test_per_channel_dequantization_uses_each_channels_scale() -> None:
    q = QuantParams(np.array([0.5, 2.0]), np.array([1, -1]), "int8", axis=0)
    integers = np.array([[1, 3], [-1, 1]], dtype=np.int8)

    np.testing.assert_array_equal(q.dequantize(integers), [[0.0, 1.0], [0.0, 4.0]])
    assert weight_stats(q.dequantize(integers), qparams=q)["scale"] == {"min": 0.5, "median": 1.25, "max": 2.0}


def test_bins_out_of_range_are_refused(table: LayerTable) -> None:
    comparison = compare_weights(table, 0)
    with pytest.raises(ValueError, match="bins"):
        histogram(comparison, bins=0)
    with pytest.raises(ValueError, match="bins"):
        figures.weight_histogram_figure(comparison, bins=MAX_BINS + 1)


def test_a_layer_missing_in_a_variant_is_noted_not_raised(models_root: Path) -> None:
    from tests.test_layers import _write_graph

    folder = models_root / "odd"
    folder.mkdir()
    _write_graph(folder / "odd.onnx", [("a", 3, 8, 3), ("b", 8, 8, 3)])
    _write_graph(folder / "odd_int8.onnx", [("a", 3, 8, 3), ("extra", 8, 8, 1), ("b", 8, 8, 3)])
    table = build_layer_table(quantcore.load_model_variants(folder))
    comparison = compare_weights(table, 1)

    assert comparison.layer == "extra"
    assert [s.variant for s in comparison.series] == [VariantKey.ONNX_INT8]
    assert comparison.notes == ("onnx_float: has no layer matched to this one",)
    assert comparison.series[0].reference is None and comparison.series[0].stats["sqnr_db"] is None
    with pytest.raises(IndexError):
        compare_weights(table, len(table.rows))
