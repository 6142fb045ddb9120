"""Handlers called directly, without a server: what each input gives, and that nothing outside the root opens."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

import quantcore
from gradio_app import handlers
from gradio_app.render import Kind
from quantcore.errors import InvalidRepoIdError
from quantcore.load import hub
from quantcore.load.source import SourceKind
from tests.audit import record_opens

FIVE = ["onnx_float", "onnx_int8", "onnx_uint8", "pytorch_float", "pytorch_int8"]


def _loaded(result: handlers.Result | None) -> list[str]:
    assert result is not None
    summary, status = result
    assert summary is not None, status.markdown
    return [key for key, v in summary["variants"].items() if v["status"] == "loaded"]


def _refused(result: handlers.Result | None) -> str:
    """The error text, after checking nothing was loaded or even looked at."""
    assert result is not None
    summary, status = result
    assert summary is None
    assert status.kind is Kind.ERROR, status.markdown
    assert quantcore.cache_info().misses == 0, "the loader was called for a refused path"
    return status.markdown


def _select(value: str) -> gr.SelectData:
    return gr.SelectData(None, {"index": [0], "value": value, "selected": True})


@pytest.fixture
def outside(tmp_path: Path, built_variants: Path) -> Path:
    """A folder of real variants outside the models root."""
    return Path(shutil.copytree(built_variants, tmp_path / "outside" / "tiny"))


# --------------------------------------------------------------- load_folder


def test_nothing_requested_is_info() -> None:
    for empty in (None, "", "   "):
        summary, status = handlers.load_folder(empty)
        assert summary is None and status.kind is Kind.INFO


def test_load_folder_loads_all_five_then_hits_the_cache(variant_folder: Path) -> None:
    summary, status = handlers.load_folder("tiny")
    assert status.kind is Kind.SUCCESS, status.markdown
    assert summary is not None and summary["total_loaded"] == 5 and summary["cache_hit"] is False
    assert "Loaded 5 of 5 variants from tiny in" in status.markdown
    assert summary["folder"] == "tiny"  # shown relative: no server paths on the page
    loads = quantcore.cache_info().loads

    again, status = handlers.load_folder("tiny/")
    assert again is not None and again["cache_hit"] is True
    assert "from cache" in status.markdown
    assert quantcore.cache_info().loads == loads


def test_loading_reports_progress(variant_folder: Path) -> None:
    steps: list[tuple[float, str | None]] = []
    handlers.load_folder("tiny", progress=lambda value, desc=None, **_: steps.append((value, desc)))
    assert [desc for _, desc in steps] == ["Checking the folder", "Loading model variants"]
    assert [value for value, _ in steps] == sorted(value for value, _ in steps)


def test_partial_folder_is_a_warning_naming_the_broken_variant(variant_folder: Path) -> None:
    (variant_folder / "tiny_int8.onnx").write_bytes(b"definitely not protobuf")
    (variant_folder / "tiny_uint8.onnx").unlink()
    summary, status = handlers.load_folder("tiny")
    assert summary is not None and summary["total_loaded"] == 3
    assert status.kind is Kind.WARNING
    assert "Loaded 3 of 4 variants" in status.markdown
    assert "onnx\\_int8 (error)" in status.markdown


def test_folder_without_models_is_a_warning(models_root: Path) -> None:
    (models_root / "empty").mkdir()
    (models_root / "empty" / "README.txt").write_text("nothing here")
    summary, status = handlers.load_folder("empty")
    assert summary is not None and summary["total_loaded"] == 0
    assert status.kind is Kind.WARNING and "No model variants found in empty" in status.markdown


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ("../", "not allowed"),
        ("tiny/../../", "not allowed"),
        ("/etc", "absolute paths are not allowed"),
        ("does-not-exist", "does not exist"),
        ("tiny/tiny.onnx", "not a folder"),
        ("a\x00b", "NUL"),
        ("x" * 5000, "longer than"),
    ],
)
def test_bad_folders_are_errors(variant_folder: Path, request_: str, expected: str) -> None:
    assert expected in _refused(handlers.load_folder(request_))


def _opened_under(opened: list[str], folder: Path) -> list[str]:
    real = os.path.realpath(folder)
    return [p for p in opened if os.path.realpath(p).startswith(real)]


def test_absolute_path_to_real_variants_outside_root_is_refused(variant_folder: Path, outside: Path) -> None:
    with record_opens() as opened:
        _refused(handlers.load_folder(str(outside)))
    assert _opened_under(opened, outside) == []


def test_symlink_escaping_root_is_refused(models_root: Path, outside: Path) -> None:
    (models_root / "escape").symlink_to(outside, target_is_directory=True)
    with record_opens() as opened:
        assert "outside the allowed folders" in _refused(handlers.load_folder("escape"))
    assert _opened_under(opened, outside) == []


def test_symlink_within_root_is_followed(variant_folder: Path, models_root: Path) -> None:
    (models_root / "alias").symlink_to(variant_folder, target_is_directory=True)
    assert _loaded(handlers.load_folder("alias")) == FIVE


def test_markup_in_a_requested_name_is_escaped(models_root: Path) -> None:
    summary, status = handlers.load_folder("[x](http://127.0.0.1/)<img src=x>")
    assert summary is None and status.kind is Kind.ERROR
    assert "](" not in status.markdown and "<img" not in status.markdown


def test_unexpected_failures_become_an_error_status(variant_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(handlers, "load_model_variants", broken)
    summary, status = handlers.load_folder("tiny")
    assert summary is None and status.kind is Kind.ERROR
    assert "internal detail" not in status.markdown


# ------------------------------------------------------------------ explorer


def test_explorer_none_at_page_load_is_info() -> None:
    summary, status = handlers.select_in_explorer(None)
    assert summary is None and status.kind is Kind.INFO
    assert quantcore.cache_info().misses == 0


def test_ticking_a_folders_dot_entry_loads_it(variant_folder: Path) -> None:
    assert _loaded(handlers.select_in_explorer(f"{variant_folder}/.")) == FIVE
    assert _loaded(handlers.select_in_explorer(str(variant_folder))) == FIVE


def test_ticking_a_model_file_loads_its_folder(variant_folder: Path) -> None:
    summary, _ = handlers.select_in_explorer(str(variant_folder / "tiny_int8.pt"))
    assert summary is not None and summary["folder"] == "tiny" and summary["total_loaded"] == 5


def test_explorer_path_outside_root_is_refused(variant_folder: Path, outside: Path) -> None:
    with record_opens() as opened:
        _refused(handlers.select_in_explorer(str(outside)))
        _refused(handlers.select_in_explorer(str(outside / "tiny.onnx")))
        _refused(handlers.select_in_explorer(f"{variant_folder}/../../outside/tiny"))
    assert _opened_under(opened, outside) == []


def test_explorer_symlink_escaping_root_is_refused(models_root: Path, outside: Path) -> None:
    (models_root / "escape").symlink_to(outside, target_is_directory=True)
    (models_root / "link.onnx").symlink_to(outside / "tiny.onnx")
    with record_opens() as opened:
        _refused(handlers.select_in_explorer(str(models_root / "escape" / ".")))
        _refused(handlers.select_in_explorer(str(models_root / "escape" / "tiny.onnx")))
        _refused(handlers.select_in_explorer(str(models_root / "link.onnx")))
    assert _opened_under(opened, outside) == []


def test_explorer_folder_maps_selections_to_segments(variant_folder: Path, models_root: Path) -> None:
    assert handlers.explorer_folder(str(variant_folder / "tiny.onnx")) == ["tiny"]
    assert handlers.explorer_folder(f"{variant_folder}/.") == ["tiny"]
    assert handlers.explorer_folder(str(models_root)) == []
    assert handlers.explorer_folder("tiny/tiny.pt") == ["tiny"]  # relative: as .select sends it
    with pytest.raises(quantcore.QuantcoreError):
        handlers.explorer_folder(os.path.dirname(models_root))


def test_clicking_a_folder_name_loads_it(variant_folder: Path) -> None:
    assert _loaded(handlers.click_in_explorer(_select("tiny"))) == FIVE


def test_clicks_that_are_ticks_leave_the_page_to_change(variant_folder: Path) -> None:
    # A tick fires .select as well as .change: only .change should load.
    assert handlers.click_in_explorer(_select("tiny/.")) is None
    assert handlers.click_in_explorer(_select("tiny/tiny.onnx")) is None
    assert quantcore.cache_info().misses == 0


def test_clicked_name_outside_root_is_refused(variant_folder: Path, outside: Path) -> None:
    _refused(handlers.click_in_explorer(_select("../outside/tiny")))


# ----------------------------------------------------------------------- Hub


def test_pull_hub_without_repo_is_info() -> None:
    summary, status = handlers.pull_hub("  ", "", "")
    assert summary is None and status.kind is Kind.INFO


def test_pull_hub_passes_arguments_and_renders_the_summary(
    variant_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str | None, str | None]] = []

    def fake_pull(repo_id: str, *, revision: str | None = None, subfolder: str | None = None) -> dict[str, Any]:
        calls.append((repo_id, revision, subfolder))
        summary = quantcore.get_model_summary(quantcore.load_model_variants(variant_folder))
        source = quantcore.Source(SourceKind.HUB, repo_id=repo_id, commit="0" * 40, subfolder=subfolder)
        return {**summary, "source": source.as_dict()}

    monkeypatch.setattr(hub, "pull_and_summarize", fake_pull)
    summary, status = handlers.pull_hub(" org/tiny ", "", " sub ")
    assert calls == [("org/tiny", None, "sub")]
    assert summary is not None and summary["total_loaded"] == 5
    assert summary["source"] == {"kind": "hub", "repo_id": "org/tiny", "commit": "0" * 40, "subfolder": "sub",
                                 "revision": None}  # fmt: skip
    assert status.kind is Kind.SUCCESS and "org/tiny/sub" in status.markdown


def test_pull_hub_errors_are_shown_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_pull(repo_id: str, **kwargs: Any) -> dict[str, Any]:
        raise InvalidRepoIdError(f"'{repo_id}' is not a valid repo id")

    monkeypatch.setattr(hub, "pull_and_summarize", fake_pull)
    summary, status = handlers.pull_hub("<b>bad</b>", None, None)
    assert summary is None and status.kind is Kind.ERROR
    assert "not a valid repo id" in status.markdown and "<b>" not in status.markdown


def test_pull_hub_unexpected_failure_is_an_error_status(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_pull(repo_id: str, **kwargs: Any) -> dict[str, Any]:
        raise KeyError("internal")

    monkeypatch.setattr(hub, "pull_and_summarize", fake_pull)
    summary, status = handlers.pull_hub("org/x", None, None)
    assert summary is None and status.kind is Kind.ERROR and "internal" not in status.markdown


def test_guarded_turns_any_exception_into_an_error_status() -> None:
    def broken() -> handlers.Result:
        raise OSError("disk on fire")

    summary, status = handlers.guarded(broken)
    assert summary is None and status.kind is Kind.ERROR and "disk on fire" not in status.markdown


def test_ping_echoes() -> None:
    assert handlers.ping("x") == "x"
