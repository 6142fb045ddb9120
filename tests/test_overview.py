"""The overview under the status: one row per variant, the header, and tabs that say what to do first."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from gradio_app import overview
from quantcore import get_model_summary, load_model_variants
from quantcore.report import tables
from tests.app_server import BUNDLED_FOLDER, BUNDLED_MODELS, Server, require_bundled_models, served_app
from tests.browser import tree_entry


def _card() -> dict:
    return json.loads((BUNDLED_FOLDER / "model_card.json").read_text())


def test_variant_rows_show_the_summary_and_the_cards_figures() -> None:
    require_bundled_models()
    variants = load_model_variants(BUNDLED_FOLDER)
    summary = get_model_summary(variants)
    card = _card()
    rows = {row["variant"]: row for row in tables.variant_rows(summary, variants.card)}
    assert list(rows) == ["onnx_float", "onnx_int8", "onnx_uint8", "pytorch_float", "pytorch_int8"]
    for key, row in rows.items():
        shown, measured = summary["variants"][key], card["variants"][key]["test"]
        assert row["status"] == "loaded"
        assert row["size (KB)"] == round((BUNDLED_FOLDER / shown["file"]).stat().st_size / 1024, 1)
        assert row["parameters"] == shown["parameters"] and row["precision"] == shown["precision"]
        assert row["accuracy (%)"] == round(100 * measured["accuracy"], 2)
        assert row["agreement with float (%)"] == round(100 * measured["agreement_with_float"], 2)
        assert row["card measured on"] == f"{measured['images']:,} test images"
    assert rows["onnx_int8"]["scheme"] == "QDQ, int8 activations, int8 weights, per-channel"
    assert rows["onnx_uint8"]["scheme"] == "QDQ, uint8 activations, int8 weights, per-channel"
    assert rows["onnx_float"]["scheme"] == tables.NOT_THERE
    assert rows["pytorch_int8"]["format"] == "pytorch (torchscript)"
    modules = summary["variants"]["pytorch_int8"]["quantized_modules"]
    assert rows["pytorch_int8"]["scheme"] == f"{modules} quantized modules"


def test_rows_say_why_a_variant_is_not_loaded_and_ignore_a_card_about_other_files(tmp_path: Path) -> None:
    require_bundled_models()
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(BUNDLED_FOLDER / "resnet8_uint8.onnx", folder / "resnet8_uint8.onnx")
    (folder / "resnet8_int8.onnx").write_bytes(b"not an onnx file")
    card = _card()
    card["variants"]["onnx_uint8"]["sha256"] = "0" * 64  # the card was written for another build
    (folder / "model_card.json").write_text(json.dumps(card))
    variants = load_model_variants(folder)
    summary = get_model_summary(variants)
    rows = {row["variant"]: row for row in tables.variant_rows(summary, variants.card)}
    assert rows["onnx_int8"]["status"] == f"error: {summary['variants']['onnx_int8']['error']}"
    assert rows["onnx_int8"]["scheme"] == tables.NOT_THERE and rows["onnx_int8"]["size (KB)"] is None
    assert rows["onnx_float"]["status"] == "missing"
    assert rows["onnx_uint8"]["accuracy (%)"] is None
    assert rows["onnx_uint8"]["card measured on"] == "the card describes another file"
    assert tables.variant_rows(summary, None)[0]["accuracy (%)"] is None
    assert tables.variant_rows(None) == []


def test_the_header_names_what_is_loaded() -> None:
    assert "Select a model folder to begin" in overview.header_text(None)
    counts = {"loaded": 2, "missing": 2, "error": 1, "refused": 0}
    summary = {"folder": "zoo/resnet8", "stem": "net", "total_loaded": 2, "counts": counts, "variants": {"x": {}}}
    text = overview.header_text(summary)
    assert "Showing **zoo/resnet8** (model **net**): 2 of 3 variants loaded." in text
    assert "(model" not in overview.header_text({**summary, "stem": "resnet8"})
    assert "\\*" in overview.header_text({**summary, "folder": "a*b"})  # a folder name is text, not markup


# --------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def bundled_server() -> Iterator[Server]:
    require_bundled_models()
    with served_app(BUNDLED_MODELS) as server:
        yield server


@pytest.mark.browser
def test_tabs_say_what_to_do_then_the_variant_table_shows_the_cards_figures(page: Page, bundled_server: Server) -> None:
    page.goto(bundled_server.url)
    inspect = page.locator("#qp-inspect")
    expect(page.locator("#qp-layers-note")).to_contain_text("Load a folder")
    for tab, hint in (("Weights", "#qp-weights-note"), ("Per-layer error", "#qp-error-note"),
                      ("Predictions", "#qp-pred-note"), ("Accuracy & speed", "#qp-score-note"),
                      ("Layers", "#qp-layers-note")):  # fmt: skip
        page.get_by_role("tab", name=tab).click()
        expect(page.locator(hint)).to_contain_text("Load a folder")
        expect(inspect.locator("table:visible")).to_have_count(0)  # no header-only table
        expect(inspect.locator(".js-plotly-plot:visible")).to_have_count(0)  # no empty plot
    expect(page.locator("#qp-variants")).to_be_hidden()

    folder = tree_entry(page.locator("#qp-explorer .file-wrap"), "resnet8")
    folder.locator(":scope > span [aria-label='expand directory']").click()
    tree_entry(folder, ".").locator("input[type=checkbox]").check()
    expect(page.locator("#qp-status")).to_contain_text("Loaded 5 of 5 variants")
    expect(page.locator("#qp-header")).to_contain_text("Showing resnet8")

    table = page.locator("#qp-variants")
    rows = table.locator("[role=row]:not([aria-rowindex='1'])")  # the header is row 1
    expect(rows).to_have_count(5)
    card = _card()
    for index, key in enumerate(card["variants"]):
        row = rows.nth(index)
        expect(row).to_contain_text(key)
        measured = card["variants"][key]["test"]
        expect(row).to_contain_text(re.compile(rf"\b{100 * measured['accuracy']:.2f}\b"))
        agreement = f"{100 * measured['agreement_with_float']:.2f}".rstrip("0").rstrip(".")
        expect(row).to_contain_text(re.compile(rf"\b{re.escape(agreement)}\b"))
    expect(table).to_contain_text("QDQ, uint8 activations, int8 weights, per-channel")
