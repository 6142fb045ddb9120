"""The playground's results as display rows and API JSON: the recipe board (and, later, the sweep)."""

from __future__ import annotations

from typing import Any

from quantcore.quantize.board import SPEED_BATCHES, BoardEntry
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
