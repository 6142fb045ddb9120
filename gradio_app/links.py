"""Links to a view: the URL's query names what is on screen, and opening such a link restores it.

``?folder=resnet8&tab=layer_error&layer=stack3.conv2`` names a folder under the models root (``folder``)
or a Hub repo (``hub``, with ``revision`` and ``subfolder``), the tab, a layer (the Layers tab's detail
and the Weights tab show it), a sample (Predictions) and the image count of the per-layer and integer
runs (``images``). Opening a link loads its source through the page's own handlers, so it is confined
and bounded like a click; then the tab is selected, and a tab whose view needs its button pressed is run.

The tabs read what a link asks for from the page's ``link`` state (``ViewLink``) when the summary
changes; a load by hand sets it back to ``None``. Uploads are not linkable: they belong to one
browser session. Every value of a link is untrusted text, checked here before anything uses it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import gradio as gr

from gradio_app import handlers, render
from gradio_app.common import FOLDER_EVENTS, LINKED_EVENTS, PRIVATE, VIEW_EVENTS, Page, run_as_heavy, variants_for
from gradio_app.tabs.layers import layer_index
from quantcore import QuantcoreError, Source, settings
from quantcore.inspect.layer_table import layer_table
from quantcore.load.source import SourceKind

# The ids of the page's tabs (``gr.Tab(id=...)`` in ``blocks``), as links name them.
TABS = ("layers", "weights", "layer_error", "predictions", "scorecard", "integer", "quantize")
# The parameters a link may carry; any other (Gradio's own, such as ``__theme``) is left alone.
KEYS = ("folder", "hub", "revision", "subfolder", "tab", "layer", "sample", "images")
MAX_VALUE_CHARS = 300
MAX_SAMPLE = 10_000_000
NOT_LINKABLE = "Uploaded files cannot be linked to: they belong to this browser session only."
NOTHING_TO_LINK = "Load a folder (or pull a Hub repo) first: a link names what is loaded."
NOT_CARRIED = "The link does not carry the input settings or this session's recipes."
_DIGITS = re.compile(r"^\d{1,9}$")
# Copies the link the server made (a query, or a reason there is none) as a whole URL of this page.
COPY_JS = """(query) => {
  if (!query || !query.startsWith("?")) { return query; }
  const url = window.location.origin + window.location.pathname + query;
  if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
  return url;
}"""


@dataclass(frozen=True)
class ViewLink:
    """What a link asks for: one source (a folder or a Hub repo), and the view on it."""

    folder: str | None = None
    hub: str | None = None
    revision: str | None = None
    subfolder: str | None = None
    tab: str | None = None
    layer: str | None = None
    sample: int | None = None
    images: int | None = None

    @property
    def names_source(self) -> bool:
        return self.folder is not None or self.hub is not None

    def wants(self, tab: str) -> bool:
        return self.tab == tab


def linked(value: Any) -> ViewLink | None:
    """The page's link state as a ``ViewLink`` (``None`` when the page was not opened from a link)."""
    return value if isinstance(value, ViewLink) else None


def _number(text: str, what: str, low: int, high: int, problems: list[str]) -> int | None:
    if _DIGITS.match(text) and low <= int(text) <= high:
        return int(text)
    problems.append(f"the link's {what} must be a whole number from {low} to {high}; it was ignored")
    return None


def read_link(params: Mapping[str, str]) -> tuple[ViewLink | None, list[str]]:
    """The view a URL's query asks for, and what in it was ignored and why.

    Returns:
        ``(None, [])`` for a plain visit (no link parameter), else the link and its problems.
    """
    values: dict[str, str] = {}
    problems: list[str] = []
    for key in KEYS:
        text = params.get(key)
        if text is None:
            continue
        text = render.valid_text(str(text)).strip()
        if len(text) > MAX_VALUE_CHARS:
            problems.append(f"the link's {key} is longer than {MAX_VALUE_CHARS} characters; it was ignored")
        elif text:
            values[key] = text
    if not values and not problems:
        return None, []
    if "folder" in values and "hub" in values:
        problems.append("a link names one source, a folder or a Hub repo: the folder was opened")
        values.pop("hub")
    tab = values.get("tab")
    if tab is not None and tab not in TABS:
        problems.append(f"the link's tab {tab!r} is not one of {', '.join(TABS)}; it was ignored")
        tab = None
    sample = _number(values["sample"], "sample", 0, MAX_SAMPLE, problems) if "sample" in values else None
    most = settings.current().max_run_images
    images = _number(values["images"], "image count", 1, most, problems) if "images" in values else None
    hub = values.get("hub")
    link = ViewLink(
        folder=values.get("folder"), hub=hub, tab=tab, layer=values.get("layer"), sample=sample, images=images,
        revision=values.get("revision") if hub else None, subfolder=values.get("subfolder") if hub else None,
    )  # fmt: skip
    return link, problems


def query_for(source: Source, tab: str | None, layer: str | None, sample: int | None, images: int | None) -> str:
    """The query of a link to this view (``?…``), pinned to the Hub commit that is loaded.

    Raises:
        ValueError: ``source`` is an upload, which no link can name.
    """
    if source.kind is SourceKind.UPLOAD:
        raise ValueError(NOT_LINKABLE)
    if source.kind is SourceKind.HUB:
        where = {"hub": source.repo_id, "revision": source.commit or source.revision, "subfolder": source.subfolder}
    else:
        where = {"folder": source.folder or "."}
    view = {"tab": tab if tab in TABS else None, "layer": layer, "sample": sample, "images": images}
    return "?" + urlencode({k: v for k, v in {**where, **view}.items() if v not in (None, "")})


# ------------------------------------------------------------------ opening a link


def _with_problems(status: render.Status, problems: list[str]) -> render.Status:
    if not problems:
        return status
    kind = render.Kind.WARNING if status.kind in (render.Kind.SUCCESS, render.Kind.INFO) else status.kind
    lines = "\n".join(f"- {render.escape(problem)}" for problem in problems)
    return render.Status(kind, f"{status.markdown}\n\n**From the link:**\n{lines}")


def _checked_layer(link: ViewLink, source: Any, problems: list[str]) -> ViewLink:
    """The link, without its layer when the loaded folder has no such layer (and the status says so)."""
    if link.layer is None:
        return link
    try:
        layer_index(link.layer, layer_table(variants_for(source)))
        return link
    except (QuantcoreError, ValueError, IndexError) as exc:
        problems.append(f"the link's layer was not shown: {exc}")
        return replace(link, layer=None)


def restore(request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    """On page load: the view the URL's query asks for (its source loaded, its tab selected), or no change.

    Returns:
        Updates of the summary, status, source, link state, tabs and the tab shown.
    """
    link, problems = read_link(dict(request.query_params) if request is not None else {})
    if link is None:
        return tuple(gr.skip() for _ in range(6))
    tab = gr.Tabs(selected=link.tab) if link.tab else gr.skip()
    shown = link.tab or gr.skip()
    if not link.names_source:
        problems.append("the link names no folder (folder=…) or Hub repo (hub=…)")
        status = _with_problems(render.info(), problems)
        return gr.skip(), gr.Markdown(status.markdown, elem_classes=status.css_classes), gr.skip(), None, tab, shown
    result = handlers.guarded(_load, link, progress)
    summary, status = result if result is not None else handlers.nothing(render.info())
    source = summary.get("source") if isinstance(summary, dict) else None
    if source is not None:
        link = _checked_layer(link, source, problems)
    status = _with_problems(status, problems)
    markdown = gr.Markdown(status.markdown, elem_classes=status.css_classes)
    return summary, markdown, source, link if source is not None else None, tab, shown


def _load(link: ViewLink, progress: gr.Progress) -> handlers.Result:
    if link.folder is not None:
        return handlers.load_folder(link.folder, progress)
    return handlers.pull_hub(link.hub, link.revision, link.subfolder, progress)


def run_when_linked(
    cleared: Any, tab: str, handler: Callable[..., tuple[Any, ...]], page: Page, images: gr.Slider, outputs: list
) -> None:
    """After a tab clears itself for a new load (``cleared``), run its view if the page's link asks for that tab.

    ``handler(source, images, progress)`` is the tab's own page handler; it runs as heavy work of kind ``tab``
    (a fair, bounded slot), and only when linked: any other load passes by at once.
    """
    heavy = run_as_heavy(handler, tab)

    def follow(source: Any, link: Any, chosen: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        wanted = linked(link)
        if wanted is None or not wanted.wants(tab):
            return tuple(gr.skip() for _ in range(len(outputs) + 1))
        count = wanted.images or chosen
        return (*heavy(source, count, progress), count)

    cleared.then(follow, [page.source, page.link, images], [*outputs, images], api_name=f"page_{tab}_linked",
                 **PRIVATE, **LINKED_EVENTS)  # fmt: skip


# ------------------------------------------------------------------ making a link


@dataclass(frozen=True)
class LinkPanel:
    button: gr.Button
    link: gr.Textbox
    note: gr.Markdown


@dataclass(frozen=True)
class ViewState:
    """The tabs (each by its id), and what a link to the view on screen reads: the tab shown (its id), the
    layer picked (Layers, Weights), the sample, and the image counts of the per-layer and integer runs."""

    tabs: gr.Tabs
    items: dict[str, gr.Tab]
    tab: gr.Textbox
    layer: gr.Dropdown
    weights_layer: gr.Dropdown
    sample: gr.Number
    error_images: gr.Slider
    integer_images: gr.Slider


def _layer_name(source: Any, row: Any) -> str | None:
    """The name a link gives the picked layer row: its reference variant's layer name, as the Layers tab shows it."""
    if row is None or row == "":
        return None
    table = layer_table(variants_for(source))
    return table.row(layer_index(row, table)).primary.name


def make_link(source: Any, tab: Any, layer: Any, weights_layer: Any, sample: Any, error_images: Any,
              integer_images: Any) -> tuple[str, str]:  # fmt: skip
    """The page's "Copy link to this view": the link's query (or why there is none), and a note."""
    try:
        loaded = Source.from_client(source)
        if loaded is None:
            return NOTHING_TO_LINK, ""
        tab = tab if tab in TABS else "layers"
        row = weights_layer if tab == "weights" else layer
        images = {"layer_error": error_images, "integer": integer_images}.get(tab)
        query = query_for(
            loaded, tab, _layer_name(source, row), int(sample) if tab == "predictions" and sample is not None else None,
            int(images) if images is not None else None,
        )  # fmt: skip
    except (QuantcoreError, ValueError, IndexError, TypeError) as exc:
        return str(exc), ""
    extra = [NOT_CARRIED] if loaded.input or loaded.recipes else []
    return query, render.escape(" ".join(["Copied to the clipboard where the browser allows it.", *extra]))


def build() -> LinkPanel:
    """The "Copy link to this view" button and the link it makes (call where it goes)."""
    with gr.Row(equal_height=False):
        button = gr.Button("Copy link to this view", variant="secondary", elem_id="qp-link-run", scale=1)
        link = gr.Textbox(label="Link to this view", show_label=False, interactive=False, scale=3,
                          elem_id="qp-link", placeholder="A link to the folder, tab and layer on screen")  # fmt: skip
    note = gr.Markdown(elem_id="qp-link-note")
    return LinkPanel(button, link, note)


def wire(demo: gr.Blocks, page: Page, panel: LinkPanel, view: ViewState, page_outputs: list[Any]) -> None:
    """Opening the page from a link restores its view; the button makes a link to what is on screen.

    ``page_outputs`` are the summary, status and source a load updates.
    """
    demo.load(restore, None, [*page_outputs, page.link, view.tabs, view.tab], api_name="page_restore_link",
              **PRIVATE, **FOLDER_EVENTS)  # fmt: skip
    for tab_id, item in view.items.items():
        item.select(None, None, view.tab, js=f"() => {tab_id!r}", api_name=f"page_shown_{tab_id}", **PRIVATE)
    inputs = [page.source, view.tab, view.layer, view.weights_layer, view.sample, view.error_images,
              view.integer_images]  # fmt: skip
    made = panel.button.click(make_link, inputs, [panel.link, panel.note], api_name="page_make_link", **PRIVATE,
                              **VIEW_EVENTS)  # fmt: skip
    made.then(None, panel.link, panel.link, js=COPY_JS, api_name="page_copy_link", **PRIVATE)
