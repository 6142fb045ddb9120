"""The playground's results as display rows and API JSON: the recipe board and the sensitivity sweep."""

from __future__ import annotations

from typing import Any

from quantcore.quantize.board import SPEED_BATCHES, BoardEntry
from quantcore.quantize.sweep import SweepReport
from quantcore.report.tables import number, percent


def board_rows(entries: list[BoardEntry]) -> list[dict[str, Any]]:
    """One row per recipe, in the order given (``board.ranked`` puts the best first)."""
    rows = []
    for rank, e in enumerate(entries, 1):
        row: dict[str, Any] = {
            "rank": rank,
            "recipe": e.recipe,
            "accuracy (%)": percent(e.accuracy),
            "agreement with float (%)": percent(e.agreement),
            "worst layer": e.worst_layer,
            "worst layer SQNR (dB)": number(e.worst_sqnr_db),
            "output SQNR (dB)": number(e.output_sqnr_db),
            "size (KB)": round(e.bytes / 1024, 1),
        }
        for batch in SPEED_BATCHES:
            ips = e.images_per_second.get(batch)
            row[f"images/s @{batch}"] = round(ips, 1) if ips is not None else None
        row["images"] = e.images
        rows.append(row)
    return rows


def board_json(entries: list[BoardEntry]) -> dict[str, Any]:
    """The board as the API returns it, with each recipe's per-layer SQNR."""
    layers = {e.recipe: {name: number(db) for name, db in zip(e.layers, e.layer_sqnr_db, strict=False)}
              for e in entries}  # fmt: skip
    return {
        "table": board_rows(entries),
        "layers": layers,
        "speed": "images/s of the fastest of the timed runs, one recipe at a time",
    }


def sweep_rows(report: SweepReport) -> list[dict[str, Any]]:
    """The sweep, costliest layer first."""
    rows = []
    for rank, row in enumerate(report.rows, 1):
        rows.append({
            "rank": rank, "layer": row.layer,
            "alone: output SQNR (dB)": number(row.alone.output_sqnr_db),
            "alone: accuracy (%)": percent(row.alone.accuracy),
            "alone: agreement (%)": percent(row.alone.agreement),
            "kept float: output SQNR (dB)": number(row.kept_float.output_sqnr_db),
            "kept float: gain (dB)": number(report.gain_db(row)),
            "kept float: accuracy (%)": percent(row.kept_float.accuracy),
            "kept float: agreement (%)": percent(row.kept_float.agreement),
        })  # fmt: skip
    return rows


def sweep_lines(report: SweepReport) -> list[str]:
    """What a sweep found, in a few lines: its size, the whole recipe's SQNR, the costliest layer."""
    worst = report.rows[0]
    return [f"{report.recipe.name}: {len(report.rows)} layers on {report.images} images, "
            f"{2 * len(report.rows) + 1} recipes run on {report.executor} in {report.seconds:.1f} s.",
            f"Whole recipe: output SQNR {number(report.base.output_sqnr_db)} dB. "
            f"Costliest layer: {worst.layer} (alone: {number(worst.alone.output_sqnr_db)} dB; "
            f"kept in float: {number(report.gain_db(worst))} dB gained).",
            "Ranked by the output SQNR with only that layer quantized, lowest first.",
            *report.notes]  # fmt: skip


def sweep_json(report: SweepReport) -> dict[str, Any]:
    """The sweep as the API returns it."""
    base = report.base
    return {
        "recipe": report.recipe.as_dict(),
        "images": report.images,
        "executor": report.executor,
        "seconds": round(report.seconds, 2),
        "base": {"accuracy (%)": percent(base.accuracy), "agreement (%)": percent(base.agreement),
                 "output SQNR (dB)": number(base.output_sqnr_db)},
        "table": sweep_rows(report),
        "ranking": "by the output SQNR with only that layer quantized, lowest (costliest) first",
        "notes": list(report.notes),
    }  # fmt: skip
