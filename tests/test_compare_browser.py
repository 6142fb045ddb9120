"""The Predictions and Accuracy & speed tabs through the served app: their named endpoints, and the page in Chromium."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image
from playwright.sync_api import Page, expect

from tests.app_server import Server, served_app
from tests.browser import tree_entry
from tests.test_predictions import FLIP_CLASS, FLIP_SAMPLE, build_flip_folder, write_samples


@pytest.fixture(scope="module")
def server(built_variants: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app on a models root holding ``flip`` (a flip built on purpose, a slow S8S8 variant) and ``tiny``."""
    root = tmp_path_factory.mktemp("compare") / "models"
    root.mkdir()
    build_flip_folder(root / "flip", heavy_int8=True)
    write_samples(Path(shutil.copytree(built_variants, root / "tiny")), count=48)
    with served_app(root) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    return Client(server.url, verbose=False)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A dark bar on a light background, as a phone photo of a garment would be."""
    path = tmp_path / "photo.png"
    image = Image.new("RGB", (120, 90), (240, 240, 240))
    image.paste((20, 20, 20), (0, 40, 120, 46))
    image.save(path)
    return path


# ------------------------------------------------------------------------- API


def test_compare_endpoints_are_named(client: Client) -> None:
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]

    assert {"/predict", "/flips", "/scorecard"} <= set(named)
    parameters = [p["parameter_name"] for p in named["/predict"]["parameters"]]
    assert parameters == ["source", "sample", "image", "k", "invert"]
    assert [p["parameter_name"] for p in named["/scorecard"]["parameters"]] == ["source", "test_set", "runs"]
    assert not any(name.startswith("/page_") for name in named)


def test_flips_endpoint_lists_the_flip_built_on_purpose(client: Client) -> None:
    summary, _ = client.predict("flip", api_name="/load_folder")
    result = client.predict(summary, 50, api_name="/flips")

    assert result["counts"] == {"onnx_int8": 1, "onnx_uint8": 0}
    assert [(f["sample"], f["variant"], f["variant says"]) for f in result["flips"]] == [
        (FLIP_SAMPLE, "onnx_int8", f"item {FLIP_CLASS}")
    ]


def test_predict_endpoint_takes_a_sample_or_an_uploaded_image(client: Client, photo: Path) -> None:
    sample = client.predict("flip", FLIP_SAMPLE, None, 2, "auto", api_name="/predict")
    upload = client.predict("flip", None, handle_file(str(photo)), 3, "auto", api_name="/predict")

    assert sample["variants"]["onnx_int8"]["agrees_with_float"] is False
    assert [c["class"] for c in sample["variants"]["onnx_float"]["top_k"]] == [FLIP_SAMPLE, 0]
    assert upload["source"] == "uploaded image" and len(upload["variants"]["onnx_uint8"]["top_k"]) == 3
    assert any("light background inverted" in note for note in upload["notes"])


def test_scorecard_endpoint_measures_and_advises(client: Client) -> None:
    result = client.predict("flip", "", 5, api_name="/scorecard")

    rows = {r["variant"]: r for r in result["table"]}
    assert rows["onnx_float"]["accuracy (%)"] == 100.0 and rows["onnx_int8"]["accuracy (%)"] == 95.0
    assert rows["onnx_int8"]["images/s @64"] < rows["onnx_float"]["images/s @64"]
    assert result["advice"][0].startswith("onnx_int8 is slower than onnx_float")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"folder": "../.."}, "is not allowed in a path"),
        ({"folder": "nope"}, "does not exist"),
        (None, "Load a folder"),
    ],
)
def test_a_bad_or_missing_source_gets_an_error_answer(client: Client, source: object, expected: str) -> None:
    for api_name, args in (("/predict", (0, None, 3, "auto")), ("/flips", (10,)), ("/scorecard", ("", 5))):
        result = client.predict(source, *args, api_name=api_name)
        assert expected in result["error"], (api_name, result)


# --------------------------------------------------------------------- browser


def _load(page: Page, server: Server, name: str, loaded: str) -> None:
    page.goto(server.url)
    folder = tree_entry(page.locator("#qp-explorer .file-wrap"), name)
    folder.locator(":scope > span [aria-label='expand directory']").click()
    tree_entry(folder, ".").locator("input[type=checkbox]").check()
    expect(page.locator("#qp-status")).to_contain_text(loaded)


@pytest.mark.browser
def test_pick_a_sample_find_the_flip_click_it_then_upload(page: Page, server: Server, photo: Path) -> None:
    _load(page, server, "flip", "Loaded 3 of 3 variants")
    page.get_by_role("tab", name="Predictions").click()

    # The samples are thumbnails; picking one shows every variant's top-k side by side.
    thumbs = page.locator("#qp-pred-gallery button.thumbnail-item")
    expect(thumbs).to_have_count(20)
    thumbs.nth(3).click()
    table = page.locator("#qp-pred-table")
    expect(page.locator("#qp-pred-note")).to_contain_text("sample #3 — label: item 3 — every variant agrees")
    expect(table).to_contain_text("onnx_uint8")
    expect(table).to_contain_text("✔ yes (vs onnx_float)")
    expect(page.locator("#qp-pred-seen img")).to_have_count(1)

    # The flip search lists the sample built to flip; clicking its row inspects it.
    page.locator("#qp-flips-run").click()
    expect(page.locator("#qp-flips-note")).to_contain_text("1 of 20 samples flipped by a quantized variant")
    flips = page.locator("#qp-flips-table")
    expect(flips).to_contain_text("now wrong")
    flips.get_by_role("gridcell", name="now wrong").click()
    flipped = f"sample #{FLIP_SAMPLE} — label: item 7 — flipped by onnx_int8"
    expect(page.locator("#qp-pred-note")).to_contain_text(flipped)
    expect(page.locator("#qp-pred-sample input")).to_have_value(str(FLIP_SAMPLE))
    expect(table).to_contain_text("✘ FLIPS (vs onnx_float)")
    expect(table).to_contain_text(f"item {FLIP_CLASS} 100.0 %")

    # An uploaded photo is converted to the model's input and predicted by every variant.
    page.locator("#qp-pred-upload input[type=file]").set_input_files(str(photo))
    expect(page.locator("#qp-pred-note")).to_contain_text("uploaded image")
    expect(page.locator("#qp-pred-note")).to_contain_text("light background inverted")


@pytest.mark.browser
def test_measure_accuracy_and_speed_see_the_chart_and_the_advice(page: Page, server: Server) -> None:
    _load(page, server, "flip", "Loaded 3 of 3 variants")
    page.get_by_role("tab", name="Accuracy & speed").click()
    page.locator("#qp-score-run").click()

    note = page.locator("#qp-score-note")
    expect(note).to_contain_text("a quantized variant is slower than float", timeout=60_000)  # a real timing run
    expect(note).to_contain_text(re.compile(r"onnx_int8 is slower than onnx_float at batch 1 \([\d,]+ vs [\d,]+"))
    expect(note).to_contain_text("U8S8, activation_type=QuantType.QUInt8; onnx_uint8 runs at")
    chart = page.locator("#qp-score-plot .js-plotly-plot")
    expect(chart.locator(".barlayer .trace")).to_have_count(4, timeout=30_000)
    expect(chart.locator(".legendtext")).to_have_text(["accuracy", "agreement with float", "batch 1", "batch 64"])
    expect(page.locator("#qp-score-table")).to_contain_text("flip_int8.onnx")
    expect(page.locator("#qp-score-classes")).to_contain_text("item 7")


@pytest.mark.browser
def test_the_five_tiny_variants_render_side_by_side(page: Page, server: Server) -> None:
    _load(page, server, "tiny", "Loaded 5 of 5 variants")
    page.get_by_role("tab", name="Predictions").click()
    expect(page.locator("#qp-pred-gallery button.thumbnail-item")).to_have_count(40)
    page.locator("#qp-pred-run").click()
    table = page.locator("#qp-pred-table")
    for key in ("onnx_float", "onnx_int8", "onnx_uint8", "pytorch_float", "pytorch_int8"):
        expect(table).to_contain_text(key)
    expect(table).to_contain_text("(vs pytorch_float)")
