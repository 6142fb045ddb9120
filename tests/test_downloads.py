"""Files offered for download (reports, integer exports, recipes) do not pile up on the server's disk."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from gradio_app.blocks import build_demo
from gradio_app.common import DOWNLOADS_DIR_NAME, DOWNLOADS_KEPT_S, download_folder
from quantcore import settings


def test_old_download_folders_go_when_a_new_one_is_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old, recent = download_folder("report"), download_folder("integer")
    (old / "report.html").write_text("old")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours")
    link = tmp_path / DOWNLOADS_DIR_NAME / "link"
    link.symlink_to(outside)
    stale = time.time() - DOWNLOADS_KEPT_S - 60
    for path in (old, link):
        os.utime(path, (stale, stale), follow_symlinks=False)

    new = download_folder("recipe")
    assert not old.exists()
    assert recent.is_dir() and new.is_dir() and new.parent == tmp_path / DOWNLOADS_DIR_NAME
    assert (outside / "keep.txt").read_text() == "not ours"  # a link is never followed out
    assert new.name.startswith("recipe-")


def test_gradios_own_cache_is_swept_on_the_same_clock(models_root: Path) -> None:
    assert settings.current().models_root == models_root
    assert build_demo().delete_cache == (DOWNLOADS_KEPT_S, DOWNLOADS_KEPT_S)
