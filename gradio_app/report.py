"""The "Download report" button: what is loaded, and every view computed so far for it, as one offline HTML
file and a ZIP of its tables (``quantcore.report``).

API: ``/report (source)`` -> ``(files, status)``: the HTML report and the ZIP (``None`` when there is
nothing to report), and a status line saying what is in them or why not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import gradio as gr

from gradio_app import render
from gradio_app.common import HEAVY_EVENTS, PRIVATE, Page, download_folder, failure, variants_for
from gradio_app.handlers import models_root
from quantcore import Source, get_model_summary
from quantcore.deadline import run_deadline
from quantcore.errors import NothingLoadedError
from quantcore.report.archive import write_zip
from quantcore.report.contents import Report, computed_report
from quantcore.report.html import write_html

HINT = "The report holds the variant table and every view computed so far: open the tabs you want in it first."
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ReportPanel:
    button: gr.Button
    files: gr.File
    note: gr.Markdown


def make_report(source: Any) -> Report:
    """The report of what ``source`` names, with the summary and status as the page shows them.

    Raises:
        NothingLoadedError: nothing is loaded yet.
        QuantcoreError: as loading the source would.
    """
    resolved = Source.from_client(source)
    if resolved is None:
        raise NothingLoadedError("nothing is loaded yet")
    variants = variants_for(resolved)
    summary = render.display_summary({**get_model_summary(variants), "source": resolved.as_dict()},
                                     root=models_root())  # fmt: skip
    if resolved.upload is not None:  # as the page names it: by its files, never where the server keeps them
        summary["folder"] = resolved.label
    status = render.loaded_status(summary, source=resolved.label).markdown
    return computed_report(variants, summary=summary, status=status)


def report_files(source: Any) -> tuple[list[str], Report]:
    """The report's HTML and ZIP, written to a new temporary folder Gradio serves them from."""
    report = make_report(source)
    stem = _UNSAFE_NAME.sub("_", report.model).strip("._") or "model"
    folder = download_folder("report")
    html = write_html(report, folder / f"{stem}-report.html")
    tables = write_zip(report, folder / f"{stem}-tables.zip")
    return [str(html), str(tables)], report


def _done(report: Report) -> str:
    views = ", ".join(s.title for s in report.sections) or "none computed yet — only the variant table"
    return f"✔ **Report of {render.escape(report.source)} ready**\n\n- {render.escape(f'Views: {views}.')}"


def report_api(source: Any) -> tuple[list[str] | None, str]:
    """The HTML report and the ZIP of its tables for a source (API: /report); a status saying why not."""
    try:
        with run_deadline():
            files, report = report_files(source)
    except Exception as exc:  # says why; anything unexpected is logged by ``failure``, not shown
        return None, failure(exc, "the report")
    return files, _done(report)


def _page(source: Any) -> tuple[Any, Any]:
    files, status = report_api(source)
    return gr.File(value=files, visible=bool(files)), status


def build() -> ReportPanel:
    """The button, its files and its note (call where the button goes)."""
    with gr.Row(equal_height=False):
        button = gr.Button("Download report", variant="secondary", elem_id="qp-report-run", scale=1)
        note = gr.Markdown(HINT, elem_id="qp-report-note")
    files = gr.File(label="Report (HTML) and its tables (ZIP)", file_count="multiple", interactive=False,
                    elem_id="qp-report-files", visible=False)  # fmt: skip
    return ReportPanel(button, files, note)


def wire(page: Page, panel: ReportPanel) -> None:
    """The button's page event (private), clearing on a new load, and the /report endpoint."""
    panel.button.click(_page, page.source, [panel.files, panel.note], api_name="page_report", **PRIVATE,
                       **HEAVY_EVENTS)  # fmt: skip
    page.summary.change(lambda: (gr.File(value=None, visible=False), HINT), None, [panel.files, panel.note],
                        api_name="page_report_clear", **PRIVATE)  # fmt: skip
    source, status = gr.JSON(visible=False), gr.Markdown(visible=False)
    files = gr.File(file_count="multiple", visible=False)
    gr.Button(visible=False).click(report_api, source, [files, status], api_name="report", **HEAVY_EVENTS)


def add(page: Page) -> ReportPanel:
    """The whole report section: build it here and wire it to the page (one call in ``blocks``)."""
    panel = build()
    wire(page, panel)
    return panel
