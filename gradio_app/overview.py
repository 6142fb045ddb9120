"""The overview under the status: the page's header naming what is loaded, and one row per variant.

Both follow the summary: a new load (folder, Hub, upload, input override)
changes it, and they are redrawn from it and the folder's model card. The
JSON summary itself stays below them, folded, as the app's promised output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from gradio_app import render
from gradio_app.common import PRIVATE, VIEW_EVENTS, Page, variants_for
from quantcore import QuantcoreError
from quantcore.report import tables

TITLE = "Quantization Playground"
INSTRUCTIONS = "Select a model folder to begin — or pull one from the Hub."


@dataclass(frozen=True)
class Overview:
    header: gr.Markdown
    table: gr.Dataframe


def header_text(summary: dict[str, Any] | None) -> str:
    """The page's header: the title, and what is loaded (or what to do first)."""
    if not summary or not summary.get("variants"):
        return f"# {TITLE}\n\n{INSTRUCTIONS}"
    counts = summary.get("counts") or {}
    found = sum(counts.get(k, 0) for k in ("loaded", "error", "refused"))
    where = render.escape(summary.get("folder") or summary.get("stem") or "the models folder")
    stem = render.escape(summary.get("stem") or "")
    model = f" (model **{stem}**)" if stem and stem != where.rsplit("/", 1)[-1] else ""
    return f"# {TITLE}\n\nShowing **{where}**{model}: {summary.get('total_loaded', 0)} of {found} variants loaded."


def build_header() -> gr.Markdown:
    """The page's first line (call where the header goes)."""
    return gr.Markdown(header_text(None), elem_classes=["qp-header"], elem_id="qp-header", latex_delimiters=[])


def build_table() -> gr.Dataframe:
    """The variant table (call directly under the status); hidden until something is loaded."""
    return gr.Dataframe(label="Variants", interactive=False, elem_id="qp-variants", visible=False, wrap=True)


def _card(source: Any) -> Any:
    try:
        return variants_for(source).card
    except QuantcoreError:  # the status already says why; the rows are shown without the card's figures
        return None


def _overview(summary: dict[str, Any] | None, source: Any) -> tuple[Any, Any]:
    rows = tables.variant_rows(summary, _card(source) if rows_wanted(summary) else None)
    return header_text(summary), gr.Dataframe(value=pd.DataFrame(rows) if rows else None, visible=bool(rows))


def rows_wanted(summary: dict[str, Any] | None) -> bool:
    return bool(summary and summary.get("variants"))


def wire(page: Page, overview: Overview) -> None:
    """The header and the table follow the summary."""
    page.summary.change(_overview, [page.summary, page.source], [overview.header, overview.table],
                        api_name="page_overview", **PRIVATE, **VIEW_EVENTS)  # fmt: skip
