"""The page in a real browser: Playwright driving Debian's Chromium against the app served in-process.

It also takes the screenshot the README shows:
`QP_UPDATE_SCREENSHOT=1 python -m pytest tests/test_browser.py` rewrites docs/screenshot.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

import quantcore
from tests.app_server import BUNDLED_MODELS, Server, require_bundled_models, served_app
from tests.browser import open_accordion, screenshot_path, tree_entry

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def bundled_server() -> Iterator[Server]:
    """The app on the real bundled models folder, as a user runs it."""
    require_bundled_models()
    with served_app(BUNDLED_MODELS) as server:
        yield server


def test_select_bundled_folder_shows_five_variants(page: Page, bundled_server: Server, tmp_path: Path) -> None:
    page.goto(bundled_server.url)
    expect(page.get_by_text("Select a model folder to begin")).to_be_visible()
    status = page.locator("#qp-status")
    # The explorer fires change(None) on load: that is "nothing selected", not an error.
    expect(status).to_have_class(re.compile(r"\bqp-status-info\b"))
    expect(status).to_contain_text("Nothing selected")

    explorer = page.locator("#qp-explorer .file-wrap")
    folder = tree_entry(explorer, "resnet8")
    folder.locator(":scope > span [aria-label='expand directory']").click()
    folder.locator(":scope > ul > li").first.wait_for()
    dot = tree_entry(folder, ".")
    dot.locator("input[type=checkbox]").check()

    expect(status).to_have_class(re.compile(r"\bqp-status-success\b"))
    expect(status).to_contain_text("Loaded 5 of 5 variants from resnet8")
    expect(page.locator("#qp-header")).to_contain_text("Showing resnet8: 5 of 5 variants loaded")
    expect(page.locator("#qp-variants")).to_contain_text("pytorch_int8")
    # The README's picture: what a user sees once the load and the views it starts have settled.
    expect(page.locator("#qp-layers-table")).to_be_visible()
    page.wait_for_function("() => document.querySelectorAll('.progress-text, .eta-bar, .pending').length === 0")
    page.screenshot(path=screenshot_path(tmp_path))
    # The JSON summary is folded under the overview; unfolded, it is the whole summary as before.
    open_accordion(page, "qp-summary-section")
    summary = page.locator("#qp-summary")
    expect(summary).to_contain_text("total_loaded")
    text = re.sub(r"\s+", "", summary.inner_text())
    assert '"total_loaded":5,' in text
    assert text.count('"status":"loaded"') == 5
    assert '"folder":"resnet8"' in text
    assert quantcore.cache_info().loads == 1


def test_ticking_a_model_file_loads_its_folder_from_cache(page: Page, bundled_server: Server) -> None:
    quantcore.load_model_variants(bundled_server.models_root / "resnet8")
    page.goto(bundled_server.url)
    explorer = page.locator("#qp-explorer .file-wrap")
    folder = tree_entry(explorer, "resnet8")
    folder.locator(":scope > span [aria-label='expand directory']").click()
    tree_entry(folder, "resnet8_int8.onnx").locator("input[type=checkbox]").check()

    status = page.locator("#qp-status")
    expect(status).to_have_class(re.compile(r"\bqp-status-success\b"))
    expect(status).to_contain_text("from cache")
    assert quantcore.cache_info().loads == 1

    # Unticking is "nothing selected" again.
    tree_entry(folder, "resnet8_int8.onnx").locator("input[type=checkbox]").uncheck()
    expect(status).to_have_class(re.compile(r"\bqp-status-info\b"))
