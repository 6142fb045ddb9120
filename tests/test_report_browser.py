"""The report in Chromium: computed on the page, downloaded by its link, then opened with the network off."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from quantcore.load import results_cache
from tests.app_server import Server, served_app
from tests.browser import VIEWPORT, tree_entry

QUANTIZED = ["onnx_int8", "onnx_uint8", "pytorch_int8"]


@pytest.fixture(scope="module")
def server(built_variants: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app on a models root holding a copy of the tiny variants (folder ``tiny``)."""
    root = tmp_path_factory.mktemp("report") / "models"
    root.mkdir()
    shutil.copytree(built_variants, root / "tiny")
    with served_app(root) as running:
        yield running


@pytest.mark.browser
def test_downloaded_report_opens_offline_and_shows_its_plots(
    page: Page, browser: Browser, server: Server, tmp_path: Path
) -> None:
    results_cache.cache_clear()
    page.goto(server.url)
    folder = tree_entry(page.locator("#qp-explorer .file-wrap"), "tiny")
    folder.locator(":scope > span [aria-label='expand directory']").click()
    tree_entry(folder, ".").locator("input[type=checkbox]").check()
    expect(page.locator("#qp-status")).to_contain_text("Loaded 5 of 5 variants")
    expect(page.locator("#qp-layers-note")).to_contain_text("Layers matched to pytorch_float")
    page.get_by_role("tab", name="Per-layer error").click()
    page.locator("#qp-error-run").click()
    expect(page.locator("#qp-error-plot .js-plotly-plot .scatterlayer .trace")).to_have_count(6)

    page.locator("#qp-report-run").click()
    expect(page.locator("#qp-report-note")).to_contain_text("Report of tiny ready")
    saved = {}
    for suffix in (".html", ".zip"):
        with page.expect_download() as download:
            page.locator(f"#qp-report-files a[download$='{suffix}']").click()
        saved[suffix] = tmp_path / download.value.suggested_filename
        download.value.save_as(saved[suffix])
    assert saved[".html"].name == "tiny-report.html"
    assert "layer_error_256/per_layer.csv" in zipfile.ZipFile(saved[".zip"]).namelist()

    # Offline: the context has no network, and any request but the file itself is refused and recorded.
    context = browser.new_context(viewport=VIEWPORT, offline=True)
    asked: list[str] = []

    def refuse(route) -> None:  # Playwright's Route
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            asked.append(route.request.url)
            route.abort()

    context.route("**/*", refuse)
    offline = context.new_page()
    try:
        offline.goto(saved[".html"].as_uri())
        expect(offline.locator("h1")).to_contain_text("tiny — quantization report")
        chart = offline.locator("#layer_error_256 .js-plotly-plot")
        expect(chart.locator(".scatterlayer .trace")).to_have_count(6)  # a line and a worst-layer mark each
        expect(chart.locator(".legendtext")).to_have_text(QUANTIZED)
        # Every plot drew (Layers and Weights: one histogram per layer), on the one inlined plotly.js.
        expect(offline.locator(".js-plotly-plot .main-svg").first).to_be_visible()
        plots = offline.locator("div[id^=qp-plot-]").count()
        expect(offline.locator(".js-plotly-plot")).to_have_count(plots)
        assert plots == 1 + 10  # the SQNR chart and ten layers' histograms
        expect(offline.locator("[data-table='overview/variants'] tbody tr")).to_have_count(5)
    finally:
        context.close()
    assert asked == []
