"""Uploading one's own files in a real browser (Chromium): they load, another browser cannot reach them,
and they go when the tab does."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from quantcore import settings
from tests.app_server import BUNDLED_FOLDER, Server, served_with_uploads
from tests.browser import TIMEOUT_MS, VIEWPORT, open_accordion

pytestmark = pytest.mark.browser

THREE = ("resnet8.onnx", "resnet8_int8.onnx", "resnet8_uint8.onnx")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with served_with_uploads(tmp_path_factory.mktemp("uploads_browser")) as served:
        yield served


def _folders() -> list[str]:
    root = settings.current().uploads_root
    return sorted(os.listdir(root)) if root.is_dir() else []


def test_three_uploaded_files_load_only_for_their_tab_and_go_with_it(browser: Browser, server: Server) -> None:
    mine = browser.new_context(viewport=VIEWPORT)
    page = mine.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    section = open_accordion(page, "qp-upload")
    expect(section).to_contain_text("cannot be shared as a link")
    section.locator("input[type=file]").set_input_files([str(BUNDLED_FOLDER / n) for n in THREE])

    status = page.locator("#qp-status")
    expect(status).to_have_class(re.compile(r"\bqp-status-success\b"))
    expect(status).to_contain_text("Loaded 3 of 3 variants from your upload (resnet8.onnx, resnet8_int8.onnx")
    expect(page.locator("#qp-header")).to_contain_text("Showing your upload (resnet8.onnx")
    table = page.locator("#qp-variants")
    for key in ("onnx_float", "onnx_int8", "onnx_uint8"):
        expect(table).to_contain_text(key)
    served = str(settings.current().uploads_root.resolve())
    assert served not in page.content(), "the page shows where the server keeps the upload"
    # The tabs load from it like any folder: the layer table lists the graph's convolutions.
    page.get_by_role("tab", name="Layers").click()
    expect(page.locator("#qp-layers-table")).to_contain_text("/stack2/conv2/Conv")
    (upload_id,) = _folders()

    # Another browser sees nothing of it: not in the explorer, not loadable by its name.
    other = browser.new_context(viewport=VIEWPORT)
    second = other.new_page()
    second.set_default_timeout(TIMEOUT_MS)
    second.goto(server.url)
    expect(second.locator("#qp-explorer")).to_contain_text("resnet8")
    assert upload_id not in second.content()
    expect(second.locator("#qp-status")).to_contain_text("Nothing selected")
    other.close()

    mine.close()  # the tab goes: Gradio runs the page's unload for its session
    deadline = time.monotonic() + 60
    while upload_id in _folders() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert upload_id not in _folders(), "the closed tab's upload is still on disk after 60 s"
