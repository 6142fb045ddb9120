"""Look inside the variants: layers matched across formats, quantization parameters, weights, per-layer error."""

from quantcore.inspect.drift import DEFAULT_BATCH_SIZE, DEFAULT_IMAGES, DriftReport, VariantDrift, layer_drift
from quantcore.inspect.layer_table import LayerRow, LayerTable, align, build_layer_table, extract_layers
from quantcore.inspect.sqnr import SqnrAccumulator, sqnr_db
from quantcore.inspect.weights import (
    DEFAULT_BINS,
    MAX_BINS,
    Histogram,
    WeightComparison,
    WeightSeries,
    compare_weights,
    histogram,
    weight_stats,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BINS",
    "DEFAULT_IMAGES",
    "MAX_BINS",
    "DriftReport",
    "Histogram",
    "LayerRow",
    "LayerTable",
    "SqnrAccumulator",
    "VariantDrift",
    "WeightComparison",
    "WeightSeries",
    "align",
    "build_layer_table",
    "compare_weights",
    "extract_layers",
    "histogram",
    "layer_drift",
    "sqnr_db",
    "weight_stats",
]
