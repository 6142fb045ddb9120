"""The Weights tab: one layer's weights across variants, as histograms and statistics.

API: ``/weights (source, layer, bins, side_by_side, raw_integers)`` -> histogram counts and statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from gradio_app.common import PRIVATE, VIEW_EVENTS, Page, api, hidden_endpoint, note, on_failure, variants_for
from gradio_app.tabs.layers import layer_index
from quantcore.inspect.layer_table import layer_table
from quantcore.inspect.weights import DEFAULT_BINS, MAX_BINS, WeightComparison, compare_weights, histogram
from quantcore.report import figures, tables

OVERLAID, SIDE_BY_SIDE = "overlaid", "side by side"
HINT = "Load a folder above, then pick a layer to compare its weights across variants."


@dataclass(frozen=True)
class WeightsTab:
    layer: gr.Dropdown
    layout: gr.Radio
    raw: gr.Checkbox
    bins: gr.Slider
    note: gr.Markdown
    plot: gr.Plot
    stats: gr.Dataframe


def _comparison(source: Any, layer: Any) -> WeightComparison:
    table = layer_table(variants_for(source))
    return compare_weights(table, layer_index(layer, table))


def weights_api(
    source: Any, layer: Any = 0, bins: float = DEFAULT_BINS, side_by_side: bool = False, raw_integers: bool = False
) -> dict[str, Any]:
    """One layer's weights across variants: histogram counts and statistics (API: /weights)."""
    comparison = _comparison(source, layer)
    hist = histogram(comparison, bins=int(bins), raw_integers=bool(raw_integers))
    return {
        "layer": comparison.layer,
        "row": comparison.row,
        "stats": tables.weight_stat_rows(comparison),
        "histogram": {
            "edges": hist.edges.tolist(),
            "counts": {k: v.tolist() for k, v in hist.counts.items()},
            "raw_integers": hist.raw_integers,
            "side_by_side": bool(side_by_side),
        },
        "notes": list(comparison.notes),
    }


def _hidden(message: str) -> tuple[Any, ...]:
    return gr.Plot(value=None, visible=False), gr.Dataframe(value=None, visible=False), message


@on_failure("the weights view", _hidden)
def _weights_page(source: Any, layer: Any, layout: str, raw: bool, bins: float) -> tuple[Any, ...]:
    if layer is None:  # nothing loaded, or a new folder: say what to do
        return _hidden(HINT)
    comparison = _comparison(source, layer)
    figure = figures.weight_histogram_figure(
        comparison, bins=int(bins), side_by_side=layout == SIDE_BY_SIDE, raw_integers=bool(raw)
    )
    notes = list(comparison.notes)
    if raw:
        notes.append("Raw integers: float variants have none, so only quantized variants are shown.")
    return (
        gr.Plot(value=figure, visible=True),
        gr.Dataframe(value=pd.DataFrame(tables.weight_stat_rows(comparison)), visible=True),
        note(notes),
    )


def build() -> WeightsTab:
    """The tab's components (call inside its ``gr.Tab``)."""
    with gr.Row():
        layer = gr.Dropdown(label="Layer", choices=[], elem_id="qp-weights-layer", scale=3)
        layout = gr.Radio([OVERLAID, SIDE_BY_SIDE], value=OVERLAID, label="Histograms", scale=2)
        raw = gr.Checkbox(label="Raw integers", value=False, scale=1)
        bins = gr.Slider(5, MAX_BINS, value=DEFAULT_BINS, step=1, label="Bins", scale=2)
    return WeightsTab(
        layer, layout, raw, bins,
        gr.Markdown(HINT, elem_id="qp-weights-note"),
        gr.Plot(label="Weights", elem_id="qp-weights-plot", visible=False),
        gr.Dataframe(label="Statistics", interactive=False, elem_id="qp-weights-stats", visible=False),
    )  # fmt: skip


def wire(page: Page, view: WeightsTab) -> None:
    """Page events (private) and the /weights endpoint."""
    inputs = [page.source, view.layer, view.layout, view.raw, view.bins]
    outputs = [view.plot, view.stats, view.note]
    for name, trigger in (
        ("page_weights_layer", view.layer.change), ("page_weights_layout", view.layout.change),
        ("page_weights_raw", view.raw.change), ("page_weights_bins", view.bins.release),
    ):  # fmt: skip
        trigger(_weights_page, inputs, outputs, api_name=name, **PRIVATE, **VIEW_EVENTS)
    source, layer = gr.JSON(visible=False), gr.Textbox(visible=False)
    bins = gr.Number(value=DEFAULT_BINS, visible=False)
    side, raw = gr.Checkbox(visible=False), gr.Checkbox(visible=False)
    hidden_endpoint(api(weights_api), [source, layer, bins, side, raw], gr.JSON(visible=False), "weights", VIEW_EVENTS)
