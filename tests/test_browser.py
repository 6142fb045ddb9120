"""The page in a real browser: Playwright driving Debian's Chromium against the app served in-process.

It also takes the screenshot the README shows (docs/screenshot.png).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

import quantcore
from tests.app_server import BUNDLED_MODELS, PROJECT_ROOT, Server, require_bundled_models, served_app

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
# Headless and quiet: no GPU, no QUIC, and no background calls to the internet.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOT = PROJECT_ROOT / "docs" / "screenshot.png"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium") or CHROMIUM
    if not Path(executable).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium`", pytrace=False)
    with sync_playwright() as playwright:
        yield playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)


@pytest.fixture(scope="module")
def bundled_server() -> Iterator[Server]:
    """The app on the real bundled models folder, as a user runs it."""
    require_bundled_models()
    with served_app(BUNDLED_MODELS) as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def _tree_entry(scope: Locator, name: str) -> Locator:
    """The explorer's list item for ``name`` directly inside ``scope``."""
    return scope.locator(":scope > ul > li").filter(
        has=scope.page.locator(":scope > span .item-name", has_text=re.compile(rf"^{re.escape(name)}$"))
    )


def test_select_bundled_folder_shows_five_variants(page: Page, bundled_server: Server) -> None:
    page.goto(bundled_server.url)
    expect(page.get_by_text("Select a model folder to begin")).to_be_visible()
    status = page.locator("#qp-status")
    # The explorer fires change(None) on load: that is "nothing selected", not an error.
    expect(status).to_have_class(re.compile(r"\bqp-status-info\b"))
    expect(status).to_contain_text("Nothing selected")

    explorer = page.locator("#qp-explorer .file-wrap")
    folder = _tree_entry(explorer, "resnet8")
    folder.locator(":scope > span [aria-label='expand directory']").click()
    folder.locator(":scope > ul > li").first.wait_for()
    dot = _tree_entry(folder, ".")
    dot.locator("input[type=checkbox]").check()

    expect(status).to_have_class(re.compile(r"\bqp-status-success\b"))
    expect(status).to_contain_text("Loaded 5 of 5 variants from resnet8")
    summary = page.locator("#qp-summary")
    expect(summary).to_contain_text("total_loaded")
    text = re.sub(r"\s+", "", summary.inner_text())
    assert '"total_loaded":5,' in text
    assert text.count('"status":"loaded"') == 5
    assert '"folder":"resnet8"' in text
    assert quantcore.cache_info().loads == 1

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOT)


def test_ticking_a_model_file_loads_its_folder_from_cache(page: Page, bundled_server: Server) -> None:
    quantcore.load_model_variants(bundled_server.models_root / "resnet8")
    page.goto(bundled_server.url)
    explorer = page.locator("#qp-explorer .file-wrap")
    folder = _tree_entry(explorer, "resnet8")
    folder.locator(":scope > span [aria-label='expand directory']").click()
    _tree_entry(folder, "resnet8_int8.onnx").locator("input[type=checkbox]").check()

    status = page.locator("#qp-status")
    expect(status).to_have_class(re.compile(r"\bqp-status-success\b"))
    expect(status).to_contain_text("from cache")
    assert quantcore.cache_info().loads == 1

    # Unticking is "nothing selected" again.
    _tree_entry(folder, "resnet8_int8.onnx").locator("input[type=checkbox]").uncheck()
    expect(status).to_have_class(re.compile(r"\bqp-status-info\b"))
