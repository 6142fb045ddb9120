"""The Integer tab through the served app: its endpoints against the ONNX graphs and onnxruntime read directly,
the firmware download, bad input, and the page in Chromium."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from onnx import numpy_helper
from playwright.sync_api import Page, expect

from quantcore import load_model_variants
from quantcore.evaluate.batches import sample_inputs
from quantcore.evaluate.inputs import input_spec, to_model_input, variant_spec
from quantcore.load import VariantKey
from tests.app_server import BUNDLED_FOLDER, BUNDLED_MODELS, Server, served_app
from tests.browser import tree_entry

IMAGES = 32
FILES = {"onnx_int8": "resnet8_int8.onnx", "onnx_uint8": "resnet8_uint8.onnx"}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with served_app(BUNDLED_MODELS) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def answer(client: Client) -> dict:
    return client.predict("resnet8", IMAGES, api_name="/integer")


class QdqGraph:
    """The test's own reading of a QDQ graph: which Q/DQ pair feeds and follows each Conv/Gemm."""

    def __init__(self, path: Path) -> None:
        self.model = onnx.load(path)
        graph = self.model.graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.producer = {out: n for n in graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.nodes = {n.name: n for n in graph.node}

    def dequantized(self, tensor: str) -> tuple[np.ndarray, np.ndarray, str]:
        """(scale, zero point, integer tensor) of the DequantizeLinear that makes ``tensor``."""
        node = self.producer[tensor]
        assert node.op_type == "DequantizeLinear"
        return self.consts[node.input[1]], self.consts[node.input[2]], node.input[0]

    def output_quantize(self, node: onnx.NodeProto) -> onnx.NodeProto:
        """The QuantizeLinear after a layer (through a fused Relu when there is one)."""
        tensor = node.output[0]
        while True:
            (after,) = self.consumers[tensor]
            if after.op_type == "QuantizeLinear":
                return after
            assert after.op_type == "Relu", after.op_type
            tensor = after.output[0]

    def integer_weights(self, node: onnx.NodeProto) -> np.ndarray:
        dq = self.producer[node.input[1]]
        return self.consts[dq.input[0]]


def _model_input(key: VariantKey) -> np.ndarray:
    variants = load_model_variants(BUNDLED_FOLDER)
    batches, _ = sample_inputs(variants, input_spec(variants), images=IMAGES)
    pixels, _ = batches.take(0, IMAGES)
    return to_model_input(pixels, variant_spec(variants, key))


def _integer_outputs(graph: QdqGraph, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    tapped = onnx.ModelProto()
    tapped.CopyFrom(graph.model)
    tapped.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(tapped.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session.run(names, {session.get_inputs()[0].name: x})
    return dict(zip(names, values, strict=True))


# ------------------------------------------------------------------------- API


def test_integer_endpoints_are_named(client: Client) -> None:
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]

    assert {"/integer", "/integer_export"} <= set(named)
    assert [p["parameter_name"] for p in named["/integer"]["parameters"]] == ["source", "images"]


@pytest.mark.parametrize("variant", sorted(FILES))
def test_scales_and_multipliers_are_the_graphs(answer: dict, variant: str) -> None:
    graph = QdqGraph(BUNDLED_FOLDER / FILES[variant])
    layers = answer["variants"][variant]["layers"]
    assert [la["layer"] for la in layers] == [n.name for n in graph.model.graph.node if n.op_type in ("Conv", "Gemm")]

    for layer in layers:
        node = graph.nodes[layer["layer"]]
        s_in, z_in, _ = graph.dequantized(node.input[0])
        s_w, z_w, _ = graph.dequantized(node.input[1])
        quantize = graph.output_quantize(node)
        s_out, z_out = graph.consts[quantize.input[1]], graph.consts[quantize.input[2]]

        assert layer["input"] == {"scale": float(s_in), "zero_point": int(z_in), "dtype": z_in.dtype.name}
        assert layer["output"] == {"scale": float(s_out), "zero_point": int(z_out), "dtype": z_out.dtype.name}
        channels = len(layer["weight_scale"])
        assert layer["weight_scale"] == [float(v) for v in np.broadcast_to(s_w, channels)]
        assert layer["weight_zero_point"] == [int(v) for v in np.broadcast_to(z_w, channels)]
        expected_m = np.float64(s_in) * s_w.astype(np.float64) / np.float64(s_out)
        assert np.allclose(layer["multiplier"], expected_m, rtol=1e-12)
        # M0 * 2^(shift - 31) is M to within int32's precision (|error| <= 2^-31 of M0's range).
        fixed = np.asarray(layer["m0"], np.float64) * np.exp2(np.asarray(layer["shift"], np.float64) - 31)
        assert np.all(np.abs(fixed - expected_m) <= expected_m * 2.0**-30)
        assert all(2**30 <= m0 < 2**31 for m0 in layer["m0"])
        assert all(o <= b for o, b in zip(layer["accumulator_observed"], layer["accumulator_bound"], strict=True))


@pytest.mark.parametrize("variant", sorted(FILES))
def test_saturation_is_what_onnxruntime_outputs(answer: dict, variant: str) -> None:
    graph = QdqGraph(BUNDLED_FOLDER / FILES[variant])
    layers = answer["variants"][variant]["layers"]
    quantized = [graph.output_quantize(graph.nodes[la["layer"]]).output[0] for la in layers]
    outputs = _integer_outputs(graph, quantized, _model_input(VariantKey.from_string(variant)))

    for layer, name in zip(layers, quantized, strict=True):
        y = outputs[name]
        info = np.iinfo(y.dtype)
        at_max = np.count_nonzero(y == info.max) / y.size
        at_min = np.count_nonzero(y == info.min) / y.size
        assert layer["saturation_max"] == pytest.approx(at_max, abs=1e-12)
        expected = at_max + (0.0 if layer["output"]["zero_point"] == info.min else at_min)
        assert layer["saturation"] == pytest.approx(expected, abs=1e-12)


def test_network_runs_are_reported_for_every_sample(answer: dict) -> None:
    assert answer["images"] == IMAGES
    for variant in FILES:
        run = answer["variants"][variant]["network_fixed_point"]
        assert run["images"] == IMAGES and run["stopped"] is None
        assert 0 <= run["top1_agree"] <= IMAGES and run["agreement"] == run["top1_agree"] / IMAGES
        steps = run["steps"]
        assert run["first_mismatch"] == next((s["name"] for s in steps if s["mismatches"]), None)
    torch_run = answer["variants"]["pytorch_int8"]["network_fixed_point"]
    assert answer["variants"]["pytorch_int8"]["runtime"].startswith("torch")
    assert torch_run["images"] == IMAGES and torch_run["stopped"] is None


def test_export_download_is_each_variants_json_and_header(client: Client) -> None:
    files = [Path(p) for p in client.predict("resnet8", IMAGES, api_name="/integer_export")]

    assert sorted(p.name for p in files) == ["onnx_int8.h", "onnx_int8.json", "onnx_uint8.h", "onnx_uint8.json",
                                             "pytorch_int8.h", "pytorch_int8.json"]  # fmt: skip
    exported = json.loads(next(p for p in files if p.name == "onnx_int8.json").read_text())
    graph = QdqGraph(BUNDLED_FOLDER / FILES["onnx_int8"])
    for layer in exported["layers"]:
        weights = graph.integer_weights(graph.nodes[layer["name"]])
        laid_out = np.moveaxis(weights, 1, -1) if weights.ndim == 4 else weights
        assert layer["weights"]["values"] == [int(v) for v in laid_out.reshape(-1)]
    header = next(p for p in files if p.name == "onnx_int8.h").read_text()
    assert header.count("const int8_t") >= len(exported["layers"])


@pytest.mark.parametrize(
    ("source", "images", "says"),
    [("no_such_folder", IMAGES, "does not exist"), ("resnet8", 0, "images must be between"),
     ("../../etc", IMAGES, "")],
)  # fmt: skip
def test_bad_requests_say_why(client: Client, source: str, images: int, says: str) -> None:
    answer = client.predict(source, images, api_name="/integer")

    assert set(answer) == {"error"} and says in answer["error"]
    assert "Traceback" not in answer["error"]


def test_export_of_a_bad_source_says_why(client: Client) -> None:
    with pytest.raises(AppError, match="does not exist"):
        client.predict("no_such_folder", IMAGES, api_name="/integer_export")


# --------------------------------------------------------------------- browser


@pytest.mark.browser
def test_integer_tab_shows_layers_plots_channels_and_the_download(page: Page, server: Server) -> None:
    page.goto(server.url)
    folder = tree_entry(page.locator("#qp-explorer .file-wrap"), "resnet8")
    folder.locator(":scope > span [aria-label='expand directory']").click()
    tree_entry(folder, ".").locator("input[type=checkbox]").check()
    expect(page.locator("#qp-status")).to_contain_text("Loaded 5 of 5 variants")

    page.get_by_role("tab", name="Integer").click()
    expect(page.locator("#qp-int-note")).to_contain_text("Load a folder above")
    page.locator("#qp-int-run").click()
    note = page.locator("#qp-int-note")
    expect(note).to_contain_text(re.compile(r"Widest accumulator: \d+ bits"), timeout=60_000)
    expect(note).to_contain_text("onnx_uint8: fixed-point integer network")
    expect(page.locator("#qp-int-bits .js-plotly-plot .barlayer .trace")).to_have_count(3)
    expect(page.locator("#qp-int-saturation .js-plotly-plot .barlayer .trace")).to_have_count(3)
    expect(page.locator("#qp-int-table")).to_contain_text("quantized::conv2d_relu")
    expect(page.locator("#qp-int-table")).to_contain_text("/stack3/conv2/Conv")

    page.locator("#qp-int-layer input").click()
    page.get_by_role("option", name="onnx_int8 · /stack1/conv1/Conv").click()
    expect(page.locator("#qp-int-channels")).to_contain_text("M0")
    files = page.locator("#qp-int-files")
    expect(files.locator("a[href$='onnx_int8.h']")).to_have_count(1)
    expect(files.locator("a[href$='onnx_uint8.json']")).to_have_count(1)
