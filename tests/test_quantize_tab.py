"""The Quantize tab through the served app: /quantize and /recipe_board checked against onnxruntime run
directly, the recipe variant seen by the other endpoints, and the page driven in Chromium."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from gradio_client import Client
from playwright.sync_api import Page, expect

import quantcore
from quantcore.data import datasets
from quantcore.quantize import Recipe, quantize_recipe, store, weighted_nodes
from quantcore.quantize.calibration import calibration_set
from quantcore.quantize.executors import InProcess
from quantcore.quantize.sweep import sensitivity_sweep
from quantcore.report.html import NOT_THERE
from quantcore.report.quantize_tables import sweep_rows
from tests.app_server import Server, served_app
from tests.browser import tree_entry
from tests.test_predictions import write_samples
from tests.test_report import parse, records


@pytest.fixture(scope="module")
def server(built_variants: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("quantize") / "models"
    root.mkdir()
    write_samples(Path(shutil.copytree(built_variants, root / "tiny")), count=48)
    store.clear()
    with served_app(root) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    return Client(server.url, verbose=False)


def _logits(model_bytes: bytes, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": inputs})[0]


def test_quantize_endpoint_makes_a_recipe_variant_the_other_views_show(client: Client, server: Server) -> None:
    options = {"name": "api-s4", "weight": "int4", "calibration": "Percentile", "percentile": 99.9,
               "calibration_images": 16}  # fmt: skip
    made = client.predict("tiny", options, api_name="/quantize")
    assert made["recipe"] == "recipe:api-s4", made
    assert made["source"] == {"kind": "local", "folder": "tiny", "recipes": ["api-s4"]}
    assert made["recipe_json"]["onnxruntime"]["quantize_static"]["weight_type"] == "QInt4"

    # The board's numbers against onnxruntime run directly on the same 48 samples.
    folder = server.models_root / "tiny"
    variants = quantcore.load_model_variants(folder)
    rebuilt = quantize_recipe(variants["onnx_float"], Recipe.from_dict(made["recipe_json"]["recipe"]),
                              calibration_set(variants, images=16))  # fmt: skip
    assert rebuilt.sha256 == made["recipe_json"]["model"]["sha256"]
    data = datasets.load_samples(folder / "samples.npz")
    inputs = datasets.preprocess(data.images)
    ours = _logits(rebuilt.data, inputs)
    floats = _logits((folder / "tiny.onnx").read_bytes(), inputs)
    entry = made["board_entry"]
    assert entry["images"] == 48
    assert entry["accuracy (%)"] == pytest.approx(100 * np.mean(ours.argmax(1) == data.labels), abs=0.01)
    assert entry["agreement with float (%)"] == pytest.approx(100 * np.mean(ours.argmax(1) == floats.argmax(1)),
                                                              abs=0.01)  # fmt: skip
    output_db = 10 * np.log10(np.sum(floats.astype(np.float64) ** 2) / np.sum((floats - ours).astype(np.float64) ** 2))
    assert entry["output SQNR (dB)"] == pytest.approx(output_db, abs=0.01)
    assert entry["size (KB)"] == round(len(rebuilt.data) / 1024, 1)
    assert entry["images/s @1"] > 0 and entry["images/s @64"] > 0

    # Every view takes the returned source and shows the recipe beside the five.
    layers = client.predict(made["source"], "", api_name="/layers")
    assert layers["matched"]["recipe:api-s4"] == {"layers": 10, "matched": 10}
    board = client.predict(made["source"], api_name="/recipe_board")
    assert [row["recipe"] for row in board["table"]] == ["recipe:api-s4"]
    assert board["table"][0]["worst layer SQNR (dB)"] == min(v for v in board["layers"]["recipe:api-s4"].values())


def test_quantize_endpoint_refuses_bad_recipes(client: Client) -> None:
    assert "QOperator takes 8-bit" in client.predict("tiny", {"format": "QOperator", "weight": "int4"},
                                                     api_name="/quantize")["error"]  # fmt: skip
    assert "no weighted layer named 'nope'" in client.predict("tiny", {"exclude": ["nope"]},
                                                              api_name="/quantize")["error"]  # fmt: skip
    assert "unknown recipe options: bits" in client.predict("tiny", json.dumps({"bits": 3}),
                                                            api_name="/quantize")["error"]  # fmt: skip
    assert "Load a folder" in client.predict(None, {}, api_name="/quantize")["error"]


def test_sweep_endpoint_ranks_as_a_direct_sweep_and_keeps_the_worst_in_float(client: Client, server: Server) -> None:
    options = {"name": "api-sweep", "calibration_images": 16, "per_channel": False}
    answer = client.predict("tiny", options, 48, 2, api_name="/sweep")
    assert "error" not in answer, answer
    # The same sweep computed here, in this process, from the same folder and recipe.
    variants = quantcore.load_model_variants(server.models_root / "tiny")
    direct = sensitivity_sweep(variants, Recipe.from_dict(options), images=48, executor=InProcess())
    assert answer["images"] == 48 and len(answer["table"]) == 10
    assert answer["table"] == json.loads(json.dumps(sweep_rows(direct)))
    assert answer["executor"].startswith("a local pool of")

    kept = answer["kept_worst"]
    worst = [row["layer"] for row in answer["table"][:2]]
    assert kept["recipe"] == "recipe:api-sweep-worst2-float"
    assert kept["recipe_json"]["recipe"]["exclude"] == worst
    float_model = variants.model("onnx_float")
    nodes = {n.layer: n.node for n in weighted_nodes(float_model)}
    assert kept["recipe_json"]["onnxruntime"]["quantize_static"]["nodes_to_exclude"] == [nodes[w] for w in worst]
    assert not kept["calibrated"], "the sweep's calibration is reused"
    layers = client.predict(kept["source"], "", api_name="/layers")
    assert layers["matched"]["recipe:api-sweep-worst2-float"]["layers"] == 10

    # Asked again, the sweep is the one kept from then; the report of the set with the new recipe shows it.
    again = client.predict("tiny", options, 48, 0, api_name="/sweep")
    assert again["from_cache"] and not answer["from_cache"] and again["table"] == answer["table"]
    files, status = client.predict(kept["source"], api_name="/report")
    assert status.startswith("✔"), status
    sent = parse(Path(next(f for f in files if f.endswith(".html"))).read_text(encoding="utf-8"))
    shown = [{k: NOT_THERE if v is None else str(v) for k, v in row.items()} for row in answer["table"]]
    assert records(sent.tables["sweep_api-sweep_48/layers"]) == shown

    assert "k must be between 1 and 10" in client.predict("tiny", options, 48, 11, api_name="/sweep")["error"]
    assert "images must be between 1 and 1000" in client.predict("tiny", options, 0, api_name="/sweep")["error"]


# --------------------------------------------------------------------- browser


@pytest.mark.browser
def test_make_a_recipe_in_the_page_then_see_it_in_layers_and_accuracy(page: Page, server: Server) -> None:
    page.goto(server.url)
    folder = tree_entry(page.locator("#qp-explorer .file-wrap"), "tiny")
    folder.locator(":scope > span [aria-label='expand directory']").click()
    tree_entry(folder, ".").locator("input[type=checkbox]").check()
    expect(page.locator("#qp-status")).to_contain_text("Loaded 5 of 5 variants", timeout=30_000)

    page.get_by_role("tab", name="Quantize").click()
    expect(page.locator("#qp-q-rebuild")).to_be_hidden()  # this folder ships no recipe.json for its variants
    page.locator("#qp-q-name textarea, #qp-q-name input").first.fill("page-u8")
    page.locator("#qp-q-run").click()
    note = page.locator("#qp-q-note")
    expect(note).to_contain_text("recipe:page-u8", timeout=90_000)
    expect(note).to_contain_text("It now shows in every tab")
    expect(page.locator("#qp-q-board")).to_contain_text("recipe:page-u8", timeout=30_000)
    expect(page.locator("#qp-q-files a[href$='/page-u8.onnx']")).to_have_count(1, timeout=30_000)
    expect(page.locator("#qp-q-files a[href$='/recipe.json']")).to_have_count(1)

    page.get_by_role("tab", name="Layers").click()
    expect(page.locator("#qp-layers-note")).to_contain_text("recipe:page-u8", timeout=60_000)
    expect(page.locator("#qp-layers-table")).to_contain_text("recipe:page-u8", timeout=30_000)

    page.get_by_role("tab", name="Accuracy & speed").click()
    page.locator("#qp-score-run").click()
    expect(page.locator("#qp-score-table")).to_contain_text("recipe:page-u8", timeout=120_000)

    page.get_by_role("tab", name="Quantize").click()
    page.locator("#qp-q-save").click()
    expect(note).to_contain_text("Saved as tiny/recipes/page-u8/model.onnx", timeout=30_000)
    assert (server.models_root / "tiny" / "recipes" / "page-u8" / "recipe.json").is_file()
