"""Per-layer drift: how far each quantized variant's activations stray from its float reference.

N images go through every variant, a batch at a time. After each matched layer
(and what is fused into it: BatchNorm, ReLU) the activation is captured
(the backend's tapper) and compared with the float reference's at the same
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantcore import settings
from quantcore.backends import Capture, Layer, Tapper, tapper_for, to_numpy
from quantcore.errors import RunTimeoutError
from quantcore.evaluate.batches import InputBatches, fitting_batch, sample_inputs
from quantcore.evaluate.failures import failure_note
from quantcore.evaluate.inputs import InputSpec, input_spec, to_model_input, variant_spec
from quantcore.evaluate.progress import Progress
from quantcore.inspect.layer_table import LayerTable, build_layer_table, layer_table
from quantcore.inspect.sqnr import SqnrAccumulator
from quantcore.load import Key, ModelFormat, ModelVariants, VariantKey
from quantcore.load.results_cache import cached

logger = logging.getLogger(__name__)

AS_WRITTEN_NOTE = (
    "Quantized ONNX graphs ran each quantized step as the graph writes it, as onnxruntime's qdq_loss_debug "
    "does; the integer kernels this CPU fuses them into can lose a few dB more (Accuracy & speed runs those)."
)
DEFAULT_IMAGES = 256
DEFAULT_BATCH_SIZE = 32
ProgressFn = Callable[[float, str], None]


# ---------------------------------------------------------------------- report


@dataclass(frozen=True)
class VariantDrift:
    """One quantized variant against its float reference, layer by layer (one entry per table row)."""

    variant: Key
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


# ------------------------------------------------------------------------- run


def _as_float(value: Any, layer: Layer) -> np.ndarray:
    array = to_numpy(value)
    if layer.tap_q is not None and np.issubdtype(array.dtype, np.integer):
        return layer.tap_q.dequantize(array)
    return array


@dataclass
class _Comparison:
    variant: Key
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
    inputs: InputBatches | None = None,
    include_float: bool = False,
    as_written: bool = True,
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
        as_written: run quantized ONNX graphs with each step as the graph writes it (what onnxruntime's
            ``qdq_loss_debug`` measures). False: through the integer kernels onnxruntime fuses around the
            taps — but taps change what it fuses (an S8S8 tensor made a graph output is not turned to U8),
            so those figures are neither the plain run's nor the graph's; the scorecard measures the kernels.
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
        inputs, input_notes = sample_inputs(variants, input_spec(variants), images=images)
        notes.extend(input_notes)

    tappers: dict[Key, Tapper] = {}
    for key in dict.fromkeys(k for c in comparisons for k in (c.reference, c.variant)):
        taps = sorted({table.rows[r].layers[key].tap for c in comparisons if key in (c.variant, c.reference)
                       for r in c.rows})  # fmt: skip
        own = variant_spec(variants, key)
        if not inputs.as_model_input and own.pixel_shape != inputs.spec.pixel_shape:
            notes.append(f"{key}: takes {list(own.pixel_shape)}, not the {list(inputs.spec.pixel_shape)} "
                         "of the others; left out")  # fmt: skip
            continue
        try:
            tapper = tapper_for(variants.model(key), taps, as_written=as_written)
            tappers[key] = _runner(tapper, own, convert=not inputs.as_model_input)
        except RunTimeoutError:  # the request's time is up: it ends, for every variant
            raise
        except Exception as exc:  # this variant's comparisons are dropped, the others still run
            logger.warning("capturing the activations of %s failed: %s", key, exc)
            notes.append(failure_note(key, exc, what="its activations cannot be captured"))
    comparisons = [c for c in comparisons if c.variant in tappers and c.reference in tappers]
    if as_written and any(c.variant.format is ModelFormat.ONNX and c.variant.is_quantized for c in comparisons):
        notes.append(AS_WRITTEN_NOTE)

    reference_correct: dict[Key, int] = {}
    count = inputs.count if comparisons else 0
    done, size, budget = 0, batch_size, settings.current().max_activation_bytes
    report = Progress(count, progress)
    while done < count:
        # The first image alone measures what one image's captures cost, and the batch size is set to fit the
        # budget; batches then end where they would have without it (at multiples of the batch size).
        stop = 1 if done == 0 else min((done // size + 1) * size, count)
        batch, batch_labels = inputs.take(done, stop)
        captured: dict[Key, Capture] = {}
        for reference in dict.fromkeys(c.reference for c in comparisons):
            try:
                captured[reference] = tappers[reference](batch)
            except RunTimeoutError:  # the request's time is up: it ends, for every variant
                raise
            except Exception as exc:  # an ORT/torch failure drops this reference's comparisons, not the run
                logger.warning("running %s failed: %s", reference, exc)
                notes.append(failure_note(reference, exc).replace("— skipped", "— its comparisons dropped"))
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
        if done == 1:
            # References' captures, and variants'; a graph run as written also holds each Q/DQ step's float copy.
            per_image = sum(_captured_bytes(c) for c in captured.values()) * (3 if as_written else 2)
            size = fitting_batch(batch_size, per_image, budget, notes)
        report(done, f"through {len(comparisons)} variant(s)")
        if not comparisons:
            break

    has_labels = inputs is not None and inputs.labels is not None
    results = tuple(_result(c, len(table.rows), has_labels) for c in comparisons)
    seconds = time.perf_counter() - started
    logger.info("layer drift: %d variant(s), %d image(s), %.2fs", len(results), done, seconds)
    return DriftReport(
        labels, kinds, results, done, inputs.description if inputs is not None else "none", size, seconds,
        {str(k): v / done for k, v in reference_correct.items()} if done else {}, tuple(dict.fromkeys(notes)),
    )  # fmt: skip


def cached_layer_drift(
    variants: ModelVariants,
    *,
    images: int = DEFAULT_IMAGES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressFn | None = None,
) -> DriftReport:
    """``layer_drift`` over the folder's samples (or generated inputs), computed once per folder and settings."""
    table = layer_table(variants)
    return cached(
        variants, "drift", (images, batch_size),
        lambda: layer_drift(variants, table=table, images=images, batch_size=batch_size, progress=progress),
    )[0]  # fmt: skip


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


def _runner(tapper: Tapper, spec: InputSpec, *, convert: bool = True) -> Tapper:
    """The variant's tapper fed from the shared pixels: its own input, in batches of the size its graph fixes."""
    fixed = spec.batch

    def run(pixels: np.ndarray) -> Capture:
        x = to_model_input(pixels, spec) if convert else pixels
        if fixed is None or fixed == len(x):
            return tapper(x)
        parts = []
        for start in range(0, len(x), fixed):
            chunk = x[start : start + fixed]
            short = fixed - len(chunk)
            if short:  # the last chunk is filled up with its first row and the extra rows dropped
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], short, axis=0)])
            capture = tapper(chunk)
            keep = fixed - short
            parts.append((capture.output[:keep], {t: to_numpy(v)[:keep] for t, v in capture.values.items()}))
        values = {t: np.concatenate([p[1][t] for p in parts]) for t in parts[0][1]}
        return Capture(np.concatenate([p[0] for p in parts]), values)

    return run


def _captured_bytes(capture: Capture) -> int:
    return int(capture.output.nbytes + sum(to_numpy(v).nbytes for v in capture.values.values()))


def _compare_batch(
    comparison: _Comparison,
    tapper: Tapper,
    captured: dict[Key, Capture],
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
    except RunTimeoutError:  # the request's time is up: it ends, for every variant
        raise
    except Exception as exc:  # one failing variant must not end the others' run
        logger.warning("running %s failed: %s", key, exc)
        notes.append(failure_note(key, exc).replace("— skipped", "— left out"))
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
