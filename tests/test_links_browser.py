"""Links to a view, in Chromium: a link restores folder, tab, layer and sample; the page makes such links;
a hostile link is answered in the status, and the page goes on serving."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect

from gradio_app.tabs.layer_error import layer_error_api
from quantcore import cache_clear
from tests.app_server import BUNDLED_MODELS, Server, require_bundled_models, served_app
from tests.browser import VIEWPORT

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def bundled_server() -> Iterator[Server]:
    require_bundled_models()
    cache_clear()
    with served_app(BUNDLED_MODELS) as server:
        yield server


def _selected_tab(page: Page) -> str:
    return page.locator("#qp-inspect [role=tab][aria-selected=true]").inner_text().strip()


def _dropdown_value(page: Page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input").input_value()


def test_a_link_restores_folder_tab_layer_and_runs_the_view(page: Page, bundled_server: Server) -> None:
    page.goto(f"{bundled_server.url}?folder=resnet8&tab=layer_error&layer=stack3.conv2&images=32")
    status = page.locator("#qp-status")
    expect(status).to_contain_text("Loaded 5 of 5 variants from resnet8")
    expect(page.locator("#qp-header")).to_contain_text("Showing resnet8")
    assert _selected_tab(page) == "Per-layer error"
    # The tab's view ran on arrival, with the link's image count, and shows what the API computes.
    note = page.locator("#qp-error-note")
    expect(note).to_contain_text("32 images", timeout=120_000)
    expect(page.locator("#qp-error-plot .js-plotly-plot")).to_be_visible()
    expected = layer_error_api("resnet8", 32)
    for key, worst in expected["worst"].items():
        expect(note).to_contain_text(f"{key}: worst layer {worst['layer']} at {worst['sqnr_db']} dB")
    assert page.locator("#qp-error-run").is_visible()

    # The layer is picked in the Layers tab (its every channel shown) and in the Weights tab.
    page.get_by_role("tab", name="Layers").click()
    expect(page.locator("#qp-layer-detail")).to_be_visible()
    assert _dropdown_value(page, "qp-layer-pick") == "9. stack3.conv2"
    page.get_by_role("tab", name="Weights").click()
    assert _dropdown_value(page, "qp-weights-layer") == "9. stack3.conv2"
    expect(page.locator("#qp-weights-plot .js-plotly-plot")).to_be_visible()


def test_copy_link_makes_a_link_that_opens_the_same_view(browser: Browser, bundled_server: Server) -> None:
    first = browser.new_context(viewport=VIEWPORT).new_page()
    first.goto(f"{bundled_server.url}?folder=resnet8&tab=predictions&sample=7")
    expect(first.locator("#qp-status")).to_contain_text("Loaded 5 of 5 variants")
    assert _selected_tab(first) == "Predictions"
    expect(first.locator("#qp-pred-note")).to_contain_text("sample #7")
    expect(first.locator("#qp-pred-table")).to_be_visible()

    # Move to another view by hand: the Weights tab, the fourth layer.
    first.get_by_role("tab", name="Weights").click()
    expect(first.locator("#qp-weights-plot .js-plotly-plot")).to_be_visible()  # the folder's layers are in
    first.locator("#qp-weights-layer input").click()
    first.get_by_role("option", name="4. stack2.conv1").click()
    first.locator("#qp-link-run").click()
    link = first.locator("#qp-link textarea, #qp-link input").first
    expect(link).to_have_value(re.compile(r"^http://"))
    url = link.input_value()
    query = parse_qs(urlsplit(url).query)
    assert query == {"folder": ["resnet8"], "tab": ["weights"], "layer": ["stack2.conv1"]}
    assert url.startswith(bundled_server.url.rstrip("/"))
    first.context.close()

    second = browser.new_context(viewport=VIEWPORT).new_page()
    second.goto(url)
    expect(second.locator("#qp-status")).to_contain_text("Loaded 5 of 5 variants from resnet8")
    assert _selected_tab(second) == "Weights"
    expect(second.locator("#qp-weights-plot .js-plotly-plot")).to_be_visible()
    assert _dropdown_value(second, "qp-weights-layer") == "4. stack2.conv1"
    second.context.close()


def test_a_hostile_link_is_answered_in_the_status_and_the_page_goes_on(page: Page, bundled_server: Server) -> None:
    page.goto(f"{bundled_server.url}?folder=../../etc&tab=%3Cscript%3E&sample=-1&layer=x")
    status = page.locator("#qp-status")
    expect(status).to_have_class(re.compile(r"\bqp-status-error\b"))
    expect(status).to_contain_text("Not allowed")
    expect(status).to_contain_text("From the link")
    expect(status).to_contain_text("is not one of layers")
    expect(status).to_contain_text("sample must be a whole number")
    expect(page.locator("#qp-variants")).to_be_hidden()
    assert page.locator("#qp-status script").count() == 0

    # A link to a layer the folder does not have: the folder opens, and the status says why no layer is shown.
    page.goto(f"{bundled_server.url}?folder=resnet8&tab=layers&layer=no.such.layer")
    expect(status).to_have_class(re.compile(r"\bqp-status-warning\b"))
    expect(status).to_contain_text("Loaded 5 of 5 variants")
    expect(status).to_contain_text("no layer named")
    expect(page.locator("#qp-layers-table")).to_be_visible()
    assert _dropdown_value(page, "qp-layer-pick") == ""
