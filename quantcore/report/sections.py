"""One section per view of a report: its notes, plots and tables, made by the tabs' own ``tables`` and
``figures`` functions (``contents`` picks which views and puts them in order)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from quantcore.evaluate.flips import FlipReport
from quantcore.evaluate.inputs import SampleSet, variant_spec
from quantcore.evaluate.predictions import VariantOutputs, probabilities, variant_logits
from quantcore.evaluate.scorecard import Scorecard
from quantcore.inspect.drift import DriftReport
from quantcore.inspect.layer_table import LayerTable
from quantcore.inspect.weights import compare_weights
from quantcore.integer.view import IntegerReport
from quantcore.load import ModelVariants
from quantcore.quantize.sweep import SweepReport
from quantcore.report import figures, integer_figures, integer_tables, quantize_tables, tables

if TYPE_CHECKING:
    import plotly.graph_objects as go


@dataclass(frozen=True)
class Table:
    """One table of a report: ``key`` names its files in the ZIP (``<section>/<key>.csv``)."""

    key: str
    title: str
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Section:
    """One view in a report: notes, then its plots, then its tables."""

    key: str
    title: str
    notes: tuple[str, ...] = ()
    figures: tuple[go.Figure, ...] = ()
    tables: tuple[Table, ...] = ()


def layers_section(table: LayerTable) -> Section:
    """The Layers tab: every variant's layers matched row by row."""
    matched = ", ".join(f"{k} {v.get('matched', 0)}/{v.get('layers', 0)}" for k, v in table.matched().items())
    notes = ([f"Layers matched to {table.skeleton}: {matched}"] if table.rows else []) + list(table.notes)
    return Section("layers", "Layers", tuple(notes), (), (Table("layers", "Layers, matched across variants",
                                                                tables.layer_rows(table)),))  # fmt: skip


def weights_section(table: LayerTable) -> Section:
    """The Weights tab for every layer: a histogram each, and one table of statistics for them all."""
    plots, rows, notes = [], [], []
    for row in table.rows:
        comparison = compare_weights(table, row.index)
        plots.append(figures.weight_histogram_figure(comparison))
        rows += [{"#": row.index + 1, **r} for r in tables.weight_stat_rows(comparison)]
        notes += list(comparison.notes)
    return Section("weights", "Weights", tuple(dict.fromkeys(notes)), tuple(plots),
                   (Table("statistics", "Weight statistics, per layer and variant", rows),))  # fmt: skip


def drift_section(report: DriftReport) -> Section:
    """The Per-layer error tab: SQNR of each quantized variant against its float reference, layer by layer."""
    worst = tables.drift_worst(report)
    notes = [f"{k}: worst layer {v['layer']} at {v['sqnr_db']} dB" for k, v in worst.items()]
    notes.append(f"{report.images} images from {report.source}; higher SQNR is better.")
    compared = any(d.worst is not None for d in report.variants)
    return Section(
        f"layer_error_{report.images}", f"Per-layer error ({report.images} images)", (*notes, *report.notes),
        (figures.drift_figure(report),) if compared else (),
        (Table("per_variant", "Per variant", tables.drift_summary_rows(report)),
         Table("per_layer", "Per layer, SQNR (dB)", tables.drift_rows(report))),
    )  # fmt: skip


def prediction_rows(variants: ModelVariants, outputs: VariantOutputs, samples: SampleSet) -> list[dict[str, Any]]:
    """Every sample's top-1 class and its probability (%) per variant, beside the sample's label."""
    names = samples.label_names
    columns: dict[str, tuple[np.ndarray, np.ndarray, tuple[str, ...]]] = {}
    for key, logits in outputs.logits.items():
        probs = probabilities(logits, variant_spec(variants, key).output)
        top = np.argmax(probs, axis=1)
        shown = names if len(names) == probs.shape[1] else tuple(f"class {i}" for i in range(probs.shape[1]))
        columns[str(key)] = (top, probs[np.arange(len(top)), top], shown)
    rows = []
    for i in range(len(samples)):
        label = int(samples.labels[i]) if samples.labels is not None else None
        row: dict[str, Any] = {"sample": i, "label": names[label] if label is not None and label < len(names)
                               else label}  # fmt: skip
        for key, (top, prob, shown) in columns.items():
            row[key] = shown[int(top[i])]
            row[f"{key} (%)"] = round(100 * float(prob[i]), 2)
        rows.append(row)
    return rows


def predictions_section(variants: ModelVariants, samples: SampleSet, spec: Any, flips: FlipReport) -> Section:
    """The Predictions tab over the samples: every sample's top-1 per variant, and the flipped ones."""
    outputs = variant_logits(variants, samples, spec)
    counts = [{"variant": k, "float reference": str(flips.compared.get(_key(flips, k), "")), "flips": n,
               "images": flips.images} for k, n in flips.counts().items()]  # fmt: skip
    return Section(
        "predictions", f"Predictions on {samples.description}",
        (f"{len(flips.samples())} of {flips.images} samples flipped by a quantized variant.", *flips.notes),
        (),
        (Table("flip_counts", "Flips per variant", counts),
         Table("flips", "Samples where a quantized variant flips float's top-1", tables.flip_rows(flips)),
         Table("top1", "Top-1 per sample and variant", prediction_rows(variants, outputs, samples))),
    )  # fmt: skip


def _key(flips: FlipReport, name: str) -> Any:
    return next((k for k in flips.compared if str(k) == name), None)


def scorecard_section(card: Scorecard) -> Section:
    """The Accuracy & speed tab: accuracy, agreement, size and images/s per variant, per-class accuracy."""
    advice = [line for a in card.advice for line in (a.finding, a.suggestion) if line]
    speed = (f"Speed: fastest of {card.speeds.runs} runs per batch size, variants taking turns, "
             f"{card.speeds.threads} threads, on {card.speeds.source}.")  # fmt: skip
    tag = "samples" if card.source.startswith("samples") else "test_set"
    return Section(
        f"scorecard_{tag}", f"Accuracy and speed on {card.source}", (*advice, speed, *card.notes),
        (figures.scorecard_figure(card),),
        (Table("per_variant", "Per variant", tables.score_rows(card)),
         Table("per_class", "Per-class accuracy (%)", tables.per_class_rows(card))),
    )  # fmt: skip


def integer_section(report: IntegerReport) -> Section:
    """The Integer tab: every quantized conv/dense layer as an integer kernel sees it, checked on the samples."""
    notes = [f"{r.variant}: fixed-point integer network — {integer_tables.network_text(r.network_fixed, r.runtime)}"
             for r in report.variants]  # fmt: skip
    notes.append(f"{report.images} images from {report.source}.")
    shown = bool(report.variants)
    plots = (integer_figures.accumulator_figure(report), integer_figures.saturation_figure(report)) if shown else ()
    return Section(f"integer_{report.images}", f"Integer layers ({report.images} images)", (*notes, *report.notes),
                   plots, (Table("layers", "Integer layers", integer_tables.layer_rows(report)),))  # fmt: skip


def recipes_section(variants: ModelVariants) -> Section | None:
    """The Quantize tab's board: every recipe variant made and scored for this folder (None without any)."""
    from quantcore.load import RecipeKey
    from quantcore.quantize import store
    from quantcore.quantize.board import ranked

    entries = [e for k, r in variants.records.items() if isinstance(k, RecipeKey)
               and (e := store.score(variants, k.name, r.sha256)) is not None]  # fmt: skip
    if not entries:
        return None
    board = ranked(entries)
    return Section("recipes", "Recipe variants", (), (),
                   (Table("board", "Recipes, best first", quantize_tables.board_rows(board)),))  # fmt: skip


def sweep_section(report: SweepReport) -> Section:
    """The Quantize tab's sensitivity sweep: each layer quantized alone and kept in float, costliest first."""
    return Section(f"sweep_{report.recipe.name}_{report.images}", f"Sensitivity sweep of {report.recipe.name}",
                   tuple(quantize_tables.sweep_lines(report)), (figures.sweep_figure(report),),
                   (Table("layers", "Layers, costliest first", quantize_tables.sweep_rows(report)),))  # fmt: skip
