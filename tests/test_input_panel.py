"""The Input section through the served app: an override set on the page (or by API) feeds every view alike."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from gradio_client import Client

from gradio_app.input_panel import ALL_VARIANTS, AS_READ, override_fields, spec_rows
from quantcore.data import datasets
from quantcore.data.datasets import LabelledImages
from tests import zoo
from tests.app_server import served_app

ZooBuild = Callable[..., zoo.ZooModel]


def test_form_fields_become_an_override_and_bad_ones_are_refused() -> None:
    fields = override_fields("NHWC", "0 – 255", "0.5, 0.5, 0.5", "0.25", "224", "probabilities")
    assert fields == {"layout": "NHWC", "range": [0.0, 255.0], "mean": [0.5, 0.5, 0.5], "std": [0.25],
                      "size": [224, 224], "output": "probabilities"}  # fmt: skip
    assert override_fields(AS_READ, "-2, 2", "", "", "", AS_READ) == {"range": [-2.0, 2.0]}
    for bad in (("NWHC", AS_READ, "", "", "", AS_READ), (AS_READ, "0", "", "", "", AS_READ),
                (AS_READ, AS_READ, "a", "", "", AS_READ), (AS_READ, AS_READ, "", "", "2.5", AS_READ)):  # fmt: skip
        try:
            override_fields(*bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_an_override_set_by_api_reaches_the_predictions(zoo_build: ZooBuild, tmp_path: Path) -> None:
    root = tmp_path / "models"
    folder = Path(shutil.copytree(zoo_build("pixels_255").folder, root / "wide"))
    for name in list(folder.iterdir()):
        if name.suffix == ".pt" or "int8" in name.name or "uint8" in name.name:
            name.unlink()  # the float model alone: nothing in the folder says it takes 0–255
    pixels = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    datasets.save_samples(folder / "samples.npz", LabelledImages(pixels, np.arange(4), tuple("abcd")))
    session = ort.InferenceSession(str(next(folder.glob("*.onnx"))), providers=["CPUExecutionProvider"])
    direct = session.run(None, {session.get_inputs()[0].name: pixels[:1].astype(np.float32)})[0][0]
    best = int(np.argmax(direct))

    with served_app(root) as server:
        client = Client(server.url, verbose=False)
        summary, _ = client.predict("wide", api_name="/load_folder")
        assert summary["variants"]["onnx_float"]["input"]["range"] == [0.0, 1.0]
        assert spec_rows(summary)[0]["range"] == "0 – 1"
        changed, status = client.predict(summary, ALL_VARIANTS, AS_READ, "0 – 255", "", "", "", AS_READ,
                                         api_name="/set_input")  # fmt: skip
        assert changed["source"]["input"] == {"*": {"range": [0.0, 255.0]}}, status
        assert changed["variants"]["onnx_float"]["input"]["sources"]["range"] == "the page (for all)"
        predicted = client.predict(changed, 0, None, 3, "auto", api_name="/predict")
        top = predicted["variants"]["onnx_float"]["top_k"][0]
        assert top["class"] == best
        shifted = np.exp(direct - direct.max()) / np.exp(direct - direct.max()).sum()
        assert abs(top["probability"] - float(shifted[best])) < 1e-5
        refused, status = client.predict(summary, ALL_VARIANTS, "sideways", AS_READ, "", "", "", AS_READ,
                                         api_name="/set_input")  # fmt: skip
        assert refused is None and "The input was not changed\\: layout must be one of" in status
