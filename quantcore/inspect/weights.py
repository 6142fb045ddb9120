"""One layer's weights across variants: histogram data and statistics.

Float variants contribute their weights — with a following BatchNorm folded
in, as every quantized variant we read has it — and quantized variants their
dequantized weights, ``(q - zero_point) * scale``, or the stored integers
themselves. Each quantized series is measured against its float reference
(``LayerTable.reference``): weight SQNR and the share of weights that fell off
the integer grid's ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from quantcore.backends import Layer, QuantParams
from quantcore.inspect.layer_table import LayerTable
from quantcore.inspect.sqnr import sqnr_db
from quantcore.load import Key, VariantKey

DEFAULT_BINS = 60
MAX_BINS = 400


@dataclass(frozen=True)
class WeightSeries:
    """One variant's weights of one layer (canonical layout: output channels first)."""

    variant: Key
    label: str
    layer: Layer
    values: np.ndarray  # floats: the stored (BN-folded) ones, or the dequantized integers
    reference: VariantKey | None
    stats: dict[str, Any]

    @property
    def integers(self) -> np.ndarray | None:
        return self.layer.weight_int


@dataclass(frozen=True)
class WeightComparison:
    """Every variant's weights of one layer-table row."""

    row: int
    layer: str
    series: tuple[WeightSeries, ...]
    notes: tuple[str, ...] = ()


def weight_stats(
    values: np.ndarray,
    *,
    integers: np.ndarray | None = None,
    qparams: QuantParams | None = None,
    reference: np.ndarray | None = None,
) -> dict[str, Any]:
    """Summary statistics of one weight tensor, and how its quantization went.

    Args:
        values: the weights as floats (dequantized, for a quantized layer).
        integers: the stored integers of a quantized layer.
        qparams: their scale and zero point.
        reference: the float weights they came from (same shape), for SQNR and clipping.

    Returns:
        JSON-ready: min, max, mean, std, shape, count; for quantized weights
        also scale, zero_point (value, or min/median/max per channel),
        fraction_saturated (integers at the type's ends), and with a reference
        fraction_clipped (float weights beyond the grid's ends) and sqnr_db.

    Raises:
        ValueError: ``reference`` has a different shape from ``values``.
    """
    flat = values.astype(np.float64).reshape(-1)
    stats: dict[str, Any] = {
        "min": float(flat.min()) if flat.size else None,
        "max": float(flat.max()) if flat.size else None,
        "mean": float(flat.mean()) if flat.size else None,
        "std": float(flat.std()) if flat.size else None,
        "shape": list(values.shape),
        "count": int(flat.size),
        "scale": None,
        "zero_point": None,
        "fraction_saturated": None,
        "fraction_clipped": None,
        "sqnr_db": None,
    }
    if reference is not None and reference.shape != values.shape:
        raise ValueError(f"reference shape {reference.shape} differs from {values.shape}")
    if qparams is not None:
        summary = qparams.summary()
        stats["scale"], stats["zero_point"] = summary["scale"], summary["zero_point"]
        low, high = qparams.limits
        if integers is not None and integers.size:
            stats["fraction_saturated"] = float(np.mean((integers <= low) | (integers >= high)))
        if reference is not None and reference.size:
            ideal = qparams.quantize_unclipped(reference)
            stats["fraction_clipped"] = float(np.mean((ideal < low) | (ideal > high)))
    if reference is not None and flat.size:
        db = sqnr_db(reference, values)
        stats["sqnr_db"] = db if np.isfinite(db) else ("inf" if db > 0 else None)
    return stats


def compare_weights(table: LayerTable, row: int) -> WeightComparison:
    """Every variant's weights of table row ``row``, each with its statistics.

    Args:
        table: a folder's layer table.
        row: 0-based row index.

    Returns:
        One series per variant that has the layer, in variant order.

    Raises:
        IndexError: no such row.
    """
    table_row = table.row(row)
    notes: list[str] = []
    series: list[WeightSeries] = []
    for key in table.variants:
        layer = table_row.layers.get(key)
        if layer is None:
            notes.append(f"{key}: has no layer matched to this one")
            continue
        if layer.problem is not None:
            notes.append(f"{key}: {layer.name}'s weights cannot be read — {layer.problem}")
            continue
        ref_key = _reference_on_row(table, table_row.layers, key)
        ref_layer = table_row.layers.get(ref_key) if ref_key is not None else None
        reference = ref_layer.comparable_weight if ref_layer is not None else None
        values = layer.weight if layer.quantized else layer.comparable_weight
        if reference is not None and layer.quantized and layer.fold_factor is not None:
            # The quantized graph keeps its affine steps apart too: compare on its own (unfolded) grid.
            factor = np.where(layer.fold_factor == 0, 1.0, layer.fold_factor)
            reference = (reference / factor.reshape(-1, *([1] * (reference.ndim - 1)))).astype(np.float32)
        if reference is not None and reference.shape != values.shape:
            notes.append(f"{key}: weights {values.shape} cannot be compared with {ref_key}'s {reference.shape}")
            reference = None
        stats = weight_stats(values, integers=layer.weight_int, qparams=layer.weight_q, reference=reference)
        label = f"{key} (BN folded)" if layer.folded_weight is not None else str(key)
        series.append(WeightSeries(key, label, layer, values, ref_key if reference is not None else None, stats))
    return WeightComparison(row, table_row.primary.name, tuple(series), tuple(notes))


def _reference_on_row(table: LayerTable, layers: dict[Key, Layer], key: Key) -> VariantKey | None:
    """The variant ``key``'s weights are measured against on this row: its reference, else (for a quantized
    variant) the other float variant, when the reference has no readable layer here."""
    first = table.reference(key)
    if first is None:
        return None
    others = [k for k in (VariantKey.ONNX_FLOAT, VariantKey.PYTORCH_FLOAT) if k is not first and k is not key]
    for ref in [first] if key is VariantKey.ONNX_FLOAT else [first, *others]:
        layer = layers.get(ref)
        if layer is not None and layer.problem is None:
            return ref
    return None


@dataclass(frozen=True)
class Histogram:
    """Counts of every series over one shared set of bin edges."""

    edges: np.ndarray
    counts: dict[str, np.ndarray]  # series label -> counts
    raw_integers: bool


def histogram(comparison: WeightComparison, *, bins: int = DEFAULT_BINS, raw_integers: bool = False) -> Histogram:
    """Histogram counts of each series on shared edges.

    Args:
        comparison: one layer's weights across variants.
        bins: number of bins (1 to ``MAX_BINS``); for integers, at most one per integer.
        raw_integers: count stored integers (quantized variants only) instead of float values.

    Returns:
        The edges and each series' counts.

    Raises:
        ValueError: ``bins`` is out of range.
    """
    if not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be between 1 and {MAX_BINS}, got {bins}")
    data = {
        s.label: (s.integers if raw_integers else s.values).reshape(-1)
        for s in comparison.series
        if not raw_integers or s.integers is not None
    }
    present = [d for d in data.values() if d.size]
    if not present:
        return Histogram(np.linspace(0.0, 1.0, bins + 1), {k: np.zeros(bins, np.int64) for k in data}, raw_integers)
    low = min(float(d.min()) for d in present)
    high = max(float(d.max()) for d in present)
    if raw_integers:
        # Bins centred on integers, never finer than one per integer.
        levels = int(high - low) + 1
        edges = np.linspace(low - 0.5, high + 0.5, min(bins, levels) + 1)
    else:
        edges = np.linspace(low, high, bins + 1) if high > low else np.array([low - 0.5, high + 0.5])
    return Histogram(edges, {k: np.histogram(d, bins=edges)[0] for k, d in data.items()}, raw_integers)
