"""The report through a running app: ``/report`` answers the HTML report and the ZIP of its tables.

The app runs in this process (tests/app_server.py), so the report the endpoint
sends can be compared with the one the core makes here for the same folder,
and its per-layer error with what ``/layer_error`` answered.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client

from gradio_app import render
from gradio_app.report import make_report
from quantcore.load import results_cache
from quantcore.report.html import NOT_THERE, report_html
from tests.app_server import Server, app_server  # noqa: F401 (a fixture)
from tests.test_report import parse, records

IMAGES = 32


@pytest.fixture
def client(app_server: Server, tmp_path: Path) -> Client:  # noqa: F811
    return Client(app_server.url, verbose=False, download_files=str(tmp_path / "downloads"))


def test_report_endpoint_sends_the_views_computed_so_far(client: Client, app_server: Server) -> None:  # noqa: F811
    results_cache.cache_clear()
    summary, _ = client.predict("resnet8", api_name="/load_folder")
    source = summary["source"]
    drift = client.predict(source, IMAGES, api_name="/layer_error")
    files, status = client.predict(source, api_name="/report")
    assert status.startswith("✔") and render.escape("Per-layer error (32 images)") in status
    html_file, zip_file = sorted(files, key=lambda f: not f.endswith(".html"))
    assert Path(html_file).name == "resnet8-report.html" and Path(zip_file).name == "resnet8-tables.zip"
    sent = parse(Path(html_file).read_text(encoding="utf-8"))

    # The per-layer error is what /layer_error answered, cell for cell.
    rows = [{k: NOT_THERE if v is None else str(v) for k, v in row.items()} for row in drift["variants"]]
    assert records(sent.tables[f"layer_error_{IMAGES}/per_variant"]) == rows
    # Every table is the one the core makes here for the same folder (only the time differs).
    here = parse(report_html(make_report(source)))
    assert sent.tables == here.tables
    assert [r["variant"] for r in records(sent.tables["overview/variants"])] == [
        "onnx_float", "onnx_int8", "onnx_uint8", "pytorch_float", "pytorch_int8"]  # fmt: skip
    with zipfile.ZipFile(zip_file) as archive:
        grid = list(csv.reader(io.TextIOWrapper(archive.open(f"layer_error_{IMAGES}/per_layer.csv"), "utf-8")))
    assert [[NOT_THERE if c == "" else c for c in row] for row in grid] == sent.tables[
        f"layer_error_{IMAGES}/per_layer"
    ]
    # No server path in what is sent: the folder is named as the page names it.
    assert str(app_server.models_root) not in Path(html_file).read_text(encoding="utf-8")


def test_report_endpoint_says_why_not(client: Client) -> None:
    files, status = client.predict(None, api_name="/report")
    assert files is None and status.startswith("ℹ")
    files, status = client.predict("../", api_name="/report")
    assert files is None and status.startswith("✖")


def test_report_endpoint_is_named_and_the_page_event_is_not(client: Client) -> None:
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert [p["parameter_name"] for p in named["/report"]["parameters"]] == ["source"]
    assert len(named["/report"]["returns"]) == 2
    assert not {"/page_report", "/page_report_clear"} & set(named)


def test_an_upload_is_reported_by_its_file_names_to_its_session_only(tmp_path: Path) -> None:
    from gradio_client import handle_file

    from quantcore import settings
    from quantcore.load import uploads
    from tests.app_server import BUNDLED_FOLDER, served_app

    (tmp_path / "models").mkdir()
    before = settings.current()
    settings.configure(uploads_root=tmp_path / "uploads")
    try:
        with served_app(tmp_path / "models") as server:
            owner = Client(server.url, verbose=False, download_files=str(tmp_path / "downloads"))
            other = Client(server.url, verbose=False, download_files=str(tmp_path / "elsewhere"))
            names = ["resnet8.onnx", "resnet8_int8.onnx"]
            summary, _ = owner.predict([handle_file(str(BUNDLED_FOLDER / n)) for n in names], api_name="/upload_files")
            files, status = owner.predict(summary["source"], api_name="/report")
            stolen, refused = other.predict(summary["source"], api_name="/report")
    finally:
        uploads.clear()
        settings.configure(**before.__dict__)
    html_file = next(f for f in files if f.endswith(".html"))
    text = Path(html_file).read_text(encoding="utf-8")
    assert status.startswith("✔") and "your upload (resnet8.onnx, resnet8_int8.onnx)" in text
    assert str((tmp_path / "uploads").resolve()) not in text and str(tmp_path) not in text
    assert [r["variant"] for r in records(parse(text).tables["overview/variants"]) if r["status"] == "loaded"] == [
        "onnx_float", "onnx_int8"]  # fmt: skip
    assert stolen is None and refused.startswith("✖")
