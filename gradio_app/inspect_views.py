"""The inspect tabs beneath the summary: Layers, Weights and Per-layer error.

Thin by design: each handler works out which folder is loaded from the
summary the page (or an API script) holds, calls quantcore, and shapes the
result for display. The summary names a local folder relative to the models
root — re-checked here like any client input — or a Hub repo and commit,
which is pulled again (from the cache) rather than trusting a path.

Named endpoints for scripts take that summary (or a folder name relative to
the models root) and return plain JSON:

    /layers       (source, layer)                                 -> the layer table, and one layer's vectors
    /weights      (source, layer, bins, side_by_side, raw_integers) -> histogram counts and statistics
    /layer_error  (source, images)                                 -> per-layer SQNR of every quantized variant
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from gradio_app import render
from quantcore import QuantcoreError, load_model_variants, paths
from quantcore.inspect.drift import DEFAULT_IMAGES, DriftReport, drift_figure, layer_drift
from quantcore.inspect.layer_table import LayerTable, build_layer_table
from quantcore.inspect.weights import (
    DEFAULT_BINS,
    MAX_BINS,
    compare_weights,
    histogram,
    stats_records,
    weight_histogram_figure,
)
from quantcore.load import ModelVariants
from quantcore.load.results_cache import cached

logger = logging.getLogger(__name__)

# Tables and histograms are quick; the per-layer run keeps both cores busy, so one at a time.
INSPECT_EVENTS: dict[str, Any] = {"concurrency_id": "inspect", "concurrency_limit": 4}
DRIFT_EVENTS: dict[str, Any] = {"concurrency_id": "layer_error", "concurrency_limit": 1}
DRIFT_BATCH_SIZE = 32
MIN_IMAGES, MAX_IMAGES, IMAGE_STEP = 16, 1024, 16
NOTHING_LOADED = "Load a folder (or pull a Hub repo) above to inspect its layers."
OVERLAID, SIDE_BY_SIDE = "overlaid", "side by side"
WORST_CSS = "background-color: #fcd9dc; font-weight: 600"


@dataclass(frozen=True)
class InspectViews:
    """The components of the three tabs (for tests and for wiring more views in)."""

    layers_note: gr.Markdown
    layers_table: gr.Dataframe
    layer_pick: gr.Dropdown
    layer_detail: gr.JSON
    weights_layer: gr.Dropdown
    weights_layout: gr.Radio
    weights_raw: gr.Checkbox
    weights_bins: gr.Slider
    weights_plot: gr.Plot
    weights_stats: gr.Dataframe
    weights_note: gr.Markdown
    error_images: gr.Slider
    error_run: gr.Button
    error_note: gr.Markdown
    error_plot: gr.Plot
    error_summary: gr.Dataframe
    error_table: gr.Dataframe


class _NothingLoaded(Exception):
    """The page holds no loaded folder yet."""


# ------------------------------------------------------------------- sources


def _hub_variants(hub: dict[str, Any]) -> ModelVariants:
    from quantcore.load.hub import load_pulled_variants  # imported on use: it brings in huggingface_hub

    # The commit pins exactly what was loaded; a cached snapshot is re-used without a request.
    revision = hub.get("commit") or hub.get("revision_requested")
    return load_pulled_variants(hub.get("repo_id"), revision=revision, subfolder=hub.get("subfolder"))[1]


def variants_from(source: Any) -> ModelVariants:
    """The loaded folder a page summary (or a folder name under the models root) stands for.

    Raises:
        PathNotAllowedError, ModelNotFoundError, HubError: as loading or pulling it would.
        _NothingLoaded: nothing is loaded yet.
    """
    if isinstance(source, dict):
        if isinstance(source.get("hub"), dict) and source["hub"].get("repo_id"):
            return _hub_variants(source["hub"])
        source = source.get("folder")
    if not isinstance(source, (str, list)) or (isinstance(source, str) and not source.strip()):
        raise _NothingLoaded
    return load_model_variants(paths.resolve_folder(source))


def _table(variants: ModelVariants) -> LayerTable:
    return cached(variants, "layers", (), lambda: build_layer_table(variants))[0]


def _note(lines: list[str] | tuple[str, ...], title: str | None = None) -> str:
    text = f"**{render.escape(title)}**" if title else ""
    shown = [f"- {render.escape(line)}" for line in lines]
    return "\n".join([text, *shown] if text else shown)


def _failure(exc: BaseException, what: str) -> str:
    """A failed view as note Markdown: quantcore's and input errors say why; anything else is logged."""
    if isinstance(exc, _NothingLoaded):
        return render.info(NOTHING_LOADED).markdown
    if isinstance(exc, QuantcoreError):
        return render.error_status(exc, what=what).markdown
    if isinstance(exc, (ValueError, IndexError)):
        return render.input_error(f"{what}: {exc}").markdown
    logger.error("%s failed", what, exc_info=exc)
    return render.error_status(exc, what=what).markdown


def _layer_index(layer: Any, table: LayerTable) -> int:
    """A row index from what a client sent: 0-based (int or digits), or a row's label or layer name."""
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
    table.row(index)  # IndexError when out of range
    return index


# ------------------------------------------------------------------ handlers


def _api(handler: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """An API handler whose unexpected faults are logged and answered as ``{"error": ...}``, never raised."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return handler(*args, **kwargs)
        except Exception:
            logger.exception("unexpected failure in %s", handler.__name__)
            return {"error": "something went wrong on the server; the server log has the details"}

    return run


def layers_api(source: Any, layer: Any = None) -> dict[str, Any]:
    """The layer table of the loaded folder, and one layer's full per-channel vectors (API: /layers)."""
    try:
        table = _table(variants_from(source))
        detail = table.detail(_layer_index(layer, table)) if table.rows and layer not in (None, "") else None
    except (_NothingLoaded, QuantcoreError, ValueError, IndexError) as exc:
        return {"error": str(exc) or NOTHING_LOADED}
    return {
        "skeleton": str(table.skeleton) if table.skeleton else None,
        "layers": [row.label for row in table.rows],
        "matched": table.matched(),
        "rows": table.records(),
        "notes": list(table.notes),
        "detail": detail,
    }


def _layers_page(source: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    empty = pd.DataFrame()
    try:
        progress(0.2, desc="Reading every variant's layers")
        table = _table(variants_from(source))
    except Exception as exc:  # shown in the note: a handler never raises
        cleared = gr.Dropdown(choices=[], value=None)
        return _failure(exc, "the layer table"), empty, cleared, cleared, None
    matched = ", ".join(f"{k} {v['matched']}/{v['layers']}" for k, v in table.matched().items())
    note = _note([f"Layers matched to {table.skeleton}: {matched}", *table.notes], "Layers") if table.rows else (
        _note(list(table.notes) or ["No conv or dense layers found."], "Layers"))  # fmt: skip
    choices = table.choices()
    first = choices[0][1] if choices else None
    return (
        note,
        pd.DataFrame(table.records()),
        gr.Dropdown(choices=choices, value=None),
        gr.Dropdown(choices=choices, value=first),
        None,
    )


def _detail_page(source: Any, layer: Any) -> dict[str, Any] | None:
    if layer is None:
        return None
    result = layers_api(source, layer)
    return result.get("detail") or {"error": result.get("error")}


def weights_api(
    source: Any, layer: Any = 0, bins: float = DEFAULT_BINS, side_by_side: bool = False, raw_integers: bool = False
) -> dict[str, Any]:
    """One layer's weights across variants: histogram counts and statistics (API: /weights)."""
    try:
        table = _table(variants_from(source))
        comparison = compare_weights(table, _layer_index(layer, table))
        hist = histogram(comparison, bins=int(bins), raw_integers=bool(raw_integers))
    except (_NothingLoaded, QuantcoreError, ValueError, IndexError) as exc:
        return {"error": str(exc) or NOTHING_LOADED}
    return {
        "layer": comparison.layer,
        "row": comparison.row,
        "stats": stats_records(comparison),
        "histogram": {
            "edges": hist.edges.tolist(),
            "counts": {k: v.tolist() for k, v in hist.counts.items()},
            "raw_integers": hist.raw_integers,
            "side_by_side": bool(side_by_side),
        },
        "notes": list(comparison.notes),
    }


def _weights_page(source: Any, layer: Any, layout: str, raw: bool, bins: float) -> tuple[Any, ...]:
    if layer is None:
        return None, pd.DataFrame(), ""
    try:
        table = _table(variants_from(source))
        comparison = compare_weights(table, _layer_index(layer, table))
        figure = weight_histogram_figure(
            comparison, bins=int(bins), side_by_side=layout == SIDE_BY_SIDE, raw_integers=bool(raw)
        )
    except Exception as exc:  # shown in the note: a handler never raises
        return None, pd.DataFrame(), _failure(exc, "the weights view")
    notes = list(comparison.notes)
    if raw:
        notes.append("Raw integers: float variants have none, so only quantized variants are shown.")
    return figure, pd.DataFrame(stats_records(comparison)), _note(notes)


def _run_drift(source: Any, images: Any, progress: Callable[[float, str], None] | None) -> DriftReport:
    count = int(images) if isinstance(images, (int, float)) and not isinstance(images, bool) else DEFAULT_IMAGES
    if not 1 <= count <= MAX_IMAGES:
        raise ValueError(f"images must be between 1 and {MAX_IMAGES}, got {count}")
    variants = variants_from(source)
    table = _table(variants)
    return cached(
        variants, "drift", (count, DRIFT_BATCH_SIZE),
        lambda: layer_drift(variants, table=table, images=count, batch_size=DRIFT_BATCH_SIZE, progress=progress),
    )[0]  # fmt: skip


def layer_error_api(source: Any, images: float = DEFAULT_IMAGES) -> dict[str, Any]:
    """Per-layer SQNR of every quantized variant against its float reference (API: /layer_error)."""
    try:
        return _run_drift(source, images, None).as_dict()
    except (_NothingLoaded, QuantcoreError, ValueError) as exc:
        return {"error": str(exc) or NOTHING_LOADED}


def _highlight_worst(frame: pd.DataFrame, report: DriftReport) -> Any:
    """The per-layer table with each variant's worst layer marked."""
    worst = {f"{d.variant} (dB)": d.worst for d in report.variants if d.worst is not None}

    def style(column: pd.Series) -> list[str]:
        row = worst.get(str(column.name))
        return [WORST_CSS if row is not None and i == row else "" for i in range(len(column))]

    return frame.style.apply(style, axis=0).format(precision=2, na_rep="—")


def _error_page(source: Any, images: float, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    try:
        report = _run_drift(source, images, lambda fraction, message: progress(fraction, desc=message))
    except Exception as exc:  # shown in the note: a handler never raises
        return _failure(exc, "the per-layer error run"), None, pd.DataFrame(), pd.DataFrame()
    worst = report.worst()
    lines = [f"{k}: worst layer {v['layer']} at {v['sqnr_db']} dB" for k, v in worst.items()]
    lines.append(f"{report.images} images from {report.source} in {report.seconds:.1f} s; higher SQNR is better.")
    if worst:
        loser = min(worst.items(), key=lambda kv: kv[1]["sqnr_db"] if isinstance(kv[1]["sqnr_db"], float) else 1e9)
        title = f"Most lost: {loser[0]} at {loser[1]['layer']} ({loser[1]['sqnr_db']} dB)"
    else:
        title = "Nothing to compare"
    frame = pd.DataFrame(report.records())
    return (
        _note([*lines, *report.notes], title),
        drift_figure(report),
        pd.DataFrame(report.summary()),
        _highlight_worst(frame, report) if len(frame) else frame,
    )


# -------------------------------------------------------------------- layout


def build_inspect_views(summary: gr.JSON) -> InspectViews:
    """The three tabs, wired to ``summary`` (the loaded folder's summary), plus their named API endpoints.

    Call inside the page's ``gr.Blocks`` context, after ``summary`` exists.
    """
    with gr.Tabs(elem_id="qp-inspect"):
        with gr.Tab("Layers", id="layers"):
            layers_note = gr.Markdown(render.info(NOTHING_LOADED).markdown, elem_id="qp-layers-note")
            layers_table = gr.Dataframe(label="Layers, matched across variants", interactive=False,
                                        elem_id="qp-layers-table", max_height=480)  # fmt: skip
            layer_pick = gr.Dropdown(label="Every channel's scale and zero point of layer", choices=[],
                                     elem_id="qp-layer-pick")  # fmt: skip
            layer_detail = gr.JSON(label="Per-channel detail", elem_id="qp-layer-detail")
        with gr.Tab("Weights", id="weights"):
            with gr.Row():
                weights_layer = gr.Dropdown(label="Layer", choices=[], elem_id="qp-weights-layer", scale=3)
                weights_layout = gr.Radio([OVERLAID, SIDE_BY_SIDE], value=OVERLAID, label="Histograms", scale=2)
                weights_raw = gr.Checkbox(label="Raw integers", value=False, scale=1)
                weights_bins = gr.Slider(5, MAX_BINS, value=DEFAULT_BINS, step=1, label="Bins", scale=2)
            weights_note = gr.Markdown(elem_id="qp-weights-note")
            weights_plot = gr.Plot(label="Weights", elem_id="qp-weights-plot")
            weights_stats = gr.Dataframe(label="Statistics", interactive=False, elem_id="qp-weights-stats")
        with gr.Tab("Per-layer error", id="layer_error"):
            with gr.Row():
                error_images = gr.Slider(MIN_IMAGES, MAX_IMAGES, value=DEFAULT_IMAGES, step=IMAGE_STEP,
                                         label="Images", scale=3)  # fmt: skip
                error_run = gr.Button("Compute per-layer SQNR", variant="primary", elem_id="qp-error-run", scale=1)
            error_note = gr.Markdown(elem_id="qp-error-note")
            error_plot = gr.Plot(label="Per-layer SQNR", elem_id="qp-error-plot")
            error_summary = gr.Dataframe(label="Per variant", interactive=False, elem_id="qp-error-summary")
            error_table = gr.Dataframe(label="Per layer (dB); each variant's worst layer highlighted",
                                       interactive=False, elem_id="qp-error-table")  # fmt: skip
        from gradio_app.compare_views import build_compare_views  # here, not at the top: it imports this module

        build_compare_views(summary)
    views = InspectViews(
        layers_note, layers_table, layer_pick, layer_detail, weights_layer, weights_layout, weights_raw,
        weights_bins, weights_plot, weights_stats, weights_note, error_images, error_run, error_note, error_plot,
        error_summary, error_table,
    )  # fmt: skip
    _wire(summary, views)
    return views


def _wire(summary: gr.JSON, v: InspectViews) -> None:
    private: dict[str, Any] = {"api_visibility": "private", **INSPECT_EVENTS}
    summary.change(
        _layers_page, summary, [v.layers_note, v.layers_table, v.layer_pick, v.weights_layer, v.layer_detail],
        api_name="page_layers", **private,
    )  # fmt: skip
    v.layer_pick.change(_detail_page, [summary, v.layer_pick], v.layer_detail, api_name="page_layer_detail", **private)
    weights_inputs = [summary, v.weights_layer, v.weights_layout, v.weights_raw, v.weights_bins]
    weights_outputs = [v.weights_plot, v.weights_stats, v.weights_note]
    for name, trigger in (
        ("page_weights_layer", v.weights_layer.change), ("page_weights_layout", v.weights_layout.change),
        ("page_weights_raw", v.weights_raw.change), ("page_weights_bins", v.weights_bins.release),
    ):  # fmt: skip
        trigger(_weights_page, weights_inputs, weights_outputs, api_name=name, **private)
    error_outputs = [v.error_note, v.error_plot, v.error_summary, v.error_table]
    v.error_run.click(_error_page, [summary, v.error_images], error_outputs, api_name="page_layer_error",
                      api_visibility="private", **DRIFT_EVENTS)  # fmt: skip
    # A new folder's per-layer results are not the old one's: clear them until the user runs it.
    summary.change(lambda: ("", None, pd.DataFrame(), pd.DataFrame()), None, error_outputs,
                   api_name="page_layer_error_clear", api_visibility="private")  # fmt: skip

    source = gr.JSON(visible=False)
    layer = gr.Textbox(visible=False)
    bins = gr.Number(value=DEFAULT_BINS, visible=False)
    side, raw = gr.Checkbox(visible=False), gr.Checkbox(visible=False)
    images = gr.Number(value=DEFAULT_IMAGES, visible=False)
    out = gr.JSON(visible=False)
    gr.Button(visible=False).click(_api(layers_api), [source, layer], out, api_name="layers", **INSPECT_EVENTS)
    gr.Button(visible=False).click(_api(weights_api), [source, layer, bins, side, raw], out, api_name="weights",
                                   **INSPECT_EVENTS)  # fmt: skip
    gr.Button(visible=False).click(_api(layer_error_api), [source, images], out, api_name="layer_error", **DRIFT_EVENTS)
