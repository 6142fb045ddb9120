"""The committed models/resnet8 folder tells the truth: its card matches its files, and the files reproduce it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
import pytest
import torch

import quantcore
from quantcore import evaluate
from quantcore.backends.ort import make_session
from quantcore.data import datasets
from quantcore.evaluate.kernels import needs_check
from quantcore.load import VariantKey
from quantcore.settings import PROJECT_ROOT
from scripts import build_resnet8 as build
from scripts.resnet8_measure import sha256_of

FOLDER = PROJECT_ROOT / "models" / "resnet8"
CARD: dict[str, Any] = json.loads((FOLDER / "model_card.json").read_text())
QUANTIZED = ("onnx_int8", "onnx_uint8", "pytorch_int8")


@pytest.fixture(scope="module")
def samples() -> datasets.LabelledImages:
    return datasets.load_samples(FOLDER / "samples.npz")


@pytest.fixture(scope="module")
def variants() -> quantcore.ModelVariants:
    return quantcore.load_model_variants(FOLDER, trusted=True)  # the bundled folder is our own


def test_card_describes_exactly_the_committed_files() -> None:
    assert set(CARD["variants"]) == set(build.VARIANT_FILES)
    for key, entry in CARD["variants"].items():
        path = FOLDER / entry["file"]
        assert entry["file"] == build.VARIANT_FILES[key]
        assert entry["bytes"] == path.stat().st_size, key
        assert entry["sha256"] == sha256_of(path), key


@pytest.mark.parametrize("key", list(build.VARIANT_FILES))
def test_each_variant_reproduces_its_samples_accuracy(
    key: str, samples: datasets.LabelledImages, variants: quantcore.ModelVariants
) -> None:
    x = datasets.preprocess(samples.images)
    logits = evaluate.predict_logits(variants[key], x)
    recorded = CARD["variants"][key]["samples"]
    if int(np.sum(logits.argmax(1) == samples.labels)) != recorded["correct"]:
        # Only U8S8 kernels that saturate on this CPU may differ (quantcore.evaluate.kernels, where the page says
        # so); the card was measured where they do not, so the graph's own arithmetic must reproduce it.
        assert needs_check(variants, VariantKey(key)), key
        session = make_session(variants[key], 1, optimize=False)
        logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert int(np.sum(logits.argmax(1) == samples.labels)) == recorded["correct"]
    assert evaluate.accuracy(logits, samples.labels) == pytest.approx(recorded["accuracy"], abs=5e-5)


def test_all_five_variants_load_through_quantcore(variants: quantcore.ModelVariants) -> None:
    assert quantcore.get_model_summary(variants)["total_loaded"] == 5


def test_targets_hold_on_the_full_test_set() -> None:
    float_accuracy = CARD["variants"]["onnx_float"]["test"]["accuracy"]
    assert CARD["variants"]["onnx_float"]["test"]["images"] == 10_000
    assert float_accuracy >= 0.90
    assert CARD["variants"]["pytorch_float"]["test"]["accuracy"] >= 0.90
    for key in QUANTIZED:
        assert float_accuracy - CARD["variants"][key]["test"]["accuracy"] <= 0.010, key
    assert CARD["targets"]["met"] is True


def test_card_names_the_fastest_variant_from_its_own_speeds() -> None:
    for batch in ("batch_1", "batch_64"):
        speeds = {k: v["images_per_second"][batch] for k, v in CARD["variants"].items()}
        assert CARD["fastest"][batch] == max(speeds, key=speeds.get)
        for v in CARD["variants"].values():  # best run is never slower than the median run
            assert v["images_per_second"][batch] >= v["images_per_second_median_run"][batch]
    assert CARD["benchmark"]["threads"] == 2 and CARD["benchmark"]["runs"] > 0 and CARD["benchmark"]["cpu"]


def test_card_records_data_recipe_and_calibration() -> None:
    assert CARD["dataset"]["name"] == "Fashion-MNIST" and CARD["dataset"]["licence"] == "MIT"
    assert CARD["labels"] == list(datasets.FASHION_MNIST_LABELS)
    assert CARD["preprocessing"]["formula"] == datasets.PREPROCESSING["formula"]
    assert CARD["training"]["seed"] == CARD["seed"] and CARD["training"]["epochs"] == len(CARD["training"]["history"])
    assert CARD["calibration"]["method"] == "MinMax" and CARD["calibration"]["images"] > 0


def test_samples_are_a_stratified_thousand(samples: datasets.LabelledImages) -> None:
    assert samples.images.shape == (1000, 3, 32, 32) and samples.images.dtype == np.uint8
    assert np.bincount(samples.labels).tolist() == [100] * 10
    assert list(samples.label_names) == CARD["labels"]
    assert (FOLDER / "samples.npz").stat().st_size < 5 * 1024 * 1024


@pytest.mark.parametrize("name", ["resnet8.onnx", "resnet8_int8.onnx", "resnet8_uint8.onnx"])
def test_onnx_files_describe_themselves(name: str) -> None:
    model = onnx.load(FOLDER / name)
    meta = {p.key: json.loads(p.value) for p in model.metadata_props if p.key in {"labels", "preprocessing"}}
    assert meta == {"labels": CARD["labels"], "preprocessing": CARD["preprocessing"]}
    assert {o.domain: o.version for o in model.opset_import}.get("") == 17


def test_checkpoint_loads_with_weights_only_and_carries_its_metadata() -> None:
    checkpoint = torch.load(FOLDER / "resnet8.pt", weights_only=True)
    assert checkpoint["arch"] == "resnet8"
    assert checkpoint["labels"] == CARD["labels"] and checkpoint["preprocessing"] == CARD["preprocessing"]


def test_readme_quotes_the_card() -> None:
    readme = (FOLDER / "README.md").read_text()
    for entry in CARD["variants"].values():
        assert f"{100 * entry['test']['accuracy']:.2f} %" in readme
    assert CARD["reproduce"]["evaluate"] in readme and "Fashion-MNIST" in readme and "MIT" in readme
