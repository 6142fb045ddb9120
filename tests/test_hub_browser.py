"""The Hugging Face Hub panel in a real browser, pulling from olah on 127.0.0.1.

Playwright drives Debian's Chromium against the app served in-process; the app
reads HF_ENDPOINT on every pull, so pointing it at the local mirror is enough.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.app_server import Server, served_app
from tests.browser import open_accordion
from tests.conftest import VARIANT_FILES
from tests.hub_servers import LOOPBACK, OlahServer, free_port, make_git_repo

pytestmark = [pytest.mark.browser, pytest.mark.hub]

REPO = "org/resnet-tiny"


@pytest.fixture(scope="module")
def olah(built_variants: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OlahServer, str]]:
    work = tmp_path_factory.mktemp("olah_browser")
    files = {name: built_variants / name for name in VARIANT_FILES.values()}
    (commit,) = make_git_repo(work / "mirrors", REPO, [(files, ["v1"])])
    with OlahServer(work / "mirrors", work / "server") as server:
        yield server, commit


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app over an empty models folder: everything shown comes from the Hub panel."""
    root = tmp_path_factory.mktemp("hub_app") / "models"
    root.mkdir()
    with served_app(root) as server:
        yield server


def _pull(page: Page, repo_id: str, revision: str = "") -> None:
    open_accordion(page, "qp-hub")
    open_accordion(page, "qp-summary-section")
    page.get_by_label("Hugging Face Hub repo").fill(repo_id)
    page.get_by_label("Revision").fill(revision)
    page.locator("#qp-hub").get_by_role("button", name="Pull", exact=True).click()


def _summary_text(page: Page) -> str:
    return re.sub(r"\s+", "", page.locator("#qp-summary").inner_text())


def test_hub_panel_pulls_a_repo_and_shows_its_summary(
    page: Page, app: Server, olah: tuple[OlahServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, commit = olah
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    page.goto(app.url)
    status = page.locator("#qp-status")

    # Failures get a clear status, and the app keeps serving.
    _pull(page, "not a repo id!")
    expect(status).to_have_class(re.compile(r"\bqp-status-error\b"))
    expect(status).to_contain_text("not a valid Hugging Face repo id")
    _pull(page, "org/no-such-repo")
    expect(status).to_contain_text("was not found")

    _pull(page, REPO, "v1")
    # Four variants load; the TorchScript one is refused as untrusted, and the status says why.
    expect(status).to_contain_text("Loaded 4 of 5 variants from org/resnet-tiny@v1")
    expect(status).to_contain_text("refused")
    expect(status).to_contain_text("trust-remote-models")
    expect(page.locator("#qp-summary")).to_contain_text(commit)
    text = _summary_text(page)
    assert '"total_loaded":4,' in text and text.count('"status":"loaded"') == 4
    assert '"pytorch_int8":{"status":"refused"' in text
    assert f'"repo_id":"{REPO}"' in text and '"revision_requested":"v1"' in text
    assert '"from_cache":false' in text and '"offline":false' in text

    # Pulling again comes from the cache; with the endpoint gone, the cached snapshot still loads and says so.
    monkeypatch.setenv("HF_ENDPOINT", f"http://{LOOPBACK}:{free_port()}")
    page.locator("#qp-hub").get_by_role("button", name="Pull", exact=True).click()
    expect(page.locator("#qp-summary")).to_contain_text("unreachable")
    text = _summary_text(page)
    assert '"offline":true' in text and '"from_cache":true' in text and '"downloaded":[]' in text
    expect(status).to_contain_text("Loaded 4 of 5 variants")
    expect(status).to_contain_text("loaded the cached snapshot")
    expect(status).to_contain_text("unreachable")


def test_a_link_to_a_hub_repo_pulls_it_and_the_page_links_back_to_that_commit(
    page: Page, app: Server, olah: tuple[OlahServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, commit = olah
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    page.goto(f"{app.url}?hub={REPO}&revision=v1&tab=weights&layer=conv1")
    status = page.locator("#qp-status")
    expect(status).to_contain_text("Loaded 4 of 5 variants from org/resnet-tiny@v1")
    expect(page.locator("#qp-inspect [role=tab][aria-selected=true]")).to_have_text("Weights")
    expect(page.locator("#qp-weights-plot .js-plotly-plot")).to_be_visible()

    # The page's own link names the commit it pulled, not the moving revision.
    page.locator("#qp-link-run").click()
    link = page.locator("#qp-link textarea, #qp-link input").first
    expect(link).to_have_value(re.compile(r"^http://"))
    query = parse_qs(urlsplit(link.input_value()).query)
    assert query == {"hub": [REPO], "revision": [commit], "tab": ["weights"], "layer": ["conv1"]}
