"""The Integer tab: what an integer kernel must compute for every quantized layer, checked bit for bit.

API: ``/integer (source, images)`` -> every quantized variant's integer layers and whole-network runs;
``/integer_export (source, images)`` -> each variant's firmware JSON and C header as files.
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
    download_folder,
    file_api,
    hidden_endpoint,
    note,
    on_failure,
    progress_reporter,
    variants_for,
    whole_number,
)
from quantcore import settings
from quantcore.integer.export import write_exports
from quantcore.integer.view import DEFAULT_IMAGES, IntegerReport, cached_integer_view
from quantcore.report import integer_figures, integer_tables

MIN_IMAGES, IMAGE_STEP = 16, 16
HINT = ("Load a folder above, then press the button to see, for each quantized conv and dense layer, what an "
        "integer kernel computes: scales, zero points, the requantization multiplier as M0 and shift, the "
        "accumulator width, saturation, and a bit-exact check against the runtime (onnxruntime or torch).")  # fmt: skip
CHANNEL_HINT = "Pick a layer to see it channel by channel."
_SEPARATOR = " · "


@dataclass(frozen=True)
class IntegerTab:
    images: gr.Slider
    run: gr.Button
    note: gr.Markdown
    bits: gr.Plot
    saturation: gr.Plot
    table: gr.Dataframe
    layer: gr.Dropdown
    channels: gr.Dataframe
    files: gr.File

    @property
    def outputs(self) -> list[Any]:
        return [self.note, self.bits, self.saturation, self.table, self.layer, self.channels, self.files]


def _report(source: Any, images: Any, progress: gr.Progress | None = None) -> IntegerReport:
    count = whole_number(images, DEFAULT_IMAGES, 1, settings.current().max_run_images, "images")
    return cached_integer_view(
        variants_for(source), images=count, progress=progress_reporter(progress) if progress is not None else None
    )


def integer_api(source: Any, images: float = DEFAULT_IMAGES) -> dict[str, Any]:
    """Every quantized variant's integer layers, per channel, and its whole-network integer run (API: /integer)."""
    return integer_tables.integer_json(_report(source, images))


def export_files(report: IntegerReport) -> list[str]:
    """Each variant's firmware JSON and C header, in a fresh temp folder (what the download offers)."""
    return [str(path) for path in write_exports(report.variants, download_folder("integer"))]


def integer_export_api(source: Any, images: float = DEFAULT_IMAGES) -> list[str]:
    """The firmware export as files (API: /integer_export); an empty list when nothing is quantized.

    Raises:
        NothingLoadedError, QuantcoreError, ValueError: as ``integer_api`` would (the endpoint says why).
    """
    return export_files(_report(source, images))


def summary_lines(report: IntegerReport) -> tuple[str, list[str]]:
    """The note's title and lines: each variant's whole-network integer run and its layers' checks."""
    lines = []
    for result in report.variants:
        exact = sum(1 for layer in result.layers if not layer.float_mismatch.count)
        fused = sum(1 for layer in result.layers if not result.runs_float(layer))
        network = integer_tables.network_text(result.network_fixed, result.runtime)
        lines.append(
            f"{result.variant}: fixed-point integer network — {network}; "
            f"{exact} of {len(result.layers)} layers bit-exact with float requantization; "
            f"{fused} of {len(result.layers)} run as {result.runtime} integer kernels here"
        )
    lines.append(f"{report.images} images from {report.source} in {report.seconds:.1f} s.")
    if not report.variants:
        return "No quantized variant to read as integer layers", lines
    widest = max((layer.bound_bits, str(r.variant), layer.step.name) for r in report.variants for layer in r.layers)
    return f"Widest accumulator: {widest[0]} bits ({widest[1]} at {widest[2]})", lines


def _hidden(message: str) -> tuple[Any, ...]:
    return (
        message,
        gr.Plot(value=None, visible=False),
        gr.Plot(value=None, visible=False),
        gr.Dataframe(value=None, visible=False),
        gr.Dropdown(choices=[], value=None, visible=False),
        gr.Dataframe(value=None, visible=False),
        gr.File(value=None, visible=False, interactive=False),
    )


@on_failure("the integer view", _hidden)
def _integer_page(source: Any, images: float, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    report = _report(source, images, progress)
    title, lines = summary_lines(report)
    shown = bool(report.variants)
    choices = [f"{r.variant}{_SEPARATOR}{layer.step.name}" for r in report.variants for layer in r.layers]
    return (
        note([*lines, *report.notes], title),
        gr.Plot(value=integer_figures.accumulator_figure(report) if shown else None, visible=shown),
        gr.Plot(value=integer_figures.saturation_figure(report) if shown else None, visible=shown),
        gr.Dataframe(value=pd.DataFrame(integer_tables.layer_rows(report)), visible=shown),
        gr.Dropdown(choices=choices, value=None, visible=shown),
        gr.Dataframe(value=None, visible=False),
        gr.File(value=export_files(report) if shown else None, visible=shown, interactive=False),
    )


def _channels_page(source: Any, images: float, picked: str | None) -> Any:
    """The picked layer channel by channel (the report is cached: this does not run the models again)."""
    if not picked or _SEPARATOR not in picked:
        return gr.Dataframe(value=None, visible=False)
    try:
        variant, layer_name = picked.split(_SEPARATOR, 1)
        result = _report(source, images).variant(variant)
        layer = next((la for la in result.layers if la.step.name == layer_name), None) if result else None
    except Exception:  # the table is a detail: the note above already says what failed
        return gr.Dataframe(value=None, visible=False)
    if layer is None:
        return gr.Dataframe(value=None, visible=False)
    return gr.Dataframe(value=pd.DataFrame(integer_tables.channel_rows(layer)), visible=True)


def build() -> IntegerTab:
    """The tab's components (call inside its ``gr.Tab``)."""
    with gr.Row():
        images = gr.Slider(MIN_IMAGES, settings.current().max_run_images, value=DEFAULT_IMAGES, step=IMAGE_STEP,
                           label="Images", scale=3)  # fmt: skip
        run = gr.Button("Compute the integer view", variant="primary", elem_id="qp-int-run", scale=1)
    return IntegerTab(
        images, run,
        gr.Markdown(HINT, elem_id="qp-int-note"),
        gr.Plot(label="Accumulator bits", elem_id="qp-int-bits", visible=False),
        gr.Plot(label="Saturation", elem_id="qp-int-saturation", visible=False),
        gr.Dataframe(label="Per layer", interactive=False, elem_id="qp-int-table", visible=False, wrap=True),
        gr.Dropdown(label="Per channel", info=CHANNEL_HINT, elem_id="qp-int-layer", visible=False),
        gr.Dataframe(label="Per channel", interactive=False, elem_id="qp-int-channels", visible=False),
        gr.File(label="Firmware export: JSON and C header per variant", file_count="multiple",
                interactive=False, elem_id="qp-int-files", visible=False),
    )  # fmt: skip


def wire(page: Page, view: IntegerTab) -> None:
    """Page events (private) and the /integer and /integer_export endpoints."""
    view.run.click(_integer_page, [page.source, view.images], view.outputs, api_name="page_integer", **PRIVATE,
                   **HEAVY_EVENTS)  # fmt: skip
    view.layer.change(_channels_page, [page.source, view.images, view.layer], view.channels,
                      api_name="page_integer_channels", **PRIVATE, **HEAVY_EVENTS)  # fmt: skip
    # A new folder's integer figures are not the old one's: clear them until the user runs it.
    cleared = page.summary.change(lambda: _hidden(HINT), None, view.outputs, api_name="page_integer_clear",
                                  **PRIVATE)  # fmt: skip
    links.run_when_linked(cleared, "integer", _integer_page, page, view.images, view.outputs)
    source, images = gr.JSON(visible=False), gr.Number(value=DEFAULT_IMAGES, visible=False)
    hidden_endpoint(api(integer_api), [source, images], gr.JSON(visible=False), "integer", HEAVY_EVENTS)
    hidden_endpoint(file_api(integer_export_api), [source, images], gr.File(visible=False, file_count="multiple"),
                    "integer_export", HEAVY_EVENTS)  # fmt: skip
