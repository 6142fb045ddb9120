"""Per-layer drift: how far each quantized variant's activations stray from its float reference.

N images go through every variant, a batch at a time. After each matched layer
(and what is fused into it: BatchNorm, ReLU) the activation is captured
(``quantcore.taps``) and compared with the float reference's at the same
layer. Only two running sums per (variant, layer) are kept — signal power and
noise power — so memory stays flat however many images run:

    SQNR = 10 · log10( Σ x² / Σ (x − x̂)² )  dB,   x: float reference, x̂: quantized variant.

Higher is better; every 6 dB is about one bit. Each reference runs once per
batch however many variants it serves.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantcore.datasets import SAMPLES_NAME
from quantcore.errors import DatasetError
from quantcore.layers import Layer, LayerTable, build_layer_table, input_shape
from quantcore.taps import Capture, Tapper, make_tapper, to_numpy
from quantcore.variants import ModelVariants, VariantKey

if TYPE_CHECKING:
    import plotly.graph_objects as go

logger = logging.getLogger(__name__)

DEFAULT_IMAGES = 256
DEFAULT_BATCH_SIZE = 32
MAX_IMAGES = 4096
ProgressFn = Callable[[float, str], None]


def sqnr_db(signal: np.ndarray, noisy: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``noisy`` against ``signal``, in dB.

    Args:
        signal: the reference values (float model).
        noisy: the same values as the quantized model computes them.

    Returns:
        ``10·log10(Σx² / Σ(x−y)²)``; ``inf`` when the two are identical.

    Raises:
        ValueError: the arrays differ in size.
    """
    accumulator = SqnrAccumulator()
    accumulator.update(signal, noisy)
    return accumulator.db if accumulator.db is not None else math.nan


@dataclass
class SqnrAccumulator:
    """Running sums for one SQNR over many batches: memory does not grow with the data."""

    signal_power: float = 0.0
    noise_power: float = 0.0
    elements: int = 0

    def update(self, reference: np.ndarray, test: np.ndarray) -> None:
        """Add one batch.

        Raises:
            ValueError: the arrays differ in size.
        """
        ref = np.ascontiguousarray(reference, dtype=np.float32).reshape(-1)
        out = np.ascontiguousarray(test, dtype=np.float32).reshape(-1)
        if ref.size != out.size:
            raise ValueError(f"{ref.size} reference values against {out.size}")
        diff = ref - out
        # float64 sums of float32 dot products: exact enough for dB, and BLAS-fast.
        self.signal_power += float(np.dot(ref, ref))
        self.noise_power += float(np.dot(diff, diff))
        self.elements += ref.size

    @property
    def db(self) -> float | None:
        """The SQNR so far (None before any data; ``inf`` with no noise; ``-inf`` with no signal)."""
        if not self.elements:
            return None
        if self.noise_power == 0.0:
            return math.inf if self.signal_power > 0 else math.nan
        if self.signal_power == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal_power / self.noise_power)


# ---------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class DriftInputs:
    """Where the images come from and how many; batches are made on demand."""

    description: str
    count: int
    shape: tuple[int, ...]
    labels: np.ndarray | None = field(default=None, repr=False)
    images: np.ndarray | None = field(default=None, repr=False)  # uint8 pixels; None: generated
    seed: int = 0

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(float32 model inputs, labels or None), ``batch_size`` at a time."""
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.count, batch_size):
            stop = min(start + batch_size, self.count)
            labels = self.labels[start:stop] if self.labels is not None else None
            if self.images is not None:
                from quantcore.datasets import preprocess

                yield preprocess(self.images[start:stop]), labels
            else:
                yield rng.random((stop - start, *self.shape), dtype=np.float32), labels


def drift_inputs(
    folder: Path | None, shape: tuple[int, ...], *, images: int = DEFAULT_IMAGES, seed: int = 0
) -> tuple[DriftInputs, list[str]]:
    """The first ``images`` of the folder's ``samples.npz``, or generated uniform [0, 1) inputs.

    Args:
        folder: the variant folder (its ``samples.npz`` is used when it fits the model).
        shape: one input's shape without the batch axis.
        images: how many images to run.
        seed: seed of the generated inputs.

    Returns:
        The inputs and notes on what was used instead of what, and why.

    Raises:
        ValueError: ``images`` is not between 1 and ``MAX_IMAGES``.
    """
    if not 1 <= images <= MAX_IMAGES:
        raise ValueError(f"images must be between 1 and {MAX_IMAGES}, got {images}")
    notes: list[str] = []
    path = folder / SAMPLES_NAME if folder is not None else None
    if path is not None and path.is_file():
        from quantcore.datasets import load_samples

        try:
            samples = load_samples(path)
        except DatasetError as exc:
            notes.append(f"{SAMPLES_NAME} unreadable ({exc}); generated inputs used")
        else:
            if samples.images.shape[1:] != shape:
                notes.append(f"{SAMPLES_NAME} holds {samples.images.shape[1:]} images, the model takes {shape}; "
                             "generated inputs used")  # fmt: skip
            else:
                count = min(images, len(samples))
                if count < images:
                    notes.append(f"{SAMPLES_NAME} holds {len(samples)} images; all of them used")
                return DriftInputs(
                    f"{SAMPLES_NAME} ({count} images, pixels / 255)", count, shape,
                    samples.labels[:count], samples.images[:count],
                ), notes  # fmt: skip
    else:
        notes.append(f"no {SAMPLES_NAME} in the folder: generated uniform [0, 1) inputs used")
    return DriftInputs(f"generated uniform [0, 1) inputs ({images}, seed {seed})", images, shape, seed=seed), notes


# ---------------------------------------------------------------------- report


@dataclass(frozen=True)
class VariantDrift:
    """One quantized variant against its float reference, layer by layer (one entry per table row)."""

    variant: VariantKey
    reference: VariantKey
    sqnr_db: tuple[float | None, ...]
    output_sqnr_db: float | None
    agreement: float | None  # top-1 agreement with the reference on these images
    accuracy: float | None  # top-1 accuracy on these images (samples only)

    @property
    def worst(self) -> int | None:
        """Row index of the lowest SQNR (None when no layer was compared)."""
        finite = [(db, i) for i, db in enumerate(self.sqnr_db) if db is not None and not math.isnan(db)]
        return min(finite)[1] if finite else None


def _number(value: float | None, digits: int = 2) -> float | str | None:
    """JSON- and table-safe: infinities as text, NaN as None."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return round(value, digits)


@dataclass(frozen=True)
class DriftReport:
    """Per-layer SQNR of every quantized variant, and what it ran on."""

    layers: tuple[str, ...]  # row labels of the layer table
    kinds: tuple[str, ...]
    variants: tuple[VariantDrift, ...]
    images: int
    source: str
    batch_size: int
    seconds: float
    reference_accuracy: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def records(self) -> list[dict[str, Any]]:
        """One row per layer, one SQNR column (dB) per variant."""
        rows = []
        for i, (label, kind) in enumerate(zip(self.layers, self.kinds, strict=True)):
            row: dict[str, Any] = {"#": i + 1, "layer": label.split(". ", 1)[-1], "kind": kind}
            for drift in self.variants:
                row[f"{drift.variant} (dB)"] = _number(drift.sqnr_db[i])
            rows.append(row)
        return rows

    def summary(self) -> list[dict[str, Any]]:
        """One row per variant: its worst layer, output SQNR, agreement and accuracy."""
        rows = []
        for drift in self.variants:
            worst = drift.worst
            rows.append({
                "variant": str(drift.variant),
                "reference": str(drift.reference),
                "worst layer": self.layers[worst].split(". ", 1)[-1] if worst is not None else None,
                "worst SQNR (dB)": _number(drift.sqnr_db[worst]) if worst is not None else None,
                "output SQNR (dB)": _number(drift.output_sqnr_db),
                "top-1 agreement": _number(drift.agreement, 4),
                "accuracy": _number(drift.accuracy, 4),
                "reference accuracy": _number(self.reference_accuracy.get(str(drift.reference)), 4),
            })  # fmt: skip
        return rows

    def worst(self) -> dict[str, dict[str, Any]]:
        """Per variant: the row index, name and SQNR of its worst layer."""
        found = {}
        for drift in self.variants:
            if drift.worst is not None:
                found[str(drift.variant)] = {
                    "row": drift.worst,
                    "layer": self.layers[drift.worst].split(". ", 1)[-1],
                    "sqnr_db": _number(drift.sqnr_db[drift.worst]),
                }
        return found

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: everything the page shows."""
        return {
            "images": self.images,
            "source": self.source,
            "batch_size": self.batch_size,
            "seconds": round(self.seconds, 3),
            "layers": self.records(),
            "variants": self.summary(),
            "worst": self.worst(),
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------- run


def _as_float(value: Any, layer: Layer) -> np.ndarray:
    array = to_numpy(value)
    if layer.tap_q is not None and np.issubdtype(array.dtype, np.integer):
        return layer.tap_q.dequantize(array)
    return array


@dataclass
class _Comparison:
    variant: VariantKey
    reference: VariantKey
    rows: list[int]
    layers: dict[int, Layer]
    accumulators: dict[int, SqnrAccumulator]
    output: SqnrAccumulator = field(default_factory=SqnrAccumulator)
    agree: int = 0
    correct: int = 0
    seen: int = 0


def layer_drift(
    variants: ModelVariants,
    *,
    table: LayerTable | None = None,
    images: int = DEFAULT_IMAGES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    inputs: DriftInputs | None = None,
    include_float: bool = False,
    progress: ProgressFn | None = None,
) -> DriftReport:
    """Per-layer SQNR of every quantized variant against its float reference.

    A variant that is missing, failed to load, has no float reference, or fails
    while running is left out with a note; this does not raise for its sake.

    Args:
        variants: a folder's variants from ``load_model_variants``.
        table: the folder's layer table (built here when not given).
        images: how many images (the folder's ``samples.npz``, else generated).
        batch_size: images per forward pass; memory grows with it, not with ``images``.
        inputs: explicit inputs, instead of the folder's samples.
        include_float: also compare ``onnx_float`` with ``pytorch_float`` (export fidelity).
        progress: called with (fraction done, message) after every batch.

    Returns:
        A ``DriftReport`` with one SQNR per (variant, table row).

    Raises:
        ValueError: ``images`` or ``batch_size`` is out of range.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    started = time.perf_counter()
    table = table if table is not None else build_layer_table(variants)
    notes = list(table.notes)
    labels = tuple(row.label for row in table.rows)
    kinds = tuple(row.primary.kind for row in table.rows)

    comparisons: list[_Comparison] = []
    for key in table.variants:
        if not (key.is_quantized or (include_float and key is VariantKey.ONNX_FLOAT)):
            continue
        reference = table.reference(key)
        if reference is None:
            notes.append(f"{key}: skipped — no float variant to compare it with")
            continue
        rows = [r.index for r in table.rows if key in r.layers and reference in r.layers]
        comparisons.append(_Comparison(key, reference, rows, {}, {r: SqnrAccumulator() for r in rows}))
    if inputs is None:
        by_variant = {k: [r.layers[k] for r in table.rows if k in r.layers] for k in table.variants}
        shape = input_shape(variants, by_variant)
        if shape is None:
            notes.append("the input shape is unknown: nothing to run")
            comparisons = []
        else:
            inputs, input_notes = drift_inputs(
                variants.folder if variants.sidecar(SAMPLES_NAME) else None, shape[1:], images=images
            )
            notes.extend(input_notes)

    tappers: dict[VariantKey, Tapper] = {}
    for key in dict.fromkeys(k for c in comparisons for k in (c.reference, c.variant)):
        taps = sorted({table.rows[r].layers[key].tap for c in comparisons if key in (c.variant, c.reference)
                       for r in c.rows})  # fmt: skip
        try:
            tappers[key] = make_tapper(variants[key], taps)
        except Exception as exc:  # this variant's comparisons are dropped, the others still run
            logger.exception("capturing the activations of %s failed", key)
            notes.append(f"{key}: cannot capture its activations ({type(exc).__name__})")
    comparisons = [c for c in comparisons if c.variant in tappers and c.reference in tappers]

    reference_correct: dict[VariantKey, int] = {}
    count = inputs.count if inputs is not None and comparisons else 0
    done = 0
    for batch, batch_labels in inputs.batches(batch_size) if count else ():
        captured: dict[VariantKey, Capture] = {}
        for reference in dict.fromkeys(c.reference for c in comparisons):
            try:
                captured[reference] = tappers[reference](batch)
            except Exception as exc:  # an ORT/torch failure drops this reference's comparisons, not the run
                logger.exception("running %s failed", reference)
                notes.append(f"{reference}: failed while running ({type(exc).__name__}); its comparisons dropped")
            else:
                if batch_labels is not None:
                    hits = int(np.sum(np.argmax(captured[reference].output, axis=1) == batch_labels))
                    reference_correct[reference] = reference_correct.get(reference, 0) + hits
        comparisons = [c for c in comparisons if c.reference in captured]
        for comparison in list(comparisons):
            # A variant that is also a reference (onnx_float) already ran on this batch.
            if not _compare_batch(comparison, tappers[comparison.variant], captured, table, batch, batch_labels, notes):
                comparisons.remove(comparison)
        done += len(batch)
        if progress is not None:
            progress(done / count, f"{done} of {count} images through {len(comparisons)} variant(s)")

    has_labels = inputs is not None and inputs.labels is not None
    results = tuple(_result(c, len(table.rows), has_labels) for c in comparisons)
    seconds = time.perf_counter() - started
    logger.info("layer drift: %d variant(s), %d image(s), %.2fs", len(results), done, seconds)
    return DriftReport(
        labels, kinds, results, done, inputs.description if inputs is not None else "none", batch_size, seconds,
        {str(k): v / done for k, v in reference_correct.items()} if done else {}, tuple(dict.fromkeys(notes)),
    )  # fmt: skip


def _result(comparison: _Comparison, rows: int, has_labels: bool) -> VariantDrift:
    seen = comparison.seen
    return VariantDrift(
        comparison.variant,
        comparison.reference,
        tuple(comparison.accumulators[r].db if r in comparison.accumulators else None for r in range(rows)),
        comparison.output.db,
        comparison.agree / seen if seen else None,
        comparison.correct / seen if seen and has_labels else None,
    )


def _compare_batch(
    comparison: _Comparison,
    tapper: Tapper,
    captured: dict[VariantKey, Capture],
    table: LayerTable,
    batch: np.ndarray,
    labels: np.ndarray | None,
    notes: list[str],
) -> bool:
    """Run one batch through a variant and add it to its sums; False when the variant fails."""
    key, ref_key = comparison.variant, comparison.reference
    reference = captured[ref_key]
    try:
        capture = captured.get(key) or tapper(batch)
    except Exception as exc:  # one failing variant must not end the others' run
        logger.exception("running %s failed", key)
        notes.append(f"{key}: failed while running ({type(exc).__name__}); left out")
        return False
    for row in list(comparison.rows):
        layers = table.rows[row].layers
        try:
            comparison.accumulators[row].update(
                _as_float(reference.values[layers[ref_key].tap], layers[ref_key]),
                _as_float(capture.values[layers[key].tap], layers[key]),
            )
        except ValueError as exc:
            notes.append(f"{key}: {table.rows[row].primary.name} not compared ({exc})")
            comparison.rows.remove(row)
            del comparison.accumulators[row]
    comparison.output.update(reference.output, capture.output)
    top = np.argmax(capture.output, axis=1)
    comparison.agree += int(np.sum(top == np.argmax(reference.output, axis=1)))
    comparison.correct += int(np.sum(top == labels)) if labels is not None else 0
    comparison.seen += len(batch)
    return True


# ----------------------------------------------------------------------- chart


# Worst-layer labels take turns around their marker, so two variants failing at one layer stay readable.
_LABEL_POSITIONS = ("bottom center", "top center", "bottom right", "top left", "bottom left", "top right")


def drift_figure(report: DriftReport) -> go.Figure:
    """Per-layer SQNR across depth, one line per variant, each variant's worst layer marked."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    figure = go.Figure()
    x = [f"{i + 1}. {label.split('. ', 1)[-1]}" for i, label in enumerate(report.layers)]
    palette = qualitative.Plotly
    for n, drift in enumerate(report.variants):
        color = palette[n % len(palette)]
        y = [db if db is not None and math.isfinite(db) else None for db in drift.sqnr_db]
        figure.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=str(drift.variant), line={"color": color}))
        worst = drift.worst
        if worst is not None and y[worst] is not None:
            figure.add_trace(go.Scatter(
                x=[x[worst]], y=[y[worst]], mode="markers+text", showlegend=False, name=f"{drift.variant} worst",
                text=[f"{drift.variant}: {y[worst]:.1f} dB"], textposition=_LABEL_POSITIONS[n % len(_LABEL_POSITIONS)],
                marker={"size": 16, "symbol": "x", "color": color},
            ))  # fmt: skip
    figure.update_layout(
        title=f"Per-layer SQNR against the float reference ({report.images} images)",
        xaxis_title="layer (input → output)",
        yaxis_title="SQNR (dB), higher is better",
        legend_title="variant",
        margin={"l": 60, "r": 20, "t": 60, "b": 120},
    )
    return figure
