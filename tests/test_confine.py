"""Every file a request opens is confined to the allowed roots, not just its folder (issue 12, finding 4).

Files inside an allowed folder that link out of it — test-set files, label
files, ``samples.npz``, ``model_card.json``, ``variants.json``, an uploaded
image's path — are refused by name with a clear status, and neither their
targets are opened (an audit hook records every ``open`` in the process,
which serves the app in-process) nor any of their bytes echoed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client

from quantcore import settings
from quantcore.data.test_sets import find_test_sets
from tests.app_server import served_app
from tests.audit import record_opens
from tests.test_predictions import build_flip_folder
from tests.test_scorecard import write_fashion_test_set

pytestmark = pytest.mark.reliability("Files linked out of an allowed folder")

TARGETS = ("/etc/passwd", "/etc/hostname")
CODE_ROOTS = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, *sysconfig.get_paths().values())})
IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


@dataclass(frozen=True)
class Site:
    client: Client
    url: str
    root: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    for target in TARGETS:
        if not os.path.isfile(target):
            pytest.fail(f"{target} is needed as a file outside the roots", pytrace=False)
    root = tmp_path_factory.mktemp("confine") / "models"
    build_flip_folder(root / "flip")
    # The folder's own sidecars linked out of it.
    sidecars = build_flip_folder(root / "sidecars")
    (sidecars / "samples.npz").unlink()
    (sidecars / "samples.npz").symlink_to("/etc/passwd")
    (sidecars / "model_card.json").symlink_to("/etc/passwd")
    (sidecars / "variants.json").symlink_to("/etc/hostname")
    # Test sets whose files (images, labels; CIFAR's meta and batch) link to system files.
    (root / "fashion-links").mkdir()
    (root / "fashion-links" / IMAGES).symlink_to("/etc/passwd")
    (root / "fashion-links" / LABELS).symlink_to("/etc/hostname")
    write_fashion_test_set(root / "labels-link")
    (root / "labels-link" / LABELS).unlink()
    (root / "labels-link" / LABELS).symlink_to("/etc/hostname")
    (root / "cifar-links").mkdir()
    (root / "cifar-links" / "batches.meta").symlink_to("/etc/passwd")
    (root / "cifar-links" / "test_batch").symlink_to("/etc/hostname")
    write_fashion_test_set(root / "fashion")
    with served_app(root) as server:
        yield Site(Client(server.url, verbose=False, download_files=False), server.url, server.models_root)


def _bytes_of_targets() -> list[str]:
    """Fragments of the link targets' contents that must never reach a client."""
    fragments = []
    for target in TARGETS:
        raw = Path(target).read_bytes()[:64]
        fragments += [repr(raw[:2]), raw[:2].decode("latin-1"), *(w for w in re.split(rb"[\s:]+", raw) if len(w) >= 3)]
    return [f.decode("latin-1") if isinstance(f, bytes) else f for f in fragments if f]


def assert_confined(site: Site, opened: list[str], answer: Any) -> None:
    gradio_tmp = os.path.realpath(os.environ.get("GRADIO_TEMP_DIR", "/tmp/gradio"))
    roots = [str(site.root), os.path.realpath(os.environ["HF_HOME"]), gradio_tmp, *CODE_ROOTS]
    strays = [p for p in opened if not any(os.path.realpath(p).startswith(r.rstrip("/") + "/") for r in roots)]
    assert strays == [], f"opened outside the allowed roots: {strays}"
    text = json.dumps(answer)
    echoed = [f for f in _bytes_of_targets() if len(f) >= 3 and f in text]  # e.g. "b'ro'", "root", "daemon"
    assert echoed == [], f"bytes of a file outside the roots reached the client: {echoed} in {text[:300]}"


def source_of(site: Site, folder: str) -> dict[str, Any]:
    summary, status = site.client.predict(folder, api_name="/load_folder")
    assert summary is not None, status
    return summary["source"]


@pytest.mark.parametrize(
    ("test_set", "message"),
    [
        ("fashion-links", f"{IMAGES} in that test set links outside the allowed folders; it was not opened"),
        ("labels-link", f"{LABELS} in that test set links outside the allowed folders; it was not opened"),
        ("cifar-links", "batches.meta in that test set links outside the allowed folders; it was not opened"),
    ],
)
def test_test_set_files_linked_to_system_files_are_refused_unopened(site: Site, test_set: str, message: str) -> None:
    """/scorecard opened /etc/passwd and /etc/hostname through test-set links and echoed their first bytes."""
    source = source_of(site, "flip")
    with record_opens() as opened:
        answer = site.client.predict(source, test_set, 1, api_name="/scorecard")
    assert answer == {"error": message}
    assert_confined(site, opened, answer)
    # The same source with a real test set beside it is scored: the refusal left nothing behind.
    scored = site.client.predict(source, "fashion", 1, api_name="/scorecard")
    assert "error" not in scored, scored


def test_linked_test_sets_are_not_offered(site: Site) -> None:
    before = settings.current()
    settings.configure(models_root=site.root)
    try:
        with record_opens() as opened:
            offered = {p.name for p in find_test_sets() if p.is_relative_to(site.root)}
    finally:
        settings.configure(**before.__dict__)
    assert offered == {"fashion"}
    assert opened == [], "listing test sets opens none of their files"


def test_sidecars_linked_to_system_files_are_ignored_by_name(site: Site) -> None:
    with record_opens() as opened:
        summary, status = site.client.predict("sidecars", api_name="/load_folder")
    assert summary is not None and status.startswith("✔"), status
    assert "variants\\.json ignored\\: it links outside this folder" in status
    assert set(summary["notes"]) >= {
        "variants.json ignored: it links outside this folder",
        "model_card.json ignored: it links outside this folder",
    }, summary["notes"]
    assert summary["total_loaded"] == 3
    assert_confined(site, opened, [summary, status])


@pytest.mark.parametrize(
    ("endpoint", "extra"), [("/predict", ()), ("/flips", ()), ("/scorecard", ("", 1)), ("/layer_error", ())]
)
def test_samples_linked_to_a_system_file_are_not_read_by_any_view(site: Site, endpoint: str, extra: tuple) -> None:
    source = source_of(site, "sidecars")
    with record_opens() as opened:
        answer = site.client.predict(source, *extra, api_name=endpoint)
    # Refused by name: the views that need samples fail saying why, per-layer error notes it and goes on.
    assert "samples.npz ignored: it links outside this folder" in json.dumps(answer), answer
    assert ("error" in answer) is (endpoint != "/layer_error"), answer
    assert_confined(site, opened, answer)


def test_an_image_path_outside_the_upload_folder_is_refused(site: Site) -> None:
    """A client naming /etc/passwd as the uploaded image's path: Gradio refuses it before the handler."""
    source = source_of(site, "flip")
    image = {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}
    with record_opens() as opened, httpx.Client(base_url=site.url, timeout=60) as http:
        sent = http.post("gradio_api/call/predict", json={"data": [source, 0, image, 3, "auto"]})
        stream = http.get(f"gradio_api/call/predict/{sent.json()['event_id']}").text if sent.is_success else sent.text
    assert "event: complete" not in stream, stream[:300]
    assert_confined(site, opened, stream)
