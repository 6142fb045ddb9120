"""Every view's result as display rows (for a table widget, a CSV or the report) and as the API's JSON.

The views return typed results; this is the one place their numbers become
text a person reads: units in column names, rounding, "—" for "not there",
infinities as "∞". Nothing here computes a number the views did not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from quantcore.backends import QuantParams
from quantcore.backends.layer import spread
from quantcore.evaluate.flips import FlipReport
from quantcore.evaluate.predictions import Prediction
from quantcore.evaluate.scorecard import Scorecard
from quantcore.evaluate.speed import BATCH_SIZES
from quantcore.inspect.drift import DriftReport
from quantcore.inspect.layer_table import LayerTable
from quantcore.inspect.weights import WeightComparison
from quantcore.load import reference_key

NOT_THERE = "—"
Q_COLUMNS = (
    "weight scale",
    "weight zero point",
    "input scale",
    "input zero point",
    "output scale",
    "output zero point",
)


def number(value: float | None, digits: int = 2) -> float | str | None:
    """JSON- and table-safe: infinities as text, NaN as None."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return round(value, digits)


def percent(value: float | None, digits: int = 2) -> float | None:
    """A fraction as a percentage, rounded (None stays None)."""
    return None if value is None else round(100 * value, digits)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def qparams_text(q: QuantParams | None) -> tuple[str, str]:
    """(scale, zero point) as table text: the value, or min / median / max over channels."""
    if q is None:
        return NOT_THERE, NOT_THERE
    if not q.per_channel:
        return _fmt(float(q.scale[0])), str(int(q.zero_point[0]))
    scale = spread(q.scale)
    zero = spread(q.zero_point)
    scale_text = f"{_fmt(scale['min'])} / {_fmt(scale['median'])} / {_fmt(scale['max'])} ({q.scale.size} ch)"
    zero_text = (
        str(int(zero["min"]))
        if zero["min"] == zero["max"]
        else f"{zero['min']:g} / {zero['median']:g} / {zero['max']:g}"
    )
    return scale_text, zero_text


# ----------------------------------------------------------------- layers


def layer_rows(table: LayerTable) -> list[dict[str, Any]]:
    """The layer table: per layer, one row for each variant (its counterpart or 'not matched')."""
    records = []
    for row in table.rows:
        primary = row.primary
        for key in table.variants:
            layer = row.layers.get(key)
            record: dict[str, Any] = {
                "#": row.index + 1, "layer": primary.name, "type": primary.op,
                "weight shape": "×".join(map(str, primary.weight_shape)), "params": primary.parameters,
                "variant": str(key),
            }  # fmt: skip
            if layer is None:
                record.update({"counterpart": "not matched", "fused": "", "dtype": ""})
                record.update(dict.fromkeys(Q_COLUMNS, NOT_THERE))
            elif layer.problem is not None:
                record.update({"counterpart": layer.name, "fused": " + ".join(layer.fused),
                               "dtype": f"weights unreadable: {layer.problem}"})  # fmt: skip
                record.update(dict.fromkeys(Q_COLUMNS, NOT_THERE))
            else:
                w_scale, w_zero = qparams_text(layer.weight_q)
                in_scale, in_zero = qparams_text(layer.input_q)
                out_scale, out_zero = qparams_text(layer.output_q)
                act = layer.output_q or layer.input_q
                dtype = f"w {layer.weight_q.dtype} · act {act.dtype if act else '?'}" if layer.weight_q else "float32"
                record.update({
                    "counterpart": layer.name,
                    "fused": " + ".join(layer.fused), "dtype": dtype,
                    "weight scale": w_scale, "weight zero point": w_zero,
                    "input scale": in_scale, "input zero point": in_zero,
                    "output scale": out_scale, "output zero point": out_zero,
                })  # fmt: skip
            records.append(record)
        for key, reason in table.unreadable.items():
            records.append({
                "#": row.index + 1, "layer": primary.name, "type": primary.op,
                "weight shape": "×".join(map(str, primary.weight_shape)), "params": primary.parameters,
                "variant": str(key), "counterpart": f"not read: {reason}", "fused": "", "dtype": "",
                **dict.fromkeys(Q_COLUMNS, NOT_THERE),
            })  # fmt: skip
    return records


# ---------------------------------------------------------------- weights


def _cell(value: Any) -> Any:
    if isinstance(value, dict):
        return " / ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value.values())
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return "×".join(map(str, value))
    return value


def weight_stat_rows(comparison: WeightComparison) -> list[dict[str, Any]]:
    """One row of statistics per series (per-channel values as min / median / max)."""
    records = []
    for s in comparison.series:
        head = {"variant": s.label, "layer": s.layer.name, "reference": str(s.reference) if s.reference else NOT_THERE}
        records.append(head | {k: _cell(v) for k, v in s.stats.items()})
    return records


# -------------------------------------------------------------- layer error


def _layer_name(report: DriftReport, row: int) -> str:
    return report.layers[row].split(". ", 1)[-1]


def drift_rows(report: DriftReport) -> list[dict[str, Any]]:
    """One row per layer, one SQNR column (dB) per variant."""
    rows = []
    for i, kind in enumerate(report.kinds):
        row: dict[str, Any] = {"#": i + 1, "layer": _layer_name(report, i), "kind": kind}
        for drift in report.variants:
            row[f"{drift.variant} (dB)"] = number(drift.sqnr_db[i])
        rows.append(row)
    return rows


def drift_summary_rows(report: DriftReport) -> list[dict[str, Any]]:
    """One row per variant: its worst layer, output SQNR, agreement and accuracy."""
    rows = []
    for drift in report.variants:
        worst = drift.worst
        rows.append({
            "variant": str(drift.variant),
            "reference": str(drift.reference),
            "worst layer": _layer_name(report, worst) if worst is not None else None,
            "worst SQNR (dB)": number(drift.sqnr_db[worst]) if worst is not None else None,
            "output SQNR (dB)": number(drift.output_sqnr_db),
            "top-1 agreement": number(drift.agreement, 4),
            "accuracy": number(drift.accuracy, 4),
            "reference accuracy": number(report.reference_accuracy.get(str(drift.reference)), 4),
        })  # fmt: skip
    return rows


def drift_worst(report: DriftReport) -> dict[str, dict[str, Any]]:
    """Per variant: the row index, name and SQNR of its worst layer."""
    return {
        str(d.variant): {"row": d.worst, "layer": _layer_name(report, d.worst), "sqnr_db": number(d.sqnr_db[d.worst])}
        for d in report.variants
        if d.worst is not None
    }


def drift_json(report: DriftReport) -> dict[str, Any]:
    """The per-layer error as the API returns it: everything the tab shows."""
    return {
        "images": report.images,
        "source": report.source,
        "batch_size": report.batch_size,
        "seconds": round(report.seconds, 3),
        "layers": drift_rows(report),
        "variants": drift_summary_rows(report),
        "worst": drift_worst(report),
        "notes": list(report.notes),
    }


# ------------------------------------------------------------ predictions


def agreement_row(prediction: Prediction) -> dict[str, str]:
    """Per variant: agrees with its float reference, flips, or is the reference."""
    row = {"rank": "agrees with float"}
    for p in prediction.variants:
        if p.agrees is None:
            row[str(p.variant)] = "no float loaded" if p.variant.is_quantized else "reference"
        else:
            row[str(p.variant)] = f"{'✔ yes' if p.agrees else '✘ FLIPS'} (vs {p.reference})"
    return row


def prediction_rows(prediction: Prediction) -> list[dict[str, str]]:
    """Side by side: one row per rank, one column per variant ("Coat 91.2 %"), after the agreement row."""
    rows = [agreement_row(prediction)]
    for rank in range(max((len(p.top) for p in prediction.variants), default=0)):
        row = {"rank": str(rank + 1)}
        for p in prediction.variants:
            score = p.top[rank] if rank < len(p.top) else None
            row[str(p.variant)] = f"{score.name} {100 * score.probability:.1f} %" if score else ""
        rows.append(row)
    return rows


def flip_rows(report: FlipReport, limit: int | None = None) -> list[dict[str, Any]]:
    """One row per (sample, variant) flip, by sample; the first ``limit`` rows."""
    names = report.class_names
    flips = report.flips if limit is None else report.flips[:limit]
    return [
        {
            "sample": f.sample,
            "label": names[f.label] if f.label is not None else None,
            "variant": str(f.variant),
            "float says": names[f.reference_class],
            "variant says": names[f.variant_class],
            "effect": f.effect,
            "reference": str(f.reference),
        }
        for f in flips
    ]


def flips_json(report: FlipReport, limit: int | None = None) -> dict[str, Any]:
    """The flips as the API returns them: counts per variant, the flips (up to ``limit``) and notes."""
    return {
        "images": report.images,
        "source": report.source,
        "compared": {str(k): str(v) for k, v in report.compared.items()},
        "counts": report.counts(),
        "total": len(report.flips),
        "flips": flip_rows(report, limit),
        "notes": list(report.notes),
    }


# ---------------------------------------------------------- accuracy & speed


def score_rows(card: Scorecard) -> list[dict[str, Any]]:
    """The scorecard: one row per variant."""
    floats = {s.variant: s.images_per_second for s in card.scores}
    rows = []
    for s in card.scores:
        row: dict[str, Any] = {
            "variant": str(s.variant),
            "file": s.file,
            "size (KB)": round(s.bytes / 1024, 1) if s.bytes is not None else None,
            "accuracy (%)": percent(s.accuracy),
            "correct": s.correct,
            "agreement with float (%)": percent(s.agreement),
            "float reference": str(s.reference) if s.reference else None,
        }
        speed_ref = reference_key(s.variant, [k for k in floats if floats[k]])
        for batch in BATCH_SIZES:
            ips = s.images_per_second.get(batch)
            row[f"images/s @{batch}"] = round(ips, 1) if ips is not None else None
            ref_ips = floats.get(speed_ref, {}).get(batch) if speed_ref and s.variant.is_quantized else None
            row[f"× float @{batch}"] = round(ips / ref_ips, 2) if ips and ref_ips else None
        rows.append(row)
    return rows


def per_class_rows(card: Scorecard) -> list[dict[str, Any]]:
    """Per-class accuracy (%): one row per class, one column per variant."""
    rows = []
    for c, name in enumerate(card.class_names):
        row: dict[str, Any] = {"class": name, "images": card.class_counts[c]}
        for s in card.scores:
            row[str(s.variant)] = percent(s.per_class[c]) if c < len(s.per_class) else None
        rows.append(row)
    return rows


def scorecard_json(card: Scorecard) -> dict[str, Any]:
    """The scorecard as the API returns it: everything the tab shows."""
    speeds = card.speeds
    return {
        "images": card.images,
        "source": card.source,
        "table": score_rows(card),
        "per_class": per_class_rows(card),
        "speed": {"runs": speeds.runs, "threads": speeds.threads, "inputs": speeds.source,
                  "batch_sizes": list(BATCH_SIZES), "statistic": "fastest run; variants take turns",
                  "median_images_per_second": {str(k): {f"@{b}": round(ips, 1) for b, ips in v.items()}
                                               for k, v in speeds.median_images_per_second.items()}},
        "advice": [str(a) for a in card.advice],
        "kernel_checks": [{"variant": str(c.variant), "images": c.images, "changed_top1": c.changed,
                           "correct_here": c.kernel_correct, "correct_as_graph_specifies": c.graph_correct}
                          for c in card.kernel_checks],
        "notes": list(card.notes),
    }  # fmt: skip


# --------------------------------------------------------------- overview

# Card figures, most telling first: the full test set, else the bundled samples.
CARD_MEASURES = (("test", "test images"), ("samples", "samples"))


def scheme_text(variant: dict[str, Any]) -> str:
    """How a variant is quantized, from its summary: ``QDQ, int8 activations, int8 weights, per-channel``."""
    quant = variant.get("quantization") or {}
    parts = [
        quant.get("format"),
        f"{quant['activation_type']} activations" if quant.get("activation_type") else None,
        f"{quant['weight_type']} weights" if quant.get("weight_type") else None,
        quant.get("granularity"),
    ]
    shown = [str(p) for p in parts if p]
    if not shown and variant.get("quantized_modules"):
        shown.append(f"{variant['quantized_modules']} quantized modules")
    return ", ".join(shown) or NOT_THERE


def _card_figures(card: Any, key: str, sha256: Any) -> tuple[float | None, float | None, str]:
    """(accuracy, agreement with float, what they were measured on) that ``model_card.json`` gives a variant.

    A card entry naming another file's checksum describes another file: its figures are not shown.
    """
    listed = card.get("variants") if isinstance(card, Mapping) else None
    entry = listed.get(key) if isinstance(listed, Mapping) else None
    if isinstance(entry, Mapping) and entry.get("sha256") and entry.get("sha256") != sha256:
        return None, None, "the card describes another file"
    for name, what in CARD_MEASURES:
        measured = entry.get(name) if isinstance(entry, Mapping) else None
        if not isinstance(measured, Mapping):
            continue
        accuracy, agreement = measured.get("accuracy"), measured.get("agreement_with_float")
        accuracy = float(accuracy) if isinstance(accuracy, int | float) and not isinstance(accuracy, bool) else None
        agreement = float(agreement) if isinstance(agreement, int | float) and not isinstance(agreement, bool) else None
        if accuracy is None and agreement is None:
            continue
        images = measured.get("images")
        return accuracy, agreement, f"{images:,} {what}" if isinstance(images, int) else what
    return None, None, NOT_THERE


def _status_text(variant: dict[str, Any]) -> str:
    status = str(variant.get("status") or NOT_THERE)
    if status in ("error", "refused"):
        return f"{status}: {variant.get('error') or 'no reason given'}"
    return status


def variant_rows(summary: dict[str, Any] | None, card: Any = None) -> list[dict[str, Any]]:
    """The overview: one row per variant of a summary, with the accuracy and agreement its model card gives.

    Args:
        summary: a ``get_model_summary`` result (``None``: nothing loaded, no rows).
        card: the folder's ``model_card.json`` (``ModelVariants.card``); figures are left out without one.

    Returns:
        Rows of variant, status (with the reason when not loaded), format, precision, scheme,
        size (KB), parameters, and the card's accuracy (%), agreement with float (%) and what they were measured on.
    """
    rows = []
    for key, variant in ((summary or {}).get("variants") or {}).items():
        loaded = variant.get("status") == "loaded"
        accuracy, agreement, measured = _card_figures(card, str(key), variant.get("sha256"))
        fmt = str(variant.get("format") or NOT_THERE)
        storage = variant.get("storage")
        rows.append({
            "variant": str(key),
            "status": _status_text(variant),
            "format": f"{fmt} ({storage})" if loaded and storage and storage != fmt else fmt,
            "precision": variant.get("precision") or NOT_THERE,
            "scheme": scheme_text(variant) if loaded else NOT_THERE,
            "size (KB)": round(variant["bytes"] / 1024, 1) if isinstance(variant.get("bytes"), int) else None,
            "parameters": variant.get("parameters"),
            "accuracy (%)": percent(accuracy),
            "agreement with float (%)": percent(agreement),
            "card measured on": measured,
        })  # fmt: skip
    return rows
