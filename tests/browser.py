"""Browser-test plumbing shared by every test that drives Debian's Chromium through Playwright.

Registered as a pytest plugin from conftest, so ``browser`` and ``page`` are
fixtures everywhere. Playwright cannot download browsers here: Debian's
Chromium is required, and its absence fails the test with the install command.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.app_server import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
# Headless and quiet: no GPU, no QUIC, and no background calls to the internet.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 30_000
VIEWPORT = {"width": 1300, "height": 1000}
README_SCREENSHOT = PROJECT_ROOT / "docs" / "screenshot.png"
# A loaded machine (2 cores shared by several test runs) takes seconds for a cold load: wait as long as for actions.
expect.set_options(timeout=TIMEOUT_MS)


def screenshot_path(tmp_path: Path) -> Path:
    """Where a test's screenshot goes: the README's copy only when asked (QP_UPDATE_SCREENSHOT=1),
    so a test run never rewrites a committed file."""
    return README_SCREENSHOT if os.environ.get("QP_UPDATE_SCREENSHOT") == "1" else tmp_path / "screenshot.png"


def tree_entry(scope: Locator, name: str) -> Locator:
    """The file explorer's list item for ``name`` directly inside ``scope``."""
    return scope.locator(":scope > ul > li").filter(
        has=scope.page.locator(":scope > span .item-name", has_text=re.compile(rf"^{re.escape(name)}$"))
    )


def open_accordion(page: Page, elem_id: str) -> Locator:
    """Unfold the ``gr.Accordion`` with ``elem_id`` (Gradio renders a folded one's content only once opened)."""
    section = page.locator(f"#{elem_id}")
    content = section.locator(":scope > [data-testid=accordion-content]")
    if not content.is_visible():
        section.locator(":scope > button.label-wrap").click()
        content.wait_for(state="visible")
    return section


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium") or CHROMIUM
    if not Path(executable).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium`", pytrace=False)
    with sync_playwright() as playwright:
        yield playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()
