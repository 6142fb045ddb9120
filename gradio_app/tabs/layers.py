"""The Layers tab: every variant's conv and dense layers matched row by row, and one layer's every channel.

API: ``/layers (source, layer)`` -> the layer table, and one layer's full per-channel vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from gradio_app import render
from gradio_app.common import PRIVATE, VIEW_EVENTS, Page, api, hidden_endpoint, note, on_failure, variants_for
from quantcore.inspect.layer_table import LayerTable, layer_table
from quantcore.report import tables

HINT = "Load a folder (or pull a Hub repo) above to see its layers, matched across variants."


@dataclass(frozen=True)
class LayersTab:
    note: gr.Markdown
    table: gr.Dataframe
    pick: gr.Dropdown
    detail: gr.JSON


def layer_index(layer: Any, table: LayerTable) -> int:
    """A row index from what a client sent: 0-based (int or digits), or a row's label or layer name.

    Raises:
        ValueError: no layer of that name.
        IndexError: no such row.
    """
    if isinstance(layer, (int, float)) and not isinstance(layer, bool):
        index = int(layer)
    elif isinstance(layer, str) and layer.strip().isdigit():
        index = int(layer.strip())
    elif isinstance(layer, str) and layer.strip():
        text = layer.strip()
        index = next((row.index for row in table.rows if text in (row.label, row.primary.name)), -1)
        if index < 0:
            raise ValueError(f"no layer named {text!r}")
    else:
        index = 0
    table.row(index)
    return index


def choices(table: LayerTable) -> list[tuple[str, int]]:
    """(label, row index) for every row: a layer picker's options."""
    return [(row.label, row.index) for row in table.rows]


def layers_api(source: Any, layer: Any = None) -> dict[str, Any]:
    """The layer table of the loaded folder, and one layer's full per-channel vectors (API: /layers)."""
    table = layer_table(variants_for(source))
    detail = table.detail(layer_index(layer, table)) if table.rows and layer not in (None, "") else None
    return {
        "skeleton": str(table.skeleton) if table.skeleton else None,
        "layers": [row.label for row in table.rows],
        "matched": table.matched(),
        "rows": tables.layer_rows(table),
        "notes": list(table.notes),
        "detail": detail,
    }


def _cleared(message: str) -> tuple[Any, ...]:
    cleared = gr.Dropdown(choices=[], value=None)
    return (message, gr.Dataframe(value=None, visible=False), gr.Dropdown(choices=[], value=None, visible=False),
            cleared, gr.JSON(value=None, visible=False))  # fmt: skip


def _linked_row(link: Any, table: LayerTable) -> int | None:
    """The row of the layer a link asks for (checked when the link was opened), else ``None``."""
    layer = getattr(link, "layer", None)
    try:
        return layer_index(layer, table) if layer else None
    except (ValueError, IndexError):
        return None


@on_failure("the layer table", _cleared)
def _layers_page(source: Any, link: Any = None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    progress(0.2, desc="Reading every variant's layers")
    table = layer_table(variants_for(source))
    if not table.rows:
        return _cleared(note(list(table.notes) or ["No conv or dense layers found."], "Layers"))
    matched = ", ".join(f"{k} {v['matched']}/{v['layers']}" for k, v in table.matched().items())
    options = choices(table)
    picked = _linked_row(link, table)
    # A linked layer's detail comes with the table: the picker's own change event is not sure to fire
    # when the picker is refilled in the same update.
    detail = gr.JSON(value=None, visible=False) if picked is None else gr.JSON(table.detail(picked), visible=True)
    return (
        note([f"Layers matched to {table.skeleton}: {matched}", *table.notes], "Layers"),
        gr.Dataframe(value=pd.DataFrame(tables.layer_rows(table)), visible=True),
        gr.Dropdown(choices=options, value=picked, visible=True),
        gr.Dropdown(choices=options, value=options[0][1] if picked is None else picked),
        detail,
    )


def _detail_page(source: Any, layer: Any) -> Any:
    if layer is None:
        return gr.JSON(value=None, visible=False)
    result = api(layers_api)(source, layer)
    return gr.JSON(value=result.get("detail") or {"error": result.get("error")}, visible=True)


def build() -> LayersTab:
    """The tab's components (call inside its ``gr.Tab``)."""
    return LayersTab(
        gr.Markdown(render.info(HINT).markdown, elem_id="qp-layers-note"),
        gr.Dataframe(
            label="Layers, matched across variants",
            interactive=False,
            elem_id="qp-layers-table",
            max_height=480,
            visible=False,
        ),
        gr.Dropdown(
            label="Every channel's scale and zero point of layer", choices=[], elem_id="qp-layer-pick", visible=False
        ),
        gr.JSON(label="Per-channel detail", elem_id="qp-layer-detail", visible=False),
    )


def wire(page: Page, view: LayersTab, weights_layer: gr.Dropdown) -> None:
    """Page events (private) and the /layers endpoint; ``weights_layer`` (the Weights tab's picker) gets the rows."""
    outputs = [view.note, view.table, view.pick, weights_layer, view.detail]
    page.summary.change(_layers_page, [page.source, page.link], outputs, api_name="page_layers", **PRIVATE,
                        **VIEW_EVENTS)  # fmt: skip
    view.pick.change(_detail_page, [page.source, view.pick], view.detail, api_name="page_layer_detail", **PRIVATE,
                     **VIEW_EVENTS)  # fmt: skip
    source, layer, out = gr.JSON(visible=False), gr.Textbox(visible=False), gr.JSON(visible=False)
    hidden_endpoint(api(layers_api), [source, layer], out, "layers", VIEW_EVENTS)
