"""Serve the app in-process on a free loopback port, for API and browser tests.

Use the ``served_app`` context manager directly, or the ``app_server`` fixture
(module scope) after ``from app_server import app_server``:

    with served_app(models_root) as server:
        client = Client(server.url)

The models root is put into quantcore's settings for as long as the server runs
(the explorer and every handler read it there) and restored afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The app turns Gradio's analytics off itself; these cover any other Blocks a test builds.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr
import pytest

from gradio_app import build_demo, launch_options
from quantcore import settings

HOST = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODELS = PROJECT_ROOT / "models"
BUNDLED_FOLDER = BUNDLED_MODELS / "resnet8"
BUNDLED_FILES = ("resnet8.onnx", "resnet8_int8.onnx", "resnet8_uint8.onnx", "resnet8.pt", "resnet8_int8.pt")


@dataclass(frozen=True)
class Server:
    demo: gr.Blocks
    url: str
    models_root: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def require_bundled_models() -> Path:
    """The bundled ``models/resnet8`` folder; fails (never skips) when it is incomplete."""
    missing = [name for name in BUNDLED_FILES if not (BUNDLED_FOLDER / name).is_file()]
    if missing:
        pytest.fail(f"bundled models incomplete: {BUNDLED_FOLDER} lacks {', '.join(missing)}", pytrace=False)
    return BUNDLED_FOLDER


def copy_bundled(models_root: Path) -> Path:
    """A copy of the bundled resnet8 folder inside ``models_root``."""
    return Path(shutil.copytree(require_bundled_models(), models_root / "resnet8"))


@contextmanager
def served_app(models_root: Path) -> Iterator[Server]:
    """The app, built for ``models_root`` and listening on a free loopback port until the block ends."""
    before = settings.current()
    settings.configure(models_root=models_root)
    demo = build_demo()
    try:
        demo.launch(server_name=HOST, server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_options())
        yield Server(demo, demo.local_url, Path(os.path.realpath(models_root)))
    finally:
        demo.close()
        settings.configure(**before.__dict__)


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app serving a fresh models root holding a copy of the bundled resnet8 folder."""
    root = tmp_path_factory.mktemp("served") / "models"
    root.mkdir()
    copy_bundled(root)
    with served_app(root) as server:
        yield server


@contextmanager
def served_with_uploads(base: Path) -> Iterator[Server]:
    """The app on ``base/models`` (a copy of the bundled folder is put there, beside anything already in it),
    keeping uploads in ``base/uploads``; every upload is cleared and the settings restored afterwards."""
    from quantcore.load import uploads

    (base / "models").mkdir(exist_ok=True)
    copy_bundled(base / "models")
    before = settings.current()
    settings.configure(uploads_root=base / "uploads")
    try:
        with served_app(base / "models") as served:
            yield served
    finally:
        uploads.clear()
        settings.configure(**before.__dict__)
