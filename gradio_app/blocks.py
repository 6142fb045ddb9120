"""The page: sections and event wiring only (handlers live in ``handlers.py``, each tab in ``tabs/``).

One function per section, so a new section is one more call in ``build_demo``;
a new tab is one more module under ``tabs/`` and one more line in ``_tabs``.
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from gradio_app import handlers, input_panel, links, overview, render, report, uploads
from gradio_app.common import DOWNLOADS_KEPT_S, FOLDER_EVENTS, HUB_EVENTS, PRIVATE, Page, gate_heavy_events
from gradio_app.explorer import ConfinedFileExplorer
from gradio_app.tabs import integer, layer_error, layers, predictions, quantize, scorecard, weights
from quantcore import settings
from quantcore.evaluate.images import apply_pixel_limit

TITLE = overview.TITLE
HEADER_CSS = """
.qp-header { margin-bottom: 0.5rem; }
.qp-header p { color: var(--body-text-color-subdued); }
"""
CSS = render.STATUS_CSS + HEADER_CSS


@dataclass(frozen=True)
class Results:
    status: gr.Markdown
    variants: gr.Dataframe
    summary: gr.JSON
    source: gr.State
    link: gr.State

    @property
    def outputs(self) -> list[Any]:
        """What a load by hand updates: the summary, status and source, and the link state (cleared)."""
        return [self.summary, self.status, self.source, self.link]


@dataclass(frozen=True)
class HubPanel:
    repo_id: gr.Textbox
    revision: gr.Textbox
    subfolder: gr.Textbox
    pull: gr.Button

    @property
    def inputs(self) -> list[gr.Textbox]:
        return [self.repo_id, self.revision, self.subfolder]


def _for_page(handler: Callable[..., handlers.Result | None]) -> Callable[..., tuple[Any, ...]]:
    """The status as a Markdown update carrying its kind's CSS classes; ``None`` leaves the page as it is.

    A load by hand ends what a link asked for: the link state is cleared with it (``Results.outputs``).
    """

    @functools.wraps(handler)  # keeps the signature: Gradio injects Progress/SelectData by it
    def run(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        result = handlers.guarded(handler, *args, **kwargs)
        if result is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        summary, status = result
        source = summary.get("source") if isinstance(summary, dict) else None
        return summary, gr.Markdown(value=status.markdown, elem_classes=status.css_classes), source, None

    return run


def _for_api(handler: Callable[..., handlers.Result]) -> Callable[..., tuple[handlers.Summary, str]]:
    """The status as plain Markdown text: what a script wants back (the summary carries the source)."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> tuple[handlers.Summary, str]:
        result = handlers.guarded(handler, *args, **kwargs)
        summary, status = result if result is not None else handlers.nothing(render.info())
        return summary, status.markdown

    return run


def launch_options() -> dict[str, Any]:
    """Arguments every launch of the demo needs (Gradio 6 takes css at launch), and the upload limits.

    Pillow's own pixel limit is set here too, so that no open of an image in the
    server decodes more than ``QP_MAX_IMAGE_PIXELS``, whoever makes it.
    """
    apply_pixel_limit()
    return {"css": CSS, "max_file_size": settings.current().max_upload_bytes}


def _folder_section(root: Path) -> ConfinedFileExplorer:
    # fnmatch on absolute paths, anchored at the root: hide dotfiles and dot-folders.
    hidden = glob.escape(str(root)) + "*" + os.sep + ".*"
    return ConfinedFileExplorer(
        root_dir=root,
        glob="**/*",
        ignore_glob=hidden,
        file_count="single",  # "multiple" keeps no value in the browser in Gradio 6.31
        label="Model folders",
        max_height=420,
        elem_id="qp-explorer",
    )


def _hub_section() -> HubPanel:
    # Most visits use the bundled folders: the Hub form stays folded until asked for.
    with gr.Accordion("Pull from the Hugging Face Hub", open=False, elem_id="qp-hub"):
        repo_id = gr.Textbox(label="Hugging Face Hub repo", placeholder="org/name")
        revision = gr.Textbox(label="Revision", placeholder="main (or a tag or commit)")
        subfolder = gr.Textbox(label="Subfolder", placeholder="optional")
        pull = gr.Button("Pull", variant="secondary")
    return HubPanel(repo_id, revision, subfolder, pull)


def _wire_uploads(files: gr.File, results: Results, demo: gr.Blocks) -> None:
    """Uploaded files load like a folder; the session's uploads go when it ends (tab closed or reloaded)."""
    files.upload(_for_page(handlers.upload_files), files, results.outputs, api_name="page_upload", **PRIVATE,
                 **FOLDER_EVENTS)  # fmt: skip
    demo.unload(handlers.end_session)


def _results_section() -> Results:
    status = gr.Markdown(
        render.info().markdown,
        label="Status",
        elem_classes=render.info().css_classes,
        elem_id="qp-status",
        latex_delimiters=[],  # a "$" in a folder name is text, not maths
    )
    variants = overview.build_table()
    # The whole summary (the app's promised output, and what the API returns), folded under the overview.
    with gr.Accordion("Summary (JSON)", open=False, elem_id="qp-summary-section"):
        summary = gr.JSON(label="Summary", elem_id="qp-summary")
    # What is loaded, per browser session: the tabs load from it, never from the displayed summary.
    source = gr.State(None)
    return Results(status, variants, summary, source, gr.State(None))


def _tabs(page: Page) -> links.ViewState:
    """Every inspect and compare tab, then their wiring (hidden endpoint inputs live outside the tabs).

    Returns:
        The tabs, and what a link to the view on screen reads.
    """
    with gr.Tabs(elem_id="qp-inspect") as tabs:
        with gr.Tab("Layers", id="layers") as layers_item:
            layers_tab = layers.build()
        with gr.Tab("Weights", id="weights") as weights_item:
            weights_tab = weights.build()
        with gr.Tab("Per-layer error", id="layer_error") as error_item:
            error_tab = layer_error.build()
        with gr.Tab("Predictions", id="predictions") as predictions_item:
            predictions_tab = predictions.build()
        with gr.Tab("Accuracy & speed", id="scorecard") as scorecard_item:
            scorecard_tab = scorecard.build()
        with gr.Tab("Integer", id="integer") as integer_item:
            integer_tab = integer.build()
        with gr.Tab("Quantize", id="quantize") as quantize_item:
            quantize_tab = quantize.build()
    shown = gr.Textbox("layers", visible=False)  # the tab on screen, as its id
    layers.wire(page, layers_tab, weights_tab.layer)
    weights.wire(page, weights_tab)
    layer_error.wire(page, error_tab)
    predictions.wire(page, predictions_tab)
    scorecard.wire(page, scorecard_tab)
    integer.wire(page, integer_tab)
    quantize.wire(page, quantize_tab)
    items = (layers_item, weights_item, error_item, predictions_item, scorecard_item, integer_item, quantize_item)
    return links.ViewState(tabs, dict(zip(links.TABS, items, strict=True)), shown, layers_tab.pick,
                           weights_tab.layer, predictions_tab.sample, error_tab.images, integer_tab.images)  # fmt: skip


# The page's own events are private, and named so as not to take the public names in _wire_api.
def _tick(
    selected: str | None,
    source: Any,
    link: Any,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> handlers.Result | None:
    """A tick in the explorer. "Nothing ticked" clears what is loaded, but changes nothing when nothing is
    loaded yet or a link restored the view: the explorer sends it on every page load, and a second summary
    change racing the link's own would redraw the tabs twice, the later one over what the user picked."""
    if not selected and (source is None or links.linked(link) is not None):
        return None
    return handlers.select_in_explorer(selected, progress)


def _wire_folder(explorer: ConfinedFileExplorer, results: Results) -> None:
    tick, click = _for_page(_tick), _for_page(handlers.click_in_explorer)
    explorer.change(tick, [explorer, results.source, results.link], results.outputs, api_name="page_tick", **PRIVATE,
                    **FOLDER_EVENTS)  # fmt: skip
    explorer.select(click, None, results.outputs, api_name="page_click", **PRIVATE, **FOLDER_EVENTS)


def _wire_hub(panel: HubPanel, results: Results) -> None:
    for name, trigger in (("page_pull", panel.pull.click), ("page_pull_enter", panel.repo_id.submit)):
        trigger(_for_page(handlers.pull_hub), panel.inputs, results.outputs, api_name=name, **PRIVATE, **HUB_EVENTS)


def _wire_api(hub: HubPanel, results: Results) -> None:
    """Named endpoints for scripts, on hidden buttons: the page's handlers and outputs, plain-text status."""
    folder = gr.Textbox(visible=False)
    outputs = [results.summary, results.status]
    load, pull = _for_api(handlers.load_folder), _for_api(handlers.pull_hub)
    gr.Button(visible=False).click(load, folder, outputs, api_name="load_folder", **FOLDER_EVENTS)
    files = gr.File(file_count="multiple", type="filepath", visible=False)
    upload = _for_api(handlers.upload_files)
    gr.Button(visible=False).click(upload, files, outputs, api_name="upload_files", **FOLDER_EVENTS)
    gr.Button(visible=False).click(pull, hub.inputs, outputs, api_name="pull_hub", **HUB_EVENTS)
    # Baseline for benchmarks/bench_reselect.py: the same queue and transport, no work.
    echo = gr.Textbox(visible=False)
    gr.Button(visible=False).click(
        handlers.ping, echo, echo, api_name="ping", api_visibility="undocumented", concurrency_limit=None
    )


def build_demo() -> gr.Blocks:
    """The whole app, rooted at the configured models folder."""
    root = Path(os.path.realpath(settings.current().models_root))
    if not root.is_dir():
        raise FileNotFoundError(f"models folder not found: {root} (set --models-dir or QP_MODELS_DIR)")
    uploads.install()  # an upload opens only for the browser session that made it
    # No usage analytics: the app sends nothing off the machine unless asked to (a Hub pull, --share).
    sweep = (DOWNLOADS_KEPT_S, DOWNLOADS_KEPT_S)  # every hour, what is older than an hour leaves Gradio's cache
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=sweep) as demo:
        header = overview.build_header()
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                explorer = _folder_section(root)
            with gr.Column(scale=2):
                hub = _hub_section()
                files = uploads.build_area()
        results = _results_section()
        page = Page(results.summary, results.source, results.link)
        overview.wire(page, overview.Overview(header, results.variants))
        report.add(page)
        link_panel = links.build()
        inputs = input_panel.build()
        links.wire(demo, page, link_panel, _tabs(page), results.outputs[:3])
        input_panel.wire(page, inputs, results.status, _for_page, _for_api)
        _wire_folder(explorer, results)
        _wire_hub(hub, results)
        _wire_uploads(files, results, demo)
        _wire_api(hub, results)
    gate_heavy_events(demo)  # every HEAVY_EVENTS event waits for a fair, bounded slot first
    return demo
