"""The Per-layer error tab: SQNR of every quantized variant against its float reference, layer by layer.

API: ``/layer_error (source, images)`` -> per-layer SQNR of every quantized variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from gradio_app import links
from gradio_app.common import (
    HEAVY_EVENTS,
    PRIVATE,
    Page,
    api,
    hidden_endpoint,
    note,
    on_failure,
    progress_reporter,
    variants_for,
    whole_number,
)
from quantcore import settings
from quantcore.inspect.drift import DEFAULT_BATCH_SIZE, DEFAULT_IMAGES, DriftReport, cached_layer_drift
from quantcore.report import figures, tables

MIN_IMAGES, IMAGE_STEP = 16, 16
WORST_CSS = "background-color: #fcd9dc; font-weight: 600"
HINT = "Load a folder above, then press the button to measure how far each quantized variant drifts from float."


@dataclass(frozen=True)
class LayerErrorTab:
    images: gr.Slider
    run: gr.Button
    note: gr.Markdown
    plot: gr.Plot
    summary: gr.Dataframe
    table: gr.Dataframe


def _report(source: Any, images: Any, progress: gr.Progress | None = None) -> DriftReport:
    count = whole_number(images, DEFAULT_IMAGES, 1, settings.current().max_run_images, "images")
    return cached_layer_drift(
        variants_for(source), images=count, batch_size=DEFAULT_BATCH_SIZE,
        progress=progress_reporter(progress) if progress is not None else None,
    )  # fmt: skip


def layer_error_api(source: Any, images: float = DEFAULT_IMAGES) -> dict[str, Any]:
    """Per-layer SQNR of every quantized variant against its float reference (API: /layer_error)."""
    return tables.drift_json(_report(source, images))


def highlight_worst(frame: pd.DataFrame, report: DriftReport) -> Any:
    """The per-layer table with each variant's worst layer marked."""
    worst = {f"{d.variant} (dB)": d.worst for d in report.variants if d.worst is not None}

    def style(column: pd.Series) -> list[str]:
        row = worst.get(str(column.name))
        return [WORST_CSS if row is not None and i == row else "" for i in range(len(column))]

    return frame.style.apply(style, axis=0).format(precision=2, na_rep=tables.NOT_THERE)


def _hidden(message: str) -> tuple[Any, ...]:
    return (message, gr.Plot(value=None, visible=False), gr.Dataframe(value=None, visible=False),
            gr.Dataframe(value=None, visible=False))  # fmt: skip


@on_failure("the per-layer error run", _hidden)
def _error_page(source: Any, images: float, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    report = _report(source, images, progress)
    worst = tables.drift_worst(report)
    lines = [f"{k}: worst layer {v['layer']} at {v['sqnr_db']} dB" for k, v in worst.items()]
    lines.append(f"{report.images} images from {report.source} in {report.seconds:.1f} s; higher SQNR is better.")
    compared = [d for d in report.variants if d.worst is not None and d.sqnr_db[d.worst] is not None]
    if compared:
        loser = min(compared, key=lambda d: d.sqnr_db[d.worst])  # type: ignore[index]
        shown = worst[str(loser.variant)]
        title = f"Most lost: {loser.variant} at {shown['layer']} ({shown['sqnr_db']} dB)"
    else:
        title = "Nothing to compare"
    frame = pd.DataFrame(tables.drift_rows(report))
    return (
        note([*lines, *report.notes], title),
        gr.Plot(value=figures.drift_figure(report), visible=bool(compared)),
        gr.Dataframe(value=pd.DataFrame(tables.drift_summary_rows(report)), visible=bool(report.variants)),
        gr.Dataframe(value=highlight_worst(frame, report) if len(frame) else frame, visible=len(frame) > 0),
    )


def build() -> LayerErrorTab:
    """The tab's components (call inside its ``gr.Tab``)."""
    with gr.Row():
        images = gr.Slider(MIN_IMAGES, settings.current().max_run_images, value=DEFAULT_IMAGES, step=IMAGE_STEP,
                           label="Images", scale=3)  # fmt: skip
        run = gr.Button("Compute per-layer SQNR", variant="primary", elem_id="qp-error-run", scale=1)
    return LayerErrorTab(
        images, run,
        gr.Markdown(HINT, elem_id="qp-error-note"),
        gr.Plot(label="Per-layer SQNR", elem_id="qp-error-plot", visible=False),
        gr.Dataframe(label="Per variant", interactive=False, elem_id="qp-error-summary", visible=False),
        gr.Dataframe(label="Per layer (dB); each variant's worst layer highlighted", interactive=False,
                     elem_id="qp-error-table", visible=False),
    )  # fmt: skip


def wire(page: Page, view: LayerErrorTab) -> None:
    """Page events (private) and the /layer_error endpoint."""
    outputs = [view.note, view.plot, view.summary, view.table]
    view.run.click(_error_page, [page.source, view.images], outputs, api_name="page_layer_error", **PRIVATE,
                   **HEAVY_EVENTS)  # fmt: skip
    # A new folder's per-layer results are not the old one's: clear them until the user runs it.
    cleared = page.summary.change(lambda: _hidden(HINT), None, outputs, api_name="page_layer_error_clear", **PRIVATE)
    links.run_when_linked(cleared, "layer_error", _error_page, page, view.images, outputs)
    source, images = gr.JSON(visible=False), gr.Number(value=DEFAULT_IMAGES, visible=False)
    hidden_endpoint(api(layer_error_api), [source, images], gr.JSON(visible=False), "layer_error", HEAVY_EVENTS)
