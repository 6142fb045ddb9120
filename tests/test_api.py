"""The named API endpoints, through gradio_client, against the app served in-process on loopback."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client

import quantcore
from gradio_app import handlers
from gradio_app.render import ICONS, Kind
from tests.app_server import BUNDLED_FOLDER, Server, app_server  # noqa: F401  (app_server is a fixture)
from tests.audit import record_opens

FIVE = {"onnx_float", "onnx_int8", "onnx_uint8", "pytorch_float", "pytorch_int8"}


@pytest.fixture(scope="module")
def client(app_server: Server) -> Client:  # noqa: F811
    return Client(app_server.url, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def outside(app_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:  # noqa: F811
    """Real variants outside the served root, and a symlink inside the root that points at them."""
    target = Path(shutil.copytree(BUNDLED_FOLDER, tmp_path_factory.mktemp("outside") / "resnet8"))
    link = app_server.models_root / "escape"
    link.symlink_to(target, target_is_directory=True)
    yield target
    link.unlink()


def _load(client: Client, folder: str) -> tuple[dict | None, str]:
    summary, status = client.predict(folder, api_name="/load_folder")
    return summary, status


def test_named_endpoints_are_documented_and_the_page_events_are_not(client: Client) -> None:
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/load_folder", "/pull_hub"} <= set(named)
    # The page's own events and the benchmark's no-op are not part of the documented API.
    assert not {"/page_tick", "/page_click", "/page_pull", "/page_pull_enter", "/ping"} & set(named)
    assert [p["parameter_name"] for p in named["/load_folder"]["parameters"]] == ["folder"]
    assert len(named["/load_folder"]["returns"]) == 2


def test_bundled_folder_loads_five_then_comes_from_cache(client: Client) -> None:
    summary, status = _load(client, "resnet8")
    assert status.startswith(ICONS[Kind.SUCCESS]), status
    assert summary is not None and summary["total_loaded"] == 5
    assert {k for k, v in summary["variants"].items() if v["status"] == "loaded"} == FIVE
    assert summary["folder"] == "resnet8" and summary["cache_hit"] is False
    assert quantcore.cache_info().loads == 1

    again, status = _load(client, "resnet8")
    assert again is not None and again["cache_hit"] is True and again["total_loaded"] == 5
    assert "from cache" in status
    assert quantcore.cache_info().loads == 1


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("does-not-exist", "does not exist"),
        ("resnet8/resnet8.onnx", "not a folder"),
        ("../", "is not allowed in a path"),
        ("resnet8/../../", "is not allowed in a path"),
        ("OUTSIDE", "absolute paths are not allowed"),
        ("escape", "outside the allowed folders"),
    ],
)
def test_bad_folders_get_an_error_and_the_next_call_still_answers(
    client: Client, outside: Path, folder: str, expected: str
) -> None:
    with record_opens() as opened:  # the server runs in this process: its opens are recorded too
        summary, status = _load(client, str(outside) if folder == "OUTSIDE" else folder)
    assert [p for p in opened if str(outside) in p] == []
    assert summary is None
    assert status.startswith(ICONS[Kind.ERROR]), status
    assert expected.replace(".", "\\.") in status
    assert quantcore.cache_info().misses == 0, "a refused path reached the loader"

    summary, status = _load(client, "resnet8")
    assert summary is not None and summary["total_loaded"] == 5, status


def test_several_users_at_once_run_side_by_side_and_share_one_load(
    app_server: Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running, most = 0, 0
    lock = threading.Lock()
    real_load = handlers.load_model_variants

    def slow_load(folder: Path) -> quantcore.ModelVariants:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.5)  # long enough for the other requests to arrive
        try:
            return real_load(folder)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(handlers, "load_model_variants", slow_load)
    clients = [Client(app_server.url, verbose=False, download_files=False) for _ in range(4)]
    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(lambda c: c.predict("resnet8", api_name="/load_folder"), clients))
    assert all(summary is not None and summary["total_loaded"] == 5 for summary, _ in results)
    assert most > 1, "requests from different users were served one at a time"
    assert quantcore.cache_info().loads == 1  # ... and the one folder still loaded once


def test_a_server_fault_is_an_error_status_not_a_traceback(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(handlers.render, "display_summary", broken)  # fails after the loader's own guard
    summary, status = _load(client, "resnet8")
    assert summary is None and status.startswith(ICONS[Kind.ERROR])
    assert "internal detail" not in status and "Traceback" not in status


def test_pull_hub_endpoint_answers_with_a_status(client: Client) -> None:
    summary, status = client.predict("", "", "", api_name="/pull_hub")
    assert summary is None and status.startswith(ICONS[Kind.INFO])
    summary, status = client.predict("not a repo id!", api_name="/pull_hub")  # revision, subfolder optional
    assert summary is None and status.startswith(ICONS[Kind.ERROR]) and "not a valid" in status


def test_ping_baseline_endpoint_echoes(client: Client) -> None:
    assert client.predict("x", api_name="/ping") == "x"
