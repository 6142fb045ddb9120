"""The smoke corpus: the onnx package's model-zoo topologies (SqueezeNet, ShuffleNet, Inception, DenseNet,
ResNet-50, AlexNet, ZFNet, VGG) with seeded weights, quantized by onnxruntime, loaded and run through every
view. At least 90 % of each graph's weighted layers (counted from the graph itself) are matched in every
quantized variant with weights that follow the float ones, and every view answers for every variant or
says why it does not.

The default suite runs the three quick topologies (marker ``zoo``); the rest take up to minutes and
gigabytes each and run with ``-m zoo_full`` or ``QP_ZOO=full``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import quantcore
from quantcore.data import datasets
from quantcore.data.datasets import LabelledImages
from quantcore.evaluate.inputs import folder_samples, input_spec
from quantcore.evaluate.predictions import predict_image
from quantcore.evaluate.scorecard import score_accuracy
from quantcore.inspect.drift import layer_drift
from quantcore.inspect.layer_table import LayerTable, build_layer_table
from quantcore.inspect.weights import compare_weights
from quantcore.load import Key, VariantKey
from tests import zoo
from tests.zoo_light import LIGHT_FAST, LIGHT_MODELS

ZooBuild = Callable[..., zoo.ZooModel]
IMAGES = 2
QUANTIZED = (VariantKey.ONNX_INT8, VariantKey.ONNX_UINT8)
TOPOLOGIES = [
    pytest.param(name, marks=pytest.mark.zoo if name in LIGHT_FAST else pytest.mark.zoo_full) for name in LIGHT_MODELS
]


def _weighted_layers(path: Path) -> int:
    """Conv / Gemm / MatMul nodes whose weights are constants (initializers, or computed from them alone, as
    Inception's classifier weights are reshaped): the graph's own count of weighted layers."""
    graph = onnx.load(str(path)).graph
    constant = {t.name for t in graph.initializer}
    for node in graph.node:
        if all(i in constant for i in node.input if i):
            constant.update(node.output)
    return sum(1 for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in constant)


def _answers_or_says_why(keys: set[Key], answered: set[Key], notes: tuple[str, ...] | list[str], view: str) -> None:
    for key in keys - answered:
        assert any(note.startswith(f"{key}:") for note in notes), f"{view}: {key} neither answered nor refused"


def _matched_share(table: LayerTable, key: VariantKey) -> float:
    float_rows = [r for r in table.rows if VariantKey.ONNX_FLOAT in r.layers]
    return sum(1 for r in float_rows if key in r.layers) / len(float_rows)


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_a_model_zoo_topology_is_matched_and_every_view_answers(
    zoo_build: ZooBuild, models_root: Path, name: str
) -> None:
    built = zoo_build(f"light_{name}")
    folder = Path(shutil.copytree(built.folder, models_root / built.name))
    pixels = np.random.default_rng(11).integers(0, 256, (IMAGES, 3, 224, 224), dtype=np.uint8)
    datasets.save_samples(folder / "samples.npz", LabelledImages(pixels, np.arange(IMAGES), ("a", "b")))
    variants = quantcore.load_model_variants(folder)
    keys = {VariantKey(k) for k in built.files}
    assert {k for k in keys if variants.records[k].model is not None} == keys

    # Layers: the float graph's weighted layers, each matched in every quantized variant (>= 90 %).
    table = build_layer_table(variants)
    assert set(table.variants) == keys and not table.unreadable, table.notes
    float_layers = [r for r in table.rows if VariantKey.ONNX_FLOAT in r.layers]
    assert len(float_layers) == _weighted_layers(built.files["onnx_float"])
    for key in QUANTIZED:
        assert _matched_share(table, key) >= 0.9, (key, table.notes)
    # Weights: every row answers for every variant that has the layer; the quantized ones follow the float.
    for row in table.rows:
        comparison = compare_weights(table, row.index)
        _answers_or_says_why(set(row.layers), {s.variant for s in comparison.series}, comparison.notes, "weights")
        for series in comparison.series:
            if series.layer.quantized and series.reference is not None:
                assert series.stats["sqnr_db"] == "inf" or series.stats["sqnr_db"] >= 30, (row.label, series.variant)

    # Per-layer error, predictions, accuracy: every variant answers, or the notes say why not.
    drift = layer_drift(variants, table=table, images=IMAGES, batch_size=IMAGES)
    _answers_or_says_why(set(QUANTIZED), {d.variant for d in drift.variants}, drift.notes, "per-layer error")
    for d in drift.variants:
        assert sum(db is not None for db in d.sqnr_db) >= 0.9 * len(float_layers), d.variant
    spec = input_spec(variants)
    prediction = predict_image(variants, pixels[0], spec, k=3)
    _answers_or_says_why(keys, {p.variant for p in prediction.variants}, prediction.notes, "predictions")
    samples, notes = folder_samples(variants, spec)
    assert samples is not None, notes
    accuracy = score_accuracy(variants, samples, spec)
    _answers_or_says_why(keys, {s.variant for s in accuracy.scores}, accuracy.notes, "accuracy")
