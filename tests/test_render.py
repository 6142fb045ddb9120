"""Status text and summary shaping: kinds, wording, and escaping of everything a user or a folder supplies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gradio_app import render
from gradio_app.render import Kind
from quantcore.errors import (
    HubUnreachableError,
    InvalidModelError,
    ModelNotFoundError,
    PathNotAllowedError,
    RunTimeoutError,
)


def _summary(**variants: dict[str, Any]) -> dict[str, Any]:
    """A summary shaped like quantcore's, with the given variant entries (others missing)."""
    keys = ("onnx_float", "onnx_int8", "onnx_uint8", "pytorch_float", "pytorch_int8")
    entries = {key: variants.get(key, {"status": "missing", "file": None, "format": "onnx"}) for key in keys}
    counts = {s: sum(v["status"] == s for v in entries.values()) for s in ("loaded", "missing", "error", "refused")}
    return {
        "total_loaded": counts["loaded"], "onnx_available": True, "pytorch_available": False,
        "folder": "/srv/models/resnet8", "stem": "resnet8", "trusted": True, "cache_hit": False,
        "load_seconds": 0.25, "counts": counts, "notes": [], "variants": entries,
    }  # fmt: skip


LOADED = {"status": "loaded", "file": "m.onnx", "format": "onnx"}


# ----------------------------------------------------------------- escaping


@pytest.mark.parametrize(
    ("text", "absent"),
    [
        ("<img src=x onerror=alert(1)>", "<img"),
        ("<script>alert(1)</script>", "<script"),
        ("[click](javascript:alert(1))", "](javascript"),
        ("![x](http://127.0.0.1/t.png)", "]("),
        ("**bold** _it_ `code`", "**bold**"),
        ("<b>x</b>", "<b>"),
        ("$$x^2$$", "$$"),
    ],
)
def test_escape_neutralises_markup(text: str, absent: str) -> None:
    escaped = render.escape(text)
    assert absent not in escaped
    # Every character is still there for the reader, just inert.
    assert escaped.replace("\\", "").replace("&lt;", "<").replace("&gt;", ">") == text


def test_escape_stops_block_syntax() -> None:
    assert render.escape("# heading").startswith("\\#")
    assert render.escape("- item").startswith("\\-")


def test_escape_keeps_one_line_and_shortens() -> None:
    escaped = render.escape("a\nb\r\n- c\x00d")
    assert "\n" not in escaped and "\x00" not in escaped
    long = render.escape("x" * 5000)
    assert len(long) == render.MAX_SHOWN_CHARS and long.endswith("…")


def test_status_css_classes_name_the_kind() -> None:
    assert render.info().css_classes == ["qp-status", "qp-status-info"]
    for kind in Kind:
        assert f".block.qp-status-{kind}" in render.STATUS_CSS


# ------------------------------------------------------------------- results


def test_all_found_variants_loaded_is_success_with_time_and_names() -> None:
    status = render.loaded_status(_summary(onnx_float=LOADED, onnx_int8=LOADED), source="resnet8")
    assert status.kind is Kind.SUCCESS
    assert status.markdown.startswith(render.ICONS[Kind.SUCCESS])
    assert "Loaded 2 of 2 variants from resnet8 in 0.25 s" in status.markdown
    assert "onnx\\_float, onnx\\_int8" in status.markdown


def test_cache_hit_says_from_cache() -> None:
    summary = _summary(onnx_float=LOADED) | {"cache_hit": True}
    status = render.loaded_status(summary, source="resnet8")
    assert status.kind is Kind.SUCCESS and "from cache" in status.markdown and "0.25 s" not in status.markdown


def test_no_variants_is_a_warning() -> None:
    status = render.loaded_status(_summary(), source="empty")
    assert status.kind is Kind.WARNING
    assert "No model variants found in empty" in status.markdown
    assert "&lt;stem&gt;" in status.markdown  # the hint's <stem> is shown, not swallowed as a tag


def test_failed_and_refused_variants_are_named_with_reasons() -> None:
    summary = _summary(
        onnx_float=LOADED,
        onnx_int8={"status": "error", "file": "m_int8.onnx", "format": "onnx", "error": "not a valid ONNX file"},
        pytorch_int8={"status": "refused", "file": "m_int8.pt", "format": "pytorch", "error": "TorchScript runs code"},
    )
    status = render.loaded_status(summary, source="mixed")
    assert status.kind is Kind.WARNING
    assert "Loaded 1 of 3 variants" in status.markdown
    assert "onnx\\_int8 (error): not a valid ONNX file" in status.markdown
    assert "pytorch\\_int8 (refused): TorchScript runs code" in status.markdown


def test_folder_file_and_error_text_from_disk_are_escaped() -> None:
    evil = "<img src=x onerror=alert(1)>"
    summary = _summary(onnx_int8={"status": "error", "file": evil, "format": "onnx", "error": f"{evil}: bad"})
    summary["notes"] = [f"[note]({evil})"]
    status = render.loaded_status(summary, source=f"**{evil}**")
    assert "<img" not in status.markdown and "](" not in status.markdown and "***" not in status.markdown


# -------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("exc", "title"),
    [
        (PathNotAllowedError("'..' is not allowed in a path"), "Not allowed: ../x"),
        (ModelNotFoundError("folder does not exist"), "Cannot open ../x"),
        (InvalidModelError("corrupt"), "Cannot load ../x"),
        (HubUnreachableError("cannot reach the Hub"), "Cannot pull ../x"),
        (RunTimeoutError("stopped after 60 s: the run was cancelled"), "Stopped: ../x"),
    ],
)
def test_quantcore_errors_become_error_status_with_their_message(exc: Exception, title: str) -> None:
    status = render.error_status(exc, what="../x")
    assert status.kind is Kind.ERROR
    assert status.markdown.startswith(render.ICONS[Kind.ERROR])
    assert title.replace(".", "\\.") in status.markdown
    assert render.escape(str(exc)) in status.markdown


def test_unexpected_errors_show_no_internals() -> None:
    status = render.error_status(RuntimeError("secret /etc/shadow detail"), what="resnet8")
    assert status.kind is Kind.ERROR
    assert "shadow" not in status.markdown and "RuntimeError" not in status.markdown
    assert "server log" in status.markdown


def test_error_subject_is_escaped() -> None:
    status = render.error_status(ModelNotFoundError("folder does not exist"), what="<b>x</b>")
    assert "<b>" not in status.markdown and "&lt;b&gt;x&lt;/b&gt;" in status.markdown


# ------------------------------------------------------------------- summary


def test_display_summary_shows_folder_relative_to_root(tmp_path: Path) -> None:
    (tmp_path / "resnet8").mkdir()
    summary = _summary() | {"folder": str(tmp_path / "resnet8")}
    shown = render.display_summary(summary, root=tmp_path)
    assert shown["folder"] == "resnet8"
    assert summary["folder"] == str(tmp_path / "resnet8")  # the caller's dict is untouched
    assert render.display_summary(summary | {"folder": str(tmp_path)}, root=tmp_path)["folder"] == "."


def test_display_summary_leaves_folders_elsewhere_alone(tmp_path: Path) -> None:
    summary = _summary() | {"folder": "/var/cache/hub/snapshot"}
    assert render.display_summary(summary, root=tmp_path)["folder"] == "/var/cache/hub/snapshot"


def test_display_summary_names_hub_snapshots_by_repo_not_server_path(tmp_path: Path) -> None:
    summary = {
        "folder": "/root/.cache/huggingface/hub/models--org--x/snapshots/0123456789abcdef/sub",
        "hub": {"repo_id": "org/x", "commit": "0123456789abcdef0123", "subfolder": "sub"},
    }
    shown = render.display_summary(summary, root=tmp_path)
    assert shown["folder"] == "org/x@0123456789/sub"
    assert summary["folder"].startswith("/root")  # the caller's dict is left as it was
