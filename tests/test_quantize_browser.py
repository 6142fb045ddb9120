"""The Quantize tab in Chromium on the bundled ResNet8: sweep the page's recipe, keep its worst layers in
float in one click, then find that recipe variant in the Layers and the Accuracy & speed tabs — every number
read off the page checked against onnxruntime run directly on the same images."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from playwright.sync_api import Locator, Page, expect

import quantcore
from quantcore.data import datasets
from quantcore.quantize import Recipe, make_recipe, store
from quantcore.quantize.sweep_job import output_sqnr_db
from tests.app_server import Server, copy_bundled, served_app
from tests.browser import tree_entry

SWEEP_IMAGES = 64
CALIBRATION_IMAGES = 64
BASE = "page-base"
KEEP = 2
MIXED = f"{BASE}-worst{KEEP}-float"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("quantize-browser") / "models"
    root.mkdir()
    copy_bundled(root)
    store.clear()
    with served_app(root) as running:
        yield running


# Gradio's Dataframe draws only the rows in view (a virtual list under its header table): scroll it through.
_READ_ROWS = """async (el) => {
    const heads = [...el.querySelectorAll('thead th')].map((th) => th.getAttribute('title') ?? th.innerText.trim());
    const total = Number(el.querySelector('[role=grid]').getAttribute('aria-rowcount')) - 1;
    const viewport = el.querySelector('.virtual-table-viewport');
    const rows = new Map();
    for (let step = 0; step < 400 && rows.size < total; step++) {
        for (const row of el.querySelectorAll('.virtual-row')) {
            const cells = [...row.querySelectorAll('[role=gridcell]')];
            rows.set(Number(row.dataset.index),
                     Object.fromEntries(cells.map((c) => [heads[Number(c.dataset.col)], c.innerText.trim()])));
        }
        viewport.scrollTop += Math.max(20, viewport.clientHeight / 2);
        await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
    }
    viewport.scrollTop = 0;
    return {total, rows: [...rows.keys()].sort((a, b) => a - b).map((k) => rows.get(k))};
}"""


def records(table: Locator) -> list[dict[str, str]]:
    """A Gradio Dataframe's rows as {column: cell text}, read off the page (every row, or the test fails)."""
    read = table.evaluate(_READ_ROWS)
    assert len(read["rows"]) == read["total"], f"read {len(read['rows'])} of the table's {read['total']} rows"
    return read["rows"]


def _logits(data: bytes, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": inputs})[0]


def _fill(page: Page, elem_id: str, value: object) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


@pytest.mark.browser
def test_sweep_keep_the_worst_in_float_then_see_it_in_layers_and_accuracy(page: Page, server: Server) -> None:
    folder = server.models_root / "resnet8"
    page.goto(server.url)
    entry = tree_entry(page.locator("#qp-explorer .file-wrap"), "resnet8")
    entry.locator(":scope > span [aria-label='expand directory']").click()
    tree_entry(entry, ".").locator("input[type=checkbox]").check()
    expect(page.locator("#qp-status")).to_contain_text("Loaded 5 of 5 variants", timeout=60_000)

    # The sweep of the page's recipe: a chart of two bar series and a table of the ten layers.
    page.get_by_role("tab", name="Quantize").click()
    page.locator("#qp-q-name textarea, #qp-q-name input").first.fill(BASE)
    _fill(page, "qp-q-sweep-images", SWEEP_IMAGES)
    _fill(page, "qp-q-images", CALIBRATION_IMAGES)
    page.locator("#qp-q-sweep").click()
    sweep_note = page.locator("#qp-q-sweep-note")
    expect(sweep_note).to_contain_text(f"{BASE}: 10 layers on {SWEEP_IMAGES} images", timeout=180_000)
    chart = page.locator("#qp-q-sweep-plot .js-plotly-plot")
    expect(chart.locator(".barlayer .trace")).to_have_count(2)
    expect(chart.locator(".legendtext")).to_have_text(["only this layer quantized", "this layer kept in float"])
    table = page.locator("#qp-q-sweep-table")
    swept = records(table)
    assert len(swept) == 10
    assert [row["rank"] for row in swept] == [str(i) for i in range(1, 11)]
    worst = [row["layer"] for row in swept[:KEEP]]
    expect(sweep_note).to_contain_text(f"Costliest layer: {worst[0]}")

    # The costliest layer's number, against its recipe made here and run by onnxruntime directly.
    variants = quantcore.load_model_variants(folder)
    samples = datasets.load_samples(folder / "samples.npz")
    inputs = datasets.preprocess(samples.images)
    floats = _logits((folder / "resnet8.onnx").read_bytes(), inputs[:SWEEP_IMAGES])
    base = Recipe(name=BASE, calibration_images=CALIBRATION_IMAGES)
    alone = make_recipe(variants, replace(base, name="alone", only=(worst[0],)))
    shown_db = float(swept[0]["alone: output SQNR (dB)"])
    assert shown_db == pytest.approx(output_sqnr_db(floats, _logits(alone.data, inputs[:SWEEP_IMAGES])), abs=0.01)
    assert shown_db <= min(float(row["alone: output SQNR (dB)"]) for row in swept)

    # One click: the mixed recipe, its two costliest layers kept in float, joins the set.
    _fill(page, "qp-q-keep-k", KEEP)
    page.locator("#qp-q-keep").click()
    note = page.locator("#qp-q-note")
    expect(note).to_contain_text(f"recipe:{MIXED}: calibration ranges reused", timeout=180_000)
    expect(note).to_contain_text(f"Kept in float: {', '.join(worst)}")
    expect(page.locator("#qp-q-board")).to_contain_text(f"recipe:{MIXED}", timeout=60_000)
    made = store.made(variants, MIXED)
    assert made is not None and made.recipe.exclude == tuple(worst)
    model = onnx.load_from_string(made.data)

    # Layers: the recipe's rows say which layers stayed float and show the weight scales of the rest.
    page.get_by_role("tab", name="Layers").click()
    expect(page.locator("#qp-layers-note")).to_contain_text(f"recipe:{MIXED} 10/10", timeout=60_000)
    layer_rows = [r for r in records(page.locator("#qp-layers-table")) if r.get("variant") == f"recipe:{MIXED}"]
    assert len(layer_rows) == 10, "every layer has a row for the recipe variant"
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dequantized = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for row in layer_rows:
        node = next(n for n in model.graph.node if n.name == row["counterpart"])
        if row["layer"] in worst:
            assert row["dtype"] == "float32" and node.input[1] in inits, row
            continue
        scales = inits[dequantized[node.input[1]].input[1]]
        assert row["dtype"] == "w int8 · act uint8", row
        assert row["weight scale"].endswith(f"({scales.size} ch)"), row
        low, _, high = (float(v) for v in re.findall(r"[-+0-9.e]+", row["weight scale"].split("(")[0]))
        assert low == pytest.approx(scales.min(), rel=1e-3) and high == pytest.approx(scales.max(), rel=1e-3)

    # Accuracy & speed: the recipe's row beside the five, its count of correct answers onnxruntime's own.
    page.get_by_role("tab", name="Accuracy & speed").click()
    page.locator("#qp-score-run").click()
    score_table = page.locator("#qp-score-table")
    expect(score_table).to_contain_text(f"recipe:{MIXED}", timeout=240_000)
    row = next(r for r in records(score_table) if r["variant"] == f"recipe:{MIXED}")
    predicted = _logits(made.data, inputs).argmax(axis=1)
    correct = int(np.sum(predicted == samples.labels))
    assert int(row["correct"]) == correct
    assert float(row["accuracy (%)"]) == pytest.approx(100 * correct / len(samples.labels), abs=0.01)
    agreement = np.mean(predicted == _logits((folder / "resnet8.onnx").read_bytes(), inputs).argmax(axis=1))
    assert float(row["agreement with float (%)"]) == pytest.approx(100 * agreement, abs=0.01)
    assert float(row["size (KB)"]) == pytest.approx(len(made.data) / 1024, abs=0.05)
    assert float(row["images/s @1"].replace(",", "")) > 0


@pytest.mark.browser
def test_make_a_bundled_variant_again_from_its_own_recipe(page: Page, server: Server) -> None:
    folder = server.models_root / "resnet8"
    page.goto(server.url)
    entry = tree_entry(page.locator("#qp-explorer .file-wrap"), "resnet8")
    entry.locator(":scope > span [aria-label='expand directory']").click()
    tree_entry(entry, ".").locator("input[type=checkbox]").check()
    expect(page.locator("#qp-status")).to_contain_text("Loaded 5 of 5 variants", timeout=60_000)

    page.get_by_role("tab", name="Quantize").click()
    picker = page.locator("#qp-q-made-by")
    expect(picker).to_be_visible(timeout=30_000)
    expect(picker.locator("input")).to_have_value("onnx_int8 (recipes/resnet8_int8/recipe.json)")
    page.locator("#qp-q-rebuild").click()
    note = page.locator("#qp-q-note")
    expect(note).to_contain_text("recipe:resnet8_int8", timeout=120_000)
    expect(note).to_contain_text("Made again from recipes/resnet8_int8/recipe.json: its graph and weights are "
                                 "onnx_int8's own")  # fmt: skip
    expect(page.locator("#qp-q-board")).to_contain_text("recipe:resnet8_int8", timeout=30_000)

    # The claim, checked here: the recipe made in the server has the bundled file's initializers, bit for bit.
    made = store.made(quantcore.load_model_variants(folder), "resnet8_int8")
    assert made is not None
    ours = {t.name: numpy_helper.to_array(t) for t in made.model.graph.initializer}
    theirs = {t.name: numpy_helper.to_array(t) for t in onnx.load(folder / "resnet8_int8.onnx").graph.initializer}
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
