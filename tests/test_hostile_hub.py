"""A hostile Hub through the app's API: its slow pulls end with a clear status and free their slots.

The app runs in this process on loopback (``served_app``); every request goes
through gradio_client, one client per simulated user, as a public Space sees them.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client

from gradio_app.render import ICONS, Kind, escape
from quantcore.load import hub_transfer
from tests.app_server import served_app
from tests.conftest import VARIANT_FILES
from tests.hub_servers import TRICKLE, HubContractServer

pytestmark = [
    pytest.mark.hub,
    pytest.mark.reliability("Hostile Hub through the API: slow pulls end and free their slots"),
]

ERROR, SUCCESS = ICONS[Kind.ERROR], ICONS[Kind.SUCCESS]
LOADED_FOUR = f"{ICONS[Kind.WARNING]} **Loaded 4 of 5 variants from {escape('org/cached')}"
TINY_FILES = sorted(VARIANT_FILES.values())


@dataclass(frozen=True)
class Site:
    url: str
    hub: HubContractServer
    hf_home: Path

    def client(self) -> Client:
        return Client(self.url, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def site(built_variants: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("hostile-hub")
    root = base / "models"
    root.mkdir()
    shutil.copytree(built_variants, root / "good")
    with HubContractServer() as hub, served_app(root) as server:
        yield Site(server.url, hub, base / "hf_home")


@pytest.fixture(autouse=True)
def _environment(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", site.hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(site.hf_home))  # one cache for the whole module: "cached" stays cached
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)


def _timed(call: Any, *args: Any, api_name: str) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call.predict(*args, api_name=api_name)
    return result, time.perf_counter() - started


@pytest.mark.timeout(120)
def test_trickling_pulls_are_cut_and_free_the_hub_slots(site: Site, built_variants: Path) -> None:
    """Two pulls trickling 1 byte every 3 s held both Hub slots for 5 minutes; a third user waited over 100 s."""
    site.hub.add_commit("org/cached", {n: built_variants / n for n in TINY_FILES})
    site.hub.add_commit("org/trickle", {n: built_variants / n for n in TINY_FILES})
    _, status = site.client().predict("org/cached", "", "", api_name="/pull_hub")
    assert status.startswith(LOADED_FOUR), status  # the TorchScript variant is refused, as from any Hub repo
    site.hub.hostile("tiny.pt", TRICKLE, interval=3.0)  # from now on, in every repo

    answers: dict[str, tuple[Any, float]] = {}

    def trickle(name: str) -> None:
        answers[name] = _timed(site.client(), "org/trickle", "", "", api_name="/pull_hub")

    users = [threading.Thread(target=trickle, args=(f"user{n}",)) for n in (1, 2)]
    for user in users:
        user.start()
    deadline = time.monotonic() + 30
    while site.hub.sent.get("tiny.pt", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # both trickles have started sending
    assert site.hub.sent.get("tiny.pt", 0) >= 2, "the trickling pulls never started"

    folder, folder_seconds = _timed(site.client(), "good", api_name="/load_folder")
    cached, cached_seconds = _timed(site.client(), "org/cached", "", "", api_name="/pull_hub")
    for user in users:
        user.join(timeout=60)

    # A local folder does not wait for the Hub at all; a cached pull waits for one trickle to be cut.
    assert folder[1].startswith(SUCCESS) and folder_seconds < 5, (folder_seconds, folder[1])
    assert cached[1].startswith(LOADED_FOUR) and cached_seconds < hub_transfer.RATE_WINDOW_SECONDS + 3 + 5, (
        cached_seconds
    )
    assert "all 5 file\\(s\\) were already cached" in cached[1]
    for (summary, status), seconds in answers.values():
        assert summary is None
        assert status.startswith(f"{ERROR} **Cannot pull {escape('org/trickle')}**"), status
        assert escape("came at 0.00 KB/s, under the 64 KB/s minimum (QP_HUB_MIN_RATE_KBPS)") in status
        assert seconds < hub_transfer.RATE_WINDOW_SECONDS + 3 + 5, seconds
    repo_cache = site.hf_home / "hub" / "models--org--trickle"
    assert not repo_cache.exists(), "a cut pull leaves nothing in the Hub cache"


def test_a_refused_pull_says_why_and_writes_nothing(site: Site, built_variants: Path) -> None:
    site.hub.add_commit("org/five-gb", {n: built_variants / n for n in TINY_FILES})
    site.hub.list_size("org/five-gb", "tiny.onnx", 5 * 1024**3)
    (summary, status), seconds = _timed(site.client(), "org/five-gb", "", "", api_name="/pull_hub")
    assert summary is None and seconds < 5
    assert status.startswith(f"{ERROR} **Cannot pull {escape('org/five-gb')}**")
    assert escape("tiny.onnx is listed at 5,120.0 MB, over the 512.0 MB limit per file") in status
    assert not (site.hf_home / "hub" / "models--org--five-gb").exists()
    _, status = site.client().predict("good", api_name="/load_folder")
    assert status.startswith(SUCCESS), "the app serves the next request"
