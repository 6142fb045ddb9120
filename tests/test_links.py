"""Links to a view: what a URL's query may ask for, how the page's own links are made, and how opening one
loads its source through the page's handlers (confined like a click)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl

import pytest

from gradio_app import links
from gradio_app.links import ViewLink, make_link, query_for, read_link, restore
from quantcore import Source
from quantcore.load.source import SourceKind


def _read(query: str) -> tuple[ViewLink | None, list[str]]:
    return read_link(dict(parse_qsl(query.lstrip("?"))))


def test_a_plain_visit_is_no_link_and_gradios_own_parameters_are_left_alone() -> None:
    assert read_link({}) == (None, [])
    assert read_link({"__theme": "dark", "view": "api"}) == (None, [])


def test_a_link_reads_its_source_and_view() -> None:
    link, problems = _read("?folder=resnet8&tab=layer_error&layer=stack3.conv2&sample=12&images=64")
    assert problems == []
    assert link == ViewLink(folder="resnet8", tab="layer_error", layer="stack3.conv2", sample=12, images=64)
    hub, problems = _read("?hub=org/name&revision=v1&subfolder=int8&tab=integer")
    assert problems == [] and hub == ViewLink(hub="org/name", revision="v1", subfolder="int8", tab="integer")


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("?folder=a&tab=../../etc", "is not one of layers"),
        ("?folder=a&sample=-1", "sample must be a whole number from 0"),
        ("?folder=a&sample=1e9", "sample must be a whole number"),
        ("?folder=a&sample=99999999999", "sample must be a whole number"),
        ("?folder=a&images=0", "image count must be a whole number from 1"),
        ("?folder=a&images=1000000", "image count must be a whole number"),
        ("?folder=a&hub=org/x", "a link names one source"),
        ("?folder=a&layer=" + "x" * 301, "longer than 300 characters"),
    ],
)
def test_what_a_link_cannot_ask_for_is_ignored_and_said(query: str, said: str) -> None:
    link, problems = _read(query)
    assert link is not None and link.folder == "a" and link.hub is None
    assert len(problems) == 1 and said in problems[0]
    assert link.tab is None and link.sample is None and link.images is None and link.layer is None


def test_the_pages_link_reads_back_as_the_same_view() -> None:
    query = query_for(Source.local("resnet8"), "weights", "stack2.conv1", None, None)
    assert query == "?folder=resnet8&tab=weights&layer=stack2.conv1"
    assert _read(query) == (ViewLink(folder="resnet8", tab="weights", layer="stack2.conv1"), [])
    odd = query_for(Source.local("my models/a&b=c#d"), "predictions", "x y", 3, None)
    assert _read(odd)[0] == ViewLink(folder="my models/a&b=c#d", tab="predictions", layer="x y", sample=3)
    assert _read(query_for(Source.local(""), None, None, None, None))[0] == ViewLink(folder=".")


def test_a_hub_link_is_pinned_to_the_commit_that_was_pulled() -> None:
    pulled = Source(SourceKind.HUB, repo_id="org/name", commit="a" * 40, subfolder="int8", revision="main")
    link, _ = _read(query_for(pulled, "integer", None, None, 64))
    assert link == ViewLink(hub="org/name", revision="a" * 40, subfolder="int8", tab="integer", images=64)


def test_uploads_and_nothing_loaded_are_not_linkable_and_say_so() -> None:
    upload = Source(SourceKind.UPLOAD, upload="0" * 32, files=("m.onnx",))
    with pytest.raises(ValueError, match="belong to this browser session"):
        query_for(upload, "layers", None, None, None)
    assert make_link(upload.as_dict(), "layers", None, None, 0, 256, 256) == (links.NOT_LINKABLE, "")
    assert make_link(None, "layers", None, None, 0, 256, 256) == (links.NOTHING_TO_LINK, "")


def test_make_link_names_the_picked_layer_the_tab_and_its_settings(variant_folder: Path) -> None:
    source = Source.local(variant_folder.name).as_dict()
    query, _ = make_link(source, "layers", 0, 1, 5, 32, 48)
    link, _ = _read(query)
    assert link is not None and link.tab == "layers" and link.layer == "conv1" and link.sample is None
    query, _ = make_link(source, "predictions", 0, 1, 5, 32, 48)
    assert _read(query)[0].sample == 5
    query, _ = make_link(source, "integer", None, None, 5, 32, 48)
    assert _read(query)[0] == ViewLink(folder=variant_folder.name, tab="integer", images=48)
    query, note = make_link({**source, "input": {"*": {"layout": "NHWC"}}}, "nope", None, None, 0, 32, 48)
    assert _read(query)[0] == ViewLink(folder=variant_folder.name, tab="layers")
    assert "input settings" in note


def _restored(**params: str) -> tuple:
    return restore(SimpleNamespace(query_params=params), progress=lambda *a, **k: None)


def test_opening_a_link_loads_its_folder_and_keeps_the_view_it_asks_for(variant_folder: Path) -> None:
    summary, status, source, link, tabs, shown = _restored(folder=variant_folder.name, tab="weights", layer="conv1")
    assert summary["total_loaded"] == 5 and source == {"kind": "local", "folder": variant_folder.name}
    assert "Loaded 5 of 5 variants" in status.value
    assert link == ViewLink(folder=variant_folder.name, tab="weights", layer="conv1")
    assert tabs.selected == "weights" and shown == "weights"


def test_opening_a_hostile_link_loads_nothing_and_says_why(models_root: Path) -> None:
    outside = models_root.parent / "outside"
    outside.mkdir()
    for folder in ("../outside", str(outside), "/etc"):
        summary, status, source, link, _, _ = _restored(folder=folder, tab="layers")
        assert summary is None and source is None and link is None
        assert "Not allowed" in status.value or "Cannot open" in status.value
    summary, status, *_ = _restored(folder="missing", layer="conv1")
    assert summary is None and "Cannot open" in status.value


def test_a_link_to_a_layer_the_folder_lacks_opens_the_folder_and_says_so(variant_folder: Path) -> None:
    summary, status, _, link, _, _ = _restored(folder=variant_folder.name, layer="no.such.layer")
    assert summary["total_loaded"] == 5 and link.layer is None
    assert "no layer named" in status.value and "qp-status-warning" in status.elem_classes


def test_a_link_without_a_source_only_selects_its_tab() -> None:
    _, status, _, link, tabs, shown = _restored(tab="quantize")
    assert tabs.selected == "quantize" and shown == "quantize" and link is None
    assert "names no folder" in status.value
