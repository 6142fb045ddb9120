"""Uploads through a running app (gradio_client on loopback): a private folder per session, untrusted, capped."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from gradio_app.render import ICONS, Kind
from quantcore import settings
from quantcore.load import uploads
from tests.app_server import BUNDLED_FOLDER, Server, served_with_uploads

THREE = ("resnet8.onnx", "resnet8_int8.onnx", "resnet8_int8.pt")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("uploads_api")
    pair = base / "models" / "onnx_pair"  # what the upload below loads: its TorchScript file is refused
    pair.mkdir(parents=True)
    for name in THREE[:2]:
        shutil.copy(BUNDLED_FOLDER / name, pair / name)
    with served_with_uploads(base) as served:
        yield served


def _client(server: Server, downloads: Path | None = None) -> Client:
    if downloads is None:
        return Client(server.url, verbose=False, download_files=False)
    return Client(server.url, verbose=False, download_files=str(downloads))


def _upload(client: Client, paths: list[Path]) -> tuple[dict | None, str]:
    return client.predict([handle_file(str(p)) for p in paths], api_name="/upload_files")


def _folders() -> list[str]:
    root = settings.current().uploads_root
    return sorted(os.listdir(root)) if root.is_dir() else []


def test_three_files_load_as_an_untrusted_folder_named_by_its_files(server: Server, tmp_path: Path) -> None:
    client = _client(server, tmp_path)
    summary, status = _upload(client, [BUNDLED_FOLDER / n for n in THREE])
    assert status.startswith(ICONS[Kind.WARNING]), status  # the TorchScript file is refused, the ONNX ones load
    assert "your upload \\(resnet8\\.onnx, resnet8\\_int8\\.onnx, resnet8\\_int8\\.pt\\)" in status
    assert summary is not None and summary["folder"] == "your upload (resnet8.onnx, resnet8_int8.onnx, resnet8_int8.pt)"
    assert summary["trusted"] is False and summary["total_loaded"] == 2
    variants = summary["variants"]
    assert variants["pytorch_int8"]["status"] == "refused" and "TorchScript" in variants["pytorch_int8"]["error"]
    for key, name in (("onnx_float", "resnet8.onnx"), ("onnx_int8", "resnet8_int8.onnx")):
        assert variants[key]["sha256"] == hashlib.sha256((BUNDLED_FOLDER / name).read_bytes()).hexdigest()
    source = summary["source"]
    assert source["kind"] == "upload" and source["files"] == list(THREE)
    # The views load it like any folder: the same layers and rows as a local folder of the files that loaded.
    mine = client.predict(source, "", api_name="/layers")
    local = client.predict("onnx_pair", "", api_name="/layers")
    assert mine["layers"] and (mine["layers"], mine["rows"]) == (local["layers"], local["rows"])
    files, said = client.predict(source, api_name="/report")
    assert files and said.startswith(ICONS[Kind.SUCCESS]), said
    report = Path(next(f for f in files if f.endswith(".html"))).read_text(encoding="utf-8")
    assert "your upload (resnet8.onnx" in report
    served = str(settings.current().uploads_root.resolve())
    assert served not in json.dumps([summary, status, mine, said]) + report, "a server path reached the client"
    client.close()


def test_another_session_cannot_load_it_by_source_id_or_folder_name(server: Server) -> None:
    owner, other = _client(server), _client(server)
    summary, _ = _upload(owner, [BUNDLED_FOLDER / "resnet8.onnx"])
    assert summary is not None
    source, upload_id = summary["source"], summary["source"]["upload"]
    assert upload_id in _folders()
    for endpoint, args in (("/layers", (source, "")), ("/weights", (source, "conv1", 20, False, False)),
                           ("/layer_error", (source, 16))):  # fmt: skip
        answer = other.predict(*args, api_name=endpoint)
        assert answer == {"error": uploads.NOT_YOURS}, (endpoint, answer)
    for folder in (upload_id, f"../uploads/{upload_id}", str(settings.current().uploads_root / upload_id)):
        shown, status = other.predict(folder, api_name="/load_folder")
        assert shown is None and status.startswith(ICONS[Kind.ERROR]), (folder, status)
    assert "error" not in owner.predict(source, "", api_name="/layers")  # the owner still can
    owner.close()
    other.close()


def test_over_the_total_cap_is_refused_with_a_clear_status(server: Server) -> None:
    client = _client(server)
    files = [BUNDLED_FOLDER / n for n in ("resnet8.onnx", "resnet8_int8.onnx")]
    before = settings.current()
    settings.configure(max_upload_total_bytes=sum(os.stat(p).st_size for p in files) - 1)
    try:
        summary, status = _upload(client, files)
    finally:
        settings.configure(**before.__dict__)
    assert summary is None and status.startswith(ICONS[Kind.ERROR]) and "in all: at most" in status.replace("\\", ""), (
        status
    )
    client.close()


def test_hostile_and_foreign_files_are_refused_with_a_clear_status(server: Server, tmp_path: Path) -> None:
    client = _client(server)
    script = tmp_path / "run.sh"
    script.write_text("rm -rf /")
    hidden = tmp_path / ".hidden.onnx"
    shutil.copy(BUNDLED_FOLDER / "resnet8.onnx", hidden)
    count = len(_folders())
    for paths, says in (([script], "is not taken"), ([hidden], "may use only")):
        summary, status = _upload(client, paths)
        assert summary is None and status.startswith(ICONS[Kind.ERROR]), status
        assert says in status.replace("\\", ""), status
    assert len(_folders()) == count  # nothing was kept
    client.close()


def test_a_session_that_ends_takes_its_upload_with_it(server: Server) -> None:
    client = _client(server)
    summary, _ = _upload(client, [BUNDLED_FOLDER / "resnet8.onnx"])
    assert summary is not None
    upload_id = summary["source"]["upload"]
    assert upload_id in _folders()
    client.close()  # its heartbeat stops: Gradio runs the page's unload for that session
    deadline = time.monotonic() + 60
    while upload_id in _folders() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert upload_id not in _folders(), "the ended session's upload is still on disk after 60 s"
