"""The models folder's explorer lists and offers nothing that resolves outside its root (issue 12, finding 4).

``gr.FileExplorer``'s ``ls`` followed a directory symlink inside the models
folder and listed ``/etc``; ``ConfinedFileExplorer`` resolves before it lists.
Tested in the unit form and through the real ``/gradio_api/component_server``
endpoint of a running app, with an audit hook recording every folder listed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio.components.file_explorer import FileExplorerData

from gradio_app.explorer import REFUSED, ConfinedFileExplorer
from tests.app_server import Server, served_app
from tests.audit import record_listings, record_opens


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A models root with a real folder, a link to it, links to /etc and to a folder outside, and a link chain."""
    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "tiny.onnx").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.onnx").write_bytes(b"x")
    (models / "etc-link").symlink_to("/etc", target_is_directory=True)
    (models / "outside-link").symlink_to(tmp_path / "outside", target_is_directory=True)
    (models / "hop").mkdir()
    (models / "hop" / "up").symlink_to("../..", target_is_directory=True)  # the root's parent
    (models / "tiny" / "passwd.onnx").symlink_to("/etc/passwd")
    (models / "alias").symlink_to(models / "tiny", target_is_directory=True)  # inside: kept
    return Path(os.path.realpath(models))


def _names(entries: list[dict[str, str]] | None) -> set[str]:
    return {e["name"] for e in entries or []}


def _outside(listed: list[str], root: Path) -> list[str]:
    return [p for p in listed if not Path(p).is_relative_to(root)]


def test_plain_file_explorer_follows_a_link_out(root: Path) -> None:
    """The finding as Gradio has it: the link to /etc is listed, and so is /etc through it."""
    plain = gr.FileExplorer(root_dir=root)
    assert "etc-link" in _names(plain.ls([]))
    assert "passwd" in _names(plain.ls(["etc-link"]))


def test_links_out_are_neither_listed_nor_entered(root: Path) -> None:
    explorer = ConfinedFileExplorer(root_dir=root, file_count="single")
    with record_listings() as listed, record_opens() as opened:
        top = explorer.ls([])
        entered = [explorer.ls(["etc-link"]), explorer.ls(["outside-link"]), explorer.ls(["hop", "up"])]
        hop, tiny, alias = explorer.ls(["hop"]), explorer.ls(["tiny"]), explorer.ls(["alias"])
    assert _names(top) == {"tiny", "hop", "alias"}
    assert entered == [[], [], []]
    assert _names(hop) == set()
    assert _names(tiny) == {"tiny.onnx"} and _names(alias) == {"tiny.onnx"}
    assert _outside(listed, root) == [], "no folder outside the root was listed"
    assert opened == []


@pytest.mark.parametrize(
    "selected", [[["etc-link", "passwd"]], [["outside-link", "."]], [["hop", "up", "."]], [["tiny", "passwd.onnx"]]]
)
def test_a_selection_through_a_link_out_is_refused(root: Path, selected: list[list[str]]) -> None:
    explorer = ConfinedFileExplorer(root_dir=root, file_count="single")
    with pytest.raises(gr.Error, match=REFUSED):
        explorer.preprocess(FileExplorerData(root=selected))


def test_a_selection_inside_is_handed_over(root: Path) -> None:
    explorer = ConfinedFileExplorer(root_dir=root, file_count="single")
    assert explorer.preprocess(FileExplorerData(root=[["alias", "."]])) == str(root / "alias")
    assert explorer.preprocess(FileExplorerData(root=[["tiny", "tiny.onnx"]])) == str(root / "tiny" / "tiny.onnx")
    assert explorer.preprocess(FileExplorerData(root=[])) is None


# ------------------------------------------------------------- through the app


@pytest.fixture
def site(root: Path) -> Iterator[Server]:
    with served_app(root) as server:
        yield server


def _explorer_id(http: httpx.Client) -> int:
    config = http.get("config").json()
    (found,) = [c["id"] for c in config["components"] if c.get("type") == "fileexplorer"]
    return found


def test_component_server_ls_lists_nothing_outside_the_root(site: Server) -> None:
    root = site.models_root
    with httpx.Client(base_url=site.url, timeout=60) as http:
        component = _explorer_id(http)

        def ls(subdirectory: list[str]) -> httpx.Response:
            body = {"data": subdirectory, "component_id": component, "fn_name": "ls", "session_hash": "confine"}
            return http.post("gradio_api/component_server", json=body)

        with record_listings() as listed:
            top, etc, out, up = ls([]), ls(["etc-link"]), ls(["outside-link"]), ls(["hop", "up"])
            dotdot, absolute = ls([".."]), ls(["/etc"])
        tiny = ls(["tiny"])
    assert top.status_code == 200 and _names(top.json()) == {"tiny", "hop", "alias"}
    assert [etc.json(), out.json(), up.json()] == [[], [], []]
    assert [dotdot.json(), absolute.json()] == [[], []]  # Gradio's own refusal, kept
    assert _names(tiny.json()) == {"tiny.onnx"}
    assert _outside(listed, root) == [], "no folder outside the root was listed"
