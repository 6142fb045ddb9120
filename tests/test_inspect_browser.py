"""The inspect tabs through the served app: their named endpoints, and the page in Chromium."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from gradio_client import Client
from playwright.sync_api import Page, expect

from quantcore.load import results_cache
from tests.app_server import Server, served_app
from tests.browser import tree_entry

QUANTIZED = ["onnx_int8", "onnx_uint8", "pytorch_int8"]


@pytest.fixture(scope="module")
def server(built_variants: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app on a models root holding a copy of the tiny variants (folder ``tiny``)."""
    root = tmp_path_factory.mktemp("inspect") / "models"
    root.mkdir()
    shutil.copytree(built_variants, root / "tiny")
    with served_app(root) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    return Client(server.url, verbose=False)


# ------------------------------------------------------------------------- API


def test_inspect_endpoints_are_named(client: Client) -> None:
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]

    assert {"/layers", "/weights", "/layer_error"} <= set(named)
    assert [p["parameter_name"] for p in named["/weights"]["parameters"]] == [
        "source", "layer", "bins", "side_by_side", "raw_integers",
    ]  # fmt: skip
    assert not any(name.startswith("/page_") for name in named)


def test_layers_endpoint_takes_the_summary_load_folder_returned(client: Client) -> None:
    summary, _ = client.predict("tiny", api_name="/load_folder")
    result = client.predict(summary, "stack2.shortcut", api_name="/layers")

    assert result["skeleton"] == "pytorch_float" and len(result["layers"]) == 10
    assert all(v == {"layers": 10, "matched": 10} for v in result["matched"].values())
    assert len(result["rows"]) == 50
    detail = result["detail"]
    assert detail["layer"] == "stack2.shortcut"
    assert len(detail["variants"]["pytorch_int8"]["weight"]["scale"]) == 32  # per-channel: every channel's scale


def test_weights_endpoint_returns_histogram_counts_of_every_variant(client: Client) -> None:
    result = client.predict("tiny", "0", 20, False, False, api_name="/weights")

    counts = result["histogram"]["counts"]
    assert result["layer"] == "conv1" and len(result["histogram"]["edges"]) == 21
    assert set(counts) == {"onnx_float", "onnx_int8", "onnx_uint8", "pytorch_float (BN folded)", "pytorch_int8"}
    assert all(sum(c) == 16 * 3 * 3 * 3 for c in counts.values())
    assert {r["variant"]: r["reference"] for r in result["stats"]}["pytorch_int8"] == "pytorch_float"


def test_layer_error_endpoint_runs_once_then_answers_from_the_cache(client: Client) -> None:
    results_cache.cache_clear()
    first = client.predict("tiny", 32, api_name="/layer_error")
    again = client.predict("tiny", 32, api_name="/layer_error")

    assert [v["variant"] for v in first["variants"]] == QUANTIZED
    assert first["images"] == 32 and first["source"].startswith("generated")
    for row in first["layers"]:
        assert all(isinstance(row[f"{k} (dB)"], float) for k in QUANTIZED)
    assert again == first
    info = results_cache.cache_info()
    assert info.hits >= 1 and info.loads == 2  # the layer table and one drift run


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"folder": "../.."}, "is not allowed in a path"),
        ({"folder": "/etc"}, "absolute paths are not allowed"),
        ({"folder": "nope"}, "does not exist"),
        (None, "Load a folder"),
    ],
)
def test_a_bad_or_missing_source_gets_an_error_answer(client: Client, source: object, expected: str) -> None:
    for api_name, args in (("/layers", (None,)), ("/weights", (0, 10, False, False)), ("/layer_error", (16,))):
        result = client.predict(source, *args, api_name=api_name)
        assert expected in result["error"], (api_name, result)


def test_out_of_range_layers_and_images_are_refused(client: Client) -> None:
    assert "does not exist" in client.predict("tiny", 10, 10, False, False, api_name="/weights")["error"]
    assert "no layer named" in client.predict("tiny", "nonsense", api_name="/layers")["error"]
    assert "between 1 and 4096" in client.predict("tiny", 5000, api_name="/layer_error")["error"]


def test_a_hub_summary_is_pulled_again_by_its_commit_from_the_cache(
    built_variants: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradio_app.common import api
    from gradio_app.tabs.layers import layers_api
    from gradio_app.tabs.weights import weights_api
    from quantcore.load import hub
    from tests.conftest import VARIANT_FILES
    from tests.hub_servers import HubContractServer

    with HubContractServer() as hub_server:
        monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
        hub_server.add_commit("org/tiny", {n: built_variants / n for n in VARIANT_FILES.values()})
        summary = hub.pull_and_summarize("org/tiny")
        hub_server.clear_log()
        result = layers_api(summary, "fc")
        weights = weights_api(summary, "conv1", 10)
        requests = hub_server.requests()
        forged = api(layers_api)({"hub": {"repo_id": "../../etc"}, "folder": "/etc"})

    # Pulled from the Hub, so untrusted: the TorchScript int8 file is refused, the rest compared.
    assert result["skeleton"] == "pytorch_float" and "pytorch_int8" not in result["matched"]
    assert result["detail"]["layer"] == "fc" and weights["layer"] == "conv1"
    assert any(note.startswith("pytorch_int8: skipped — refused") for note in result["notes"])
    assert requests == []  # the commit is cached: nothing asked of the Hub
    assert "error" in forged and "rows" not in forged


def test_the_per_layer_table_highlights_each_variants_worst_layer(variant_folder: Path) -> None:
    import quantcore
    from gradio_app.tabs.layer_error import WORST_CSS, highlight_worst
    from quantcore.evaluate.batches import generated_inputs
    from quantcore.evaluate.inputs import InputSpec
    from quantcore.inspect.drift import layer_drift
    from quantcore.report import tables

    spec = InputSpec((3, 32, 32))
    report = layer_drift(quantcore.load_model_variants(variant_folder), inputs=generated_inputs(spec, 8))
    styler = highlight_worst(pd.DataFrame(tables.drift_rows(report)), report)
    styler._compute()
    marked = {(row, col) for (row, col), css in styler.ctx.items() if css and css == _css_pairs(WORST_CSS)}
    columns = list(styler.data.columns)

    assert marked == {(d.worst, columns.index(f"{d.variant} (dB)")) for d in report.variants}
    assert len(marked) == 3


def _css_pairs(css: str) -> list[tuple[str, str]]:
    return [tuple(part.strip() for part in item.split(":")) for item in css.split(";")]


# --------------------------------------------------------------------- browser


@pytest.mark.browser
def test_pick_a_layer_see_its_histogram_then_the_sqnr_chart(page: Page, server: Server) -> None:
    page.goto(server.url)
    expect(page.locator("#qp-layers-note")).to_contain_text("Load a folder")
    folder = tree_entry(page.locator("#qp-explorer .file-wrap"), "tiny")
    folder.locator(":scope > span [aria-label='expand directory']").click()
    tree_entry(folder, ".").locator("input[type=checkbox]").check()
    expect(page.locator("#qp-status")).to_contain_text("Loaded 5 of 5 variants")

    # Layers: the table lists the float model's layers and every variant's counterpart.
    expect(page.locator("#qp-layers-note")).to_contain_text("Layers matched to pytorch_float")
    expect(page.locator("#qp-layers-table")).to_contain_text("/stack1/conv2/Conv")

    # Weights: pick a layer; its histograms render, one bar trace per variant.
    page.get_by_role("tab", name="Weights").click()
    page.locator("#qp-weights-layer input").click()
    page.get_by_role("option", name="6. stack2.conv2").click()
    plot = page.locator("#qp-weights-plot .js-plotly-plot")
    expect(plot.locator(".gtitle")).to_contain_text("stack2.conv2")
    expect(plot.locator(".barlayer .trace")).to_have_count(5)
    expect(page.locator("#qp-weights-stats")).to_contain_text("pytorch_int8")

    # Raw integers: only the quantized variants keep integers.
    page.get_by_label("Raw integers").check()
    expect(plot.locator(".gtitle")).to_contain_text("stored integers")
    expect(plot.locator(".barlayer .trace")).to_have_count(3)

    # Per-layer error: run it; one line per quantized variant, and each worst layer marked.
    page.get_by_role("tab", name="Per-layer error").click()
    page.locator("#qp-error-run").click()
    chart = page.locator("#qp-error-plot .js-plotly-plot")
    expect(chart.locator(".scatterlayer .trace")).to_have_count(6)
    expect(chart.locator(".legendtext")).to_have_text(QUANTIZED)
    note = page.locator("#qp-error-note")
    expect(note).to_contain_text(re.compile(r"Most lost: \w+ at [\w.]+ \(\d+(\.\d+)? dB\)"))
    expect(page.locator("#qp-error-table")).to_contain_text("stack3.conv2")
    expect(page.locator("#qp-error-summary")).to_contain_text("worst layer")
