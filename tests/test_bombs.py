"""Decompression bombs are refused by their declared sizes, before anything is inflated or decoded.

Each bomb (``tests/bombs.py``) is a real file of its kind that inflates to
gigabytes. Each test holds: the clear message; the time; how far this
process's resident memory rose while the bomb was handled (the kernel's peak,
reset just before) and that it came back; and, through the app, that another
user is served meanwhile. The first half calls quantcore directly; the second
goes through the app's API (gradio_client), with the bombs from a Hub repo
where the issue found them there.
"""

from __future__ import annotations

import pickle
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from quantcore import settings
from quantcore.data import cifar, datasets
from quantcore.errors import DatasetError, InvalidImageError, ModelTooLargeError
from quantcore.evaluate.images import image_to_pixels
from quantcore.evaluate.inputs import InputSpec
from quantcore.load import files
from tests import bombs
from tests.app_server import served_app
from tests.conftest import VARIANT_FILES
from tests.hub_servers import HubContractServer
from tests.memory import memory_use

pytestmark = pytest.mark.reliability("Decompression bombs: samples, test sets, .pt, images")

TINY_FILES = sorted(VARIANT_FILES.values())
# What handling a refused bomb may add to the process, at its peak: the work of answering, not the bomb.
RISE_MB = 48
KEPT_MB = 16


@pytest.fixture(autouse=True)
def _restore_settings() -> Iterator[None]:
    before = settings.current()
    yield
    settings.configure(**before.__dict__)


def _spec() -> InputSpec:
    return InputSpec((3, 32, 32))


# ------------------------------------------------------------------ quantcore


def test_an_npz_of_half_a_million_deflated_images_is_refused_before_inflating(tmp_path: Path) -> None:
    """1.5 MB of samples.npz took the server from 417 MB to 1.9 GB, and kept it."""
    bombs.npz_bomb(tmp_path / "samples.npz", 500_000)
    assert (tmp_path / "samples.npz").stat().st_size < 2 * 2**20
    with memory_use() as used:
        started = time.perf_counter()
        with pytest.raises(DatasetError) as raised:
            datasets.load_samples(tmp_path / "samples.npz")
        seconds = time.perf_counter() - started
    assert str(raised.value) == (
        "samples.npz would inflate to 1,468.7 MB (from 1.45 MB on disk), over the 64 MB limit (QP_MAX_SAMPLES_MB)"
    )
    assert seconds < 1
    assert used.rise_mb < RISE_MB and used.kept_mb < KEPT_MB, used


def test_a_few_kb_npz_claiming_half_a_million_images_is_refused_by_its_npy_header(tmp_path: Path) -> None:
    bombs.npz_claiming(tmp_path / "samples.npz", 500_000)
    assert (tmp_path / "samples.npz").stat().st_size < 4096
    with memory_use() as used, pytest.raises(DatasetError) as raised:
        datasets.load_samples(tmp_path / "samples.npz")
    assert str(raised.value) == (
        "samples.npz: images.npy declares (500000, 3, 32, 32) uint8: 1,464.8 MB, over the 64.0 MB limit "
        "(QP_MAX_SAMPLES_MB); nothing of it was loaded"
    )
    assert used.rise_mb < RISE_MB, used


def test_an_npz_of_thousands_of_members_is_refused_from_its_end_record(tmp_path: Path) -> None:
    bombs.write_zip(tmp_path / "samples.npz", {f"m{n}.npy": (b"", 0) for n in range(5000)})
    with pytest.raises(DatasetError, match=r"samples\.npz holds 5,000 members; at most 16 are read"):
        datasets.load_samples(tmp_path / "samples.npz")


def test_a_real_small_npz_still_loads(tmp_path: Path) -> None:
    bombs.npz_bomb(tmp_path / "samples.npz", 20)  # twenty zero images: a bomb only in name
    data = datasets.load_samples(tmp_path / "samples.npz")
    assert data.images.shape == (20, 3, 32, 32) and data.label_names[0] == "class 0"


def test_a_gzip_idx_bomb_is_refused_by_its_header(tmp_path: Path) -> None:
    """A 762 KB gzip test set took the server to 5 GB."""
    bombs.idx_bomb(tmp_path / "t10k-images-idx3-ubyte.gz", 1_000_000)
    bombs.idx_bomb(tmp_path / "t10k-labels-idx1-ubyte.gz", 1_000_000, side=1)
    assert (tmp_path / "t10k-images-idx3-ubyte.gz").stat().st_size < 1024 * 1024
    with memory_use() as used:
        started = time.perf_counter()
        with pytest.raises(DatasetError) as raised:
            datasets.load_fashion_mnist("test", tmp_path)
        seconds = time.perf_counter() - started
    assert str(raised.value) == (
        "t10k-images-idx3-ubyte.gz declares (1000000, 28, 28): 2,929.7 MB once read, over the 256.0 MB limit "
        "(QP_MAX_DATASET_MB); nothing of it was decompressed"
    )
    assert seconds < 1
    assert used.rise_mb < RISE_MB and used.kept_mb < KEPT_MB, used


def test_a_deflated_pt_bomb_is_refused_by_its_members_sizes(tmp_path: Path) -> None:
    """A 1 MB deflated .pt expanded to 1 GB inside torch.load, past the 512 MB cap on its compressed size."""
    bombs.pt_bomb(tmp_path / "tiny.pt", 600)
    on_disk = (tmp_path / "tiny.pt").stat().st_size
    assert on_disk < 2**20
    with memory_use() as used, pytest.raises(ModelTooLargeError) as raised:
        files.load_torch_file(tmp_path / "tiny.pt", trusted=False)
    assert str(raised.value) == (
        f"tiny.pt would inflate to 600.0 MB (from {on_disk / 2**20:.2f} MB on disk), "
        "over the 512 MB limit (QP_MAX_MODEL_MB)"
    )
    assert used.rise_mb < RISE_MB, used
    # The control: a small one of the same make reaches torch, which loads it (and finds no architecture).
    bombs.pt_bomb(tmp_path / "small.pt", 1)
    with pytest.raises(Exception, match="fits no known architecture"):
        files.load_torch_file(tmp_path / "small.pt", trusted=False)


def test_a_13000_square_png_is_refused_before_decoding() -> None:
    """A 191 KB 13000x13000 grey PNG cost 7.7 s and +690 MB per request."""
    from PIL import Image

    bomb = bombs.png_bomb(13000, 13000)
    assert len(bomb) < 256 * 1024
    with memory_use() as used:
        started = time.perf_counter()
        with pytest.raises(InvalidImageError) as raised:
            image_to_pixels(bomb, _spec())
        seconds = time.perf_counter() - started
    assert str(raised.value) == (
        "the image has 169,000,000 pixels, over 40,000,000 pixels (QP_MAX_IMAGE_PIXELS): too large to decode safely"
    )
    assert seconds < 1
    assert used.rise_mb < RISE_MB, used
    assert settings.current().max_image_pixels == Image.MAX_IMAGE_PIXELS, "Pillow's own limit is ours"


def test_cifar_batches_are_capped_and_never_arrays_of_references(tmp_path: Path) -> None:
    from tests.test_datasets import write_cifar10

    write_cifar10(tmp_path)
    row = np.zeros((1, 3072), np.uint8)
    with open(tmp_path / "test_batch", "wb") as f:  # a list of 200,000 references to one row: a few hundred KB
        pickle.dump({b"data": [row] * 200_000, b"labels": [0] * 200_000}, f, protocol=2)
    assert (tmp_path / "test_batch").stat().st_size < 1024 * 1024
    with memory_use() as used, pytest.raises(DatasetError, match=r"test_batch: expected uint8 data \(N, 3072\)"):
        cifar.load_cifar10(tmp_path, "test")
    assert used.rise_mb < RISE_MB, used
    settings.configure(max_dataset_bytes=5000)  # over the 4 KB of batches.meta, under the test batch
    with pytest.raises(DatasetError, match=r"test_batch is over the 0\.0 MB limit \(QP_MAX_DATASET_MB\)"):
        cifar.load_cifar10(tmp_path, "test")


# ------------------------------------------------------------------ the app


@dataclass(frozen=True)
class Site:
    url: str
    hub: HubContractServer
    root: Path

    def client(self) -> Client:
        return Client(self.url, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def site(built_variants: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("bombs")
    root = base / "models"
    root.mkdir()
    good = Path(shutil.copytree(built_variants, root / "good"))
    bombs.npz_bomb(good / "samples.npz", 20)  # real samples: a warm-up request has something to predict
    bombset = root / "bombset"
    bombset.mkdir()
    bombs.idx_bomb(bombset / "t10k-images-idx3-ubyte.gz", 1_000_000)
    bombs.idx_bomb(bombset / "t10k-labels-idx1-ubyte.gz", 1_000_000, side=1)
    with HubContractServer() as hub, served_app(root) as server:
        yield Site(server.url, hub, root)


@pytest.fixture(autouse=True)
def _hub(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", site.hub.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)


def _png_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _warm(site: Site, tmp_path: Path) -> None:
    """Load the folder and run every variant once, so what is measured next is the bomb alone."""
    photo = tmp_path / "photo.png"
    Image.new("L", (64, 64), 128).save(photo)
    answer = site.client().predict("good", 0, handle_file(str(photo)), 3, "auto", api_name="/predict")
    assert "error" not in answer, answer


@pytest.mark.parametrize("side", [13000, 30000])
def test_a_png_bomb_uploaded_to_predict_is_refused_by_the_handler(site: Site, tmp_path: Path, side: int) -> None:
    """13000 px cost 7.7 s and +690 MB a request; 30000 px got Gradio's opaque "AppError"."""
    _warm(site, tmp_path)
    bomb = _png_file(tmp_path, f"bomb{side}.png", bombs.png_bomb(side, side))
    client = site.client()
    with memory_use() as used:
        started = time.perf_counter()
        answer = client.predict("good", 0, handle_file(str(bomb)), 3, "auto", api_name="/predict")
        seconds = time.perf_counter() - started
    assert answer == {
        "error": f"the image has {side * side:,} pixels, over 40,000,000 pixels (QP_MAX_IMAGE_PIXELS): "
        "too large to decode safely"
    }
    assert seconds < 3, seconds
    assert used.rise_mb < RISE_MB and used.kept_mb < KEPT_MB, used


@pytest.mark.timeout(120)
def test_four_png_bombs_at_once_do_not_hold_up_another_users_layers(site: Site, tmp_path: Path) -> None:
    """Four at once took 3.7 GB, and another user's /layers waited 20 s."""
    _warm(site, tmp_path)
    bomb = _png_file(tmp_path, "bomb.png", bombs.png_bomb(13000, 13000))
    answers: list[Any] = []

    def upload() -> None:
        answers.append(site.client().predict("good", 0, handle_file(str(bomb)), 3, "auto", api_name="/predict"))

    client = site.client()
    started = time.perf_counter()
    alone = client.predict("good", "", api_name="/layers")
    alone_seconds = time.perf_counter() - started
    assert "error" not in alone
    with memory_use() as used:
        users = [threading.Thread(target=upload) for _ in range(4)]
        for user in users:
            user.start()
        started = time.perf_counter()
        layers = client.predict("good", "", api_name="/layers")
        layers_seconds = time.perf_counter() - started
        for user in users:
            user.join(timeout=60)
    # Decoding four such images took every view slot for many seconds; refused, they cost a few milliseconds.
    assert "error" not in layers and layers_seconds < alone_seconds + 5, (layers_seconds, alone_seconds)
    assert len(answers) == 4 and all("over 40,000,000 pixels" in a["error"] for a in answers), answers
    assert used.rise_mb < 2 * RISE_MB, used


def test_an_upload_over_the_size_limit_is_refused_by_gradio(site: Site, tmp_path: Path) -> None:
    """/gradio_api/upload accepted a 300 MB file."""
    from gradio.utils import get_upload_folder

    limit = settings.current().max_upload_bytes
    big = tmp_path / "too-big-upload.png"
    with open(big, "wb") as handle:
        handle.truncate(limit + 1)
    url = site.url.rstrip("/") + "/gradio_api/upload"
    with open(big, "rb") as handle:
        answer = httpx.post(url, files={"files": (big.name, handle)}, timeout=60)
    assert answer.status_code == 413, (answer.status_code, answer.text[:200])
    assert answer.text == f"File size exceeded maximum allowed size of {limit} bytes."
    assert not list(Path(get_upload_folder()).rglob(big.name)), "nothing of it stays in Gradio's upload folder"


def test_a_samples_bomb_from_the_hub_is_refused_when_the_samples_are_read(
    site: Site, built_variants: Path, tmp_path: Path
) -> None:
    bomb = tmp_path / "samples.npz"
    bombs.npz_bomb(bomb, 500_000)
    site.hub.add_commit("evil/samples", {**{n: built_variants / n for n in TINY_FILES}, "samples.npz": bomb})
    summary, status = site.client().predict("evil/samples", "", "", api_name="/pull_hub")
    assert summary is not None, status
    photo = tmp_path / "photo.png"
    Image.new("L", (64, 64), 128).save(photo)
    site.client().predict(summary, 0, handle_file(str(photo)), 3, "auto", api_name="/predict")  # warm-up
    with memory_use() as used:
        answer = site.client().predict(summary, 0, None, 3, "auto", api_name="/predict")
    assert answer["error"].startswith("this folder has no samples to pick from (")
    assert "samples.npz unreadable: samples.npz would inflate to 1,468.7 MB (from 1.45 MB on disk)" in answer["error"]
    assert used.rise_mb < RISE_MB and used.kept_mb < KEPT_MB, used


def test_a_pt_bomb_from_the_hub_is_refused_and_the_other_variants_load(
    site: Site, built_variants: Path, tmp_path: Path
) -> None:
    bomb = tmp_path / "tiny.pt"
    bombs.pt_bomb(bomb, 600)
    files_ = {n: built_variants / n for n in TINY_FILES if n != "tiny.pt"} | {"tiny.pt": bomb}
    site.hub.add_commit("evil/pt-bomb", files_)
    with memory_use() as used:
        summary, _ = site.client().predict("evil/pt-bomb", "", "", api_name="/pull_hub")
    record = summary["variants"]["pytorch_float"]
    assert record["status"] == "error" and "tiny.pt would inflate to 600.0 MB" in record["error"]
    assert "over the 512 MB limit" in record["error"]
    assert {k for k, v in summary["variants"].items() if v["status"] == "loaded"} == {
        "onnx_float", "onnx_int8", "onnx_uint8",
    }  # fmt: skip
    assert used.rise_mb < 3 * RISE_MB, used  # three ONNX variants load meanwhile


def test_a_test_set_bomb_is_refused_by_the_scorecard(site: Site, tmp_path: Path) -> None:
    _warm(site, tmp_path)
    with memory_use() as used:
        answer = site.client().predict("good", "bombset", 5, api_name="/scorecard")
    assert answer == {
        "error": "t10k-images-idx3-ubyte.gz declares (1000000, 28, 28): 747.7 MB once read, over the 256.0 MB "
        "limit (QP_MAX_DATASET_MB); nothing of it was decompressed"
    }
    assert used.rise_mb < RISE_MB and used.kept_mb < KEPT_MB, used
